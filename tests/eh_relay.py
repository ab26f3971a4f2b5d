"""A stand-in IoT platform for the Event Hubs path: MQTT in, a fixed hold, Event Hubs out, a known set dropped.

It subscribes to the devices' topic filter on the broker (paho 2.x) and
forwards every telemetry message unchanged to the hub with
``EventHubProducerClient`` (partition key = the device id, the service hashes
it), ``hold_s`` after it received it from MQTT.  Messages whose
``(device_id, seq)`` satisfy ``drop`` are never forwarded.  It keeps an exact
record of what it saw, dropped and forwarded, so a test compares the plugin's
figures with ground truth that does not come from the plugin.

Independent of the code under test on purpose: payloads are read with
``json`` (``run_id``, ``device_id``, ``seq``) and nothing is imported from
``pytest_iotperf``.

Threads: paho's network loop receives and puts each message on a heap ordered
by due time; one forwarder thread waits for the earliest due time
(``Condition.wait``), takes every message due by then and sends them, one
keyed batch per device, so the hold does not grow with the number waiting.
``start()`` warms the producer's links first (the SDK opens each lazily,
~0.45 s apiece): one ``{"iotperf":"warmup"}`` event per partition, and one
keyed, for the link keyed sends use; the sinks skip that exact payload.

    with EventHubRelay("127.0.0.1", port, connection_string, input_filter="devices/+/telemetry",
                       hold_s=0.2, drop=lambda device_id, seq: seq % 10 == 3, run_id=run_id) as relay:
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from azure.eventhub import EventData, EventHubProducerClient
from paho.mqtt.enums import CallbackAPIVersion

Pair = tuple[str, int]
DropPredicate = Callable[[str, int], bool]

#: The body the plugin's sinks skip without counting it (written out here, not imported).
WARMUP_BODY = b'{"iotperf":"warmup"}'
_SEND_TIMEOUT_S = 10.0


def never(device_id: str, seq: int) -> bool:
    """The default drop predicate: forward everything."""
    return False


@dataclass(frozen=True)
class RelayStats:
    """A consistent snapshot of what the relay did (taken under its lock)."""

    arrivals: int  # MQTT messages received on the input filter, of any kind
    seen: frozenset[Pair]  # distinct (device_id, seq) of the run received
    dropped: frozenset[Pair]  # distinct pairs deliberately not forwarded
    forwarded: frozenset[Pair]  # distinct pairs the hub accepted (send_batch returned)
    sends: int  # send_batch calls that succeeded
    duplicates: int  # arrivals of a pair already seen
    malformed: int  # payloads that are not JSON telemetry with device_id and seq
    other_runs: int  # telemetry of another run_id (ignored)
    pending: int  # held, not yet sent
    discarded: int  # still held when the relay stopped
    hold_min_s: float  # smallest MQTT receive -> send start of a forwarded message
    hold_max_s: float  # largest
    warmups: int  # warm-up events sent before the run
    errors: tuple[str, ...] = field(default_factory=tuple)


class EventHubRelay:
    """MQTT input filter -> fixed hold -> Event Hubs, dropping a deterministic set of messages."""

    def __init__(
        self,
        host: str,
        port: int,
        connection_string: str,
        *,
        input_filter: str,
        hold_s: float,
        drop: DropPredicate = never,
        run_id: str | None = None,
        qos: int = 1,
        client_id: str | None = None,
    ) -> None:
        """Configure, without connecting.

        Args:
            connection_string: of the hub (a secret: kept out of every message).
            input_filter: MQTT filter the relay subscribes to.
            hold_s: how long each message is held, from the moment MQTT delivered it.
            drop: ``drop(device_id, seq)`` true means the message is not forwarded.
            run_id: when set, telemetry of other runs is counted and ignored.
            qos: QoS of the subscription.
        """
        if hold_s < 0:
            raise ValueError(f"hold_s must be >= 0, got {hold_s!r}")
        self.host = host
        self.port = port
        self.input_filter = input_filter
        self.hold_s = hold_s
        self.drop = drop
        self.run_id = run_id
        self.qos = qos
        self.client_id = client_id or f"test-eh-relay-{uuid.uuid4().hex[:8]}"
        self.subscribed = threading.Event()
        self._connection_string = connection_string

        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, str, int, bytes]] = []  # (due, order, device_id, seq, payload)
        self._order = itertools.count()
        self._stopping = False
        self._in_progress = 0
        self._forwarder: threading.Thread | None = None
        self._client: mqtt.Client | None = None
        self._producer: EventHubProducerClient | None = None
        self._started = False

        self._arrivals = 0
        self._seen: set[Pair] = set()
        self._dropped: set[Pair] = set()
        self._forwarded: set[Pair] = set()
        self._sends = 0
        self._duplicates = 0
        self._malformed = 0
        self._other_runs = 0
        self._discarded = 0
        self._hold_min = float("inf")
        self._hold_max = float("-inf")
        self._warmups = 0
        self._errors: list[str] = []

    # -- lifecycle ----------------------------------------------------------------

    def start(self, timeout_s: float = 15.0) -> EventHubRelay:
        """Open and warm the producer, start the forwarder, subscribe; returns once the SUBACK arrived."""
        if self._started:
            raise RuntimeError("the relay is already started")
        self._started = True
        try:
            self._producer = EventHubProducerClient.from_connection_string(
                self._connection_string, retry_total=1, auth_timeout=5
            )
            self._warm(self._producer, timeout_s)
            self._forwarder = threading.Thread(target=self._forward_loop, name=f"{self.client_id}-fwd", daemon=True)
            self._forwarder.start()
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv311, clean_session=True
            )
            client.max_inflight_messages_set(0)
            client.on_connect = self._on_connect
            client.on_subscribe = self._on_subscribe
            client.on_message = self._on_message
            client.on_disconnect = self._on_disconnect
            self._client = client
            client.connect(self.host, self.port, keepalive=30)
            client.loop_start()
            if not self.subscribed.wait(timeout_s):
                raise TimeoutError(f"no SUBACK for {self.input_filter!r} within {timeout_s:g}s; errors: {self._errors}")
        except BaseException:
            self.stop()
            raise
        return self

    def _warm(self, producer: EventHubProducerClient, timeout_s: float) -> None:
        """Open every link the run will use before it starts, in parallel: each partition's, and the keyed one."""
        partition_ids = [str(p) for p in producer.get_partition_ids()]

        def warm(partition_id: str | None) -> None:
            if partition_id is None:
                batch = producer.create_batch(partition_key="iotperf-warmup")
            else:
                batch = producer.create_batch(partition_id=partition_id)
            batch.add(EventData(WARMUP_BODY))
            producer.send_batch(batch, timeout=timeout_s)

        targets: list[str | None] = [*partition_ids, None]
        with ThreadPoolExecutor(max_workers=len(targets)) as pool:
            for future in [pool.submit(warm, target) for target in targets]:
                future.result(timeout=timeout_s)
        self._warmups = len(targets)

    def stop(self) -> None:
        """Discard what is still held, disconnect, join the forwarder, close the producer. Idempotent."""
        with self._cond:
            self._stopping = True
            self._discarded += len(self._heap)
            self._heap.clear()
            self._cond.notify_all()
        client, self._client = self._client, None
        if client is not None:
            try:
                client.disconnect()
            finally:
                client.loop_stop()
        forwarder, self._forwarder = self._forwarder, None
        if forwarder is not None:
            forwarder.join(_SEND_TIMEOUT_S + 5.0)
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.close()
        self.subscribed.clear()

    def __enter__(self) -> EventHubRelay:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def alive_threads(self) -> list[threading.Thread]:
        """Threads of this relay still running (empty after ``stop()``; the SDK's own are not counted)."""
        paho_name = f"paho-mqtt-client-{self.client_id}"
        return [
            t
            for t in threading.enumerate()
            if t.is_alive() and (t.name == paho_name or t.name == f"{self.client_id}-fwd")
        ]

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until nothing is held and no send is in progress."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._heap or self._in_progress:
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
                sends=self._sends,
                duplicates=self._duplicates,
                malformed=self._malformed,
                other_runs=self._other_runs,
                pending=len(self._heap) + self._in_progress,
                discarded=self._discarded,
                hold_min_s=self._hold_min,
                hold_max_s=self._hold_max,
                warmups=self._warmups,
                errors=tuple(self._errors),
            )

    # -- paho callbacks (network loop thread) ---------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._error(f"relay connection refused: {reason}")
            return
        sock = client.socket()
        if isinstance(sock, socket.socket):
            # Nagle would hold our PUBACKs back behind the broker's next write.
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
        parsed = _read_pair(payload)
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
            heapq.heappush(self._heap, (received_at + self.hold_s, order, device_id, seq, payload))
            if self._heap[0][1] == order:  # the new message is the earliest: wake the forwarder
                self._cond.notify_all()

    # -- forwarder thread ----------------------------------------------------------------

    def _forward_loop(self) -> None:
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
                now = time.monotonic()
                due: list[tuple[float, int, str, int, bytes]] = []
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap))
                self._in_progress += len(due)
                producer = self._producer
            by_device: dict[str, list[tuple[float, int, str, int, bytes]]] = {}
            for item in due:
                by_device.setdefault(item[2], []).append(item)
            # Sent outside our lock: paho's thread takes it for every message that arrives meanwhile.
            for device_id, items in by_device.items():
                self._send(producer, device_id, items)

    def _send(
        self,
        producer: EventHubProducerClient | None,
        device_id: str,
        items: list[tuple[float, int, str, int, bytes]],
    ) -> None:
        started = time.monotonic()
        ok = False
        try:
            if producer is not None:
                batch = producer.create_batch(partition_key=device_id)
                for item in items:
                    batch.add(EventData(item[4]))  # the body exactly as MQTT delivered it
                producer.send_batch(batch, timeout=_SEND_TIMEOUT_S)
                ok = True
        except Exception as exc:  # recorded: the test shows it instead of a wrong count
            self._error(f"send of {len(items)} event(s) for {device_id} failed: {type(exc).__name__}: {exc}")
        finally:
            with self._cond:
                self._in_progress -= len(items)
                if ok:
                    self._sends += 1
                    for due, _order, _device, seq, _payload in items:
                        self._forwarded.add((device_id, seq))
                        hold = started - (due - self.hold_s)
                        self._hold_min = min(self._hold_min, hold)
                        self._hold_max = max(self._hold_max, hold)
                self._cond.notify_all()

    def _error(self, message: str) -> None:
        for part in self._connection_string.split(";"):
            name, _, value = part.partition("=")
            if name.strip().lower() == "sharedaccesskey" and value:
                message = message.replace(value, "***")
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
