"""The MQTT side shared by the test relays: subscribe, hold each message a fixed time, hand it on.

A relay built on ``HoldingRelay`` subscribes to an input filter, reads every
payload with ``json`` (``run_id``, ``device_id``, ``seq``), counts what it saw
(arrivals, duplicates, malformed payloads, telemetry of other runs), leaves out
the ``(device_id, seq)`` a ``drop`` predicate names, and holds every other
message ``hold_s`` from the moment MQTT delivered it.  What happens to a
message once it is due is the subclass's: ``_deliver`` sends one batch of them
(``relay.MqttRelay`` republishes each to MQTT, ``eh_relay.EventHubRelay`` sends
one Event Hubs batch per device), and the base records which pairs were
forwarded and how long each was actually held.

Independent of the code under test on purpose: nothing is imported from
``pytest_iotperf``.

Threads: paho's network loop (``loop_start``) receives and puts each message
on a heap ordered by due time; one forwarder thread waits for the earliest due
time (``Condition.wait`` with the time left), takes every message due by then
and delivers them outside the lock, so the hold does not grow with the number
waiting.  ``stop()`` discards what is still held, joins the forwarder and
disconnects.
"""

from __future__ import annotations

import heapq
import itertools
import json
import re
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, NamedTuple, Self, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

Pair = tuple[str, int]
DropPredicate = Callable[[str, int], bool]


def never(device_id: str, seq: int) -> bool:
    """The default drop predicate: forward everything."""
    return False


_TRAILING_NUMBER = re.compile(r"(\d+)$")


def drop_by_rules(rules: dict[int, tuple[int, int]]) -> DropPredicate:
    """Drop ``seq % modulus == residue`` for devices whose id ends with a number in ``rules``.

    ``rules`` maps that number to ``(modulus, residue)``; other devices lose nothing.
    """

    def drop(device_id: str, seq: int) -> bool:
        match = _TRAILING_NUMBER.search(device_id)
        rule = rules.get(int(match.group(1))) if match else None
        return rule is not None and seq % rule[0] == rule[1]

    return drop


class Held(NamedTuple):
    """A message waiting for its due time; heap order is (due, order), ``order`` keeps equal due times FIFO."""

    due: float
    order: int
    received_at: float  # time.monotonic() when MQTT delivered it: the hold is measured from here
    device_id: str
    seq: int
    payload: bytes  # exactly as MQTT delivered it
    properties: Any = None  # MQTT 5: the message's paho Properties as delivered (user properties, content type)


