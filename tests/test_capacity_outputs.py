"""A capacity search's outputs without a fleet: JSON, the HTML page and its chart, junit, summary, baselines."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from test_capacity_search import Knee, Staged, plan

from pytest_iotperf.baseline import BaselineSettings, BaselineStore, parse_margin
from pytest_iotperf.capacity_result import CapacityResult
from pytest_iotperf.capacity_run import conclude_capacity, make_plan, set_aside_by_search
from pytest_iotperf.capacity_search import search
from pytest_iotperf.config import resolve
from pytest_iotperf.errors import ConfigError
from pytest_iotperf.junit import capacity_properties
from pytest_iotperf.pipeline import Outputs
from pytest_iotperf.report.capacity_html import render_capacity_html
from pytest_iotperf.report.terminal import summary_lines

NAME = "tests/test_x.py::test_capacity"


def found(knee: int = 1000, generator_cap: int | None = None) -> CapacityResult:
    return search(Knee(knee, generator_cap), plan())


def chart(page: str, name: str) -> ET.Element:
    """The ``<svg>`` of chart ``name`` in the page, parsed."""
    start = page.index("<svg", page.index(f'id="chart-{name}"'))
    return ET.fromstring(page[start : page.index("</svg>", start) + len("</svg>")])


def test_json_and_html_are_written_beside_the_runs(tmp_path: Path) -> None:
    capacity = found()
    outcome = conclude_capacity(capacity, Outputs(report_dir=tmp_path), NAME)
    assert outcome.errors == [] and outcome.report_path == tmp_path / "tests_test_x.py_test_capacity.capacity.json"
    data = json.loads(outcome.report_path.read_text())
    assert (data["max_devices"], data["bound"], data["failed_devices"]) == (1000, "system", 1050)
    assert [step["devices"] for step in data["steps"]] == [100, 200, 400, 800, 1600, 1200, 1000, 1100, 1050]
    page = outcome.report_path.with_suffix(".html").read_text()
    assert "KNEE FOUND" in page and "p95_delay_ms &lt; 500: 2000.0 ms" in page


def test_the_chart_marks_the_knee_failures_and_saturation() -> None:
    page = render_capacity_html(found().to_dict(), title=NAME)
    svgs = {name: chart(page, name) for name in ("capacity-delay", "capacity-throughput")}
    ns = "{http://www.w3.org/2000/svg}"
    for svg in svgs.values():
        knee = [line for line in svg.iter(f"{ns}line") if line.get("data-marker") == "knee"]
        assert len(knee) == 1
        # Offered 2,000 msg/s (1,000 devices x 2/s): the knee line sits where the 1,000-device step's points are.
        passed = [c for c in svg.iter(f"{ns}circle") if "passed" in (c.get("class") or "")]
        assert any(c.get("cx") == knee[0].get("x1") for c in passed)
        assert len([p for p in svg.iter(f"{ns}path") if "failed" in (p.get("class") or "")]) >= 4
    delay = svgs["capacity-delay"]
    assert {p.get("data-series") for p in delay.iter(f"{ns}path")} >= {"p50", "p95", "p99"}
    assert len([t for t in delay.iter(f"{ns}line") if t.get("class") == "threshold"]) == 1  # the 500 ms SLO
    saturated = render_capacity_html(found(5000, generator_cap=700).to_dict())
    assert 'class="step saturated"' in saturated and "GENERATOR-BOUND" in saturated


def test_junit_properties_and_the_summary_line() -> None:
    capacity = found()
    properties = dict(capacity_properties(capacity, [], 1))
    assert properties["iotperf.capacity.max_devices"] == 1000
    assert properties["iotperf.capacity.bound"] == "system"
    assert properties["iotperf.capacity.limiting_slo"] == "p95_delay_ms < 500: 2000.0 ms"
    assert properties["iotperf.capacity.steps"].startswith("100: pass; 200: pass")
    assert properties["iotperf.capacity.max_throughput_per_s"] == 2000.0
    assert "iotperf.capacity2.bound" in dict(capacity_properties(capacity, [], 2))
    row = {"test": NAME, **{k.removeprefix("iotperf."): v for k, v in properties.items()}}
    lines = summary_lines([row])
    assert lines == [f"capacity {NAME}: {capacity.summary()}"]  # no table row for a search
    assert "max_devices 1,000 (2,000 msg/s), bound system: p95_delay_ms < 500: 2000.0 ms at 1,050 devices" in lines[0]


def test_the_page_json_and_junit_say_which_steps_were_stages_of_the_escalation_run() -> None:
    system = Knee(1000)
    capacity = search(system, plan(), escalate=Staged(system, cut_at=400))
    data = json.loads(json.dumps(capacity.to_dict(), allow_nan=False))
    assert [(s["stage"], s["where"]) for s in data["steps"][:4]] == [
        (0, "stage 1 of run run1"), (1, "stage 2 of run run1"), (2, "stage 3 of run run1"), (None, "own run")
    ]
    assert data["steps"][2]["cut_short"] and data["steps"][2]["inconclusive"]
    assert data["runs"] == capacity.runs_text() and data["runs"].startswith("run run1: stages 100, 200, 400 (400 cut")
    properties = dict(capacity_properties(capacity, [], 1))
    assert properties["iotperf.capacity.runs"] == capacity.runs_text()
    assert "400: INCONCLUSIVE" in properties["iotperf.capacity.steps"]
    page = render_capacity_html(data, title=NAME)
    assert "stage 3 of run run1 (cut short: backlog" in page and 'data-runs="run run1: stages' in page
    assert "own run" in page and 'id="chart-capacity-delay"' in page


def test_baseline_compares_max_devices(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    conclude_capacity(found(1000), Outputs(baselines=BaselineSettings(store, save="main")), NAME)
    margins = (parse_margin("max_devices:10%", "test"),)
    compare = Outputs(baselines=BaselineSettings(store, compare_with="main", margins=margins))
    same = conclude_capacity(found(1000), compare, NAME)
    assert same.regressions is None and [c.metric for c in same.comparisons] == ["max_devices", "max_throughput_per_s"]
    worse = conclude_capacity(found(800), compare, NAME)
    assert worse.regressions is not None and "max_devices: baseline 1000, now 800" in worse.regressions
    better = conclude_capacity(found(1500), compare, NAME)
    assert better.regressions is None
    missing = conclude_capacity(found(1000), compare, "other::test")
    assert missing.comparisons == [] and "no capacity baseline 'main'" in missing.warnings[0]


@pytest.mark.parametrize(
    ("slos", "hold", "fragment"),
    [([], "10s", "give the SLOs"), ("p95_delay_ms < 5", "10s", "as a list"), (["p95 <<< 3"], "10s", "p95 <<< 3"),
     (["loss < 1%"], "0s", "hold='0s'"), (["loss < 1%"], "soon", "hold='soon'"),
     (["p95_delay_ms < 500 per 1m"], "10s", "windows of 60s, longer than each step's hold of 10s"),
     (["loss < 1%"], "2.05s", "whole number of tenths of a second")],
)  # fmt: skip
def test_bad_plan_arguments(slos: list[str], hold: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        make_plan(slos, start=1, limit=10, hold=hold, factor=2.0, resolution=0.05, rate_per_device=1.0)


def test_the_fixture_fails_bad_arguments_before_any_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_above(iot_perf):
            iot_perf.find_capacity(slo=["p95_delay_ms < 500"], start=100, limit=10)

        def test_devices(iot_perf):
            iot_perf.find_capacity(slo=["p95_delay_ms < 500"], start=1, limit=10, devices=5)

        def test_slo(iot_perf):
            iot_perf.find_capacity(slo=["p95 <<< 5"], start=1, limit=10, factor=1.5)

        def test_factor(iot_perf):
            iot_perf.find_capacity(slo=["p95_delay_ms < 500"], start=1, limit=10, factor=0.5)
        """
    )
    outcome = pytester.runpytest("-p", "no:cacheprovider")
    outcome.assert_outcomes(failed=4)
    outcome.stdout.fnmatch_lines(
        [
            "find_capacity(start=100, limit=10): start must not be above limit",
            "find_capacity() sets devices itself*",
            "find_capacity: invalid SLO 'p95 <<< 5': unknown metric 'p95'*",
            "find_capacity(factor=0.5): the fleet grows by factor per step, so it must be > 1",
        ]
    )
    assert "iotperf summary" not in outcome.stdout.str()  # nothing ran, nothing was recorded


def test_what_the_command_line_asked_for_and_a_search_overrides_is_named() -> None:
    # A session scaled with --iot-devices still searches from start to limit: the fixture warns with these.
    scaled = resolve({"devices": "6000"}, {"IOTPERF_DURATION": "5s"}, {"rate": ("2", "pytest.ini")}).for_run({})
    assert set_aside_by_search(scaled) == ["devices=6000 (command line)", "duration=5.0 (environment)"]
    assert set_aside_by_search(resolve({}, {}, {"devices": ("50", "pytest.ini")}).for_run({})) == []
