"""The reports that cross a process boundary, as TypedDicts: one place that says what each carries.

A Locust worker hands its ``WorkerReport`` to the master, which merges them
into the ``FleetReport`` file; each sink process writes a ``SinkReport`` file
(the Event Hubs path: one per consumer, merged in the pytest process, plus the
bridge's ``BridgeReport``); ``result.build_result`` reads the fleet and sink
reports.  Merges are derived from these types: every field of a ``*Counters``
TypedDict is summed (:func:`summed_fields`), so a counter added there is
merged without touching the merge code.

Pure typing: no I/O, no client library.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict, get_type_hints

#: ``DelayHistogram.to_dict()`` / ``DeliveryLedger.to_dict()`` (their own versioned formats).
HistogramDict = dict[str, object]
LedgerDict = dict[str, object]


def summed_fields(counters: type) -> tuple[str, ...]:
    """The int fields of a ``*Counters`` TypedDict (inherited and not-required ones too): what a merge adds up."""
    return tuple(name for name, hint in get_type_hints(counters).items() if hint is int)


# -- sink side ---------------------------------------------------------------------------------------------------


class SinkCounters(TypedDict):
    """What a sink process counts besides its ledger; merging several sinks' reports sums every field."""

    arrivals: int  # every message read, whatever it was
    other_runs: int  # telemetry of another run id
    malformed: int  # not telemetry of ours
    warmups: int  # the bridge's partition warm-up events
    batched: NotRequired[int]  # headers read from messages carrying several (a JSON array, JSON lines, the hook)
    extract_errors: NotRequired[int]  # messages the conftest hook pytest_iotperf_extract raised on (not accounted)
    missing_enqueued_time: NotRequired[int]  # Event Hubs: events without x-opt-enqueued-time (read time used)
    error_count: NotRequired[int]  # Event Hubs: receive errors, also those past the listed ones
    disconnects: NotRequired[int]  # MQTT sink: its own connection dropped (unexpectedly)
    reconnects: NotRequired[int]  # MQTT sink: connected again after a drop


class DueSlotCounts(TypedDict):
    """One due slot of a sink's ``by_due`` (issue 16): new messages due in it and their delays."""

    received: int
    delay: HistogramDict


class SinkReport(SinkCounters):
    """A sink process's report file (``SinkRecorder.report()`` and more), and the merge of several (``sinks.merge``)."""

    run_id: str
    received: int  # distinct (device_id, seq) of the run: from the ledger, like the next two
    duplicates: int
    out_of_order: int
    ledger: LedgerDict
    delay: HistogramDict  # seen - intended, µs
    sent_delay: HistogramDict  # seen - sent, µs
    timeline: dict[str, HistogramDict]  # slot start (epoch s, as a string) -> delay histogram
    per_minute: dict[str, dict[str, int]]  # minute seen (epoch s) -> whole-ms delay -> count
    by_due: NotRequired[dict[str, DueSlotCounts]]  # due slot from T0 (the grid of stage_plan.py) -> counts
    first_seen_us: int | None
    last_seen_us: int | None
    drain: str  # sinks.drain: "complete", "timeout", "idle" or "stdin closed"
    errors: list[str]
    # The Event Hubs sink only: read time - enqueued time (two clocks), and when it read its first and last events.
    read_lag_min_us: NotRequired[int | None]
    read_lag_max_us: NotRequired[int | None]
    first_read_us: NotRequired[int | None]
    last_read_us: NotRequired[int | None]
    partitions: NotRequired[list[str]]
    consumer_group: NotRequired[str]
    start_time_epoch_s: NotRequired[float]
    eventhub: NotRequired[str]
    # A merged report only.
    processes: NotRequired[int]
    bridge: NotRequired[BridgeReport]


class BridgeProgress(TypedDict):
    """The figures of the bridge's ``progress`` event."""

    received: int
    forwarded: int
    failed: int
    unsent: int


class ForwarderCounts(BridgeProgress):
    """``Forwarder.snapshot()``."""

    grouping: str
    batches: int
    flushes: int
    largest_flush: int
    partition_key_from: dict[str, int]  # "topic" / "properties" / "payload" / "none" -> events
    failures: dict[str, int]  # scrubbed reason -> events


class BridgeReport(ForwarderCounts):
    """The platform bridge's report file."""

    stop: str  # "flushed" or "timeout"
    fence: str  # "ok", "timeout" or "unavailable"
    errors: list[str]
    eventhub: str
    partition_ids: list[str]
    broker: str
    topic_filter: str
    stopped_by: str  # "stop command" or "stdin closed"
    disconnects: int  # the bridge's MQTT connection dropped (unexpectedly)
    reconnects: int  # connected again after a drop


class SinkProgress(TypedDict):
    """The figures of a sink's ``progress`` event (``SinkRecorder.progress()``)."""

    received: int
    arrivals: int
    p95_delay_ms: float | None
    gaps: int


# -- fleet side --------------------------------------------------------------------------------------------------