@dataclass(frozen=True, kw_only=True)
class HoldingStats:
    """What every relay records; each relay's ``RelayStats`` adds its own figures (taken under its lock)."""

    arrivals: int  # messages received on the input filter, of any kind
    seen: frozenset[Pair]  # distinct (device_id, seq) of the run received
    dropped: frozenset[Pair]  # distinct pairs deliberately not forwarded
    forwarded: frozenset[Pair]  # distinct pairs whose delivery succeeded
    duplicates: int  # arrivals of a pair already seen
    malformed: int  # payloads that are not JSON telemetry with device_id and seq
    other_runs: int  # telemetry of another run_id (ignored)
    pending: int  # held or being delivered
    discarded: int  # still held when the relay stopped, or arrived while it was stopping
    errors: tuple[str, ...] = field(default_factory=tuple)

    def dropped_by_device(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for device_id, _seq in self.dropped:
            counts[device_id] = counts.get(device_id, 0) + 1
        return counts

    def seen_by_device(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for device_id, seq in self.seen:
            out.setdefault(device_id, []).append(seq)
        return {device_id: sorted(seqs) for device_id, seqs in out.items()}


StatsT = TypeVar("StatsT", bound=HoldingStats)


class HoldingRelay(ABC):
    """MQTT input filter -> fixed hold -> ``_deliver``, dropping a deterministic set of messages.

    Subclasses implement ``_deliver`` and ``stats``, and may override the other
    hooks: ``_open``/``_close`` (the output's lifetime), ``_batches`` (how due
    messages are grouped), ``_settled`` (for outputs that complete
    asynchronously), ``_on_publish`` and ``_redact``.
    """

    #: The forwarder thread is named ``<client_id>-<this>``.
    thread_role: ClassVar[str] = "forwarder"
    #: How long ``stop()`` waits for a delivery in progress (None: as long as it takes).
    join_timeout_s: ClassVar[float | None] = None
    #: The MQTT version of the relay's client (``mqtt.MQTTv5`` to read and write user properties).
    mqtt_protocol: ClassVar[MQTTProtocolVersion] = MQTTProtocolVersion.MQTTv311

    def __init__(
        self,
        host: str,
        port: int,
        *,
        input_filter: str,
        hold_s: float,
        drop: DropPredicate,
        run_id: str | None,
        qos: int,
        client_id: str,
    ) -> None:
        """Configure, without connecting.

        Args:
            input_filter: MQTT filter the relay subscribes to.
            hold_s: how long each message is held, from the moment MQTT delivered it.
            drop: ``drop(device_id, seq)`` true means the message is not forwarded.
            run_id: when set, telemetry of other runs is counted and ignored.
            qos: QoS of the subscription.
        """
        self.host = host
        self.port = port
        self.input_filter = input_filter
        self.hold_s = hold_s
        self.drop = drop
        self.run_id = run_id
        self.qos = qos
        self.client_id = client_id
        self.subscribed = threading.Event()  # set on a successful SUBACK

        self._cond = threading.Condition()  # an RLock: stats() holds it around _snapshot()
        self._heap: list[Held] = []
        self._order = itertools.count()  # FIFO among equal due times
        self._stopping = False
        self._in_progress = 0
        self._thread: threading.Thread | None = None
        self._client: mqtt.Client | None = None
        self._started = False

        self._arrivals = 0
        self._seen: set[Pair] = set()
        self._dropped: set[Pair] = set()
        self._forwarded: set[Pair] = set()
        self._deliveries = 0  # _deliver calls that succeeded
        self._duplicates = 0
        self._malformed = 0
        self._other_runs = 0
        self._discarded = 0
        self._hold_min = float("inf")  # actual receive -> delivery time of a forwarded message
        self._hold_max = float("-inf")
        self._errors: list[str] = []

    # -- what a subclass provides -------------------------------------------------------

    @abstractmethod
    def _deliver(self, batch: list[Held]) -> float:
        """Hand one batch of due messages on (forwarder thread, outside the lock).

        Returns the ``time.monotonic()`` the hold is measured to; raises when the
        batch was not accepted (the base records the error, not the pairs).
        """

    @abstractmethod
    def stats(self) -> HoldingStats:
        """A consistent snapshot: ``with self._cond: return self._snapshot(RelayStats, ...)``."""

    def _open(self, timeout_s: float) -> None:
        """Open the output before anything is received (``start()``); nothing to open by default."""
        return None

    def _close(self) -> None:
        """Close the output once the forwarder has stopped (``stop()``); nothing to close by default."""
        return None

    def _batches(self, due: list[Held]) -> list[list[Held]]:
        """How the messages due at once are delivered: one ``_deliver`` call each, in due order."""
        return [[item] for item in due]

    def _settled(self) -> bool:
        """Whether every accepted delivery is also complete (under the lock; for ``wait_idle``)."""
        return True

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        """paho's on_publish (network loop thread): for a relay that publishes through its MQTT client."""
        return None

    def _redact(self, message: str) -> str:
        """An error message as it may be recorded (a subclass takes its secrets out)."""
        return message

    def _identify(self, message: mqtt.MQTTMessage) -> tuple[str, str, int] | None:
        """``(run_id, device_id, seq)`` of an incoming message, None when it is not telemetry (flat JSON by default)."""
        return _read_pair(bytes(message.payload))

    # -- lifecycle ----------------------------------------------------------------

    def start(self, timeout_s: float = 10.0) -> Self:
        """Open the output, start the forwarder, connect, subscribe; returns once the SUBACK arrived."""
        if self._started:
            raise RuntimeError("the relay is already started")
        self._started = True
        try:
            self._open(timeout_s)
            self._thread = threading.Thread(
                target=self._forward_loop, name=f"{self.client_id}-{self.thread_role}", daemon=True
            )
            self._thread.start()
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=self.client_id,
                protocol=self.mqtt_protocol,
                # MQTT 5 has clean start instead (paho refuses clean_session with it).
                clean_session=None if self.mqtt_protocol == MQTTProtocolVersion.MQTTv5 else True,
            )
            client.max_inflight_messages_set(0)  # unlimited: never hold a due message back
            client.max_queued_messages_set(0)
            client.on_connect = self._on_connect
            client.on_subscribe = self._on_subscribe
            client.on_message = self._on_message
            client.on_publish = self._on_publish
            client.on_disconnect = self._on_disconnect
            self._client = client
            client.connect(self.host, self.port, keepalive=30)
            client.loop_start()
            if not self.subscribed.wait(timeout_s):
                raise TimeoutError(
                    f"relay got no SUBACK for {self.input_filter!r} within {timeout_s:g}s; errors: {self._errors}"
                )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Discard what is still held, join the forwarder, disconnect, close the output. Idempotent."""
        with self._cond:
            self._stopping = True
            self._discarded += len(self._heap)
            self._heap.clear()
            self._cond.notify_all()
        # The forwarder first: a delivery in progress still has its client.
        if self._thread is not None:
            self._thread.join(self.join_timeout_s)
        client, self._client = self._client, None
        if client is not None:
            try:
                client.disconnect()
            finally:
                client.loop_stop()
        self._close()
        self.subscribed.clear()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def alive_threads(self) -> list[threading.Thread]:
        """Threads of this relay still running (empty after ``stop()``; an SDK's own are not counted)."""
        paho_name = f"paho-mqtt-client-{self.client_id}"
        return [t for t in threading.enumerate() if t.is_alive() and (t is self._thread or t.name == paho_name)]

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until nothing is held, no delivery is in progress and every one is complete."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._heap or self._in_progress or not self._settled():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def _snapshot(self, stats_type: type[StatsT], **figures: Any) -> StatsT:
        """``stats_type`` with the common figures and a subclass's own ``figures`` (call it holding the lock)."""
        with self._cond:
            return stats_type(
                arrivals=self._arrivals,
                seen=frozenset(self._seen),
                dropped=frozenset(self._dropped),
                forwarded=frozenset(self._forwarded),
                duplicates=self._duplicates,
                malformed=self._malformed,
                other_runs=self._other_runs,
                pending=len(self._heap) + self._in_progress,
                discarded=self._discarded,
                errors=tuple(self._errors),
                **figures,
            )

    # -- paho callbacks (network loop thread) ---------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._error(f"relay connection refused: {reason}")
            return
        # Without TCP_NODELAY, Nagle holds a small write (a PUBACK, a republished
        # message) back until the broker acknowledges the one written just before
        # it, i.e. until the next incoming message: ~10 ms at 100 msg/s, on top of
        # the hold asked for.
        sock = client.socket()
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe(self.input_filter, qos=self.qos)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        if any(r.is_failure for r in reasons):
            self._error(f"relay subscription to {self.input_filter!r} refused: {reasons[0]}")
            return
        self.subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure and not self._stopping:
            self._error(f"relay disconnected: {reason}")

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        received_at = time.monotonic()  # the hold is measured from here
        payload = bytes(message.payload)
        parsed = self._identify(message)
        with self._cond:
            self._arrivals += 1
            if parsed is None:
                self._malformed += 1
                return
            run_id, device_id, seq = parsed
            if self.run_id is not None and run_id != self.run_id:
                self._other_runs += 1
                return
            key = (device_id, seq)
            if key in self._seen:
                self._duplicates += 1
            self._seen.add(key)
            if self.drop(device_id, seq):
                self._dropped.add(key)
                return
            if self._stopping:
                self._discarded += 1
                return
            order = next(self._order)
            held = Held(received_at + self.hold_s, order, received_at, device_id, seq, payload, message.properties)
            heapq.heappush(self._heap, held)
            if self._heap[0].order == order:  # the new message is the earliest: wake the forwarder
                self._cond.notify_all()

    # -- forwarder thread ----------------------------------------------------------------

    def _forward_loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return
                    if self._heap:
                        left = self._heap[0].due - time.monotonic()
                        if left <= 0:
                            break
                        self._cond.wait(left)
                    else:
                        self._cond.wait()
                now = time.monotonic()
                due: list[Held] = []
                while self._heap and self._heap[0].due <= now:
                    due.append(heapq.heappop(self._heap))
                self._in_progress += len(due)
            # Delivered outside our lock: the output's client takes its own locks, and
            # paho's loop thread takes ours for every message that arrives meanwhile.
            for batch in self._batches(due):
                self._deliver_batch(batch)

    def _deliver_batch(self, batch: list[Held]) -> None:
        ok, delivered_at = False, 0.0
        try:
            delivered_at = self._deliver(batch)
            ok = True
        except Exception as exc:  # recorded: the test shows it instead of a wrong count
            self._error(
                f"delivery of {len(batch)} message(s) for {batch[0].device_id} failed: {type(exc).__name__}: {exc}"
            )
        finally:
            with self._cond:
                self._in_progress -= len(batch)
                if ok:
                    self._deliveries += 1
                    for item in batch:
                        self._forwarded.add((item.device_id, item.seq))
                        hold = delivered_at - item.received_at
                        self._hold_min = min(self._hold_min, hold)
                        self._hold_max = max(self._hold_max, hold)
                self._cond.notify_all()

    def _error(self, message: str) -> None:
        message = self._redact(message)
        with self._cond:
            if len(self._errors) < 20:
                self._errors.append(message)


def _read_pair(payload: bytes) -> tuple[str, str, int] | None:
    """``(run_id, device_id, seq)`` of a telemetry payload, or None if it is not one."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    run_id, device_id, seq = doc.get("run_id"), doc.get("device_id"), doc.get("seq")
    if not isinstance(device_id, str) or type(seq) is not int:
        return None
    return (run_id if isinstance(run_id, str) else "", device_id, seq)
