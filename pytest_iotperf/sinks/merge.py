"""Merge the reports of several sink processes into one (pure: exact merges of counts and histograms)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from pytest_iotperf.metrics import DelayHistogram, DeliveryLedger

_COUNTERS = ("arrivals", "other_runs", "malformed", "warmups", "missing_enqueued_time")
_DRAIN_ORDER = ("timeout", "stdin closed", "idle", "complete")


def merge_sink_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report with the shape of a single sink's; ``drain`` is the worst of theirs."""
    if len(reports) == 1:
        return reports[0]
    ledger = DeliveryLedger()
    delay, sent_delay = DelayHistogram(), DelayHistogram()
    timeline: dict[str, DelayHistogram] = {}
    per_minute: dict[str, Counter[str]] = {}
    counters: Counter[str] = Counter()
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
        for minute, buckets in report.get("per_minute", {}).items():
            per_minute.setdefault(minute, Counter()).update({k: int(v) for k, v in buckets.items()})
        counters.update({key: int(report.get(key) or 0) for key in _COUNTERS})
        errors.extend(report.get("errors", []))
        drains.append(str(report.get("drain", "stdin closed")))
        if report.get("first_seen_us") is not None:
            first_seen.append(int(report["first_seen_us"]))
        if report.get("last_seen_us") is not None:
            last_seen.append(int(report["last_seen_us"]))
    lags_min = [int(r["read_lag_min_us"]) for r in reports if r.get("read_lag_min_us") is not None]
    lags_max = [int(r["read_lag_max_us"]) for r in reports if r.get("read_lag_max_us") is not None]
    merged: dict[str, Any] = {
        "read_lag_min_us": min(lags_min) if lags_min else None,
        "read_lag_max_us": max(lags_max) if lags_max else None,
        "run_id": reports[0].get("run_id"),
        "received": ledger.received,
        "duplicates": ledger.duplicates,
        "out_of_order": ledger.out_of_order,
        **counters,
        "ledger": ledger.to_dict(),
        "delay": delay.to_dict(),
        "sent_delay": sent_delay.to_dict(),
        "timeline": {slot: h.to_dict() for slot, h in sorted(timeline.items(), key=lambda item: int(item[0]))},
        "per_minute": {minute: dict(buckets) for minute, buckets in sorted(per_minute.items())},
        "first_seen_us": min(first_seen) if first_seen else None,
        "last_seen_us": max(last_seen) if last_seen else None,
        "errors": errors,
        "drain": min(drains, key=lambda d: _DRAIN_ORDER.index(d) if d in _DRAIN_ORDER else -1),
        "processes": len(reports),
    }
    return merged
