"""RunResult: what one run measured, built from the fleet report and the sink report.

Pure: no I/O, no pytest, no client library.  Every figure is a plain value so
``assert result.p95_delay_ms < 1000`` shows the number when it fails.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from pytest_iotperf.due_figures import DueSlots, StageFigures, WindowFigures
from pytest_iotperf.metrics import DelayHistogram, DeliveryLedger, account
from pytest_iotperf.sinks.drain import TIMEOUT
from pytest_iotperf.stage_plan import StageSpec, single_stage
from pytest_iotperf.wire_reports import FleetReport, SinkReport

#: Above this fleet lateness p99 the generator could not keep its schedule:
#: the numbers then describe the load generator as much as the system.
SATURATION_LATENESS_MS = 50.0

#: A worker clock further off than this (and than its estimate's uncertainty) is worth a warning.
CLOCK_WARN_MS = 5.0

#: The result lists at most this many missing seq ranges (the counts stay exact).
MISSING_RANGES_MAX = 1000


@dataclass(frozen=True)
class TimelinePoint:
    """One slot of the run: what was due to be sent, what arrived in it, and how many devices were connected."""

    t_s: float  # slot start, seconds after T0
    sent: int
    received: int
    p95_delay_ms: float | None
    connected: int | None = None  # devices connected at the slot's end (None: the fleet did not say)

    def to_dict(self) -> dict[str, Any]:
        return {
            "t_s": self.t_s,
            "sent": self.sent,
            "received": self.received,
            "p95_delay_ms": self.p95_delay_ms,
            "connected": self.connected,
        }


@dataclass(repr=False)
class RunResult:
    """The measured outcome of one ``iot_perf.run()``. Times in milliseconds, loss as a fraction."""

    run_id: str
    devices: int
    rate_per_device: float
    duration_s: float
    sent: int
    received: int
    lost: int
    duplicates: int
    out_of_order: int
    loss: float
    p50_delay_ms: float
    p90_delay_ms: float
    p95_delay_ms: float
    p99_delay_ms: float
    p999_delay_ms: float
    max_delay_ms: float
    mean_delay_ms: float
    throughput_per_s: float
    lateness_p50_ms: float
    lateness_p99_ms: float
    connect_failures: int
    publish_errors: int
    workers: int
    broker: str
    sent_delay_p50_ms: float = math.nan
    sent_delay_p95_ms: float = math.nan
    sent_delay_p99_ms: float = math.nan
    scheduled: int = 0
    connected: int = 0
    connect_p50_ms: float = math.nan
    connect_p99_ms: float = math.nan
    connect_retries: int = 0
    # Outages: the devices' unexpected disconnects (per reason), their reconnects and what being offline cost.
    disconnects: int = 0
    disconnect_reasons: dict[str, int] = field(default_factory=dict)
    reconnects: int = 0
    reconnect_p50_ms: float = math.nan  # disconnect -> CONNACK again; 0 without disconnects, NaN if none came back
    reconnect_p99_ms: float = math.nan
    reconnect_max_ms: float = math.nan
    offline_device_s: float = 0.0  # device-seconds spent offline after having connected
    dropped_offline: int = 0  # due while offline, overflowed the offline queue: never sent
    resent: int = 0  # QoS 1 retransmissions after a reconnect (not in sent)
    # scheduled - sent - dropped_offline, not counting devices that never connected (connect_failures); never < 0
    unsent: int = 0
    # Real identities (issue 14): users Locust re-dispatched after a worker was lost (no device number left:
    # never connected), SAS token renewals, and QoS 1 publish -> PUBACK (IoT Hub throttles by delaying PUBACKs).
    redispatched_devices: int = 0
    sas_renewals: int = 0
    puback_p50_ms: float = math.nan
    puback_p95_ms: float = math.nan
    puback_p99_ms: float = math.nan
    puback_max_ms: float = math.nan  # NaN: nothing was published at QoS 1
    # MQTT 5: publishes a PUBACK refused, by reason ("0x97 quota exceeded" -> count); part of publish_errors.
    publish_errors_by_reason: dict[str, int] = field(default_factory=dict)
    sink_reconnects: int = 0  # the MQTT sink's own
    sink_disconnects: int = 0
    # When reconnects completed: 100 ms bucket start (seconds after T0, "12.315") -> reconnects.
    reconnect_timeline: dict[str, int] = field(default_factory=dict)
    unexpected: int = 0
    other_runs: int = 0
    malformed: int = 0
    # Issue 15's sink counters: headers read from messages that held several (a JSON array, JSON lines, the
    # extract hook), and messages the conftest hook pytest_iotperf_extract raised on (not accounted).
    batched: int = 0
    extract_errors: int = 0
    generator_saturated: bool = False
    complete: bool = True
    drain: str = "complete"
    t0: float | None = None
    timeline: list[TimelinePoint] = field(default_factory=list)
    worst_devices: list[tuple[str, int]] = field(default_factory=list)
    missing: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    worker_stats: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    eventhub: str | None = None  # the hub read back from, when the sink is eventhub
    # Worker clock - master clock per worker index: {"offset_ms", "uncertainty_ms", "samples"}.
    clock_offsets: dict[str, dict[str, float]] = field(default_factory=dict)
    clock_offset_ms: float = 0.0  # the largest |offset| of any worker
    clock_uncertainty_ms: float = 0.0  # the largest uncertainty of any worker's estimate
    clock_corrected: bool = False
    # Event Hubs: consumer read time - enqueued time (two clocks); a negative minimum reveals their skew.
    eventhub_read_lag_min_ms: float | None = None
    eventhub_read_lag_max_ms: float | None = None
    # The seed's aggregate: {minute seen (MQTT: received, Event Hubs: enqueued), epoch s: {delay ms: count}}.
    per_minute: dict[str, dict[str, int]] = field(default_factory=dict)
    slos: list[dict[str, Any]] = field(default_factory=list)  # each: slo, threshold, unit, measured, passed
    # Issue 16: the due-time grid (s) every stage and window is accounted on, and each stage's figures
    # (their sent/received/lost sum to the run's; due_figures says when exactly).
    due_slot_s: float = 0.0
    stages: list[StageFigures] = field(default_factory=list)
    # Devices that connected at a later stage's ramp (dormant until then, or back after leaving) and
    # devices that left cleanly when a stage removed them: planned, never counted as disconnects.
    stage_joins: int = 0
    stage_leaves: int = 0
    # The busiest 10 ms of sending, whole fleet: {"at_s": seconds after T0, "sent": n} (None: nothing sent).
    # An aligned fleet's herd shows here as the whole fleet within 10 ms.
    sent_peak_10ms: dict[str, float] | None = None
    # Per due slot: what was sent, scheduled, received and its delays (not in the JSON: window() reads it).
    due_slots: DueSlots = field(default_factory=lambda: DueSlots(slot_us=1_000_000, duration_s=0.0))
    delay_histogram: DelayHistogram = field(default_factory=DelayHistogram)
    sent_delay_histogram: DelayHistogram = field(default_factory=DelayHistogram)
    lateness_histogram: DelayHistogram = field(default_factory=DelayHistogram)

    def percentile(self, q: float) -> float:
        """Delay percentile ``q`` (0..100) in ms from the merged histogram; NaN with no data."""
        return _ms(self.delay_histogram.percentile(q))

    def window(self, start_s: float, end_s: float) -> WindowFigures:
        """The run's figures over ``[start_s, end_s)`` seconds of due time from T0 (whole due slots).

        Exact merges of the slots' counts and histograms: windows that tile the run sum to its
        sent/received/lost, and their percentiles come from merged histograms.
        """
        return self.due_slots.window(start_s, end_s)

    def __repr__(self) -> str:
        return (
            f"RunResult(run_id={self.run_id!r}, devices={self.devices}, sent={self.sent}, "
            f"received={self.received}, lost={self.lost}, loss={self.loss:.4%}, "
            f"p50={self.p50_delay_ms:.1f}ms, p95={self.p95_delay_ms:.1f}ms, p99={self.p99_delay_ms:.1f}ms)"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the same keys as the attributes, histograms as their dict form."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, DelayHistogram):
                value = value.to_dict()
            elif name == "due_slots":
                continue  # per-slot data stays out of the JSON: the stages and window verdicts carry it
            elif name in ("timeline", "stages"):
                value = [point.to_dict() for point in value]
            elif name == "worst_devices":
                value = [list(pair) for pair in value]
            elif name == "missing":
                value = {device: [list(span) for span in spans] for device, spans in value.items()}
            elif isinstance(value, float) and not math.isfinite(value):
                value = None
            out[name] = value
        return out


def _sent_peak(peak: Any) -> dict[str, float] | None:
    if not isinstance(peak, Mapping) or "sent" not in peak:
        return None
    return {"at_s": float(peak.get("at_s", 0.0)), "sent": int(peak["sent"])}


def _ms(value_us: float) -> float:
    return value_us / 1000.0


def _percentile_ms(histogram: DelayHistogram, q: float) -> float:
    return _ms(histogram.percentile(q)) if histogram.count else math.nan


def build_result(
    *,
    settings: dict[str, Any],
    sources: dict[str, str],
    broker: str,
    fleet: FleetReport | None,
    sink: SinkReport | None,
    warnings: list[str] | None = None,
    errors: list[str] | None = None,
    stages: Sequence[StageSpec] = (),
    due_slot_s: float = 0.0,
) -> RunResult:
    """Merge the fleet report and the sink report; either may be missing after a failure.

    ``stages`` is the run's stage plan (none: one stage of the settings' devices x rate for the
    duration) and ``due_slot_s`` the due-time grid the fleet and sinks counted on (0: 1 s).

    After a failure a report may also lack fields: every one is read with ``get``
    or behind an ``in`` test (the field names still checked against the TypedDicts).
    """
    warnings = list(warnings or [])
    errors = list(errors or [])
    fleet = cast(FleetReport, fleet or {})
    sink = cast(SinkReport, sink or {})
    sent_by_device: dict[str, int] = fleet.get("sent_by_device", {})
    ledger = DeliveryLedger.from_dict(sink["ledger"]) if "ledger" in sink else DeliveryLedger()
    loss = account(sent_by_device, ledger)
    delay = DelayHistogram.from_dict(sink["delay"]) if "delay" in sink else DelayHistogram()
    sent_delay = DelayHistogram.from_dict(sink["sent_delay"]) if "sent_delay" in sink else DelayHistogram()
    lateness = DelayHistogram.from_dict(fleet["lateness"]) if "lateness" in fleet else DelayHistogram()
    connect = DelayHistogram.from_dict(fleet["connect_latency"]) if "connect_latency" in fleet else DelayHistogram()
    reconnect = (
        DelayHistogram.from_dict(fleet["reconnect_latency"]) if "reconnect_latency" in fleet else DelayHistogram()
    )
    reconnect_ms = _reconnect_figures(reconnect, disconnects=int(fleet.get("disconnects", 0)))
    identity_counters: Mapping[str, Any] = fleet  # issue 14's fields: absent from an older master's report
    puback = (
        DelayHistogram.from_dict(identity_counters["puback_latency"])
        if identity_counters.get("puback_latency")
        else DelayHistogram()
    )
    redispatched = int(identity_counters.get("redispatched", 0))
    if redispatched:
        errors.append(
            f"{redispatched} device(s) Locust re-dispatched after a worker was lost got no device number (each "
            "number is used once) and never connected: the run had fewer devices than asked"
        )
    sink_counters: Mapping[str, Any] = sink  # the MQTT sink's reconnect counters are not in every sink's report
    stopped_at_s = fleet.get("stopped_at_s")
    # A run the test stopped early (run.stop()) ran, and is accounted, for that long: not for the duration asked.
    duration_s = float(stopped_at_s) if stopped_at_s is not None else float(settings.get("duration", 0.0))
    lateness_p99 = _percentile_ms(lateness, 99)
    saturated = lateness.count > 0 and lateness_p99 > SATURATION_LATENESS_MS
    if saturated:
        warnings.append(
            f"generator saturated: fleet lateness p99 {lateness_p99:.1f} ms > {SATURATION_LATENESS_MS:g} ms; "
            "the delays describe the load generator as much as the system (add workers or lower the rate)"
        )
    clocks: dict[str, dict[str, float]] = dict(fleet.get("clocks", {}))
    clock_offset_ms = max((abs(float(c["offset_ms"])) for c in clocks.values()), default=0.0)
    clock_uncertainty_ms = max((float(c["uncertainty_ms"]) for c in clocks.values()), default=0.0)
    corrected = bool(fleet.get("clock_corrected"))
    if not corrected and clock_offset_ms > max(CLOCK_WARN_MS, clock_uncertainty_ms):
        warnings.append(
            f"a worker's clock differs from the master's by {clock_offset_ms:.1f} ms (± {clock_uncertainty_ms:.1f}); "
            "delays are off by up to that much: use --iot-clock-correction"
        )
    lag_min = sink.get("read_lag_min_us")
    if lag_min is not None and lag_min < -CLOCK_WARN_MS * 1000:
        warnings.append(
            f"the Event Hubs consumer read events {-lag_min / 1000:.1f} ms before they were enqueued: its clock is "
            "behind the service's by at least that much (delays use the service's enqueued time)"
        )
    first_drop, t0 = fleet.get("first_drop_at"), fleet.get("t0")
    if first_drop and t0:
        dropped = (
            f"{int(fleet.get('disconnects', 0))} device connection(s) dropped during the run, the first at "
            f"t+{float(first_drop) - float(t0):.1f}s"
        )
        if reconnect.count:
            dropped += (
                f"; {int(fleet.get('reconnects', 0))} reconnected (disconnect to CONNACK p99 "
                f"{_percentile_ms(reconnect, 99):.0f} ms, max {_ms(reconnect.max_us or 0):.0f} ms)"
            )
        warnings.append(dropped)
    dropped_offline = int(fleet.get("dropped_offline", 0))
    never_connected = int(fleet.get("scheduled_never_connected", 0))
    if dropped_offline:
        warnings.append(
            f"{dropped_offline} message(s) fell due while their device was offline and overflowed its offline "
            "queue (--iot-offline-queue): dropped by the devices, never sent (dropped_offline)"
        )
    if sink.get("drain") == TIMEOUT and loss.lost:
        warnings.append(f"drain time ended with {loss.lost} message(s) still missing")
    errors.extend(fleet.get("errors", []))
    errors.extend(sink.get("errors", []))
    errors = list(dict.fromkeys(errors))  # the same failure can reach us by two paths
    due_slot_s = due_slot_s or 1.0
    due_slots = DueSlots.from_reports(fleet, sink, due_slot_s, duration_s)
    plan = tuple(stages) or single_stage(
        int(settings.get("devices", 0)), float(settings.get("rate", 0.0)), duration_s, 0.0
    )
    extra: Mapping[str, Any] = fleet  # issue 16's fleet fields (helper F): absent from an older master's report
    stage_lateness = [DelayHistogram.from_dict(h) for h in extra.get("stage_lateness") or []]
    if not stage_lateness and len(plan) == 1:
        stage_lateness = [lateness]  # one stage: the run's lateness is the stage's
    return RunResult(
        run_id=str(fleet.get("run_id") or sink.get("run_id") or settings.get("run_id", "")),
        devices=int(settings.get("devices", 0)),
        rate_per_device=float(settings.get("rate", 0.0)),
        duration_s=duration_s,
        sent=loss.sent,
        received=loss.received,
        lost=loss.lost,
        duplicates=ledger.duplicates,
        out_of_order=ledger.out_of_order,
        loss=loss.loss,
        p50_delay_ms=_percentile_ms(delay, 50),
        p90_delay_ms=_percentile_ms(delay, 90),
        p95_delay_ms=_percentile_ms(delay, 95),
        p99_delay_ms=_percentile_ms(delay, 99),
        p999_delay_ms=_percentile_ms(delay, 99.9),
        max_delay_ms=_ms(delay.max_us) if delay.max_us is not None else math.nan,
        mean_delay_ms=_ms(delay.mean_us) if delay.count else math.nan,
        throughput_per_s=loss.received / duration_s if duration_s > 0 else 0.0,
        lateness_p50_ms=_percentile_ms(lateness, 50),
        lateness_p99_ms=lateness_p99,
        connect_failures=int(fleet.get("connect_failed", 0)),
        publish_errors=int(fleet.get("publish_errors", 0)),
        workers=int(fleet.get("workers_reported", 0)),
        broker=broker,
        sent_delay_p50_ms=_percentile_ms(sent_delay, 50),
        sent_delay_p95_ms=_percentile_ms(sent_delay, 95),
        sent_delay_p99_ms=_percentile_ms(sent_delay, 99),
        scheduled=int(fleet.get("scheduled", 0)),
        connected=int(fleet.get("connected_at_go", 0)),
        connect_p50_ms=_percentile_ms(connect, 50),
        connect_p99_ms=_percentile_ms(connect, 99),
        connect_retries=int(fleet.get("connect_retries", 0)),
        disconnects=int(fleet.get("disconnects", 0)),
        disconnect_reasons={str(k): int(v) for k, v in fleet.get("disconnect_reasons", {}).items()},
        reconnects=int(fleet.get("reconnects", 0)),
        reconnect_p50_ms=reconnect_ms[0],
        reconnect_p99_ms=reconnect_ms[1],
        reconnect_max_ms=reconnect_ms[2],
        offline_device_s=float(fleet.get("offline_device_s", 0.0)),
        dropped_offline=dropped_offline,
        resent=int(fleet.get("resent", 0)),
        unsent=max(0, int(fleet.get("scheduled", 0)) - never_connected - loss.sent - dropped_offline),
        redispatched_devices=redispatched,
        sas_renewals=int(identity_counters.get("sas_renewals", 0)),
        puback_p50_ms=_percentile_ms(puback, 50),
        puback_p95_ms=_percentile_ms(puback, 95),
        puback_p99_ms=_percentile_ms(puback, 99),
        puback_max_ms=_ms(puback.max_us) if puback.max_us is not None else math.nan,
        publish_errors_by_reason={str(k): int(v) for k, v in fleet.get("publish_errors_by_reason", {}).items()},
        sink_reconnects=int(sink_counters.get("reconnects", 0)),
        sink_disconnects=int(sink_counters.get("disconnects", 0)),
        reconnect_timeline=_reconnect_timeline(fleet),
        unexpected=loss.unexpected,
        other_runs=int(sink.get("other_runs", 0)),
        malformed=int(sink.get("malformed", 0)),
        batched=int(sink.get("batched", 0)),
        extract_errors=int(sink.get("extract_errors", 0)),
        generator_saturated=saturated,
        complete=not errors and bool(fleet) and bool(sink),
        drain=str(sink.get("drain", "not run")),
        t0=fleet.get("t0"),
        timeline=_timeline(fleet, sink),
        worst_devices=loss.worst_devices,
        missing=_missing(sent_by_device, ledger),
        per_minute=dict(sink.get("per_minute", {})),
        clock_offsets=clocks,
        clock_offset_ms=clock_offset_ms,
        clock_uncertainty_ms=clock_uncertainty_ms,
        clock_corrected=corrected,
        eventhub_read_lag_min_ms=_ms(lag_min) if lag_min is not None else None,
        eventhub_read_lag_max_ms=_ms(lag_max) if (lag_max := sink.get("read_lag_max_us")) is not None else None,
        worker_stats=[dict(worker) for worker in fleet.get("workers", [])],
        settings=settings,
        sources=sources,
        warnings=warnings,
        errors=errors,
        delay_histogram=delay,
        sent_delay_histogram=sent_delay,
        lateness_histogram=lateness,
        due_slot_s=due_slot_s,
        stages=due_slots.stages(plan, stage_lateness),
        stage_joins=int(extra.get("stage_joins") or 0),
        stage_leaves=int(extra.get("stage_leaves") or 0),
        sent_peak_10ms=_sent_peak(extra.get("sent_peak_10ms")),
        due_slots=due_slots,
    )


def _missing(sent_by_device: dict[str, int], ledger: DeliveryLedger) -> dict[str, list[tuple[int, int]]]:
    """Which seqs never arrived, as half-open ranges per device (bounded: first MISSING_RANGES_MAX ranges)."""
    out: dict[str, list[tuple[int, int]]] = {}
    budget = MISSING_RANGES_MAX
    for device_id in sorted(sent_by_device):
        if budget <= 0:
            break
        spans = ledger.missing(device_id, int(sent_by_device[device_id]))[:budget]
        if spans:
            out[device_id] = spans
            budget -= len(spans)
    return out


def _timeline(fleet: FleetReport, sink: SinkReport) -> list[TimelinePoint]:
    """Align the fleet's sent-per-slot and the sink's received-per-slot on T0."""
    t0 = fleet.get("t0")
    sent: dict[str, int] = fleet.get("sent_timeline", {})
    connected: dict[str, int] = fleet.get("connected_timeline", {})
    received: dict[str, dict[str, Any]] = sink.get("timeline", {})
    slots = sorted({int(s) for s in sent} | {int(s) for s in received})
    if not slots:
        return []
    origin = float(t0) if t0 is not None else float(slots[0])
    points = []
    for slot in slots:
        histogram = DelayHistogram.from_dict(received[str(slot)]) if str(slot) in received else None
        points.append(
            TimelinePoint(
                t_s=round(slot - origin, 3),
                sent=int(sent.get(str(slot), 0)),
                received=histogram.count if histogram else 0,
                p95_delay_ms=_percentile_ms(histogram, 95) if histogram else None,
                connected=int(connected[str(slot)]) if str(slot) in connected else None,
            )
        )
    return points


def _reconnect_figures(reconnect: DelayHistogram, disconnects: int) -> tuple[float, float, float]:
    """Disconnect -> CONNACK again: p50, p99, max in ms.

    No disconnect: 0 (no device waited for a reconnect, so ``reconnect_p99_ms < 10000`` holds on a
    run without an outage). Disconnects but no reconnect completed: NaN, so such an SLO has no data
    and fails (the devices never came back).
    """
    if not reconnect.count:
        none = 0.0 if disconnects == 0 else math.nan
        return none, none, none
    return _percentile_ms(reconnect, 50), _percentile_ms(reconnect, 99), _ms(reconnect.max_us or 0)


def _reconnect_timeline(fleet: FleetReport) -> dict[str, int]:
    """The fleet's reconnects per 100 ms bucket (epoch s * 10) re-keyed as seconds after T0, in time order.

    The buckets stay on the epoch's 100 ms grid (T0 is not on it): keys in ms precision, "7.215".
    """
    buckets = {int(bucket): int(n) for bucket, n in fleet.get("reconnect_timeline", {}).items()}
    if not buckets:
        return {}
    t0 = fleet.get("t0")
    origin = float(t0) if t0 is not None else min(buckets) / 10
    return {f"{bucket / 10 - origin:.3f}": n for bucket, n in sorted(buckets.items())}
