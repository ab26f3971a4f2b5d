"""A reader's MQTT session that survives a dropped connection: the MQTT sink's and the platform bridge's.

Both read everything the fleet publishes, so a reader that stays away loses
what was routed to it meanwhile.  They connect with a persistent session
(clean session false, a client id stable for the process) and subscribe at
QoS 1 at least (:func:`subscription_qos`), so the broker queues for them
while they are away: QoS 1 and 2 messages only (a 3.1.1 broker queues QoS 0
for an offline client only when configured to; the embedded one is not).

paho's network thread (``loop_start``) already reconnects after an
unexpected disconnect; :class:`PersistentSession` sets its wait before each
attempt (:class:`Backoff`: jittered, exponential, ~100 ms first, capped at
2 s: a reader must not stay away long), counts disconnects and reconnects,
and tells its owner whether the broker kept the session (``on_online``'s
``fresh``: subscribe again).  Nothing of this runs per message.

After the last read, :meth:`PersistentSession.close` ends the session on the
broker (one connection with clean session true): MQTT 3.1.1 has no session
expiry, and a session left behind on an external broker would be queued QoS 1
messages for ever.

MQTT 5 has clean start instead of clean session, and a session ends with its
connection unless CONNECT asks for an expiry: the factory
(:func:`~pytest_iotperf.mqtt_client.make_client`) turns clean session false
into clean start false plus ``SESSION_EXPIRY_S``, so the session survives a
drop the same way; closing (clean start, no expiry) ends it at once.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from paho.mqtt import client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from pytest_iotperf.connection import Connection
from pytest_iotperf.lean_mqtt import LeanClient
from pytest_iotperf.mqtt_client import ClientIdentity, connect, make_client

__all__ = ["Backoff", "PersistentSession", "close_session", "subscription_qos"]

_log = logging.getLogger(__name__)

#: The first reconnect attempt comes after about this long (jittered ±50 %).
RECONNECT_FIRST_S: Final = 0.1
#: The wait between attempts doubles up to this.
RECONNECT_CAP_S: Final = 2.0
#: How long closing the session at the end may take (connect, CONNACK, DISCONNECT).
CLOSE_TIMEOUT_S: Final = 5.0

#: ``on_online(client, fresh)``: called on paho's thread after each accepted CONNACK.
OnOnline = Callable[[mqtt.Client, bool], None]


def subscription_qos(qos: int) -> int:
    """The QoS a reader subscribes with: at least 1, so that its persistent session is queued for.

    A message is delivered at the lower of its publish QoS and the subscription's,
    so what the readers see is unchanged: QoS 0 telemetry still arrives at QoS 0
    (and is not queued while the reader is away), QoS 1 and 2 at their own.
    """
    return max(qos, 1)


class Backoff:
    """Jittered exponential waits: ``first_s`` doubling up to ``cap_s``, each drawn from ±50 % of that.

    The jitter keeps readers that lost the same broker from retrying in step.
    """

    def __init__(
        self,
        first_s: float = RECONNECT_FIRST_S,
        cap_s: float = RECONNECT_CAP_S,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.first_s = first_s
        self.cap_s = cap_s
        self._uniform = uniform
        self._attempt = 0

    def next_delay(self) -> float:
        """The wait before the next attempt (and count it)."""
        base = min(self.cap_s, self.first_s * 2.0 ** min(self._attempt, 30))
        self._attempt += 1
        return min(self.cap_s, base * self._uniform(0.5, 1.5))

    def reset(self) -> None:
        """Connected again: the next outage starts from ``first_s``."""
        self._attempt = 0


class PersistentSession:
    """Connects ``client`` (made with ``clean_session=False``), brings it back after a drop, ends its session.

    It owns the client's ``on_connect``, ``on_connect_fail`` and ``on_disconnect``.
    The owner hears of each accepted CONNACK through ``on_online(client, fresh)``,
    on paho's thread: ``fresh`` means the broker holds no subscription of ours
    (the first connection, or the broker did not keep the session: session
    present false), so subscribe.  A refused first CONNACK is ``refused``;
    ``answered`` is set once the first CONNACK came, accepted or not.
    Counters and ``offline_since`` are written on paho's thread only.
    """

    def __init__(
        self,
        client: LeanClient,
        connection: Connection,
        identity: ClientIdentity,
        on_online: OnOnline,
        *,
        backoff: Backoff | None = None,
    ) -> None:
        self.client = client
        self.connection = connection
        self.identity = identity
        self.disconnects = 0  # unexpected ones, after having been connected
        self.reconnects = 0  # CONNACKs accepted after a disconnect
        self.failed_attempts = 0  # reconnect attempts that did not connect (since the last CONNACK)
        self.refused: str | None = None
        self.problem: str | None = None  # why the latest connection ended or attempt failed
        self.offline_since: float | None = None  # time.time() of the latest disconnect, None while connected
        self.online = threading.Event()
        self.answered = threading.Event()
        self._on_online = on_online
        self._backoff = backoff or Backoff()
        self._ever_online = False
        self._stopping = False
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect

    def start(self) -> None:
        """Open the connection and start paho's thread; the CONNACK arrives on it (``answered``).

        Raises:
            OSError: the connection could not be opened.
        """
        self._set_next_wait()
        connect(self.client, self.connection)
        self.client.loop_start()

    def stop(self) -> None:
        """Disconnect and stop paho's thread: no callback runs and no reconnect happens after this returns."""
        self._stopping = True
        self.client.disconnect()
        self.client.loop_stop()

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> str | None:
        """End the session on the broker, after :meth:`stop`; why it could not, or None.

        Nothing to end when no connection was ever accepted.
        """
        if not self._ever_online:
            return None
        problem = close_session(self.connection, self.identity, timeout_s)
        if problem is None:
            return None
        return (
            f"the persistent session {self.identity.client_id!r} may be left on the broker at "
            f"{self.connection.address}, queueing QoS 1 messages for it: {problem}"
        )

    def offline_problem(self) -> str | None:
        """Why the reader is offline now and since when, or None while it is connected."""
        since = self.offline_since
        if since is None or self.online.is_set():
            return None
        attempts = f"; {self.failed_attempts} reconnect attempt(s) failed" if self.failed_attempts else ""
        return (
            f"offline for the last {time.time() - since:.1f}s, not reconnected to "
            f"{self.connection.address} ({self.problem or 'connection lost'}{attempts})"
        )

    # -- paho callbacks (network thread) -------------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            # paho closes the connection and calls on_disconnect next, which sets the wait.
            self.problem = f"connection refused: {reason}"
            if not self._ever_online:
                self.refused = self.problem
                self.answered.set()
            return
        fresh = not (self._ever_online and flags.session_present)
        if self._ever_online:
            self.reconnects += 1
            _log.warning(
                "%s: reconnected to %s after %.2fs (%s)",
                self.identity.client_id,
                self.connection.address,
                time.time() - (self.offline_since or time.time()),
                "subscribing again: the broker lost the session" if fresh else "the broker kept the session",
            )
        self._ever_online = True
        self._backoff.reset()
        self.failed_attempts = 0
        self.offline_since = None
        self.online.set()
        self._on_online(client, fresh)
        self.answered.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho does not say why (refused, unreachable, TLS): the attempts are counted.
        self.failed_attempts += 1
        self._set_next_wait()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        was_online = self.online.is_set()
        self.online.clear()
        if self._stopping:
            return
        if not was_online:  # an attempt that opened a connection but got no accepted CONNACK
            self.failed_attempts += 1
        else:
            self.disconnects += 1
            self.offline_since = time.time()
            # The lean client knows the socket's error; paho's reason only says "Unspecified error".
            self.problem = f"connection lost: {getattr(client, 'lost_reason', None) or reason}"
            _log.warning("%s: %s; reconnecting", self.identity.client_id, self.problem)
        self._set_next_wait()

    def _set_next_wait(self) -> None:
        # paho's loop waits its "reconnect delay" before each attempt; setting both bounds to the
        # same value makes that one wait ours.  paho types them int but only adds and compares them.
        delay = self._backoff.next_delay()
        self.client.reconnect_delay_set(delay, delay)  # type: ignore[arg-type]


