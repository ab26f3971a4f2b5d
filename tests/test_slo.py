"""Unit tests of pytest_iotperf.slo: parsing, unit conversion, evaluation, merging, messages.

Expected values are worked out by hand in each test, never by calling the module twice.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_iotperf.errors import ConfigError
from pytest_iotperf.metrics import DelayHistogram
from pytest_iotperf.result import RunResult
from pytest_iotperf.slo import (
    METRICS,
    OPERATORS,
    Slo,
    SloSyntaxError,
    SloVerdict,
    evaluate_all,
    failure_message,
    merge_slos,
    parse_slo,
)

# -- fakes ---------------------------------------------------------------------


class FakeHistogram:
    """Answers percentile(q) from a table (in microseconds) and records the q asked for."""

    def __init__(self, table: dict[float, float]) -> None:
        self.table = table
        self.asked: list[float] = []
        self.count = len(table)

    def percentile(self, q: float) -> float:
        self.asked.append(q)
        return self.table[q]


class FakeResult:
    """The attributes an SLO can read, with values chosen per test."""

    def __init__(self, **figures: Any) -> None:
        self.asked: list[float] = []
        self.delay_table: dict[float, float] = figures.pop("delay_table", {})
        self.sent_delay_histogram = FakeHistogram(figures.pop("sent_delay_table", {}))
        self.lateness_histogram = FakeHistogram(figures.pop("lateness_table", {}))
        for name, value in figures.items():
            setattr(self, name, value)

    def percentile(self, q: float) -> float:
        self.asked.append(q)
        return self.delay_table[q]


def histogram(values: list[int]) -> DelayHistogram:
    h = DelayHistogram()
    for v in values:
        h.record(v)
    return h


def run_result(**overrides: Any) -> RunResult:
    figures: dict[str, Any] = {
        "run_id": "run-1",
        "devices": 4,
        "rate_per_device": 100.0,
        "duration_s": 30.0,
        "sent": 12_000,
        "received": 11_970,
        "lost": 30,
        "duplicates": 0,
        "out_of_order": 2,
        "loss": 0.0025,
        "p50_delay_ms": 12.0,
        "p90_delay_ms": 40.0,
        "p95_delay_ms": 1234.5,
        "p99_delay_ms": 1500.0,
        "p999_delay_ms": 1900.0,
        "max_delay_ms": 2100.0,
        "mean_delay_ms": 20.0,
        "throughput_per_s": 399.0,
        "lateness_p50_ms": 0.5,
        "lateness_p99_ms": 4.0,
        "connect_failures": 0,
        "publish_errors": 0,
        "workers": 2,
        "broker": "embedded",
    }
    figures.update(overrides)
    return RunResult(**figures)


# -- parsing -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "metric", "op", "threshold", "unit", "display"),
    [
        ("p95_delay_ms < 1000", "p95_delay_ms", "<", 1000.0, "ms", "p95_delay_ms < 1000"),
        ("loss < 0.1%", "loss", "<", 0.001, "fraction", "loss < 0.1%"),
        ("p99_delay_ms <= 2s", "p99_delay_ms", "<=", 2000.0, "ms", "p99_delay_ms <= 2s"),
        ("throughput_per_s >= 950", "throughput_per_s", ">=", 950.0, "per_s", "throughput_per_s >= 950"),
        ("p99.9_delay_ms < 50ms", "p99.9_delay_ms", "<", 50.0, "ms", "p99.9_delay_ms < 50ms"),
        ("max_delay_ms < 3 s", "max_delay_ms", "<", 3000.0, "ms", "max_delay_ms < 3s"),
        ("sent_delay_p95_ms < 200", "sent_delay_p95_ms", "<", 200.0, "ms", "sent_delay_p95_ms < 200"),
        ("lateness_p99_ms <= 10", "lateness_p99_ms", "<=", 10.0, "ms", "lateness_p99_ms <= 10"),
        ("duplicates == 0", "duplicates", "==", 0.0, "count", "duplicates == 0"),
        ("lost == 0", "lost", "==", 0.0, "count", "lost == 0"),
        ("p50_delay_ms > 1", "p50_delay_ms", ">", 1.0, "ms", "p50_delay_ms > 1"),
        ("p99.99_delay_ms < 5s", "p99.99_delay_ms", "<", 5000.0, "ms", "p99.99_delay_ms < 5s"),
        ("p100_delay_ms < 9", "p100_delay_ms", "<", 9.0, "ms", "p100_delay_ms < 9"),
        ("p0.5_delay_ms >= 0.25", "p0.5_delay_ms", ">=", 0.25, "ms", "p0.5_delay_ms >= 0.25"),
        ("sent_delay_p90_ms < 7", "sent_delay_p90_ms", "<", 7.0, "ms", "sent_delay_p90_ms < 7"),
        ("lateness_p99.9_ms < 20", "lateness_p99.9_ms", "<", 20.0, "ms", "lateness_p99.9_ms < 20"),
        ("out_of_order <= 5", "out_of_order", "<=", 5.0, "count", "out_of_order <= 5"),
        ("connect_failures == 0", "connect_failures", "==", 0.0, "count", "connect_failures == 0"),
        ("loss <= 0.002", "loss", "<=", 0.002, "fraction", "loss <= 0.002"),
        ("sent_delay_p50_ms > -5", "sent_delay_p50_ms", ">", -5.0, "ms", "sent_delay_p50_ms > -5"),
    ],
)
def test_parse_documented_forms(text: str, metric: str, op: str, threshold: float, unit: str, display: str) -> None:
    slo = parse_slo(text)
    assert (slo.metric, slo.op, slo.threshold, slo.unit, slo.text) == (metric, op, threshold, unit, display)
    assert str(slo) == display


@pytest.mark.parametrize(
    ("text", "threshold"),
    [
        ("p95_delay_ms < 2s", 2000.0),
        ("p95_delay_ms < 0.5 s", 500.0),
        ("p95_delay_ms < 2.5s", 2500.0),
        ("p95_delay_ms < 0.001s", 1.0),
        ("p95_delay_ms < 50ms", 50.0),
        ("p95_delay_ms < 50", 50.0),
        ("p95_delay_ms < 1e3", 1000.0),
        ("p95_delay_ms < 1.5e1 s", 15000.0),
        ("p95_delay_ms < 3 S", 3000.0),
        ("p95_delay_ms < 7 MS", 7.0),
        ("loss < 0.1%", 0.001),
        ("loss < 0.7%", 0.007),
        ("loss < 1.5 %", 0.015),
        ("loss < 100%", 1.0),
        ("loss < 0.0025", 0.0025),
        ("throughput_per_s > 12.5", 12.5),
        ("duplicates < 3", 3.0),
    ],
)
def test_threshold_is_converted_into_the_metrics_unit(text: str, threshold: float) -> None:
    assert parse_slo(text).threshold == threshold


def test_whitespace_is_tolerated_and_normalised() -> None:
    for text in ("p95_delay_ms<1000", "  p95_delay_ms   <   1000  ", "\tp95_delay_ms\t<\t1000\n"):
        slo = parse_slo(text)
        assert (slo.metric, slo.op, slo.threshold, slo.text) == ("p95_delay_ms", "<", 1000.0, "p95_delay_ms < 1000")
    assert parse_slo("loss<=0.1 %").text == "loss <= 0.1%"
    assert parse_slo("max_delay_ms>=3   s").text == "max_delay_ms >= 3s"


def test_percentile_names_have_one_spelling() -> None:
    assert parse_slo("p099.90_delay_ms < 5").metric == "p99.9_delay_ms"
    assert parse_slo("p50.0_delay_ms < 5").metric == "p50_delay_ms"
    assert parse_slo("lateness_p099_ms < 5").metric == "lateness_p99_ms"
    assert parse_slo("sent_delay_p95.00_ms < 5").text == "sent_delay_p95_ms < 5"


def test_operators_are_exactly_the_five_comparisons() -> None:
    assert set(OPERATORS) == {"<", "<=", ">", ">=", "=="}
    for op in ("<", "<=", ">", ">=", "=="):
        assert parse_slo(f"lost {op} 1").op == op


def test_slo_is_frozen() -> None:
    slo = parse_slo("lost == 0")
    with pytest.raises(dataclasses.FrozenInstanceError):
        slo.threshold = 5.0  # type: ignore[misc]


def test_metric_catalogue_matches_run_result() -> None:
    fields = {f.name: f.type for f in dataclasses.fields(RunResult)}
    for name in METRICS:
        assert fields.get(name) in ("int", "float"), f"slo.METRICS names {name!r}, not a numeric RunResult field"
    numeric = {name for name, kind in fields.items() if kind in ("int", "float")}
    # duration_s and due_slot_s (the accounting grid) are settings in seconds, not measured figures.
    missing = numeric - set(METRICS) - {"duration_s", "due_slot_s"}
    assert not missing, f"numeric RunResult field(s) {sorted(missing)} are missing from slo.METRICS"


def test_metric_units() -> None:
    assert METRICS["loss"] == "fraction"
    assert METRICS["throughput_per_s"] == "per_s"
    assert METRICS["duplicates"] == "count"
    assert all(unit == "ms" for name, unit in METRICS.items() if name.endswith("_ms"))


def test_the_outage_figures_are_slo_metrics() -> None:
    result = FakeResult(
        reconnect_p99_ms=3340.0, reconnects=20, dropped_offline=0, unsent=0, resent=14, offline_device_s=63.4
    )
    slo = parse_slo("reconnect_p99_ms < 10s")
    assert (slo.threshold, slo.unit) == (10000.0, "ms")
    assert slo.evaluate(result).describe() == "reconnect_p99_ms < 10s: measured 3340.0 ms -> PASS"
    for text in ("dropped_offline == 0", "unsent == 0", "reconnects <= 20", "resent < 100"):
        assert parse_slo(text).evaluate(result).passed, text
    offline = parse_slo("offline_device_s < 60").evaluate(result)
    assert not offline.passed and offline.measured_text == "63.4 device-s"
    with pytest.raises(SloSyntaxError, match="device-seconds"):
        parse_slo("offline_device_s < 60s")
    # No reconnect happened: no reconnect time was measured, so an SLO on it has no data.
    quiet = parse_slo("reconnect_p99_ms < 10000").evaluate(FakeResult(reconnect_p99_ms=math.nan))
    assert not quiet.passed and "no data" in quiet.describe()


# -- errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("", ["is empty", "p95_delay_ms < 1000"]),
        ("   ", ["is empty"]),
        ("p95_delay < 1000", ["unknown metric 'p95_delay'", "did you mean 'p95_delay_ms'", "loss", "pNN_delay_ms"]),
        ("latency < 5", ["unknown metric 'latency'", "p95_delay_ms", "throughput_per_s", "pNN_delay_ms"]),
        ("duration_s < 5", ["unknown metric 'duration_s'"]),
        ("p95_delay_ms << 1000", ["'<<' is not a comparison operator", "< <= > >= =="]),
        ("p95_delay_ms = 1000", ["'=' is not a comparison operator", "'=='"]),
        ("p95_delay_ms != 1000", ["'!=' is not a comparison operator"]),
        ("p95_delay_ms =< 1000", ["'=<' is not a comparison operator"]),
        ("p95_delay_ms 1000", ["expected a comparison operator", "after 'p95_delay_ms'", "'1000'"]),
        ("loss < 5 parsecs", ["unit 'parsecs' is not allowed for loss", "fraction", "0.1%"]),
        ("duplicates < 3ms", ["unit 'ms' is not allowed for duplicates", "count", "bare number"]),
        ("lost < 1%", ["unit '%' is not allowed for lost", "loss < 0.1%"]),
        ("p95_delay_ms < 5%", ["unit '%' is not allowed for p95_delay_ms", "milliseconds", "ms", "2s"]),
        ("p95_delay_ms < 1 min", ["unit 'min' is not allowed for p95_delay_ms"]),
        ("throughput_per_s > 3s", ["unit 's' is not allowed for throughput_per_s", "per second"]),
        ("p95_delay_ms <", ["missing number after '<'", "end of the expression"]),
        ("p95_delay_ms < fast", ["missing number after '<'", "'fast'"]),
        ("p95_delay_ms < ms", ["missing number"]),
        ("p95_delay_ms < 1000 and loss < 1%", ["unexpected 'loss < 1%'", "exactly one"]),
        ("p95_delay_ms < 1000ms ms", ["unexpected 'ms'"]),
        ("loss < 0.1%%", ["unexpected '%'"]),
        ("< 1000", ["expected a metric name"]),
        ("p0_delay_ms < 1", ["percentile 0", "outside (0, 100]"]),
        ("p100.5_delay_ms < 1", ["percentile 100.5", "outside (0, 100]"]),
        ("p9999_delay_ms < 1", ["percentile 9999", "did you mean 'p99.99_delay_ms'"]),
        ("lateness_p999_ms < 1", ["did you mean 'lateness_p99.9_ms'"]),
        ("p95_delay_ms < 1e999", ["too large"]),
        ("p95_delay_ms < inf", ["missing number"]),
        ("p95_delay_ms < nan", ["missing number"]),
    ],
)
def test_syntax_errors_quote_the_expression_and_say_what_is_allowed(text: str, fragments: list[str]) -> None:
    with pytest.raises(SloSyntaxError) as info:
        parse_slo(text)
    message = str(info.value)
    assert message.startswith(f"invalid SLO {text!r}: ")
    for fragment in fragments:
        assert fragment in message
    assert info.value.expression == text


def test_syntax_error_is_a_config_error_and_pickles() -> None:
    with pytest.raises(ConfigError) as info:
        parse_slo("loss < 5 parsecs")
    assert isinstance(info.value, SloSyntaxError)
    clone = pickle.loads(pickle.dumps(info.value))
    assert isinstance(clone, SloSyntaxError)
    assert str(clone) == str(info.value)
    assert clone.expression == "loss < 5 parsecs"


def test_syntax_error_quotes_a_huge_expression_truncated() -> None:
    text = "p95_delay_ms < 1000 " + "x" * 10_000
    with pytest.raises(SloSyntaxError) as info:
        parse_slo(text)
    assert len(str(info.value)) < 600
    assert info.value.expression == text


# -- evaluation ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "measured", "passed"),
    [
        ("<", 9.5, True),
        ("<", 10.0, False),
        ("<", 10.5, False),
        ("<=", 9.5, True),
        ("<=", 10.0, True),
        ("<=", 10.5, False),
        (">", 9.5, False),
        (">", 10.0, False),
        (">", 10.5, True),
        (">=", 9.5, False),
        (">=", 10.0, True),
        (">=", 10.5, True),
        ("==", 9.5, False),
        ("==", 10.0, True),
        ("==", 10.5, False),
    ],
)
def test_every_operator_at_the_boundary(op: str, measured: float, passed: bool) -> None:
    verdict = parse_slo(f"lateness_p99_ms {op} 10").evaluate(FakeResult(lateness_p99_ms=measured))
    assert verdict.measured == measured
    assert verdict.passed is passed


def test_converted_thresholds_hold_exactly_at_the_boundary() -> None:
    # 0.7% is 0.007 and 2.5 s is 2500 ms exactly: equality must pass, not fall to a rounding error.
    assert parse_slo("loss <= 0.7%").evaluate(FakeResult(loss=0.007)).passed
    assert not parse_slo("loss < 0.7%").evaluate(FakeResult(loss=0.007)).passed
    assert parse_slo("p99_delay_ms <= 2.5s").evaluate(FakeResult(p99_delay_ms=2500.0)).passed
    assert not parse_slo("p99_delay_ms < 2.5s").evaluate(FakeResult(p99_delay_ms=2500.0)).passed
    assert parse_slo("duplicates == 0").evaluate(FakeResult(duplicates=0)).passed
    assert not parse_slo("duplicates == 0").evaluate(FakeResult(duplicates=1)).passed


def test_no_data_fails_every_operator() -> None:
    for op in OPERATORS:
        verdict = parse_slo(f"p95_delay_ms {op} 1000").evaluate(FakeResult(p95_delay_ms=math.nan))
        assert math.isnan(verdict.measured)
        assert verdict.passed is False
        assert "no data" in verdict.describe()
        assert verdict.describe().endswith("-> FAIL")
    assert parse_slo("mean_delay_ms < 1").evaluate(FakeResult(mean_delay_ms=None)).passed is False


def test_percentile_names_ask_the_result_for_that_percentile() -> None:
    result = FakeResult(
        delay_table={99.9: 41_000.0 / 1000, 99.99: 77.0, 12.5: 3.0},
        sent_delay_table={90: 2500.0, 99.9: -750.0},
        lateness_table={75: 1500.0},
    )
    assert parse_slo("p99.9_delay_ms < 50ms").measure(result) == 41.0
    assert parse_slo("p99.99_delay_ms < 50ms").measure(result) == 77.0
    assert parse_slo("p12.5_delay_ms < 50ms").measure(result) == 3.0
    assert result.asked == [99.9, 99.99, 12.5]
    # The histograms are in microseconds; the SLO is in milliseconds.
    assert parse_slo("sent_delay_p90_ms < 3").measure(result) == 2.5
    assert parse_slo("sent_delay_p99.9_ms > -1").measure(result) == -0.75
    assert result.sent_delay_histogram.asked == [90, 99.9]
    assert parse_slo("lateness_p75_ms <= 1.5").evaluate(result).passed
    assert result.lateness_histogram.asked == [75]


def test_named_figures_are_read_as_attributes_not_recomputed() -> None:
    # p95_delay_ms and lateness_p99_ms are RunResult fields: read them, do not ask a histogram.
    result = FakeResult(p95_delay_ms=880.0, lateness_p99_ms=4.0, sent_delay_p95_ms=6.0, p999_delay_ms=990.0)
    assert parse_slo("p95_delay_ms < 1000").measure(result) == 880.0
    assert parse_slo("lateness_p99_ms < 10").measure(result) == 4.0
    assert parse_slo("sent_delay_p95_ms < 10").measure(result) == 6.0
    assert parse_slo("p999_delay_ms < 1000").measure(result) == 990.0
    assert result.asked == []
    assert result.lateness_histogram.asked == []


def test_percentile_names_on_a_real_run_result() -> None:
    # Values below 256 us are stored exactly, so nearest-rank percentiles can be done by hand:
    # delays 1..200 us: p99.5 is rank ceil(0.995*200)=199 -> 199 us; p99.9 is rank 200 -> 200 us; p0.5 is rank 1.
    # sent delays -50..49 us: p90 is rank 90 -> 39 us; p10 is rank 10 -> -41 us.
    # lateness 10, 20 .. 100 us: p75 is rank ceil(7.5)=8 -> 80 us.
    result = run_result(
        delay_histogram=histogram(list(range(1, 201))),
        sent_delay_histogram=histogram(list(range(-50, 50))),
        lateness_histogram=histogram(list(range(10, 101, 10))),
    )
    assert parse_slo("p99.5_delay_ms < 1").measure(result) == pytest.approx(0.199)
    assert parse_slo("p99.9_delay_ms < 1").measure(result) == pytest.approx(0.200)
    assert parse_slo("p0.5_delay_ms < 1").measure(result) == pytest.approx(0.001)
    assert parse_slo("sent_delay_p90_ms < 1").measure(result) == pytest.approx(0.039)
    assert parse_slo("sent_delay_p10_ms < 1").measure(result) == pytest.approx(-0.041)
    assert parse_slo("lateness_p75_ms < 1").measure(result) == pytest.approx(0.080)
    assert parse_slo("p99.9_delay_ms <= 0.2").evaluate(result).passed
    assert not parse_slo("p99.9_delay_ms < 0.2").evaluate(result).passed
    # Named fields come from the dataclass, not the histogram.
    assert parse_slo("p95_delay_ms < 1").measure(result) == 1234.5


def test_empty_histograms_are_no_data() -> None:
    result = run_result()
    for text in ("p99.9_delay_ms < 1", "sent_delay_p90_ms < 1", "lateness_p75_ms < 1"):
        verdict = parse_slo(text).evaluate(result)
        assert math.isnan(verdict.measured)
        assert not verdict.passed


def test_evaluate_all_keeps_order() -> None:
    slos = [parse_slo("lost == 0"), parse_slo("loss < 1%"), parse_slo("p95_delay_ms < 1000")]
    verdicts = evaluate_all(slos, run_result())
    assert [v.slo for v in verdicts] == slos
    assert [v.passed for v in verdicts] == [False, True, False]
    assert [v.measured for v in verdicts] == [30.0, 0.0025, 1234.5]


# -- display -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "figures", "line"),
    [
        ("p95_delay_ms < 1000", {"p95_delay_ms": 1234.5}, "p95_delay_ms < 1000: measured 1234.5 ms -> FAIL"),
        ("p95_delay_ms < 1000", {"p95_delay_ms": 880.0}, "p95_delay_ms < 1000: measured 880.0 ms -> PASS"),
        ("p99_delay_ms <= 2s", {"p99_delay_ms": 2000.25}, "p99_delay_ms <= 2s: measured 2000.25 ms -> FAIL"),
        ("p50_delay_ms < 1", {"p50_delay_ms": 0.123}, "p50_delay_ms < 1: measured 0.123 ms -> PASS"),
        ("loss < 0.1%", {"loss": 0.0025}, "loss < 0.1%: measured 0.250% -> FAIL"),
        ("loss < 0.001", {"loss": 0.0}, "loss < 0.001: measured 0.000% -> PASS"),
        ("duplicates == 0", {"duplicates": 3}, "duplicates == 0: measured 3 -> FAIL"),
        ("throughput_per_s >= 950", {"throughput_per_s": 949.5}, "throughput_per_s >= 950: measured 949.5/s -> FAIL"),
        ("p95_delay_ms < 1000", {"p95_delay_ms": math.nan}, "p95_delay_ms < 1000: no data (nothing measured) -> FAIL"),
    ],
)
def test_describe(text: str, figures: dict[str, Any], line: str) -> None:
    assert parse_slo(text).evaluate(FakeResult(**figures)).describe() == line


def test_a_tiny_loss_is_not_shown_as_zero() -> None:
    verdict = parse_slo("loss == 0").evaluate(FakeResult(loss=1e-7))
    assert not verdict.passed
    assert "0.000%" not in verdict.describe()
    assert "1e-05%" in verdict.describe()


def test_measured_text_of_no_data() -> None:
    verdict = SloVerdict(slo=parse_slo("loss < 1%"), measured=math.nan, passed=False)
    assert verdict.measured_text == "no data"


def test_failure_message_lists_every_violation_with_the_sample_size() -> None:
    slos = [parse_slo(t) for t in ("p95_delay_ms < 1000", "duplicates == 0", "loss < 0.1%", "throughput_per_s >= 300")]
    verdicts = evaluate_all(slos, run_result())
    assert failure_message(verdicts, 12_000) == (
        "2 of 4 SLOs violated (n=12,000 messages):\n"
        "  p95_delay_ms < 1000: measured 1234.5 ms\n"
        "  loss < 0.1%: measured 0.250%"
    )


def test_failure_message_with_no_data_and_singular_forms() -> None:
    verdicts = evaluate_all([parse_slo("p99.9_delay_ms < 5")], run_result())
    assert (
        failure_message(verdicts, 1)
        == "1 of 1 SLO violated (n=1 message):\n  p99.9_delay_ms < 5: no data (nothing measured)"
    )


def test_failure_message_when_everything_passed() -> None:
    verdicts = evaluate_all([parse_slo("lost < 100"), parse_slo("duplicates == 0")], run_result())
    assert failure_message(verdicts, 12_000) == "all 2 SLOs met (n=12,000 messages)"
    assert failure_message([], 0) == "no SLOs to check (n=0 messages)"


# -- merging -------------------------------------------------------------------


def texts(slos: list[Slo]) -> list[str]:
    return [slo.text for slo in slos]


def test_override_replaces_the_same_metric_and_direction_in_place() -> None:
    base = [parse_slo("p95_delay_ms < 1000"), parse_slo("loss < 0.1%"), parse_slo("lost == 0")]
    merged = merge_slos(base, [parse_slo("p95_delay_ms <= 800")])
    assert texts(merged) == ["p95_delay_ms <= 800", "loss < 0.1%", "lost == 0"]


def test_override_in_the_other_direction_is_added() -> None:
    base = [parse_slo("p95_delay_ms < 1000"), parse_slo("throughput_per_s >= 950")]
    merged = merge_slos(base, [parse_slo("p95_delay_ms > 1"), parse_slo("throughput_per_s <= 2000")])
    assert texts(merged) == [
        "p95_delay_ms < 1000",
        "throughput_per_s >= 950",
        "p95_delay_ms > 1",
        "throughput_per_s <= 2000",
    ]


def test_lower_bounds_replace_lower_bounds() -> None:
    merged = merge_slos([parse_slo("throughput_per_s >= 950")], [parse_slo("throughput_per_s > 500")])
    assert texts(merged) == ["throughput_per_s > 500"]


def test_equality_bounds_both_sides() -> None:
    # "==" pins both ends: it replaces an upper and a lower bound, and either replaces it.
    base = [parse_slo("lost > 0"), parse_slo("loss < 1%"), parse_slo("lost < 10")]
    assert texts(merge_slos(base, [parse_slo("lost == 0")])) == ["lost == 0", "loss < 1%"]
    assert texts(merge_slos([parse_slo("duplicates == 0")], [parse_slo("duplicates <= 5")])) == ["duplicates <= 5"]


def test_new_metrics_are_appended_in_override_order() -> None:
    base = [parse_slo("p95_delay_ms < 1000")]
    merged = merge_slos(base, [parse_slo("lost == 0"), parse_slo("loss < 1%"), parse_slo("p95_delay_ms < 900")])
    assert texts(merged) == ["p95_delay_ms < 900", "lost == 0", "loss < 1%"]


def test_a_later_override_wins() -> None:
    merged = merge_slos(
        [parse_slo("p95_delay_ms < 1000")], [parse_slo("p95_delay_ms < 800"), parse_slo("p95_delay_ms < 700")]
    )
    assert texts(merged) == ["p95_delay_ms < 700"]


def test_merge_matches_percentile_spellings_and_leaves_inputs_alone() -> None:
    base = [parse_slo("p99.9_delay_ms < 50ms"), parse_slo("p99_delay_ms < 40")]
    overrides = [parse_slo("p099.90_delay_ms < 60")]
    merged = merge_slos(base, overrides)
    assert texts(merged) == ["p99.9_delay_ms < 60", "p99_delay_ms < 40"]
    assert texts(base) == ["p99.9_delay_ms < 50ms", "p99_delay_ms < 40"]
    assert texts(overrides) == ["p99.9_delay_ms < 60"]
    assert merge_slos(base, []) == base
    assert merge_slos([], overrides) == overrides


# -- fuzz ----------------------------------------------------------------------

_TOKENS = [
    *METRICS,
    "p",
    "99",
    ".",
    "9",
    "0",
    "_delay_ms",
    "lateness_p",
    "sent_delay_p",
    "_ms",
    "<",
    "<=",
    ">",
    ">=",
    "==",
    "=",
    "!",
    " ",
    "\t",
    "1",
    "1000",
    "-",
    "+",
    "e",
    "e999",
    "1e-9999",
    "%",
    "ms",
    "s",
    "S",
    "parsecs",
    "inf",
    "nan",
    "\u00b5",
    "\u0663",
]


def _check_parse_contract(text: str) -> None:
    try:
        slo = parse_slo(text)
    except SloSyntaxError as exc:
        assert exc.expression == text
        return
    assert isinstance(slo, Slo)
    assert slo.op in OPERATORS
    assert slo.unit in ("ms", "fraction", "count", "per_s")
    assert math.isfinite(slo.threshold)
    # The display text is itself a valid expression meaning the same thing.
    again = parse_slo(slo.text)
    assert again == slo


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_fuzz_arbitrary_text_parses_or_raises_the_syntax_error(text: str) -> None:
    _check_parse_contract(text)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_TOKENS), max_size=8).map("".join))
def test_fuzz_near_valid_text_parses_or_raises_the_syntax_error(text: str) -> None:
    _check_parse_contract(text)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(sorted(METRICS)),
    st.sampled_from(["<", "<=", ">", ">=", "=="]),
    st.integers(min_value=-(10**6), max_value=10**6),
)
def test_fuzz_valid_expressions_keep_their_threshold(metric: str, op: str, number: int) -> None:
    slo = parse_slo(f"{metric}{op}{number}")
    assert (slo.metric, slo.op, slo.threshold) == (metric, op, float(number))
