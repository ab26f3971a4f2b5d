"""Merge the workers' reports into one fleet report (pure: no locust, no gevent).

Every merge is exact: counts add, histograms merge bucket by bucket, so one
worker or twenty give the same numbers for the same messages.  The shapes are
``wire_reports.WorkerReport`` and ``FleetReport``; every field of
``WorkerCounters`` is summed, and so are the disconnect reasons, the
offline device-seconds, the publish errors per reason and the connected / reconnect / connect
timelines (per key); so are sent and scheduled per due slot (issue 16), the lateness per stage
(merged by index) and the workers' busiest 10 ms of sending (summed by bucket: ``sent_peak_10ms``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from pytest_iotperf.fleet.spec import FleetSpec
from pytest_iotperf.metrics import DelayHistogram
from pytest_iotperf.wire_reports import (
    FleetReport,
    SentPeak,
    WorkerCounters,
    WorkerReport,
    WorkerSummary,
    summed_fields,
)


def merge_worker_reports(spec: FleetSpec, reports: list[WorkerReport]) -> FleetReport:
    """One JSON-ready report for the whole fleet; ``workers`` keeps each worker's own figures."""
    summed = summed_fields(WorkerCounters)
    lateness = DelayHistogram()
    connect_latency = DelayHistogram()
    reconnect_latency = DelayHistogram()
    puback_latency = DelayHistogram()
    sent_by_device: dict[str, int] = {}
    sent_timeline: Counter[str] = Counter()
    connected_timeline: Counter[str] = Counter()
    reconnect_timeline: Counter[str] = Counter()
    connect_timeline: Counter[str] = Counter()
    disconnect_reasons: Counter[str] = Counter()
    publish_errors_by_reason: Counter[str] = Counter()
    offline_device_s = 0.0
    sent_by_due_slot: Counter[str] = Counter()
    scheduled_by_due_slot: Counter[str] = Counter()
    stage_lateness = [DelayHistogram() for _ in spec.stage_plan]
    busiest_10ms: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    workers: list[WorkerSummary] = []
    totals: Counter[str] = Counter()
    for report in sorted(reports, key=lambda r: int(r["worker_index"])):
        lateness.merge(DelayHistogram.from_dict(report["lateness"]))
        connect_latency.merge(DelayHistogram.from_dict(report["connect_latency"]))
        duplicated = sent_by_device.keys() & report["sent_by_device"].keys()
        if duplicated:
            errors[f"{len(duplicated)} device ids reported by two workers"] += 1
        sent_by_device.update(report["sent_by_device"])
        sent_timeline.update({slot: int(n) for slot, n in report["sent_timeline"].items()})
        # A report from before reconnects (or a worker that broke early) may lack the outage fields.
        if "reconnect_latency" in report:
            reconnect_latency.merge(DelayHistogram.from_dict(report["reconnect_latency"]))
        connected_timeline.update({slot: int(n) for slot, n in report.get("connected_timeline", {}).items()})
        reconnect_timeline.update({slot: int(n) for slot, n in report.get("reconnect_timeline", {}).items()})
        connect_timeline.update({slot: int(n) for slot, n in report.get("connect_timeline", {}).items()})
        if "puback_latency" in report:
            puback_latency.merge(DelayHistogram.from_dict(report["puback_latency"]))
        disconnect_reasons.update({reason: int(n) for reason, n in report.get("disconnect_reasons", {}).items()})
        publish_errors_by_reason.update(
            {reason: int(n) for reason, n in report.get("publish_errors_by_reason", {}).items()}
        )
        offline_device_s += float(report.get("offline_device_s", 0.0))
        sent_by_due_slot.update({slot: int(n) for slot, n in report.get("sent_by_due_slot", {}).items()})
        scheduled_by_due_slot.update({slot: int(n) for slot, n in report.get("scheduled_by_due_slot", {}).items()})
        for merged, histogram in zip(stage_lateness, report.get("stage_lateness", []), strict=False):
            merged.merge(DelayHistogram.from_dict(histogram))
        busiest_10ms.update({bucket: int(n) for bucket, n in report.get("busiest_10ms", {}).items()})
        errors.update(report["errors"])
        fields: Mapping[str, Any] = report  # the counter names are known only at run time
        for key in summed:
            totals[key] += int(fields.get(key, 0))
        wall_s = max(float(report["wall_s"]), 1e-9)
        devices = max(int(report["devices"]), 1)
        worker_lateness = DelayHistogram.from_dict(report["lateness"])
        workers.append(
            {
                "worker_index": report["worker_index"],
                "pid": report.get("pid"),
                "devices": report["devices"],
                "sent": report["sent"],
                "cpu_percent": 100.0 * float(report["cpu_s"]) / wall_s,
                # The generator's cost per message (schedule, framing, socket, acks): comparable across sizes.
                "cpu_us_per_message": 1e6 * float(report["cpu_s"]) / max(int(report["sent"]), 1),
                # What the devices cost: resident memory now minus before the first device existed.
                "rss_bytes_per_device": max(0, int(report["rss_bytes"]) - int(report["rss_before_devices_bytes"]))
                / devices,
                "max_rss_bytes": int(report["max_rss_bytes"]),
                "lateness_p99_ms": _ms(worker_lateness.percentile(99)) if worker_lateness.count else None,
                "aborted": report.get("aborted", False),
            }
        )
    fleet: FleetReport = {
        "run_id": spec.run_id,
        "devices_requested": spec.devices,
        "devices": totals["devices"],
        "connected_at_go": totals["connected_at_go"],
        "connect_failed": totals["connect_failed"],
        "connect_retries": totals["connect_retries"],
        "disconnects": totals["disconnects"],
        "scheduled": totals["scheduled"],
        "scheduled_never_connected": totals["scheduled_never_connected"],
        "sent": totals["sent"],
        "publish_errors": totals["publish_errors"],
        "reconnects": totals["reconnects"],
        "dropped_offline": totals["dropped_offline"],
        "resent": totals["resent"],
        "sent_by_device": sent_by_device,
        "lateness": lateness.to_dict(),
        "connect_latency": connect_latency.to_dict(),
        "sent_timeline": dict(sent_timeline),
        "errors": [f"{message} (x{count})" if count > 1 else message for message, count in errors.most_common()],
        "workers": workers,
        "workers_reported": len(reports),
        "first_drop_at": min((drop for r in reports if (drop := r.get("first_drop_at"))), default=None),
        "disconnect_reasons": dict(disconnect_reasons.most_common()),
        "reconnect_latency": reconnect_latency.to_dict(),
        "offline_device_s": offline_device_s,
        "connected_timeline": dict(connected_timeline),
        "reconnect_timeline": dict(reconnect_timeline),
        "connect_timeline": dict(connect_timeline),
        "puback_latency": puback_latency.to_dict(),
        "publish_errors_by_reason": dict(publish_errors_by_reason.most_common()),
        "sent_by_due_slot": dict(sorted(sent_by_due_slot.items(), key=lambda item: int(item[0]))),
        "scheduled_by_due_slot": dict(sorted(scheduled_by_due_slot.items(), key=lambda item: int(item[0]))),
        "stage_lateness": [histogram.to_dict() for histogram in stage_lateness],
        "due_slot_us": spec.due_slot_us,
        "sent_peak_10ms": _sent_peak(busiest_10ms),
    }
    # Every counter, also one the literal above does not name yet: a TypedDict cannot take keys by variable.
    fleet.update({key: totals[key] for key in summed})  # type: ignore[typeddict-item]
    return fleet


def _sent_peak(busiest_10ms: Counter[str]) -> SentPeak | None:
    """The busiest 10 ms bucket of the fleet (the workers' busiest, summed by bucket): the herd check."""
    if not busiest_10ms:
        return None
    bucket, sent = max(busiest_10ms.items(), key=lambda item: (item[1], -int(item[0])))
    return {"at_s": int(bucket) / 100, "sent": sent}


def _ms(value_us: float) -> float:
    return value_us / 1000.0
