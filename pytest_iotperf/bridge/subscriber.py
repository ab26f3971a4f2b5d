"""The MQTT half of the bridge: one subscriber on the devices' topic filter.

On stop the subscriber first sends itself a *fence*: a QoS 1 message on a
topic of its own, through the broker.  The broker delivers to one connection
in the order it routed the messages, so once the fence is back, every device
message the broker accepted before the stop (every publish its sender saw
acknowledged) has been handed to the forwarder.  No waiting for "quiet".
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from paho.mqtt import client as mqtt

from pytest_iotperf.bridge.spec import BridgeSpec
from pytest_iotperf.mqtt_client import connect, make_client, shared_identity

_log = logging.getLogger(__name__)


class SubscribeError(Exception):
    """The broker could not be reached, refused the connection or the subscription."""


class MqttSubscriber:
    """Hands every message on ``spec.topic_filter`` to ``deliver(topic, payload)`` from paho's thread."""

    def __init__(self, spec: BridgeSpec, deliver: Callable[[str, bytes], None]) -> None:
        self.spec = spec
        self.errors: list[str] = []
        self.fence_topic = f"iotperf-bridge/{spec.client_id}/fence"
        self._deliver = deliver
        self._subscribed = threading.Event()
        self._fence_usable = False
        self._fence_back = threading.Event()
        self._fence_topic_bytes = self.fence_topic.encode()
        # The lean client hands each message over as bytes, without paho's per-message objects.
        self.client = make_client(spec.connection, shared_identity(spec.connection, spec.client_id))
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_raw_message = self._on_raw_message
        self.client.on_disconnect = self._on_disconnect

    def start(self, timeout_s: float) -> None:
        """Connect and subscribe; returns after the SUBACK.

        Raises:
            SubscribeError: not connected and subscribed within ``timeout_s``, or refused.
        """
        where = f"{self.spec.connection.host}:{self.spec.connection.port}"
        try:
            connect(self.client, self.spec.connection)
        except (OSError, ValueError) as exc:
            raise SubscribeError(f"cannot connect to the MQTT broker {where}: {exc}") from None
        self.client.loop_start()
        if not self._subscribed.wait(timeout_s):
            why = f" ({self.errors[0]})" if self.errors else ""
            raise SubscribeError(f"no SUBACK from the MQTT broker {where} within {timeout_s:g}s{why}")
        if self.errors:
            raise SubscribeError(f"MQTT broker {where}: {self.errors[0]}")

    def fence(self, timeout_s: float) -> str:
        """Wait until all the broker routed to us before now has arrived: ``ok``, ``timeout``, ``unavailable``."""
        if not self._fence_usable:
            return "unavailable"
        info = self.client.publish(self.fence_topic, b"fence", qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return "unavailable"
        return "ok" if self._fence_back.wait(timeout_s) else "timeout"

    def stop(self) -> None:
        """Disconnect and stop paho's thread: no ``deliver`` call happens after this returns."""
        self.client.disconnect()
        self.client.loop_stop()

    # -- paho callbacks (network thread) -------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.errors.append(f"connection refused: {reason}")
            self._subscribed.set()
            return
        # Nagle is off already (the factory's client): our PUBACKs are not held back.
        client.subscribe([(self.spec.topic_filter, self.spec.qos), (self.fence_topic, 1)])

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        if reasons[0].is_failure:
            self.errors.append(f"subscription to {self.spec.topic_filter!r} refused: {reasons[0]}")
        # A broker's ACL may refuse the fence topic; stopping then goes without the fence.
        self._fence_usable = len(reasons) > 1 and not reasons[1].is_failure
        self._subscribed.set()

    def _on_raw_message(self, topic: bytes, payload: bytes) -> None:
        if topic == self._fence_topic_bytes:
            self._fence_back.set()
            return
        self._deliver(topic.decode("utf-8", "replace"), payload)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.errors.append(f"disconnected from the MQTT broker: {reason}")
            _log.warning("disconnected from the MQTT broker: %s", reason)
