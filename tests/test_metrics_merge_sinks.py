"""Merging sink reports is exact: split traffic merged equals one sink that saw it all.

The counters a merge adds up are the int fields of the reports' TypedDicts (``wire_reports``).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import pytest

from pytest_iotperf import wire_reports
from pytest_iotperf.connection import Connection
from pytest_iotperf.fleet.fleet_report import merge_worker_reports
from pytest_iotperf.fleet.spec import FleetSpec
from pytest_iotperf.header import MessageView, PayloadTemplate
from pytest_iotperf.metrics import DelayHistogram
from pytest_iotperf.sinks.merge import merge_sink_reports
from pytest_iotperf.sinks.recorder import SinkRecorder
from pytest_iotperf.wire_reports import SinkCounters, SinkReport, WorkerCounters, WorkerReport, summed_fields


def test_split_sinks_merge_to_the_whole() -> None:
    rng = random.Random(7)
    whole = SinkRecorder("run1")
    parts = [SinkRecorder("run1") for _ in range(3)]
    base_us = 1_700_000_000_000_000
    for device in range(20):
        template = PayloadTemplate("run1", f"d{device}")
        for seq in range(50):
            if (device, seq) in ((3, 7), (11, 0)):
                continue  # lost
            intended = base_us + seq * 1_000_000
            payload = template.render(seq, intended, intended + 100)
            seen = intended + rng.randint(200, 90_000)
            whole.record(MessageView(payload), seen)
            part = parts[device % 3]  # partitioned by device, as Event Hubs does with a partition key
            part.record(MessageView(payload), seen)
    for recorder in (whole, parts[0]):
        recorder.record(MessageView(b"garbage"), base_us)
    merged = merge_sink_reports([p.report("complete", []) for p in parts])
    expected = whole.report("complete", [])
    for key in ("received", "duplicates", "out_of_order", "delay", "sent_delay", "ledger"):
        assert merged[key] == expected[key], key
    assert merged["malformed"] == 1 and merged["received"] == 998
    assert merged["timeline"] == expected["timeline"]
    assert merged["drain"] == "complete"


def test_worst_drain_wins() -> None:
    reports = []
    for drain in ("complete", "timeout", "idle"):
        recorder = SinkRecorder("r")
        reports.append(recorder.report(drain, [f"e-{drain}"]))
    merged = merge_sink_reports(reports)
    assert merged["drain"] == "timeout"
    assert merged["errors"] == ["e-complete", "e-timeout", "e-idle"]


def test_every_declared_sink_counter_is_summed() -> None:
    reports = [SinkRecorder("r").report("complete", []) for _ in range(2)]
    for index, report in enumerate(reports):
        report["malformed"] = 3 + index
        report["error_count"] = 5  # Event Hubs only: it used to vanish in the merge
        report["missing_enqueued_time"] = 1
    merged = merge_sink_reports(reports)
    assert set(summed_fields(SinkCounters)) == {
        "arrivals",
        "other_runs",
        "malformed",
        "warmups",
        "batched",
        "extract_errors",
        "missing_enqueued_time",
        "error_count",
        "disconnects",
        "reconnects",
    }
    assert (merged["malformed"], merged.get("error_count"), merged.get("missing_enqueued_time")) == (7, 10, 2)


def test_a_counter_added_to_the_typeddict_merges_without_touching_the_merge(monkeypatch: pytest.MonkeyPatch) -> None:
    # As if a new field ``throttled: int`` had been declared on SinkCounters (and so on SinkReport).
    monkeypatch.setitem(SinkCounters.__annotations__, "throttled", int)
    reports: list[SinkReport] = []
    for count in (2, 5):
        report: dict[str, Any] = {**SinkRecorder("r").report("complete", []), "throttled": count}
        reports.append(report)  # type: ignore[arg-type]  # the new field is not in the static type
    merged: dict[str, Any] = dict(merge_sink_reports(reports))
    assert merged["throttled"] == 7


def _worker_report(index: int, devices: int, sent: int) -> WorkerReport:
    return {
        "worker_index": index,
        "pid": 100 + index,
        "devices": devices,
        "connected_at_go": devices,
        "connect_failed": 0,
        "connect_retries": 1,
        "disconnects": 0,
        "scheduled": sent,
        "scheduled_never_connected": 0,
        "sent": sent,
        "publish_errors": 0,
        "reconnects": index,
        "dropped_offline": 2 * index,
        "resent": 3 * index,
        "sent_by_device": {f"w{index}d{d}": sent // devices for d in range(devices)},
        "errors": {},
        "lateness": DelayHistogram().to_dict(),
        "connect_latency": DelayHistogram().to_dict(),
        "sent_timeline": {"100": sent},
        "cpu_s": 1.0,
        "wall_s": 2.0,
        "max_rss_bytes": 1,
        "rss_bytes": 1,
        "rss_before_devices_bytes": 0,
        "aborted": False,
        "first_drop_at": None,
        "abort_reason": None,
        "disconnect_reasons": {},
        "reconnect_latency": DelayHistogram().to_dict(),
        "offline_device_s": 0.0,
        "connected_timeline": {"100": devices},
    }


def test_worker_counters_are_summed_and_a_new_one_too(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = FleetSpec(run_id="r", devices=6, rate=1.0, duration_s=1.0, ramp_up_s=1.0, connection=Connection("h", 1))
    reports = [_worker_report(0, 2, 10), _worker_report(1, 4, 20)]
    fleet = merge_worker_reports(spec, reports)
    for name in summed_fields(WorkerCounters):
        # A NotRequired counter (one added later) counts 0 in a report that lacks it.
        given: list[Mapping[str, Any]] = list(reports)
        assert fleet[name] == sum(int(r.get(name, 0)) for r in given), name  # type: ignore[literal-required]
    assert fleet["sent_timeline"] == {"100": 30} and fleet["connect_retries"] == 2
    assert fleet["reconnects"] == 1 and fleet["dropped_offline"] == 2 and fleet["resent"] == 3
    monkeypatch.setitem(wire_reports.WorkerCounters.__annotations__, "reauths", int)
    extended: list[dict[str, Any]] = [{**r, "reauths": n} for r, n in zip(reports, (3, 4), strict=True)]
    assert dict(merge_worker_reports(spec, extended))["reauths"] == 7  # type: ignore[arg-type]


def _latency(*values_us: int) -> DelayHistogram:
    histogram = DelayHistogram()
    for value in values_us:
        histogram.record(value)
    return histogram


def test_outage_fields_merge_exactly() -> None:
    spec = FleetSpec(run_id="r", devices=6, rate=1.0, duration_s=1.0, ramp_up_s=1.0, connection=Connection("h", 1))
    first, second = _worker_report(0, 2, 10), _worker_report(1, 4, 20)
    first["disconnect_reasons"] = {"connection reset": 2}
    first["reconnect_latency"] = _latency(120_000, 3_100_000).to_dict()
    first["offline_device_s"] = 6.5
    first["connected_timeline"] = {"100": 2, "101": 0}
    first["reconnect_timeline"] = {"1015": 1, "1031": 1}
    second["disconnect_reasons"] = {"connection reset": 3, "keep-alive timeout": 1}
    second["reconnect_latency"] = _latency(90_000, 95_000, 3_000_000, 3_050_000).to_dict()
    second["offline_device_s"] = 12.25
    second["connected_timeline"] = {"101": 1, "102": 4}
    second["reconnect_timeline"] = {"1031": 2, "1032": 2}
    fleet = merge_worker_reports(spec, [first, second])
    assert fleet["disconnect_reasons"] == {"connection reset": 5, "keep-alive timeout": 1}
    whole = _latency(120_000, 3_100_000, 90_000, 95_000, 3_000_000, 3_050_000)
    assert fleet["reconnect_latency"] == whole.to_dict()
    assert fleet["offline_device_s"] == 18.75
    assert fleet["connected_timeline"] == {"100": 2, "101": 1, "102": 4}
    assert fleet.get("reconnect_timeline") == {"1015": 1, "1031": 3, "1032": 2}


def test_a_report_without_the_outage_fields_still_merges() -> None:
    # A worker that broke before reporting them (or an older one) must not break the fleet report.
    spec = FleetSpec(run_id="r", devices=2, rate=1.0, duration_s=1.0, ramp_up_s=1.0, connection=Connection("h", 1))
    report: dict[str, Any] = dict(_worker_report(0, 2, 10))
    for key in ("reconnects", "disconnect_reasons", "reconnect_latency", "offline_device_s", "connected_timeline"):
        del report[key]
    fleet = merge_worker_reports(spec, [report])  # type: ignore[list-item]
    assert fleet["reconnects"] == 0 and fleet["disconnect_reasons"] == {} and fleet["offline_device_s"] == 0.0
    assert DelayHistogram.from_dict(fleet["reconnect_latency"]).count == 0 and fleet["connected_timeline"] == {}


def test_puback_latency_and_connect_timelines_merge_exactly() -> None:
    spec = FleetSpec(run_id="r", devices=6, rate=1.0, duration_s=1.0, ramp_up_s=1.0, connection=Connection("h", 1))
    values = [[120, 450, 9000], [300, 300, 1_200_000]]
    reports = [_worker_report(0, 2, 10), _worker_report(1, 4, 20)]
    for report, worker_values, timeline in zip(reports, values, ({"100": 2, "101": 1}, {"101": 3}), strict=True):
        histogram = DelayHistogram()
        for value in worker_values:
            histogram.record(value)
        report["puback_latency"] = histogram.to_dict()
        report["connect_timeline"] = timeline
        report["sas_renewals"] = 5
    fleet = merge_worker_reports(spec, [*reports, _worker_report(2, 0, 0)])  # one from before the fields
    merged = DelayHistogram.from_dict(fleet["puback_latency"])
    assert merged.count == 6 and merged.min_us == 120 and merged.max_us == 1_200_000
    assert fleet["connect_timeline"] == {"100": 2, "101": 4}
    assert fleet["sas_renewals"] == 10
