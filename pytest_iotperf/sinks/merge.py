"""Merge the reports of several sink processes into one (pure: exact merges of counts and histograms).

The fields come from ``wire_reports.SinkReport``; every int field of
``SinkCounters`` is summed, so a counter declared there is merged without
a change here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from pytest_iotperf.metrics import DelayHistogram, DeliveryLedger
from pytest_iotperf.sinks.drain import STDIN_CLOSED, WORST_FIRST
from pytest_iotperf.wire_reports import DueSlotCounts, SinkCounters, SinkReport, summed_fields


def merge_sink_reports(reports: list[SinkReport]) -> SinkReport:
    """One report with the shape of a single sink's; ``drain`` is the worst of theirs."""
    if len(reports) == 1:
        return reports[0]
    ledger = DeliveryLedger()
    delay, sent_delay = DelayHistogram(), DelayHistogram()
    timeline: dict[str, DelayHistogram] = {}
    per_minute: dict[str, Counter[str]] = {}
    by_due: dict[str, DelayHistogram] = {}
    counter_names = summed_fields(SinkCounters)  # read per merge: a merge happens once per run
    counters: Counter[str] = Counter({name: 0 for name in counter_names})
    errors: list[str] = []
    drains: list[str] = []
    first_seen: list[int] = []
    last_seen: list[int] = []
    for report in reports:
        ledger.merge(DeliveryLedger.from_dict(report["ledger"]))
        delay.merge(DelayHistogram.from_dict(report["delay"]))
        sent_delay.merge(DelayHistogram.from_dict(report["sent_delay"]))
        for slot, histogram in report.get("timeline", {}).items():
            timeline.setdefault(slot, DelayHistogram()).merge(DelayHistogram.from_dict(histogram))
        for slot, counts in report.get("by_due", {}).items():
            by_due.setdefault(slot, DelayHistogram()).merge(DelayHistogram.from_dict(counts["delay"]))
        for minute, buckets in report.get("per_minute", {}).items():
            per_minute.setdefault(minute, Counter()).update({k: int(v) for k, v in buckets.items()})
        fields: Mapping[str, Any] = report  # the counter names are known only at run time
        counters.update({name: int(fields.get(name) or 0) for name in counter_names})
        errors.extend(report.get("errors", []))
        drains.append(str(report.get("drain", STDIN_CLOSED)))
        first = report.get("first_seen_us")
        if first is not None:
            first_seen.append(int(first))
        last = report.get("last_seen_us")
        if last is not None:
            last_seen.append(int(last))
    lags_min = [int(lag) for r in reports if (lag := r.get("read_lag_min_us")) is not None]
    lags_max = [int(lag) for r in reports if (lag := r.get("read_lag_max_us")) is not None]
    merged: SinkReport = {
        "read_lag_min_us": min(lags_min) if lags_min else None,
        "read_lag_max_us": max(lags_max) if lags_max else None,
        "run_id": reports[0]["run_id"],
        "received": ledger.received,
        "duplicates": ledger.duplicates,
        "out_of_order": ledger.out_of_order,
        "arrivals": counters["arrivals"],
        "other_runs": counters["other_runs"],
        "malformed": counters["malformed"],
        "warmups": counters["warmups"],
        "ledger": ledger.to_dict(),
        "delay": delay.to_dict(),
        "sent_delay": sent_delay.to_dict(),
        "timeline": {slot: h.to_dict() for slot, h in sorted(timeline.items(), key=lambda item: int(item[0]))},
        "per_minute": {minute: dict(buckets) for minute, buckets in sorted(per_minute.items())},
        "by_due": _by_due(by_due),
        "first_seen_us": min(first_seen) if first_seen else None,
        "last_seen_us": max(last_seen) if last_seen else None,
        "errors": errors,
        "drain": min(drains, key=lambda d: WORST_FIRST.index(d) if d in WORST_FIRST else -1),
        "processes": len(reports),
    }
    # Every counter, also those the literal above does not name: a TypedDict cannot take keys by variable.
    merged.update(counters)  # type: ignore[typeddict-item]
    return merged


def _by_due(histograms: dict[str, DelayHistogram]) -> dict[str, DueSlotCounts]:
    """The merged due slots; a slot's ``received`` is its histogram's count (one delay per new message).

    Exact while each message's copies reach one consumer (the bridge keys partitions by device);
    a duplicate spread over two consumers is one in the ledger but counted by both here.
    """
    ordered = sorted(histograms.items(), key=lambda item: int(item[0]))
    return {slot: {"received": h.count, "delay": h.to_dict()} for slot, h in ordered}
