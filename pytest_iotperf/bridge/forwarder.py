"""The forwarding half of the bridge: a queue, one sender thread and one Event Hubs producer.

paho's network thread only appends ``(topic, payload)`` to a queue, so a slow
send never holds back MQTT acknowledgements.  The sender thread takes the
first waiting message, keeps collecting for at most ``linger_s`` (and takes
whatever else is already queued, up to ``max_flush_events``), groups the
bodies by partition key (the device id) and sends each group as
``create_batch(partition_key=...)`` batches, splitting a group when a batch
is full.  Under load the queue grows while a flush is sent, so the next
flush carries more events per key: batching adapts without tuning.

Bodies are forwarded unchanged (``EventData(payload_bytes)``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Final

from azure.eventhub import EventData, EventDataBatch, EventHubProducerClient

from pytest_iotperf.bridge.eventhub_access import Scrubber, describe_error
from pytest_iotperf.bridge.topics import DeviceKeys

_log = logging.getLogger(__name__)

_MAX_FAILURE_REASONS: Final = 20
_OTHER_REASONS: Final = "other reasons"
_ABANDON_JOIN_S: Final = 1.0

# Queue items: a message, or None to ask the sender to flush and end.
_Item = tuple[str, bytes] | None


class Forwarder:
    """Sends what MQTT delivered to Event Hubs, batched by partition key.

    ``submit`` is called from paho's network thread; everything else from the
    main thread.  Counters written by the sender thread are guarded by a lock
    so that progress and the report read a consistent set.
    """

    def __init__(
        self,
        producer: EventHubProducerClient,
        keys: DeviceKeys,
        scrubber: Scrubber,
        *,
        linger_s: float = 0.005,
        max_flush_events: int = 5000,
        send_timeout_s: float = 10.0,
    ) -> None:
        self._producer = producer
        self._keys = keys
        self._scrub = scrubber
        self._linger_s = linger_s
        self._max_flush_events = max_flush_events
        self._send_timeout_s = send_timeout_s
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._abandon = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="iotperf-bridge-sender", daemon=True)
        # Written by paho's thread only: a plain int increment needs no lock under the GIL.
        self.received = 0
        self.forwarded = 0
        self.failed = 0
        self.abandoned = 0
        self.batches = 0
        self.flushes = 0
        self.largest_flush = 0
        self.key_sources: dict[str, int] = {"topic": 0, "payload": 0, "none": 0}
        self.failures: dict[str, int] = {}

    def start(self) -> None:
        """Start the sender thread."""
        self._thread.start()

    def submit(self, topic: str, payload: bytes) -> None:
        """Queue one message for forwarding (paho's network thread)."""
        self.received += 1
        self._queue.put((topic, payload))

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

    def snapshot(self) -> dict[str, Any]:
        """Counters for progress and the report; ``unsent`` is what was received but neither sent nor failed."""
        with self._lock:
            settled = self.forwarded + self.failed
            return {
                "received": self.received,
                "forwarded": self.forwarded,
                "failed": self.failed,
                "unsent": self.received - settled,
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
            groups: dict[str | None, list[bytes]] = {}
            count = self._group(groups, item)
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
                count += self._group(groups, item)
            self._flush(groups, count)

    def _group(self, groups: dict[str | None, list[bytes]], item: tuple[str, bytes]) -> int:
        topic, payload = item
        key, source = self._keys.key_for(topic, payload)
        # Its keys are fixed, so snapshot() can copy this dict while it is updated here.
        self.key_sources[source] += 1
        groups.setdefault(key, []).append(payload)
        return 1

    def _flush(self, groups: dict[str | None, list[bytes]], count: int) -> None:
        with self._lock:
            self.flushes += 1
            self.largest_flush = max(self.largest_flush, count)
        for key, bodies in groups.items():
            if self._abandon.is_set():
                return  # the rest stays unsent
            self._send_group(key, bodies)

    def _send_group(self, key: str | None, bodies: list[bytes]) -> None:
        settled = 0  # bodies of this group already sent or failed
        try:
            batch, in_batch = self._new_batch(key), 0
            for body in bodies:
                if self._abandon.is_set():
                    return
                if not self._add(batch, body):
                    if in_batch:
                        self._send(batch, in_batch)
                        settled += in_batch
                        batch, in_batch = self._new_batch(key), 0
                    if not self._add(batch, body):
                        self._fail(1, ValueError(f"an event of {len(body)} bytes exceeds the largest batch"))
                        settled += 1
                        continue
                in_batch += 1
            if in_batch:
                self._send(batch, in_batch)
                settled += in_batch
        except Exception as exc:  # create_batch opens the link: what it raises fails the rest of the group
            self._fail(len(bodies) - settled, exc)

    def _new_batch(self, key: str | None) -> EventDataBatch:
        return self._producer.create_batch(partition_key=key) if key is not None else self._producer.create_batch()

    @staticmethod
    def _add(batch: EventDataBatch, body: bytes) -> bool:
        try:
            batch.add(EventData(body))
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
