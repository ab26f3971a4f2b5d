"""The Event Hubs sink: ``python -m pytest_iotperf.sinks.eventhub_sink SPEC REPORT``.

Reads the run's events back from the partitions it owns and accounts for them
like the MQTT sink, except that an event's delay is measured at its
``x-opt-enqueued-time`` (when the hub accepted it), not when this process read
it: ``SinkRecorder.record(message, enqueued_us)``.  So a slow reader does not
inflate delays, and several sink processes, each owning some partitions, can
be merged by the parent.

Spec (JSON, no secrets; the connection string comes from
``IOTPERF_EVENTHUB_CONNECTION_STRING``): ``run_id``; ``start_time_epoch_s``
(events enqueued before it, i.e. of earlier runs, are not read; default: now);
``partitions`` (ids this process owns; default all); ``consumer_group``
(``$Default``); ``timeline_slot_s`` (1); ``prefetch`` (1000);
``max_batch_size`` (500); ``max_wait_s`` (0.05); ``ready_timeout_s`` (10);
``retry_total``, ``auth_timeout_s``, ``eventhub_name`` (client settings).

Protocol, as the MQTT sink: ``ready`` once every owned partition's receiver
is attached; ``progress`` about once a second; then on
``{"cmd": "drain", "expected": N, "timeout_s": D, "idle_s": I}`` it reads until
N distinct messages of the run arrived or D passed.  ``expected: -1`` means
"unknown" (the parent knows only the total over all sinks): it then reads
until D passed or no event at all arrived for I seconds (default 2) (see
``sinks.drain``).  Then it writes REPORT (``wire_reports.SinkReport``: the
recorder's report plus ``drain``, ``errors`` and the fields below) and prints
``done``.  EOF on stdin also ends the drain.

Each event reaches the recorder as a ``header.MessageView``: its body, its
application properties and its message annotations (``x-opt-enqueued-time``,
and from an IoT Hub ``iothub-connection-device-id``), as the SDK decoded them.
The spec's ``message`` (header key) and ``extract`` (conftest hooks, imported
before any partition is read: one that does not import is an ``error``) say
how to find the headers (``sinks.finding``).

In the report, ``first_seen_us``, ``last_seen_us``, ``timeline`` and
``per_minute`` (enqueue minute -> whole-ms delay -> count, as the MQTT sink
keeps per receive minute) are in enqueued time like the delays; ``first_read_us`` and ``last_read_us`` are
when this process read its first and last events (its read rate).  Enqueued
times have millisecond resolution (the hub floors them), so a delay may read
up to 1 ms short.

One thread per partition, each with its own client and ``receive_batch``:
one client's receive loop serves its partitions in turn and blocks up to the
SDK's socket timeout (0.2 s) on each idle one.  The threads share one
recorder under a lock taken once per batch, so a message duplicated across
partitions is still counted once.  Reading is CPU-bound in the SDK's
pure-Python AMQP decoding: 11,000-21,000 events/s measured for one process
over 4 partitions of the embedded hub.
"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Iterable
from typing import Any, Final, cast

from azure.eventhub import EventData, EventHubConsumerClient, PartitionContext

from pytest_iotperf.bridge.child import start_child
from pytest_iotperf.bridge.eventhub_access import EventHubTarget, call_with_deadline, client_options
from pytest_iotperf.child_protocol import Ticker, commands
from pytest_iotperf.extract_hook import ExtractLoadError
from pytest_iotperf.files import write_json_atomically
from pytest_iotperf.header import MessageView
from pytest_iotperf.header_finders import FindHeaders, find_headers
from pytest_iotperf.secrets import Scrubber, describe_error
from pytest_iotperf.sinks.drain import Drain, serve_drain
from pytest_iotperf.sinks.finding import finder_for
from pytest_iotperf.sinks.recorder import SinkRecorder, t0_commands
from pytest_iotperf.wire_reports import SinkProgress, SinkReport

_EPOCH: Final = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_ONE_US: Final = datetime.timedelta(microseconds=1)
_MAX_ERRORS: Final = 50
_STOP_JOIN_S: Final = 5.0
# After a receive error the SDK closes that partition's consumer and claims the
# partition again at the next load-balancing pass (30 s by default): keep the gap short.
_LOAD_BALANCING_INTERVAL_S: Final = 1.0


def epoch_us(moment: datetime.datetime) -> int:
    """Exact epoch microseconds of an aware datetime (no float rounding)."""
    return (moment - _EPOCH) // _ONE_US


_ENQUEUED_TIME: Final = b"x-opt-enqueued-time"


def enqueued_us(event: EventData) -> int | None:
    """When the hub accepted the event (``x-opt-enqueued-time``), in epoch microseconds.

    Read from the message annotations as the AMQP timestamp it is (epoch ms): ``event.enqueued_time``
    builds a datetime for every event, ~3 % of the sink's CPU at 5,700 events/s.
    """
    annotations = event.raw_amqp_message.annotations
    millis = annotations.get(_ENQUEUED_TIME) if annotations else None
    if type(millis) is int:
        return millis * 1000
    moment = event.enqueued_time  # another shape: the SDK's own reading (a new datetime on every access)
    return epoch_us(moment) if moment is not None else None


def body_bytes(event: EventData) -> bytes:
    """The event body as the producer sent it (a data body may arrive as several sections)."""
    body = event.body
    if isinstance(body, bytes | bytearray):
        return bytes(body)
    if isinstance(body, str):
        return body.encode()
    if isinstance(body, Iterable):
        return b"".join(part if isinstance(part, bytes) else str(part).encode() for part in body)
    return str(body).encode()


class SinkStartError(Exception):
    """The sink could not attach to its partitions; the message is scrubbed."""


def message_view(event: EventData) -> MessageView:
    """The event as the recorder sees it: body, application properties, message annotations (no copies)."""
    raw = event.raw_amqp_message
    return MessageView(body_bytes(event), None, raw.application_properties, raw.annotations)


class EnqueueAccounting:
    """A SinkRecorder fed with enqueued times, shared by the partition threads behind one lock.

    Its report's ``per_minute`` (the recorder's) maps the enqueue minute (epoch
    s, a multiple of 60) to a map from delay in whole milliseconds (floored)
    to the number of distinct messages of the run: bounded by the number of
    distinct (minute, delay-ms) pairs, and its counts sum to ``received``.
    """

    def __init__(
        self, run_id: str, timeline_slot_s: int, find: FindHeaders = find_headers, due_slot_us: int = 0
    ) -> None:
        self.recorder = SinkRecorder(run_id, timeline_slot_s, find, due_slot_us)
        self.missing_enqueued_time = 0
        self.read_lag_min_us: int | None = None
        self.read_lag_max_us: int | None = None
        # Wall-clock receive times of the first and last batch with events: how fast this process read.
        self.first_read_us: int | None = None
        self.last_read_us: int | None = None
        self._lock = threading.Lock()
        self.drain = Drain(lambda: self.recorder.received)

    def record_batch(self, rows: list[tuple[MessageView, int | None]]) -> None:
        """Account for events read together (one lock round for the whole batch)."""
        recorder = self.recorder
        read_us = time.time_ns() // 1000
        with self._lock:
            for message, enqueued_us in rows:
                if enqueued_us is None:
                    self.missing_enqueued_time += 1
                    enqueued_us = read_us
                else:
                    # Read time (our clock) - enqueued time (the service's): a lag that can never be
                    # negative unless the clocks disagree, so its minimum bounds the skew.
                    lag = read_us - enqueued_us
                    self.read_lag_min_us = lag if self.read_lag_min_us is None else min(self.read_lag_min_us, lag)
                    self.read_lag_max_us = lag if self.read_lag_max_us is None else max(self.read_lag_max_us, lag)
                recorder.record(message, enqueued_us)
            self.last_read_us = time.time_ns() // 1000
            if self.first_read_us is None:
                self.first_read_us = self.last_read_us
            self.drain.arrived(recorder.received)

    def progress(self) -> SinkProgress:
        with self._lock:
            return self.recorder.progress()

    def report(self, drain: str, errors: list[str], error_count: int) -> SinkReport:
        with self._lock:
            report = self.recorder.report(drain, errors)
            report["error_count"] = error_count
            report["missing_enqueued_time"] = self.missing_enqueued_time
            report["read_lag_min_us"] = self.read_lag_min_us
            report["read_lag_max_us"] = self.read_lag_max_us
            report["first_read_us"] = self.first_read_us
            report["last_read_us"] = self.last_read_us
            return report


class _ObservedConsumerClient(EventHubConsumerClient):
    """A consumer client that keeps the partition consumer it creates, to see when its link is attached.

    ``receive_batch`` offers no "attached" callback: ``on_partition_initialize``
    runs when the consumer object is created, before any link exists, and the
    first callback (empty batches come every ``max_wait_time``) can come before
    the attach completes when ``max_wait_time`` is shorter than the attach
    (measured: with 1 ms, the first callbacks precede it).  The consumer's
    ``handler_ready`` turns true exactly when the link is attached, so a
    callback that sees it true proves the receiver is attached.  Both names
    are SDK internals (azure-eventhub 5.x); without them the first callback
    counts, which is only a weaker proof.
    """

    consumer: Any = None

    def _create_consumer(self, *args: Any, **kwargs: Any) -> Any:
        self.consumer = super()._create_consumer(*args, **kwargs)
        return self.consumer

    def link_attached(self) -> bool:
        ready = getattr(self.consumer, "handler_ready", None)
        return True if ready is None else bool(ready)


class PartitionReader:
    """One partition: its own client and a thread running ``receive_batch``."""

    def __init__(self, sink: EventHubSink, partition_id: str, connection_string: str) -> None:
        self.sink = sink
        self.partition_id = partition_id
        self.attached = False
        # from_connection_string builds an instance of the class it is called on.
        self.client = cast(
            _ObservedConsumerClient,
            _ObservedConsumerClient.from_connection_string(
                connection_string,
                sink.spec.get("consumer_group", "$Default"),
                load_balancing_interval=_LOAD_BALANCING_INTERVAL_S,
                **client_options(sink.spec),
            ),
        )
        self.thread = threading.Thread(target=self._run, name=f"iotperf-sink-p{partition_id}", daemon=True)

    def _run(self) -> None:
        spec = self.sink.spec
        try:
            self.client.receive_batch(
                on_event_batch=self._on_batch,
                on_error=self._on_error,
                partition_id=self.partition_id,
                starting_position=self.sink.start_time,
                starting_position_inclusive=True,
                prefetch=int(spec.get("prefetch", 1000)),
                max_batch_size=int(spec.get("max_batch_size", 500)),
                # Short, so that an idle partition still calls back and the attach is seen promptly.
                max_wait_time=float(spec.get("max_wait_s", 0.05)),
            )
        except Exception as exc:  # receive_batch itself failed: the partition is not read at all
            self.sink.note_error(self.partition_id, exc)

    def _on_batch(self, context: PartitionContext, events: list[EventData]) -> None:
        if not self.attached and self.client.link_attached():
            self.attached = True
            self.sink.note_attached()
        if not events:
            return
        rows = [(message_view(e), enqueued_us(e)) for e in events]  # read outside the accounting lock
        self.sink.accounting.record_batch(rows)
        # In memory only: if the SDK reopens this partition after an error it resumes here, not at the start.
        context.update_checkpoint(events[-1])

    def _on_error(self, context: PartitionContext | None, error: Exception) -> None:
        self.sink.note_error(self.partition_id, error)


class EventHubSink:
    """Owns the partition readers and the accounting of one sink process."""

    def __init__(self, spec: dict[str, Any], connection_string: str, target: EventHubTarget, scrubber: Scrubber):
        self.spec = spec
        self.target = target
        self.scrubber = scrubber
        self.connection_string = connection_string
        start_s = float(spec.get("start_time_epoch_s", time.time()))
        self.start_time = datetime.datetime.fromtimestamp(start_s, tz=datetime.UTC)
        # First: a conftest hook that does not import here fails the sink before it reads (ExtractLoadError).
        self.accounting = EnqueueAccounting(
            str(spec["run_id"]), int(spec.get("timeline_slot_s", 1)), finder_for(spec), int(spec.get("due_slot_us", 0))
        )
        self.errors: list[str] = []
        self.error_count = 0
        self.readers: list[PartitionReader] = []
        self._state = threading.Condition()

    def partitions(self) -> list[str]:
        """The partitions to read: the spec's, checked against the hub's (a management call: checks the key)."""
        client = EventHubConsumerClient.from_connection_string(
            self.connection_string, self.spec.get("consumer_group", "$Default"), **client_options(self.spec)
        )
        timeout_s = float(self.spec.get("ready_timeout_s", 10.0))
        existing = [str(p) for p in call_with_deadline(client.get_partition_ids, timeout_s, "Event Hubs management")]
        client.close()
        wanted = [str(p) for p in self.spec.get("partitions") or existing]
        unknown = sorted(set(wanted) - set(existing))
        if unknown:
            raise ValueError(f"partitions {unknown} do not exist; the hub has {existing}")
        return wanted

    def start(self) -> None:
        """Start a reader per owned partition and wait until each is attached.

        Raises:
            SinkStartError: an error, or not all attached within ``ready_timeout_s``.
        """
        timeout_s = float(self.spec.get("ready_timeout_s", 10.0))
        deadline = time.monotonic() + timeout_s
        try:
            partitions = self.partitions()
        except Exception as exc:  # the SDK's errors, a timeout, unknown partitions
            raise SinkStartError(describe_error(exc, self.scrubber)) from None
        self.readers = [PartitionReader(self, p, self.connection_string) for p in partitions]
        for reader in self.readers:
            reader.thread.start()
        with self._state:
            while not self.errors and not all(r.attached for r in self.readers):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    waiting = [r.partition_id for r in self.readers if not r.attached]
                    raise SinkStartError(f"partitions {waiting} not attached within {timeout_s:g}s")
                self._state.wait(remaining)
            if self.errors:
                raise SinkStartError(self.errors[0])

    def note_attached(self) -> None:
        with self._state:
            self._state.notify_all()

    def note_error(self, partition_id: str, error: BaseException) -> None:
        """Keep a scrubbed line per error (at most ``_MAX_ERRORS``); wakes ``start``."""
        with self._state:
            self.error_count += 1
            if len(self.errors) < _MAX_ERRORS:
                self.errors.append(f"partition {partition_id}: {describe_error(error, self.scrubber)}")
            self._state.notify_all()

    def stop(self) -> None:
        """Close every client; their receive loops end within the SDK's socket timeout."""
        for reader in self.readers:
            reader.client.close()
        for reader in self.readers:
            reader.thread.join(_STOP_JOIN_S)

    def report(self, drain: str) -> SinkReport:
        with self._state:
            errors, error_count = list(self.errors), self.error_count
        report = self.accounting.report(drain, errors, error_count)
        report["partitions"] = [r.partition_id for r in self.readers]
        report["consumer_group"] = self.spec.get("consumer_group", "$Default")
        report["start_time_epoch_s"] = self.start_time.timestamp()
        report["eventhub"] = self.target.describe()
        return report