class WorkerCounters(TypedDict):
    """Per-worker counts whose fleet total is their sum."""

    devices: int
    connected_at_go: int
    connect_failed: int
    connect_retries: int
    disconnects: int
    scheduled: int
    scheduled_never_connected: int  # of those, due for devices that never connected (connect_failures, not unsent)
    sent: int
    publish_errors: int
    reconnects: int  # disconnect -> CONNACK again, completed
    dropped_offline: int  # due while offline, overflowed the offline queue: never sent
    resent: int  # QoS 1 retransmissions after a reconnect (not counted in sent)
    # Users Locust re-dispatched after a worker was lost that found every device number taken: never connected.
    redispatched: NotRequired[int]
    sas_renewals: NotRequired[int]  # hung up and connected again with a fresh SAS token before it expired
    # Stages (issue 16): devices spawned dormant for a later stage, connects at a later stage's ramp (first or
    # again), clean hang-ups of devices a stage dropped (planned: not disconnects).
    dormant: NotRequired[int]
    stage_joins: NotRequired[int]
    stage_leaves: NotRequired[int]


class WorkerReport(WorkerCounters):
    """``WorkerFleet.report()``: a worker's complete hand-off to the master (``iotperf_report``)."""

    worker_index: int
    pid: int
    sent_by_device: dict[str, int]
    errors: dict[str, int]  # message -> occurrences
    lateness: HistogramDict  # sent - intended, µs
    connect_latency: HistogramDict
    sent_timeline: dict[str, int]  # slot start (epoch s, as a string) -> messages due in it
    cpu_s: float
    wall_s: float
    max_rss_bytes: int
    rss_bytes: int
    rss_before_devices_bytes: int
    aborted: bool
    first_drop_at: float | None
    abort_reason: str | None
    disconnect_reasons: dict[str, int]  # reason -> unexpected disconnects
    reconnect_latency: HistogramDict  # disconnect -> CONNACK again, µs
    offline_device_s: float  # device-seconds spent offline after having connected
    connected_timeline: dict[str, int]  # slot start (epoch s, as a string) -> devices connected at its end
    # When reconnects completed: 100 ms bucket (epoch s * 10, as a string) -> reconnects (how a storm spreads).
    reconnect_timeline: NotRequired[dict[str, int]]
    # Connect attempts (first, retries, reconnects, renewals): 100 ms bucket (epoch s * 10) -> attempts.
    connect_timeline: NotRequired[dict[str, int]]
    puback_latency: NotRequired[HistogramDict]  # QoS 1 publish write -> its PUBACK, µs (empty at QoS 0)
    # MQTT 5 publishes a PUBACK refused, by reason ("0x97 quota exceeded" -> count); part of publish_errors.
    publish_errors_by_reason: NotRequired[dict[str, int]]
    # Issue 16, on the due-time grid (slot = (intended_at_us - t0_us) // due_slot_us, as a string):
    sent_by_due_slot: NotRequired[dict[str, int]]  # sent (also from the offline queue) by due slot
    scheduled_by_due_slot: NotRequired[dict[str, int]]  # a replay of every device's staged arrivals
    stage_lateness: NotRequired[list[HistogramDict]]  # sent - intended (µs) of messages due in each stage
    # The herd check: this worker's busiest 10 ms buckets of send time ((sent_us - t0_us) // 10 ms, as a
    # string; on the master's clock when correcting) -> messages sent in it.
    busiest_10ms: NotRequired[dict[str, int]]


class SentPeak(TypedDict):
    """The busiest 10 ms of sending, whole fleet: when it began (s after T0, on T0's 10 ms grid) and what went out."""

    at_s: float
    sent: int


class WorkerSummary(TypedDict):
    """One worker's own figures in the fleet report."""

    worker_index: int
    pid: int | None
    devices: int
    sent: int
    cpu_percent: float
    cpu_us_per_message: float
    rss_bytes_per_device: float
    max_rss_bytes: int
    lateness_p99_ms: float | None
    aborted: bool


class FleetReport(WorkerCounters):
    """The Locust master's report file: the workers' reports merged, plus what only the master knows."""

    run_id: str
    devices_requested: int
    sent_by_device: dict[str, int]
    lateness: HistogramDict
    connect_latency: HistogramDict
    sent_timeline: dict[str, int]
    errors: list[str]
    workers: list[WorkerSummary]
    workers_reported: int
    first_drop_at: float | None
    disconnect_reasons: dict[str, int]
    reconnect_latency: HistogramDict
    offline_device_s: float
    connected_timeline: dict[str, int]
    reconnect_timeline: NotRequired[dict[str, int]]  # summed per key
    connect_timeline: NotRequired[dict[str, int]]  # summed per key
    puback_latency: NotRequired[HistogramDict]  # merged
    publish_errors_by_reason: NotRequired[dict[str, int]]  # summed per reason
    sent_by_due_slot: NotRequired[dict[str, int]]  # summed per slot
    scheduled_by_due_slot: NotRequired[dict[str, int]]  # summed per slot
    stage_lateness: NotRequired[list[HistogramDict]]  # merged per stage index
    due_slot_us: NotRequired[int]  # the grid of the two above (FleetSpec.due_slot_us)
    # Each worker's busiest 10 ms buckets summed by bucket, the busiest of them: exact when the fleet's busiest
    # bucket is among every worker's 32 busiest (a herd's is); None: nothing was sent.
    sent_peak_10ms: NotRequired[SentPeak | None]
    # Added by the master: the schedule origin, each worker's clock estimate, whether times were corrected.
    t0: NotRequired[float | None]
    clocks: NotRequired[dict[str, dict[str, float]]]
    clock_corrected: NotRequired[bool]
    # Seconds after T0 at which the parent's stop request ended every schedule (None: the run's full duration).
    stopped_at_s: NotRequired[float | None]
