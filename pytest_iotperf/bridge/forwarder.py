"""The forwarding half of the bridge: a queue, one sender thread and one Event Hubs producer.

paho's network thread only appends ``(topic, payload)`` to a queue, so a slow
send never holds back MQTT acknowledgements.  The sender thread takes the
first waiting message, keeps collecting for at most ``linger_s`` (and takes
whatever else is already queued, up to ``max_flush_events``), groups the
messages and sends each group as batches, splitting a group when a batch is
full.  Under load the queue grows while a flush is sent, so the next flush
carries more events per group: batching adapts without tuning.

Two groupings, both giving every event its device id as partition key:

- ``key`` (default): one group per device, sent as
  ``create_batch(partition_key=device_id)``; the hub hashes the key.  Each
  batch is one send round trip (about 1 ms here), so with many devices the
  bridge sends about one event per round trip: ~1,000 events/s measured.
- ``partition``: the bridge hashes each key to its partition itself (the
  service's hash, as the SDK's buffered mode does), sets the key on each
  event, and sends one ``create_batch(partition_id=...)`` group per partition,
  whatever the number of devices.  The SDK opens a link per partition on its
  first send, about 0.45 s each (it polls the attach every 50 ms), one after
  the other: the first flush of a run stalls for that long.

Bodies are forwarded unchanged (``EventData(payload_bytes)``).  An MQTT 5
message's user properties become the event's application properties (so a
header carried in properties, ``--iot-header properties``, reaches the Event
Hubs sinks as IoT Hub would deliver it); they are decoded on the sender
thread, not on paho's.  The partition key comes from the topic, else the
header's ``device_id`` in those properties, else in the body
(``topics.DeviceKeys``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Final, Literal

from azure.eventhub import EventData, EventDataBatch, EventHubProducerClient

from pytest_iotperf.bridge.topics import KEY_SOURCES, DeviceKeys
from pytest_iotperf.embedded.eventhub.partition_key import partition_for_key
from pytest_iotperf.mqtt_wire import user_properties
from pytest_iotperf.secrets import Scrubber, describe_error
from pytest_iotperf.wire_reports import ForwarderCounts

_log = logging.getLogger(__name__)

Grouping = Literal["key", "partition"]

_MAX_FAILURE_REASONS: Final = 20
_OTHER_REASONS: Final = "other reasons"
_ABANDON_JOIN_S: Final = 1.0
# The message annotation the service (and the SDK) read the partition key from.
_PARTITION_KEY_ANNOTATION: Final = b"x-opt-partition-key"

# Queue items: a message (topic, payload, raw MQTT 5 properties or None), or None to ask the sender to flush and end.
_Item = tuple[str, bytes, bytes | None] | None
# Where a group goes: (batch partition key, batch partition id); (None, None) lets the hub choose.
_Route = tuple[str | None, str | None]
# A message of a group: (partition key to set on the event itself, body, application properties or None).
_Message = tuple[str | None, bytes, dict[str, str] | None]


class Forwarder:
    """Sends what MQTT delivered to Event Hubs, batched by device or by partition.

    ``submit`` is called from paho's network thread, the rest from the main
    thread.  Counters written by the sender thread are updated under a lock
    so that progress and the report read a consistent set.
    """

    def __init__(
        self,
        producer: EventHubProducerClient,
        keys: DeviceKeys,
        scrubber: Scrubber,
        *,
        grouping: Grouping = "key",
        linger_s: float = 0.005,
        max_flush_events: int = 5000,
        send_timeout_s: float = 10.0,
    ) -> None:
        self._producer = producer
        self._keys = keys
        self._scrub = scrubber
        self._grouping = grouping
        self._partition_ids: list[str] = []
        self._linger_s = linger_s
        self._max_flush_events = max_flush_events
        self._send_timeout_s = send_timeout_s
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._abandon = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="iotperf-bridge-sender", daemon=True)
        # Only paho's thread writes it: a plain int increment needs no lock under the GIL.
        self.received = 0
        self.forwarded = 0
        self.failed = 0
        self.batches = 0
        self.flushes = 0
        self.largest_flush = 0
        self.key_sources: dict[str, int] = dict.fromkeys(KEY_SOURCES, 0)
        self.failures: dict[str, int] = {}

    def start(self, partition_ids: list[str]) -> None:
        """Start the sender thread; ``partition_ids`` are the hub's (used by the ``partition`` grouping)."""
        if self._grouping == "partition" and not partition_ids:
            raise ValueError("grouping by partition needs the hub's partition ids")
        self._partition_ids = list(partition_ids)
        self._thread.start()

    def submit(self, topic: str, payload: bytes, properties: bytes | None = None) -> None:
        """Queue one message for forwarding (paho's network thread); ``properties``: its raw MQTT 5 properties."""
        self.received += 1
        self._queue.put((topic, payload, properties))

    def finish(self, timeout_s: float) -> str:
        """Send what is queued within ``timeout_s`` and end the sender.

        Call only once nothing more is submitted.  Returns ``"flushed"``, or
        ``"timeout"`` when the time ran out: what was not sent by then is
        abandoned and counted as ``unsent`` in the report.
        """
        self._queue.put(None)
        self._thread.join(max(timeout_s, 0.0))
        if not self._thread.is_alive():
            return "flushed"
        self._abandon.set()
        # A send in progress cannot be interrupted; do not wait for its full send timeout.
        self._thread.join(_ABANDON_JOIN_S)
        return "timeout"

    def snapshot(self) -> ForwarderCounts:
        """Counters for progress and the report; ``unsent`` is what was received but neither sent nor failed."""
        with self._lock:
            return {
                "received": self.received,
                "forwarded": self.forwarded,
                "failed": self.failed,
                "unsent": self.received - self.forwarded - self.failed,
                "grouping": self._grouping,
                "batches": self.batches,
                "flushes": self.flushes,
                "largest_flush": self.largest_flush,
                "partition_key_from": dict(self.key_sources),
                "failures": dict(self.failures),
            }

    # -- sender thread -------------------------------------------------------

    def _run(self) -> None:
        ending = False
        while not ending:
            item = self._queue.get()
            if item is None:
                return
            groups: dict[_Route, list[_Message]] = {}
            self._group(groups, item)
            count = 1
            deadline = time.monotonic() + self._linger_s
            while count < self._max_flush_events:
                remaining = deadline - time.monotonic()
                try:
                    # After the linger time, still take what is already queued (no waiting).
                    item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    ending = True
                    break
                self._group(groups, item)
                count += 1
            self._flush(groups, count)

    def _group(self, groups: dict[_Route, list[_Message]], item: tuple[str, bytes, bytes | None]) -> None:
        topic, payload, raw_properties = item
        properties = _application_properties(raw_properties) if raw_properties else None
        key, source = self._keys.key_for(topic, payload, properties)
        # Its keys are fixed, so snapshot() can copy this dict while it is updated here.
        self.key_sources[source] += 1
        route: _Route
        if key is None:
            route, event_key = (None, None), None
        elif self._grouping == "key":
            route, event_key = (key, None), None  # the batch carries the key
        else:
            partition = self._partition_ids[partition_for_key(key, len(self._partition_ids))]
            route, event_key = (None, partition), key
        groups.setdefault(route, []).append((event_key, payload, properties))

    def _flush(self, groups: dict[_Route, list[_Message]], count: int) -> None:
        with self._lock:
            self.flushes += 1
            self.largest_flush = max(self.largest_flush, count)
        for route, messages in groups.items():
            if self._abandon.is_set():
                return  # the rest stays unsent
            self._send_group(route, messages)

    def _send_group(self, route: _Route, messages: list[_Message]) -> None:
        settled = 0  # messages of this group already sent or failed
        try:
            batch, in_batch = self._new_batch(route), 0
            for event_key, body, properties in messages:
                if self._abandon.is_set():
                    return
                if not self._add(batch, event_key, body, properties):
                    if in_batch:
                        self._send(batch, in_batch)
                        settled += in_batch
                        batch, in_batch = self._new_batch(route), 0
                    if not self._add(batch, event_key, body, properties):
                        self._fail(1, ValueError(f"an event of {len(body)} bytes exceeds the largest batch"))
                        settled += 1
                        continue
                in_batch += 1
            if in_batch:
                self._send(batch, in_batch)
                settled += in_batch
        except Exception as exc:  # create_batch opens the link: what it raises fails the rest of the group
            self._fail(len(messages) - settled, exc)

    def _new_batch(self, route: _Route) -> EventDataBatch:
        key, partition = route
        if key is not None:
            return self._producer.create_batch(partition_key=key)
        if partition is not None:
            return self._producer.create_batch(partition_id=partition)
        return self._producer.create_batch()

    @staticmethod
    def _add(batch: EventDataBatch, event_key: str | None, body: bytes, properties: dict[str, str] | None) -> bool:
        event = EventData(body)
        if properties:
            # The event's application properties (built afresh: the SDK's type is dict[str | bytes, Any]).
            event.properties = {name: value for name, value in properties.items()}
        if event_key is not None:
            annotations = event.raw_amqp_message.annotations
            if annotations is not None:
                annotations[_PARTITION_KEY_ANNOTATION] = event_key
        try:
            batch.add(event)
        except ValueError:  # the batch is full (or the event alone is too large)
            return False
        return True

    def _send(self, batch: EventDataBatch, size: int) -> None:
        try:
            self._producer.send_batch(batch, timeout=self._send_timeout_s)
        except Exception as exc:  # every SDK failure is accounted, not raised: the bridge keeps forwarding
            self._fail(size, exc)
        else:
            with self._lock:
                self.forwarded += size
                self.batches += 1

    def _fail(self, count: int, exc: BaseException) -> None:
        if count <= 0:
            return
        reason = describe_error(exc, self._scrub)
        _log.warning("could not forward %d event(s): %s", count, reason)
        with self._lock:
            self.failed += count
            if reason not in self.failures and len(self.failures) >= _MAX_FAILURE_REASONS:
                reason = _OTHER_REASONS
            self.failures[reason] = self.failures.get(reason, 0) + count


def _application_properties(raw: bytes) -> dict[str, str] | None:
    """An MQTT 5 message's user properties, as the event's application properties; None when it has none.

    A malformed property block is forwarded without properties (the broker accepted the message: so do we).
    """
    try:
        return user_properties(raw) or None
    except ValueError:
        return None
