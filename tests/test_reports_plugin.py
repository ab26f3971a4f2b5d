"""The plugin's report outputs end to end: JSON + HTML per run, InfluxDB export, and no secret anywhere.

Real parts: embedded Mosquitto, a real VictoriaMetrics server speaking the InfluxDB v2 write API.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from victoria import VictoriaMetrics

from pytest_iotperf.processes import free_port

pytestmark = pytest.mark.fleet
TOKEN = "tok-3f9a1c-never-shown"
PASSWORD = "pw-8d2e77-never-shown"
TEST_FILE = """
import pytest

@pytest.mark.perf(slo=["loss < 1%"])
def test_gate(iot_perf):
    iot_perf.run(devices=4, rate_per_device=2, duration="1s", drain="5s", workers=1)
"""


def _produced_text(path: Path, outcome: pytest.RunResult) -> str:
    files = [
        p.read_text(errors="replace") for p in path.rglob("*") if p.is_file() and p.suffix in {".json", ".html", ".xml"}
    ]
    return "\n".join([outcome.stdout.str(), outcome.stderr.str(), *files])


def test_json_html_and_influx_export(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("IOTPERF_INFLUX_TOKEN", TOKEN)
    monkeypatch.setenv("IOTPERF_MQTT_PASSWORD", PASSWORD)  # unused by the anonymous broker, but it must never show
    pytester.makepyfile(test_perf=TEST_FILE)
    with VictoriaMetrics.start(tmp_path / "vm") as server:
        outcome = pytester.runpytest_subprocess(
            "-p",
            "no:cacheprovider",
            "--iot-report-dir",
            "out",
            "--junitxml",
            "junit.xml",
            "--iot-influx-url",
            server.url,
            "--iot-influx-bucket",
            "perf",
        )
        outcome.assert_outcomes(passed=1)  # the test; its SLO testcase goes into the junit XML only
        runs = server.export('{__name__="iotperf_run_sent"}')
    (json_file,) = (pytester.path / "out").glob("*.json")
    (html_file,) = (pytester.path / "out").glob("*.html")
    assert json_file.stem == html_file.stem
    html = html_file.read_text()
    assert 'data-chart="delay-cdf"' in html and "loss &lt; 1%" in html
    assert len(runs) == 1 and runs[0].values == [8.0]
    assert runs[0].labels["test"] == "test_perf.py::test_gate"
    assert "InfluxDB export failed" not in outcome.stdout.str()
    produced = _produced_text(pytester.path, outcome)
    assert TOKEN not in produced and PASSWORD not in produced


def test_export_failure_is_reported_and_changes_nothing_else(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IOTPERF_INFLUX_TOKEN", TOKEN)
    pytester.makepyfile(test_perf=TEST_FILE)
    dead = f"http://127.0.0.1:{free_port()}"
    outcome = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--iot-report-dir", "out", "--iot-influx-url", dead
    )
    outcome.assert_outcomes(passed=1)  # the run's outcome is unchanged
    outcome.stdout.fnmatch_lines([f"*InfluxDB export failed*{dead}*"])
    assert len(list((pytester.path / "out").glob("*.json"))) == 1  # the result is still written
    assert TOKEN not in _produced_text(pytester.path, outcome)


def test_unwritable_report_dir_is_reported_and_the_outcome_stands(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_perf=TEST_FILE)
    (pytester.path / "not-a-dir").write_text("a file where the report directory should be")
    outcome = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--iot-report-dir", "not-a-dir/reports")
    outcome.assert_outcomes(passed=1)
    outcome.stdout.fnmatch_lines(["*could not write the JSON result to not-a-dir/reports/*"])
