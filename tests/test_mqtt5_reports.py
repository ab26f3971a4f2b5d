"""MQTT 5 PUBACK refusals per reason travel from the workers' reports through the fleet report into the result."""

from __future__ import annotations

from typing import Any, cast

from pytest_iotperf.connection import Connection
from pytest_iotperf.fleet.fleet_report import merge_worker_reports
from pytest_iotperf.fleet.spec import FleetSpec
from pytest_iotperf.metrics import DelayHistogram
from pytest_iotperf.result import build_result
from pytest_iotperf.wire_reports import WorkerReport


def _worker_report(index: int, refusals: dict[str, int] | None) -> WorkerReport:
    empty = DelayHistogram().to_dict()
    report: dict[str, Any] = {
        "worker_index": index, "pid": index, "devices": 1, "connected_at_go": 1, "connect_failed": 0,
        "connect_retries": 0, "disconnects": 0, "scheduled": 10, "scheduled_never_connected": 0, "sent": 10,
        "publish_errors": sum((refusals or {}).values()), "reconnects": 0, "dropped_offline": 0, "resent": 0,
        "sent_by_device": {f"d{index}": 10}, "errors": {}, "lateness": empty, "connect_latency": empty,
        "sent_timeline": {}, "cpu_s": 0.1, "wall_s": 1.0, "max_rss_bytes": 1, "rss_bytes": 1,
        "rss_before_devices_bytes": 0, "aborted": False, "first_drop_at": None, "abort_reason": None,
        "disconnect_reasons": {}, "reconnect_latency": empty, "offline_device_s": 0.0, "connected_timeline": {},
    }  # fmt: skip
    if refusals is not None:  # a report from before the field lacks it
        report["publish_errors_by_reason"] = refusals
    return cast(WorkerReport, report)


def test_publish_errors_by_reason_are_summed_into_the_result() -> None:
    spec = FleetSpec(run_id="r", devices=3, rate=1.0, duration_s=10.0, ramp_up_s=1.0, connection=Connection("h", 1))
    reports = [
        _worker_report(0, {"0x87 not authorized": 12, "0x97 quota exceeded": 1}),
        _worker_report(1, {"0x97 quota exceeded": 2}),
        _worker_report(2, None),
    ]
    fleet = merge_worker_reports(spec, reports)
    expected = {"0x87 not authorized": 12, "0x97 quota exceeded": 3}
    assert fleet.get("publish_errors_by_reason") == expected and fleet["publish_errors"] == 15
    result = build_result(settings={"duration": 10.0}, sources={}, broker="b", fleet=fleet, sink=None)
    assert result.publish_errors == 15 and result.publish_errors_by_reason == expected
    assert build_result(settings={}, sources={}, broker="b", fleet=None, sink=None).publish_errors_by_reason == {}
