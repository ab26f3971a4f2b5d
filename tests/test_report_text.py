"""Terminal summary table and live progress lines (pure formatting)."""

from __future__ import annotations

import json
import math
from typing import Any

from pytest_iotperf.junit import run_properties
from pytest_iotperf.report.progress import ProgressReporter, format_progress
from pytest_iotperf.report.terminal import optional_summary, summary_lines
from pytest_iotperf.result import RunResult

#: The required figures of a RunResult (a run that measured nothing).
_FIGURES: dict[str, Any] = {
    "run_id": "r", "devices": 5, "rate_per_device": 1.0, "duration_s": 2.0, "sent": 10, "received": 10, "lost": 0,
    "duplicates": 0, "out_of_order": 0, "loss": 0.0, "p50_delay_ms": math.nan, "p90_delay_ms": math.nan,
    "p95_delay_ms": math.nan, "p99_delay_ms": math.nan, "p999_delay_ms": math.nan, "max_delay_ms": math.nan,
    "mean_delay_ms": math.nan, "throughput_per_s": 5.0, "lateness_p50_ms": math.nan, "lateness_p99_ms": math.nan,
    "connect_failures": 0, "publish_errors": 15, "workers": 1, "broker": "b",
}  # fmt: skip


def test_summary_table_has_one_row_per_run_and_lists_warnings() -> None:
    rows = [
        {
            "test": "t.py::a",
            "devices": 5,
            "sent": 10,
            "received": 9,
            "lost": 1,
            "loss": 0.1,
            "p50_delay_ms": 1.26,
            "p95_delay_ms": 2.0,
            "p99_delay_ms": None,
            "max_delay_ms": 3.0,
            "lateness_p99_ms": 0.5,
            "broker": "mosquitto 2.0.11 (embedded)",
            "warnings": ["generator saturated"],
            "slos_met": (1, 2),
            "errors": [],
        },
        {
            "test": "t.py::b (run2)",
            "devices": 7,
            "sent": 70,
            "received": 70,
            "lost": 0,
            "loss": 0.0,
            "broker": "mosquitto 2.0.11 (embedded)",
        },
    ]
    lines = summary_lines(rows)
    assert lines[0].split()[:4] == ["test", "devices", "sent", "received"]
    row_a = next(line for line in lines if line.startswith("t.py::a"))
    assert row_a.split()[1:7] == ["5", "10", "9", "1", "10.000%", "1.3"]
    assert "-" in row_a.split()  # a missing figure shows as '-', not 'None'
    assert row_a.split()[-1] == "1/2"
    assert any(line.startswith("t.py::b (run2)") and " 70 " in line for line in lines)
    assert "broker: mosquitto 2.0.11 (embedded)" in lines
    assert "WARNING t.py::a: generator saturated" in lines


def test_a_reconnects_column_only_when_a_run_had_reconnects() -> None:
    quiet = {"test": "t.py::quiet", "devices": 5, "sent": 10, "received": 10, "reconnects": 0, "slos_met": (1, 1)}
    assert "reconnects" not in summary_lines([quiet])[0]
    outage = {"test": "t.py::outage", "devices": 5, "sent": 10, "received": 10, "reconnects": 5, "slos_met": (2, 2)}
    lines = summary_lines([quiet, outage])
    assert lines[0].split()[-3:] == ["reconnects", "SLOs", "met"]
    assert next(line for line in lines if line.startswith("t.py::outage")).split()[-2:] == ["5", "2/2"]
    assert next(line for line in lines if line.startswith("t.py::quiet")).split()[-2:] == ["0", "1/1"]


def test_publish_refusals_batched_and_extract_errors_get_a_line_only_when_there_are_some() -> None:
    run = RunResult(**{**_FIGURES, "publish_errors_by_reason": {"0x97 quota exceeded": 3, "0x87 not authorized": 12}})
    run.batched, run.extract_errors = 40, 2
    figures = json.loads(json.dumps(run.to_dict()))  # as the JSON result file holds it
    assert optional_summary(figures) == [
        ("publish_errors_by_reason", "0x87 not authorized x12, 0x97 quota exceeded x3"),
        ("batched", 40),
        ("extract_errors", 2),
    ]
    quiet = RunResult(**_FIGURES)
    assert optional_summary(quiet.to_dict()) == [] and optional_summary({}) == []  # also a result from before them
    # The junit properties carry them for the terminal summary, which prints one line each under the table.
    properties = dict(run_properties(run, [], 1))
    assert properties["iotperf.publish_errors_by_reason"] == "0x87 not authorized x12, 0x97 quota exceeded x3"
    assert not any("batched" in name or "by_reason" in name for name, _ in run_properties(quiet, [], 1))
    row = {"test": "t.py::v5", "devices": 5, "sent": 10, **{key: value for key, value in optional_summary(figures)}}
    lines = summary_lines([row, {"test": "t.py::quiet", "devices": 5, "sent": 10}])
    assert "publish refused t.py::v5: 0x87 not authorized x12, 0x97 quota exceeded x3" in lines
    assert "batched t.py::v5: 40 header(s) read from messages carrying several" in lines
    assert any(line.startswith("extract errors t.py::v5: 2 message(s)") for line in lines)
    assert not any("t.py::quiet:" in line for line in lines)


def test_progress_line_shows_the_run_state() -> None:
    state = {
        "run_id": "r1",
        "phase": "publishing",
        "devices": 50,
        "connected": 50,
        "sent": 500,
        "received": 480,
        "p95_delay_ms": 3.25,
        "elapsed_s": 10.2,
        "duration_s": 60.0,
    }
    line = format_progress(state, 50.0, 48.0)
    for fragment in (
        "r1",
        "10s of 60s",
        "50/50 connected",
        "sent 500",
        "received 480",
        "not yet seen 20",
        "50/s out",
        "48/s in",
        "p95 3.2 ms",
    ):
        assert fragment in line
    assert "connecting 7/50" in format_progress({"phase": "connecting", "devices": 50, "connected": 7}, None, None)


def test_progress_without_tty_writes_a_line_per_phase_and_interval() -> None:
    written: list[str] = []
    reporter = ProgressReporter(written.append, tty=False, interval_s=3600)
    for _ in range(5):
        reporter({"phase": "connecting", "devices": 5, "connected": 1})
    reporter({"phase": "publishing", "devices": 5})
    reporter({"phase": "publishing", "devices": 5})
    assert len(written) == 2 and all(text.endswith("\n") for text in written)


def test_progress_on_a_tty_rewrites_one_line() -> None:
    written: list[str] = []
    reporter = ProgressReporter(written.append, tty=True)
    reporter({"phase": "connecting", "devices": 500, "connected": 100})
    reporter({"phase": "connecting", "devices": 5, "connected": 1})
    reporter.close()
    assert written[0].startswith("\r") and written[1].startswith("\r")
    assert len(written[1]) >= len(written[0])  # padded to erase the longer previous line
    assert written[-1] == "\n"
