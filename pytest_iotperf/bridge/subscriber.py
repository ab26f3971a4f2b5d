"""The MQTT half of the bridge: one subscriber on the devices' topic filter.

It keeps a persistent session (:mod:`pytest_iotperf.persistent_session`):
after a dropped connection it reconnects within ~100 ms (backoff capped at
2 s) and what the broker queued for it meanwhile still arrives; it
subscribes again only when the broker did not keep the session.  The
session is closed on the broker when the subscriber stops.

On stop the subscriber first sends itself a *fence*: a QoS 1 message on a
topic of its own, through the broker.  The broker delivers to one session
in the order it routed the messages, so once the fence is back, every device
message the broker accepted before the stop (every publish its sender saw
acknowledged) and still holds has been handed to the forwarder.  No waiting
for "quiet".  Across a reconnect: the fence waits for the session to be
back, and is sent again after a reconnect that found no session (the broker
restarted and lost what it held, the fence with it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Final

from paho.mqtt import client as mqtt

from pytest_iotperf.bridge.spec import BridgeSpec
from pytest_iotperf.mqtt_client import make_client, shared_identity
from pytest_iotperf.persistent_session import PersistentSession, subscription_qos

_FENCE_POLL_S: Final = 0.05  # how often a waiting fence looks whether the session came back fresh


class SubscribeError(Exception):
    """The broker could not be reached, refused the connection or the subscription."""


class MqttSubscriber:
    """Hands every message on ``spec.topic_filter`` to ``deliver(topic, payload, properties)`` from paho's thread.

    ``properties``: the raw MQTT 5 PUBLISH properties (``mqtt_wire.user_properties`` decodes them), None for
    MQTT 3.1.1 or a message without any; the forwarder decodes them on its own thread.
    """

    def __init__(self, spec: BridgeSpec, deliver: Callable[[str, bytes, bytes | None], None]) -> None:
        self.spec = spec
        self.errors: list[str] = []
        self.fence_topic = f"iotperf-bridge/{spec.client_id}/fence"
        self._deliver = deliver
        self._subscribed = threading.Event()
        self._fence_usable = False
        self._fence_back = threading.Event()
        self._fence_topic_bytes = self.fence_topic.encode()
        self._fresh_sessions = 0  # subscriptions made: the first, then one per session the broker had lost
        # The lean client hands each message over as bytes, without paho's per-message objects.
        identity = shared_identity(spec.connection, spec.client_id)
        self.client = make_client(spec.connection, identity, clean_session=False)
        self.session = PersistentSession(self.client, spec.connection, identity, self._on_online)
        self.client.on_subscribe = self._on_subscribe
        self.client.on_raw_message = self._on_raw_message
        self._stopped = False

    @property
    def disconnects(self) -> int:
        """Unexpected drops of the connection so far."""
        return self.session.disconnects

    @property
    def reconnects(self) -> int:
        """Connections accepted again after a drop."""
        return self.session.reconnects

    def start(self, timeout_s: float) -> None:
        """Connect and subscribe; returns after the SUBACK.

        Raises:
            SubscribeError: not connected and subscribed within ``timeout_s``, or refused.
        """
        where = self.spec.connection.address
        deadline = time.monotonic() + timeout_s
        try:
            self.session.start()
        except (OSError, ValueError) as exc:
            raise SubscribeError(f"cannot connect to the MQTT broker {where}: {exc}") from None
        if not self.session.answered.wait(timeout_s):
            raise SubscribeError(f"no CONNACK from the MQTT broker {where} within {timeout_s:g}s")
        if self.session.refused:
            raise SubscribeError(f"MQTT broker {where}: {self.session.refused}")
        if not self._subscribed.wait(max(deadline - time.monotonic(), 0.0)):
            why = f" ({self.errors[0]})" if self.errors else ""
            raise SubscribeError(f"no SUBACK from the MQTT broker {where} within {timeout_s:g}s{why}")
        if self.errors:
            raise SubscribeError(f"MQTT broker {where}: {self.errors[0]}")

    def fence(self, timeout_s: float) -> str:
        """Wait until all the broker routed to us before now has arrived: ``ok``, ``timeout``, ``unavailable``.

        Offline, it first waits for the session to come back (``timeout`` if it does not in time).
        """
        if not self._fence_usable:
            return "unavailable"
        deadline = time.monotonic() + timeout_s
        sent_for = -1  # the fresh session the fence was last sent in
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.session.online.wait(remaining):
                return "timeout"
            if sent_for != self._fresh_sessions:
                sent_for = self._fresh_sessions
                # Sent while the connection drops: paho keeps a QoS 1 message and sends it after the reconnect.
                info = self.client.publish(self.fence_topic, b"fence", qos=1)
                if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                    return "unavailable"
            if self._fence_back.wait(min(_FENCE_POLL_S, max(deadline - time.monotonic(), 0.0))):
                return "ok"

    def stop(self) -> None:
        """Stop reading and close the session on the broker: no ``deliver`` call happens after this returns.

        Still offline at this point: said in ``errors``.
        """
        if self._stopped:
            return
        self._stopped = True
        offline = self.session.offline_problem()
        self.session.stop()
        if offline:
            self.errors.append(f"the bridge's MQTT subscriber was {offline}")
        problem = self.session.close()
        if problem:
            self.errors.append(problem)

    # -- paho callbacks (network thread) -------------------------------------

    def _on_online(self, client: mqtt.Client, fresh: bool) -> None:
        if fresh:  # the first connection, or the broker lost our session: subscribe (again)
            # Nagle is off already (the factory's client): our PUBACKs are not held back.
            qos = subscription_qos(self.spec.qos)
            client.subscribe([(self.spec.topic_filter, qos), (self.fence_topic, 1)])

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        if reasons[0].is_failure:
            self.errors.append(f"subscription to {self.spec.topic_filter!r} refused: {reasons[0]}")
        # A broker's ACL may refuse the fence topic; stopping then goes without the fence.
        self._fence_usable = len(reasons) > 1 and not reasons[1].is_failure
        self._fresh_sessions += 1
        self._subscribed.set()

    def _on_raw_message(self, topic: bytes, payload: bytes, properties: bytes | None) -> None:
        if topic == self._fence_topic_bytes:
            self._fence_back.set()
            return
        self._deliver(topic.decode("utf-8", "replace"), payload, properties)