def close_session(connection: Connection, identity: ClientIdentity, timeout_s: float = CLOSE_TIMEOUT_S) -> str | None:
    """Connect as ``identity`` with clean session true and disconnect: the broker drops its session for that id.

    Returns why it could not, or None.  The client that held the session must be
    disconnected first (a second connection with its id would take it over).
    """
    client = make_client(connection, identity, clean_session=True)
    client.connect_timeout = max(min(timeout_s, 5.0), 0.1)
    answers: list[Any] = []
    client.on_connect = lambda c, userdata, flags, reason, props: answers.append(reason)
    try:
        connect(client, connection)
    except (OSError, ValueError) as exc:
        return f"cannot connect: {exc}"
    deadline = time.monotonic() + timeout_s
    while not answers:
        if time.monotonic() >= deadline:
            client.disconnect()
            return f"no CONNACK within {timeout_s:g}s"
        rc = client.loop(timeout=min(0.1, max(deadline - time.monotonic(), 0.001)))
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and not answers:
            return f"connection lost before the CONNACK ({mqtt.error_string(rc)})"
    if answers[0].is_failure:
        client.disconnect()
        return f"connection refused: {answers[0]}"
    # Without a network thread paho writes the DISCONNECT at once and closes the socket.
    client.disconnect()
    return None
