"""Baselines: save, compare, fail on a regression past its margin (pytester, real tiny runs)."""

from __future__ import annotations

import json
import math

import pytest

from pytest_iotperf.baseline import Comparison, Margin, compare, parse_margin
from pytest_iotperf.errors import ConfigError

TEST_FILE = """
import pytest

@pytest.mark.perf
def test_gate(iot_perf):
    iot_perf.run(devices=3, rate_per_device=2, duration="1s", drain="5s", workers=1)
"""


def test_margins_and_direction() -> None:
    assert parse_margin("p95_delay_ms:10%", "cli") == Margin("p95_delay_ms", 0.1, True, "p95_delay_ms:10%")
    assert parse_margin("loss:0.001", "cli").relative is False
    for bad in ("p95_delay_ms", "nope:10%", "p95_delay_ms:ten", "loss:-1"):
        with pytest.raises(ConfigError):
            parse_margin(bad, "cli")
    slower = Comparison("p95_delay_ms", 10.0, 11.5, parse_margin("p95_delay_ms:10%", "cli"))
    assert slower.regressed and math.isclose(slower.change, 0.15)
    assert not Comparison("p95_delay_ms", 10.0, 10.9, slower.margin).regressed
    fewer = Comparison("throughput_per_s", 1000.0, 850.0, parse_margin("throughput_per_s:10%", "cli"))
    assert fewer.regressed  # lower is worse for throughput
    assert not Comparison("throughput_per_s", 1000.0, 2000.0, fewer.margin).regressed
    rows = compare({"p95_delay_ms": 1.0, "loss": 0.0}, {"p95_delay_ms": 2.0, "loss": 0.0}, [])
    assert {c.metric for c in rows} >= {"p95_delay_ms", "loss"} and not any(c.regressed for c in rows)


@pytest.mark.fleet
def test_save_then_compare_fails_a_regression(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_perf=TEST_FILE)
    saved = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--iot-save-baseline", "b1")
    saved.assert_outcomes(passed=1)
    (baseline_file,) = (pytester.path / ".iotperf" / "baselines" / "b1").glob("*.json")
    baseline = json.loads(baseline_file.read_text())
    assert baseline["sent"] == 6
    # Pretend the saved run was far faster, so the next one is a regression.
    baseline["p95_delay_ms"] = 0.001
    baseline_file.write_text(json.dumps(baseline))
    compared = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--iot-compare",
        "b1",
        "--iot-compare-fail",
        "p95_delay_ms:10%",
        "--iot-compare-fail",
        "loss:0.01",
        "--junitxml",
        "junit.xml",
    )
    compared.assert_outcomes(failed=1)
    compared.stdout.fnmatch_lines(["*1 metric(s) regressed against baseline 'b1':*", "*p95_delay_ms: baseline 0.001*"])
    junit = (pytester.path / "junit.xml").read_text()
    assert 'name="iotperf.compare[p95_delay_ms]"' in junit and "REGRESSED" in junit
    assert 'name="iotperf.compare[loss]"' in junit


@pytest.mark.fleet
def test_missing_baseline_is_a_warning_and_bad_options_are_usage_errors(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_perf=TEST_FILE)
    outcome = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--iot-compare", "nothing-saved")
    outcome.assert_outcomes(passed=1)
    outcome.stdout.fnmatch_lines(["*no baseline 'nothing-saved' saved for this test*"])
    usage = pytester.runpytest("-p", "no:cacheprovider", "--iot-compare-fail", "p95_delay_ms:10%")
    assert usage.ret == pytest.ExitCode.USAGE_ERROR
    assert "--iot-compare-fail needs --iot-compare" in usage.stderr.str()
    usage = pytester.runpytest("-p", "no:cacheprovider", "--iot-compare", "x", "--iot-compare-fail", "bogus:1")
    assert usage.ret == pytest.ExitCode.USAGE_ERROR
    assert "--iot-compare-fail=bogus:1 (command line)" in usage.stderr.str()
