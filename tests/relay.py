"""A small MQTT relay that stands in for a system under test in integration tests.

It subscribes to an input filter (``in/+/telemetry``), and republishes every
message to an output topic (``out/<device_id>/telemetry``) a fixed delay after
it received it.  Messages whose ``(device_id, seq)`` satisfy a ``drop``
predicate are never forwarded.  It keeps an exact record of what it saw,
dropped and forwarded, so a test can compare the plugin's figures with ground
truth that does not come from the plugin.

Independent of the code under test on purpose: payloads are read with
``json`` directly (``run_id``, ``device_id``, ``seq``), nothing is imported from
``pytest_iotperf``.

Threads: paho's network loop (``loop_start``) receives, and one scheduler
thread holds a heap of messages ordered by due time and publishes each when it
is due (``Condition.wait`` with the time left until the earliest one), so the
added delay does not depend on how many messages are waiting.  ``stop()``
disconnects and joins both.

    with MqttRelay("127.0.0.1", port, input_filter="in/+/telemetry",
                   output_template="out/{device_id}/telemetry", delay_s=0.05,
                   drop=lambda device_id, seq: seq % 10 == 3) as relay:
        ...
    relay.stats().dropped
"""

from __future__ import annotations

import heapq
import itertools
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

Pair = tuple[str, int]
DropPredicate = Callable[[str, int], bool]


def never(device_id: str, seq: int) -> bool:
    """The default drop predicate: forward everything."""
    return False


@dataclass(frozen=True)
class RelayStats:
    """A consistent snapshot of what the relay did (taken under its lock)."""

    arrivals: int  # messages received on the input filter, of any kind
    seen: frozenset[Pair]  # distinct (device_id, seq) of the run received
    dropped: frozenset[Pair]  # distinct pairs deliberately not forwarded
    forwarded: frozenset[Pair]  # distinct pairs whose publish was handed to the client
    publishes: int  # publish calls made (a duplicate input is forwarded again)
    acked: int  # publishes the client reported complete (PUBACK for QoS 1)
    duplicates: int  # arrivals of a pair already seen
    malformed: int  # payloads that are not JSON telemetry with device_id and seq
    other_runs: int  # telemetry of another run_id (ignored)
    pending: int  # scheduled but not yet published
    discarded: int  # still pending when the relay stopped
    added_delay_min_s: float  # smallest actual receive -> publish time of a forwarded message
    added_delay_max_s: float  # largest
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


