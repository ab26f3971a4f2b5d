"""Per-window and per-stage figures (issue 16) and windowed SLOs: pure, from reports built by hand.

A 6 s run on a 0.5 s due grid, 4 devices x 5/s: what the fleet sent per slot, and a
sink recorder fed the messages that arrived (two lost, one late burst).  Windows and
stages must sum to the run exactly, and their percentiles come from merged histograms.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace
from typing import Any, cast

import pytest

from pytest_iotperf.errors import ConfigError
from pytest_iotperf.header import MessageView
from pytest_iotperf.junit import run_properties
from pytest_iotperf.metrics import DelayHistogram
from pytest_iotperf.pipeline import check_windows, judge, verdict_dict
from pytest_iotperf.report.html import render_html
from pytest_iotperf.report.html_charts import charts_section
from pytest_iotperf.report.terminal import summary_lines
from pytest_iotperf.result import RunResult, build_result
from pytest_iotperf.sinks.recorder import SinkRecorder
from pytest_iotperf.slo import SloSyntaxError, failure_message, merge_slos, parse_slo, window_bounds
from pytest_iotperf.stage_plan import StageSpec
from pytest_iotperf.wire_reports import FleetReport

RUN = "run-w"
T0 = 1_700_000_000.25
T0_US = round(T0 * 1_000_000)
SLOT_US = 500_000
DEVICES, RATE, DURATION_S = 4, 5.0, 6.0
LOST = {("dev-1", 7), ("dev-3", 22)}


def delay_us(offset_us: int, device: int) -> int:
    """Slow during [2 s, 3 s) (a burst of 300 ms), else a few ms that differ per device."""
    return 300_000 + device * 1000 if 2_000_000 <= offset_us < 3_000_000 else 2_000 + device * 500


def run_result(stages: tuple[StageSpec, ...] = ()) -> RunResult:
    recorder = SinkRecorder(RUN, due_slot_us=SLOT_US)
    sent_by_slot: dict[str, int] = {}
    per_device = int(RATE * DURATION_S)
    for device in range(DEVICES):
        device_id = f"dev-{device}"
        for seq in range(per_device):
            offset_us = round(seq / RATE * 1_000_000) + device * 10_000
            slot = str(offset_us // SLOT_US)
            sent_by_slot[slot] = sent_by_slot.get(slot, 0) + 1
            if (device_id, seq) in LOST:
                continue
            header = {"run_id": RUN, "device_id": device_id, "seq": seq}
            header |= {"intended_at": T0_US + offset_us, "sent_at": T0_US + offset_us}
            seen = T0_US + offset_us + delay_us(offset_us, device)
            recorder.record(MessageView(json.dumps(header).encode()), seen)
            if seq == 3 and device == 0:
                recorder.set_t0(T0_US)  # T0 arrives after the first messages: they are folded in
    fleet: dict[str, Any] = {
        "run_id": RUN,
        "t0": T0,
        "sent": DEVICES * per_device,
        "scheduled": DEVICES * per_device,
        "sent_by_device": {f"dev-{d}": per_device for d in range(DEVICES)},
        "sent_by_due_slot": sent_by_slot,
        "scheduled_by_due_slot": sent_by_slot,
    }
    settings = {"devices": DEVICES, "rate": RATE, "duration": DURATION_S}
    sink = recorder.report("complete", [])
    return build_result(
        settings=settings,
        sources={},
        broker="b",
        fleet=cast(FleetReport, fleet),
        sink=sink,
        stages=stages,
        due_slot_s=SLOT_US / 1e6,
    )


def test_windows_tile_the_run_exactly_and_merge_histograms() -> None:
    result = run_result()
    windows = [result.window(start, end) for start, end in window_bounds(result.duration_s, 1.0)]
    assert [w.label for w in windows][:2] == ["[0s,1s)", "[1s,2s)"] and len(windows) == 6
    assert sum(w.sent for w in windows) == result.sent == 120
    assert sum(w.received for w in windows) == result.received == 118
    assert sum(w.lost for w in windows) == result.lost == 2
    assert [w.lost for w in windows] == [0, 1, 0, 0, 1, 0]
    assert windows[2].p95_delay_ms > 300 and windows[1].p95_delay_ms < 10
    # [1s,3s) is half fast, half slow: its p50 comes from the merged histogram (a slow value),
    # not from averaging the two windows' p50s (~150 ms, which no message had).
    merged = result.window(1.0, 3.0)
    expected = DelayHistogram()
    for slot in range(2, 6):
        expected.merge(result.due_slots.delay[slot])
    assert merged.p50_delay_ms == pytest.approx(expected.percentile(50) / 1000)
    average = (windows[1].p50_delay_ms + windows[2].p50_delay_ms) / 2
    assert abs(merged.p50_delay_ms - average) > 100
    assert merged.throughput_per_s == pytest.approx(merged.received / 2.0)


def test_stages_sum_to_the_run() -> None:
    plan = (StageSpec(0.0, 2.5, 4, 5.0, 1.0), StageSpec(2.5, 3.5, 4, 5.0, 0.0))
    result = run_result(plan)
    first, second = result.stages
    assert (first.sent + second.sent, first.received + second.received) == (result.sent, result.received)
    assert first.lost + second.lost == result.lost and first.label.startswith("[0s,2.5s) 4 devices")
    assert first.scheduled + second.scheduled == result.scheduled
    data = result.to_dict()
    assert [stage["sent"] for stage in data["stages"]] == [first.sent, second.sent]
    assert "due_slots" not in data and json.dumps(data)  # no per-slot dump in the JSON
    # A run without stages is one stage: the run itself.
    (only,) = run_result().stages
    assert (only.sent, only.received, only.lost) == (120, 118, 2)


def test_windowed_slo_fails_exactly_the_slow_window_and_says_so() -> None:
    result = run_result()
    verdict = parse_slo("p95_delay_ms < 100 per 1s").evaluate(result)
    assert not verdict.passed and [w.label for w in verdict.failed_windows] == ["[2s,3s)"]
    assert verdict.describe().startswith("p95_delay_ms < 100 per 1s: 1 of 6 windows failed: [2s,3s) 30")
    assert parse_slo("p95_delay_ms < 400 per 1s").evaluate(result).passed
    assert parse_slo("p95_delay_ms < 400").evaluate(result).passed  # the whole run: one slow second hides
    data = verdict_dict(verdict)
    assert [w["passed"] for w in data["windows"]] == [True, True, False, True, True, True]
    assert data["verdict_text"].startswith("1 of 6 windows failed") and data["window_s"] == 1.0
    lost = parse_slo("lost == 0 per 2s").evaluate(result)
    assert [w.label for w in lost.failed_windows] == ["[0s,2s)", "[4s,6s)"]


def test_verdict_text_in_the_issue_form() -> None:
    slow = {3: 1480.0, 4: 1210.0}
    windows: dict[float, Any] = {k * 60.0: SimpleNamespace(p95_delay_ms=slow.get(k, 900.0)) for k in range(10)}
    run = SimpleNamespace(duration_s=600.0, window=lambda start, end: windows[start])
    verdict = parse_slo("p95_delay_ms < 1000 per 1m").evaluate(run)
    expected = "p95_delay_ms < 1000 per 1m: 2 of 10 windows failed: [3m,4m) 1480 ms, [4m,5m) 1210 ms"
    assert failure_message([verdict], 100).splitlines()[1] == "  " + expected
    assert verdict.measured == 1480.0 and verdict.describe() == expected + " -> FAIL"


def test_windows_of_a_run_and_its_trailing_part() -> None:
    assert window_bounds(6.0, 2.5) == [(0.0, 2.5), (2.5, 5.0), (5.0, 6.0)]
    assert window_bounds(0.3, 0.1) == [(0.0, 0.1), (0.1, 0.2), (0.2, 0.3)]


def test_grammar_and_errors() -> None:
    slo = parse_slo("loss < 0.1% per 30s")
    assert (slo.metric, slo.threshold, slo.window_s, slo.text) == ("loss", 0.001, 30.0, "loss < 0.1% per 30s")
    assert parse_slo(" p99.9_delay_ms <= 2s  PER 90s ").text == "p99.9_delay_ms <= 2s per 1m30s"
    with pytest.raises(SloSyntaxError, match="unsent has no figure per window; a windowed SLO takes one of"):
        parse_slo("unsent == 0 per 1m")
    with pytest.raises(SloSyntaxError, match="lateness_p99_ms has no figure per window"):
        parse_slo("lateness_p99_ms < 5 per 1m")
    with pytest.raises(SloSyntaxError, match="after 'per': expected a duration"):
        parse_slo("p95_delay_ms < 100 per soon")
    # A windowed SLO and a whole-run one on the same metric are different objectives.
    merged = merge_slos([parse_slo("p95_delay_ms < 100 per 1s")], [parse_slo("p95_delay_ms < 50")])
    assert [s.text for s in merged] == ["p95_delay_ms < 100 per 1s", "p95_delay_ms < 50"]
    with pytest.raises(ConfigError, match=r"'p95_delay_ms < 1 per 1m': its window \(1m\) is longer than the run \("):
        check_windows([parse_slo("p95_delay_ms < 1 per 1m")], 30.0)
    check_windows([parse_slo("p95_delay_ms < 1 per 30s")], 30.0)  # one whole window: fine


def test_a_window_without_data_fails() -> None:
    nothing = build_result(settings={"duration": 2.0}, sources={}, broker="b", fleet=None, sink=None)
    verdict = parse_slo("p95_delay_ms < 100 per 1s").evaluate(nothing)
    assert not verdict.passed and math.isnan(verdict.measured)
    assert verdict.windows_text() == "2 of 2 windows failed: [0s,1s) no data, [1s,2s) no data"


def test_collection_refuses_a_window_longer_than_the_session(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_w="""
        import pytest

        @pytest.mark.perf(slo=["p95_delay_ms < 100 per 1m"])
        def test_never_runs(iot_perf):
            raise AssertionError("ran")
        """
    )
    result = pytester.runpytest("--iot-duration=10s", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*per 1m*its window (1m) is longer than the session's --iot-duration (10s)*"])


def test_outputs_carry_stages_and_failed_windows() -> None:
    result = run_result((StageSpec(0.0, 3.0, 4, 5.0, 1.0), StageSpec(3.0, 3.0, 4, 5.0, 0.0)))
    judge([parse_slo("p95_delay_ms < 100 per 1s")], result)
    properties = dict(run_properties(result, [], 1))
    assert properties["iotperf.slo[p95_delay_ms < 100 per 1s]"].startswith("FAIL 1 of 6 windows failed: [2s,3s) 30")
    assert properties["iotperf.stage[1]"].startswith("[0s,3s) 4 devices x 5/s: sent 60, received 59, lost 1 (")
    lines = summary_lines([{"test": "t", "stage[2]": properties["iotperf.stage[2]"], "stage[1]": "first"}])
    assert [line for line in lines if line.startswith("stage")] == [
        "stage 1 t: first",
        f"stage 2 t: {properties['iotperf.stage[2]']}",
    ]
    page = render_html(result.to_dict(), title="staged")
    assert page.count('<section id="stages">') == 1 and "[3s,6s) 4 devices x 5/s" in page
    html = charts_section(result.to_dict())
    # Shaded in the sent/received and p95 charts (the connected chart has no data here).
    assert html.count('class="failed-window" data-start-s="2" data-end-s="3"') == 2