def _sink_spec(doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict) or "run_id" not in doc:
        raise ValueError("the sink spec must be a JSON object with a run_id")
    return doc


def main(argv: list[str] | None = None) -> int:
    """Run the sink until drained; the exit code is 0 once the report is written."""
    child = start_child("python -m pytest_iotperf.sinks.eventhub_sink", __doc__, "Event Hubs sink", _sink_spec, argv)
    if isinstance(child, int):
        return child
    emit = child.emit
    try:
        sink = EventHubSink(child.spec, child.connection_string, child.target, child.scrubber)
    except (ExtractLoadError, ValueError) as exc:
        emit("error", message=f"Event Hubs sink could not find the run's headers: {exc}")
        return 1
    try:
        sink.start()
    except SinkStartError as exc:
        emit("error", message=f"Event Hubs sink could not read from {child.target.describe()}: {exc}")
        return 1  # the receive threads are daemons: leaving ends them
    emit("ready", partitions=[r.partition_id for r in sink.readers])
    ticker = Ticker(lambda: emit("progress", **sink.accounting.progress())).start()
    # {"cmd": "t0"} (any time before the drain): the recorder accounts by due slot from then on.
    drain_result = serve_drain(t0_commands(commands(), sink.accounting.recorder), sink.accounting.drain)
    ticker.stop()
    sink.stop()
    report = sink.report(drain_result)
    write_json_atomically(child.report_path, report)
    emit("done", received=report["received"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