class MqttRelay:
    """Input filter -> fixed delay -> output topic, dropping a deterministic set of messages."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        input_filter: str,
        output_template: str,
        delay_s: float,
        drop: DropPredicate = never,
        run_id: str | None = None,
        qos: int = 1,
        client_id: str | None = None,
    ) -> None:
        """Configure, without connecting.

        Args:
            input_filter: MQTT filter the relay subscribes to.
            output_template: output topic; ``{device_id}`` is filled from the payload.
            delay_s: added delay, measured from the moment a message was received.
            drop: ``drop(device_id, seq)`` true means the message is not forwarded.
            run_id: when set, telemetry of other runs is counted and ignored.
            qos: QoS of the subscription and of the republished messages.
        """
        if delay_s < 0:
            raise ValueError(f"delay_s must be >= 0, got {delay_s!r}")
        self.host = host
        self.port = port
        self.input_filter = input_filter
        self.output_template = output_template
        self.delay_s = delay_s
        self.drop = drop
        self.run_id = run_id
        self.qos = qos
        self.client_id = client_id or f"test-relay-{uuid.uuid4().hex[:8]}"
        self.ready = threading.Event()  # set on a successful SUBACK

        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, str, bytes, float]] = []
        self._order = itertools.count()  # FIFO among equal due times
        self._stopping = False
        self._in_progress = 0
        self._scheduler: threading.Thread | None = None
        self._client: mqtt.Client | None = None
        self._started = False

        self._arrivals = 0
        self._seen: set[Pair] = set()
        self._dropped: set[Pair] = set()
        self._forwarded: set[Pair] = set()
        self._publishes = 0
        self._acked = 0
        self._duplicates = 0
        self._malformed = 0
        self._other_runs = 0
        self._discarded = 0
        self._added_min = float("inf")
        self._added_max = float("-inf")
        self._errors: list[str] = []

    # -- lifecycle ----------------------------------------------------------------

    def start(self, timeout_s: float = 10.0) -> MqttRelay:
        """Connect, subscribe, start the scheduler; returns once the SUBACK arrived."""
        if self._started:
            raise RuntimeError("the relay is already started")
        self._started = True
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        client.max_inflight_messages_set(0)  # unlimited: never hold a due message back
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_disconnect = self._on_disconnect
        self._client = client
        self._scheduler = threading.Thread(target=self._schedule_loop, name=f"{self.client_id}-scheduler", daemon=True)
        self._scheduler.start()
        try:
            client.connect(self.host, self.port, keepalive=30)
            client.loop_start()
            if not self.ready.wait(timeout_s):
                raise TimeoutError(
                    f"relay got no SUBACK for {self.input_filter!r} within {timeout_s:g}s; errors: {self._errors}"
                )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop scheduling (pending messages are discarded), disconnect, join every thread. Idempotent."""
        with self._cond:
            self._stopping = True
            self._discarded += len(self._heap)
            self._heap.clear()
            self._cond.notify_all()
        if self._scheduler is not None:
            self._scheduler.join()
        client, self._client = self._client, None
        if client is not None:
            try:
                client.disconnect()
            finally:
                client.loop_stop()
        self.ready.clear()

    def __enter__(self) -> MqttRelay:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def alive_threads(self) -> list[threading.Thread]:
        """Threads of this relay still running (empty after ``stop()``)."""
        paho_name = f"paho-mqtt-client-{self.client_id}"
        return [t for t in threading.enumerate() if t.is_alive() and (t is self._scheduler or t.name == paho_name)]

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until nothing is scheduled and every publish was completed by the client."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._heap or self._in_progress or self._acked < self._publishes:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def stats(self) -> RelayStats:
        with self._cond:
            return RelayStats(
                arrivals=self._arrivals,
                seen=frozenset(self._seen),
                dropped=frozenset(self._dropped),
                forwarded=frozenset(self._forwarded),
                publishes=self._publishes,
                acked=self._acked,
                duplicates=self._duplicates,
                malformed=self._malformed,
                other_runs=self._other_runs,
                pending=len(self._heap) + self._in_progress,
                discarded=self._discarded,
                added_delay_min_s=self._added_min,
                added_delay_max_s=self._added_max,
                errors=tuple(self._errors),
            )

    # -- paho callbacks (network loop thread) ---------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._error(f"relay connection refused: {reason}")
            return
        # Without TCP_NODELAY, Nagle holds a republished message back until the
        # broker acknowledges the PUBACK written just before it, i.e. until the
        # next incoming message: ~10 ms at 100 msg/s, on top of the delay asked for.
        sock = client.socket()
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe(self.input_filter, qos=self.qos)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        if any(r.is_failure for r in reasons):
            self._error(f"relay subscription to {self.input_filter!r} refused: {reasons[0]}")
            return
        self.ready.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure and not self._stopping:
            self._error(f"relay disconnected: {reason}")

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._cond:
            self._acked += 1
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        received_at = time.monotonic()  # the delay is measured from here
        payload = bytes(message.payload)
        pair = _read_pair(payload)
        with self._cond:
            self._arrivals += 1
            if pair is None:
                self._malformed += 1
                return
            run_id, device_id, seq = pair
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
            topic = self.output_template.format(device_id=device_id)
            order = next(self._order)
            heapq.heappush(self._heap, (received_at + self.delay_s, order, topic, payload, received_at))
            if self._heap[0][1] == order:  # the new message is the earliest: wake the scheduler
                self._cond.notify_all()

    # -- scheduler thread ----------------------------------------------------------------

    def _schedule_loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return
                    if self._heap:
                        left = self._heap[0][0] - time.monotonic()
                        if left <= 0:
                            break
                        self._cond.wait(left)
                    else:
                        self._cond.wait()
                _due, _order, topic, payload, received_at = heapq.heappop(self._heap)
                self._in_progress += 1
                client = self._client
            # Publish outside our lock: paho takes its own locks, and its loop
            # thread takes ours in the callbacks.
            ok = False
            try:
                if client is not None:
                    info = client.publish(topic, payload, qos=self.qos)
                    ok = info.rc == mqtt.MQTT_ERR_SUCCESS
                    if not ok:
                        self._error(f"relay publish to {topic!r} failed: {mqtt.error_string(info.rc)}")
            finally:
                published_at = time.monotonic()
                with self._cond:
                    self._in_progress -= 1
                    if ok:
                        self._publishes += 1
                        pair = _read_pair(payload)
                        if pair is not None:
                            self._forwarded.add((pair[1], pair[2]))
                        added = published_at - received_at
                        self._added_min = min(self._added_min, added)
                        self._added_max = max(self._added_max, added)
                    self._cond.notify_all()

    def _error(self, message: str) -> None:
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
