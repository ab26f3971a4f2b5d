"""The InfluxDB export and its Grafana dashboard: pure layout and percentile tests, then a real server.

The server is VictoriaMetrics (``tests/victoria.py``): it takes influxdb-client's
v2 writes unchanged and exports the raw samples back, so the tests check what
actually went over the wire.  It ignores tokens, so token secrecy is checked
on error texts and logs, and with a small stub server that refuses the token.
"""

from __future__ import annotations

import http.server
import json
import logging
import math
import random
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import pytest
from victoria import Series, VictoriaMetrics, free_port
from wallclock import StartUp

from pytest_iotperf.metrics import DelayHistogram, DeliveryLedger
from pytest_iotperf.report import grafana, influx
from pytest_iotperf.report.influx import (
    ExportReport,
    InfluxExportError,
    InfluxTarget,
    build_points,
    export_run,
    histogram_rows,
    nearest_rank,
    per_minute_from_report,
    percentile_from_rows,
)
from pytest_iotperf.result import RunResult, build_result
from pytest_iotperf.wire_reports import FleetReport, SinkReport

TOKEN = "tok-SECRET-9f3b2c7e-do-not-print"
TEST_ID = "tests/test_fleet.py::test_p95[100 devices]"
QUANTILES = ((0.5, 50.0), (0.9, 90.0), (0.95, 95.0), (0.99, 99.0), (0.999, 99.9))


# -- a realistic run -------------------------------------------------------------------------------


@dataclass
class Run:
    """A run built by the real ``build_result`` from fleet and sink reports, plus the raw delays behind them."""

    result: RunResult
    sink: dict[str, Any]
    delays_us: list[int]

    @property
    def t0(self) -> float:
        assert self.result.t0 is not None
        return self.result.t0

    @property
    def per_minute(self) -> dict[int, dict[int, int]]:
        rows = per_minute_from_report(self.sink)
        assert rows is not None
        return rows


def make_run(run_id: str, *, devices: int = 40, duration_s: int = 150, seed: int = 7) -> Run:
    """Devices publishing once a second for ``duration_s``, about 1 % lost, lognormal delays (median ~20 ms)."""
    rng = random.Random(seed)
    t0 = float(int(time.time()) - 1200) + 0.25  # recent (inside the server's retention), not on a whole second
    ledger, delay, lateness = DeliveryLedger(), DelayHistogram(), DelayHistogram()
    sent_by_device: dict[str, int] = {}
    sent_timeline: Counter[int] = Counter()
    received_timeline: dict[int, DelayHistogram] = {}
    per_minute: dict[int, Counter[int]] = {}
    delays_us: list[int] = []
    for device in range(devices):
        device_id = f"dev-{device:04d}"
        sent_by_device[device_id] = duration_s
        for seq in range(duration_s):
            intended_us = int((t0 + seq + device * 0.013) * 1_000_000)
            sent_timeline[intended_us // 1_000_000] += 1
            lateness.record(rng.randrange(0, 3000))
            if (device * 7919 + seq) % 101 == 0:
                continue  # lost
            delay_us = int(rng.lognormvariate(math.log(20_000), 0.6))
            received_us = intended_us + delay_us
            ledger.record(device_id, seq)
            delay.record(delay_us)
            received_timeline.setdefault(received_us // 1_000_000, DelayHistogram()).record(delay_us)
            per_minute.setdefault(received_us // 60_000_000 * 60, Counter())[delay_us // 1000] += 1
            delays_us.append(delay_us)
    fleet = {
        "run_id": run_id,
        "t0": t0,
        "sent_by_device": sent_by_device,
        "sent_timeline": {str(slot): n for slot, n in sent_timeline.items()},
        "connected_at_go": devices,
        "scheduled": devices * duration_s,
        "lateness": lateness.to_dict(),
    }
    # The sink report's JSON shape: string keys, as the Event Hubs sink writes it.
    sink = {
        "run_id": run_id,
        "ledger": ledger.to_dict(),
        "delay": delay.to_dict(),
        "timeline": {str(slot): h.to_dict() for slot, h in received_timeline.items()},
        "per_minute": {str(m): {str(ms): n for ms, n in rows.items()} for m, rows in per_minute.items()},
        "drain": "complete",
    }
    settings = {"run_id": run_id, "devices": devices, "rate": 1.0, "duration": duration_s, "sink": "eventhub"}
    # Partial reports (only what these tests read): build_result reads every field with get().
    result = build_result(
        settings=settings,
        sources={},
        broker="mosquitto 2.0.11 (embedded)",
        fleet=cast(FleetReport, fleet),
        sink=cast(SinkReport, sink),
    )
    result.slos = [
        {"slo": "p95_delay_ms < 100", "threshold": 100, "unit": "ms", "measured": result.p95_delay_ms, "passed": True},
        {"slo": "loss < 0.1%", "threshold": 0.001, "unit": "", "measured": result.loss, "passed": False},
    ]
    return Run(result, sink, delays_us)


@pytest.fixture(scope="module")
def run() -> Run:
    return make_run("run-shared")


def exact_ms_percentile(delays_us: list[int], q: float) -> int:
    """Nearest-rank percentile of the raw values, floored to whole ms: what ms-floor rows can give exactly.

    Computed independently of the module (exact fractions, sorted raw values).
    """
    ordered = sorted(delays_us)
    rank = max(1, math.ceil(Fraction(str(q)) * len(ordered)))
    return ordered[rank - 1] // 1000


# -- pure: target, percentiles, points ---------------------------------------------------------------


def test_target_repr_hides_token() -> None:
    target = InfluxTarget(url="http://user:pw@influx.example:8086/", org="perf", bucket="iotperf", token=TOKEN)
    for text in (repr(target), str(target), target.description):
        assert TOKEN not in text
        assert "pw" not in text
    assert "token='***'" in repr(target)
    assert "influx.example:8086" in target.description


def test_percentile_boundary_takes_the_bucket_that_reaches_the_rank() -> None:
    # 95 of 100 at 10 ms: the 95th value is 10 ms.  The seed's "cumulative < total, last()" picked the bucket
    # below the rank (here: none at all), so its p95 was one bucket low.
    rows = [(10, 95), (20, 5)]
    assert percentile_from_rows(rows, 0.95) == 10.0
    assert percentile_from_rows(rows, 0.951) == 20.0
    assert percentile_from_rows(rows, 0.0) == 10.0  # rank at least 1: the smallest delay
    assert percentile_from_rows(rows, 1.0) == 20.0
    # Counts of the same delay in several minutes add up.
    assert percentile_from_rows([(20, 3), (10, 50), (20, 2), (10, 45)], 0.95) == 10.0
    assert math.isnan(percentile_from_rows([], 0.5))
    assert math.isnan(percentile_from_rows([(5, 0)], 0.5))


def test_nearest_rank_is_exact_where_floats_are_not() -> None:
    # 0.07 * 100 == 7.000000000000001 and 0.9 * 10 == 9.000000000000002 in floats: ceil would give 8 and 10.
    assert nearest_rank(100, 0.07) == 7
    assert nearest_rank(10, 0.9) == 9
    assert nearest_rank(1000, 0.999) == 999
    assert nearest_rank(1001, 0.999) == 1000
    assert nearest_rank(3, 0.0) == 1
    assert nearest_rank(3, 1.0) == 3


def test_percentile_from_rows_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="within"):
        percentile_from_rows([(1, 1)], 95)
    with pytest.raises(ValueError, match="within"):
        percentile_from_rows([(1, 1)], math.nan)
    with pytest.raises(ValueError, match=">= 0"):
        percentile_from_rows([(1, -1)], 0.5)


@pytest.mark.parametrize("seed", range(6))
def test_histogram_rows_give_the_histogram_percentile_floored(seed: int) -> None:
    rng = random.Random(seed)
    histogram = DelayHistogram()
    # Skewed clocks (negative), sub-ms exact buckets, and wide buckets above 128 ms.
    for _ in range(rng.randrange(1, 5000)):
        histogram.record(int(rng.choice([rng.gauss(300, 400), rng.lognormvariate(10, 1.2), rng.uniform(0, 4e6)])))
    rows = histogram_rows(histogram)
    assert sum(rows.values()) == histogram.count
    for q, q100 in QUANTILES:
        reported_ms = histogram.percentile(q100) / 1000
        from_rows = percentile_from_rows(rows.items(), q)
        assert from_rows == math.floor(reported_ms), (q, reported_ms, from_rows)
        assert 0 <= reported_ms - from_rows < 1


def test_ms_floor_rows_match_exact_and_run_result_percentiles(run: Run) -> None:
    rows = [(ms, n) for buckets in run.per_minute.values() for ms, n in buckets.items()]
    assert sum(n for _, n in rows) == run.result.received
    for q, q100 in QUANTILES:
        from_rows = percentile_from_rows(rows, q)
        assert from_rows == exact_ms_percentile(run.delays_us, q)
        # Against RunResult: within the 1 ms bucket, plus the histogram's own half-bucket error (<= 1/256).
        reported = run.result.percentile(q100)
        assert -reported / 256 <= reported - from_rows < 1 + reported / 256, (q, reported, from_rows)


def test_points_layout_and_determinism(run: Run) -> None:
    points = build_points(run.result, test_id=TEST_ID, per_minute=run.per_minute, extra_tags={"branch": "main"})
    # Same input, same points: a re-export overwrites instead of adding (no uuid, no wall clock).
    assert points == build_points(
        run.result.to_dict(), test_id=TEST_ID, per_minute=run.per_minute, extra_tags={"branch": "main"}
    )
    by_measurement = Counter(point.measurement for point in points)
    delay_points = [p for p in points if p.measurement == "iotperf_delay"]
    assert by_measurement["iotperf_run"] == 1
    assert by_measurement["iotperf_timeline"] == len(run.result.timeline)
    assert sum(int(p.fields["count"]) for p in delay_points) == run.result.received
    # Each (minute, delay bucket) is one point of its own series: no two share series key and time.
    keys = {(tuple(sorted(p.tags.items())), p.time_ms) for p in delay_points}
    assert len(keys) == len(delay_points)
    assert all(p.time_ms % 60_000 == 0 for p in delay_points)
    for point in points:
        assert point.tags["run_id"] == "run-shared"
        assert point.tags["test"] == TEST_ID
        assert point.tags["branch"] == "main"
    (run_point,) = (p for p in points if p.measurement == "iotperf_run")
    assert run_point.tags["broker"] == "mosquitto 2.0.11 (embedded)"
    assert run_point.tags["sink"] == "eventhub"
    assert run_point.fields["slo_passed"] == 1 and run_point.fields["slo_failed"] == 1
    assert isinstance(run_point.fields["sent"], int) and isinstance(run_point.fields["loss"], float)
    assert run_point.time_ms == round(run.t0 * 1000)


def test_points_from_histogram_when_no_per_minute(run: Run) -> None:
    points = build_points(run.result, test_id=TEST_ID)
    delay_points = [p for p in points if p.measurement == "iotperf_delay"]
    assert {p.time_ms for p in delay_points} == {round(run.t0 * 1000)}
    assert sum(int(p.fields["count"]) for p in delay_points) == run.result.received


def test_unmeasured_figures_are_left_out() -> None:
    result = RunResult(**_empty_run_fields("run-empty")).to_dict()  # NaN percentiles become None in to_dict
    points = build_points(result, test_id=TEST_ID, now_s=1_700_000_000.0)
    (run_point,) = points
    assert run_point.measurement == "iotperf_run"
    assert "p95_delay_ms" not in run_point.fields
    assert run_point.fields["sent"] == 0
    assert run_point.time_ms == 1_700_000_000_000


def _empty_run_fields(run_id: str) -> dict[str, Any]:
    nan = math.nan
    return dict(
        run_id=run_id, devices=0, rate_per_device=0.0, duration_s=0.0, sent=0, received=0, lost=0, duplicates=0,
        out_of_order=0, loss=0.0, p50_delay_ms=nan, p90_delay_ms=nan, p95_delay_ms=nan, p99_delay_ms=nan,
        p999_delay_ms=nan, max_delay_ms=nan, mean_delay_ms=nan, throughput_per_s=0.0, lateness_p50_ms=nan,
        lateness_p99_ms=nan, connect_failures=0, publish_errors=0, workers=0, broker="",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("extra_tags", "message"),
    [({"run_id": "x"}, "would replace"), ({"_field": "x"}, "not allowed"), ({"time": "x"}, "not allowed")],
)
def test_bad_extra_tags_are_an_error_not_an_exception(run: Run, extra_tags: dict[str, str], message: str) -> None:
    target = InfluxTarget("http://127.0.0.1:9", "org", "bucket", TOKEN)
    report = export_run(target, run.result, test_id=TEST_ID, extra_tags=extra_tags)
    assert report.error is not None and message in report.error
    assert report.points_written == 0
    with pytest.raises(InfluxExportError, match=message):
        export_run(target, run.result, test_id=TEST_ID, extra_tags=extra_tags, raise_on_error=True)


# -- the dashboard -----------------------------------------------------------------------------------


def _squash(text: str) -> str:
    return " ".join(text.split())


def test_dashboard_is_provisionable_and_uses_the_documented_percentile() -> None:
    board = grafana.dashboard()
    assert 36 <= board["schemaVersion"] <= 41
    assert board["uid"] == "iotperf-run"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["query"] == "influxdb"
    assert "iotperf_run" in variables["run_id"]["query"] and "run_id" in variables["run_id"]["query"]
    panels = {panel["title"]: panel for panel in board["panels"]}
    assert len({panel["id"] for panel in board["panels"]}) == len(board["panels"])
    over_time = panels["Delay percentiles over time (ms)"]["targets"][0]["query"]
    # The query the module docstring documents is the one the dashboard runs.
    assert _squash(over_time) in _squash(influx.__doc__ or "")
    assert "r._value_c >= nearestRank(total: r._value_t, q: q)" in over_time
    whole = panels["Delay percentiles over the selected range (ms)"]["targets"][0]["query"]
    assert "window(" not in whole and "nearestRank" in whole
    queries = " ".join(panel["targets"][0]["query"] for panel in board["panels"])
    for measurement in ("iotperf_delay", "iotperf_run", "iotperf_timeline"):
        assert f'r._measurement == "{measurement}"' in queries
    assert "devices_connected" in queries and '"loss"' in queries
    for panel in board["panels"]:
        assert panel["datasource"] == {"type": "influxdb", "uid": "${datasource}"}
        assert '"${run_id}"' in panel["targets"][0]["query"]


def test_flux_rank_arithmetic_is_the_python_one() -> None:
    # The Flux nearestRank, transcribed line by line (int() truncates, / on ints truncates, as in Flux).
    def flux_nearest_rank(total: int, q: float) -> int:
        scaled = int(q * 100000.0 + 0.5)
        rank = (total * scaled + 99999) // 100000
        return 1 if rank < 1 else rank

    rng = random.Random(3)
    for _ in range(2000):
        total, q = rng.randrange(0, 10**9), rng.choice([0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0, rng.random()])
        assert flux_nearest_rank(total, q) == nearest_rank(total, q)
    documented = (influx.__doc__ or "").split("nearestRank = (total, q) => {")[1].split("}")[0]
    assert _squash(documented) == _squash(
        "scaled = int(v: q * 100000.0 + 0.5) rank = (total * scaled + 99999) / 100000 "
        "return if rank < 1 then 1 else rank"
    )


def test_grafana_cli_prints_path_or_writes_provisioning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert grafana.main([]) == 0
    printed = Path(capsys.readouterr().out.strip())
    assert printed.name == "grafana_dashboard.json" and printed.is_file()
    assert grafana.main(["--out", str(tmp_path / "prov")]) == 0
    written = json.loads((tmp_path / "prov" / "iotperf-run.json").read_text())
    assert written == grafana.dashboard()
    provider = (tmp_path / "prov" / "iotperf-dashboards.yaml").read_text()
    assert "apiVersion: 1" in provider and json.dumps(str((tmp_path / "prov").resolve())) in provider


# -- against a real server -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    with VictoriaMetrics.start(tmp_path_factory.mktemp("victoria")) as server:
        yield server


def target_of(vm: VictoriaMetrics, path: str = "") -> InfluxTarget:
    return InfluxTarget(url=vm.url + path, org="perf", bucket="iotperf", token=TOKEN)


def delay_rows(series: list[Series]) -> list[tuple[int, int]]:
    return [(int(s.labels["delay_ms"]), int(v)) for s in series for v in s.values]


def test_export_reads_back_exactly(vm: VictoriaMetrics, run: Run, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    result = run.result
    report = export_run(
        target_of(vm), result.to_dict(), test_id=TEST_ID, per_minute=run.per_minute, extra_tags={"branch": "main"}
    )
    assert report == ExportReport(report.points_written, None, report.elapsed_s)
    expected = build_points(result, test_id=TEST_ID, per_minute=run.per_minute, extra_tags={"branch": "main"})
    assert report.points_written == len(expected)

    delay = vm.export('{__name__="iotperf_delay_count",run_id="run-shared"}')
    assert sum(n for _, n in delay_rows(delay)) == result.received
    assert len(delay) == len({p.tags["delay_ms"] for p in expected if p.measurement == "iotperf_delay"})
    assert all(s.labels["test"] == TEST_ID and s.labels["branch"] == "main" for s in delay)
    assert all(t % 60_000 == 0 for s in delay for t in s.timestamps_ms)

    run_series = vm.export('{__name__=~"iotperf_run_.*",run_id="run-shared"}')
    run_fields = {series.name.removeprefix("iotperf_run_"): series for series in run_series}
    assert {name: s.values for name, s in run_fields.items()} == {
        **{name: [float(getattr(result, name))] for name in ("sent", "received", "lost", "duplicates", "devices")},
        "devices_connected": [float(result.connected)],
        "slo_passed": [1.0],
        "slo_failed": [1.0],
        **{name: [pytest.approx(getattr(result, name), rel=1e-12)] for name in influx._RUN_FLOAT_FIELDS},
    }
    assert run_fields["sent"].labels["broker"] == "mosquitto 2.0.11 (embedded)"
    assert run_fields["sent"].labels["sink"] == "eventhub"
    assert run_fields["sent"].timestamps_ms == [round(run.t0 * 1000)]

    timeline = {s.name: s for s in vm.export('{__name__=~"iotperf_timeline_.*",run_id="run-shared"}')}
    assert len(timeline["iotperf_timeline_sent"].values) == len(result.timeline)
    assert sum(timeline["iotperf_timeline_sent"].values) == result.sent
    assert sum(timeline["iotperf_timeline_received"].values) == result.received
    assert set(timeline["iotperf_timeline_devices_connected"].values) == {float(result.connected)}
    with_p95 = [point for point in result.timeline if point.p95_delay_ms is not None]
    assert len(timeline["iotperf_timeline_p95_delay_ms"].values) == len(with_p95)
    assert timeline["iotperf_timeline_sent"].timestamps_ms == [
        round((run.t0 + point.t_s) * 1000) for point in result.timeline
    ]
    assert TOKEN not in caplog.text


def test_reexport_overwrites_instead_of_doubling(vm: VictoriaMetrics) -> None:
    again = make_run("run-again", devices=10, duration_s=90, seed=11)
    selector = '{__name__=~"iotperf_.*",run_id="run-again"}'
    first = export_run(target_of(vm), again.result, test_id=TEST_ID, per_minute=again.per_minute)
    assert first.ok
    before = vm.export(selector)
    second = export_run(target_of(vm), again.result, test_id=TEST_ID, per_minute=again.per_minute)
    assert second.ok and second.points_written == first.points_written
    after = vm.export(selector)
    # Same series, same samples: with a uuid tag the second export would have added a new series per row.
    assert sorted((tuple(sorted(s.labels.items())), s.timestamps_ms, s.values) for s in after) == sorted(
        (tuple(sorted(s.labels.items())), s.timestamps_ms, s.values) for s in before
    )
    counts = [s for s in after if s.name == "iotperf_delay_count"]
    assert sum(n for _, n in delay_rows(counts)) == again.result.received


def test_percentiles_from_rows_read_back(vm: VictoriaMetrics, run: Run) -> None:
    # Rows from the histogram (no per_minute): exactly floor(RunResult percentile).
    histogram_run = make_run("run-histogram", devices=20, duration_s=120, seed=5)
    assert export_run(target_of(vm), histogram_run.result, test_id=TEST_ID).ok
    rows = delay_rows(vm.export('{__name__="iotperf_delay_count",run_id="run-histogram"}'))
    assert sum(n for _, n in rows) == histogram_run.result.received
    for q, q100 in QUANTILES:
        reported = histogram_run.result.percentile(q100)
        assert percentile_from_rows(rows, q) == math.floor(reported)
        assert 0 <= reported - percentile_from_rows(rows, q) < 1

    # Rows per minute (the shared run, exported by the first server test or here): the exact ms floor.
    export_run(target_of(vm), run.result, test_id=TEST_ID, per_minute=run.per_minute, extra_tags={"branch": "main"})
    rows = delay_rows(vm.export('{__name__="iotperf_delay_count",run_id="run-shared"}'))
    for q, _ in QUANTILES:
        assert percentile_from_rows(rows, q) == exact_ms_percentile(run.delays_us, q)


def test_large_export_is_written_in_chunks(vm: VictoriaMetrics, run: Run) -> None:
    # In the past: VictoriaMetrics silently drops samples more than about a minute in the future.
    minute0 = int(run.t0) // 60 * 60 - 3600
    per_minute = {minute0 + 60 * m: {ms: 1 + (m + ms) % 3 for ms in range(200)} for m in range(60)}  # 12,000 rows
    report = export_run(target_of(vm), run.result, test_id="chunked", per_minute=per_minute)
    assert report.ok, report.error
    assert report.points_written == 12_000 + 1 + len(run.result.timeline)
    rows = delay_rows(vm.export('{__name__="iotperf_delay_count",test="chunked"}'))
    assert len(rows) == 12_000
    assert sum(n for _, n in rows) == sum(n for buckets in per_minute.values() for n in buckets.values())


def test_time_budget_stops_between_requests(vm: VictoriaMetrics, run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    # A clock that jumps past the budget after the first request: the export stops and says how far it got.
    readings = iter([0.0, 0.0])
    monkeypatch.setattr(influx, "_monotonic", lambda: next(readings, 100.0))
    monkeypatch.setattr(influx, "_CHUNK_POINTS", 10)
    report = export_run(target_of(vm), run.result, test_id="budget", per_minute=run.per_minute, timeout_s=5.0)
    total = len(build_points(run.result, test_id="budget", per_minute=run.per_minute))
    assert report.points_written == 10
    assert report.error is not None and f"did not finish within 5 s; 10 of {total} points written" in report.error


def test_typical_run_exports_quickly(
    vm: VictoriaMetrics, capsys: pytest.CaptureFixture[str], startup: StartUp
) -> None:
    typical = make_run("run-typical", devices=100, duration_s=300, seed=13)  # 5 minutes, 30,000 messages
    report = export_run(target_of(vm), typical.result, test_id=TEST_ID, per_minute=typical.per_minute)
    assert report.ok, report.error
    with capsys.disabled():
        print(f"\n[influx export] {report.points_written} points in {report.elapsed_s * 1000:.0f} ms")
    assert report.elapsed_s < startup.ceiling_s(startups=3), startup


# -- failures: fast, clear, no token ---------------------------------------------------------------


def assert_no_token(report: ExportReport, caplog: pytest.LogCaptureFixture) -> None:
    assert report.error is not None
    assert TOKEN not in report.error
    assert TOKEN not in caplog.text
    assert not re.search(r"(?i)(token|bearer) (?!\*\*\*)\S{8,}", report.error)


def test_server_down_fails_fast_with_the_url(run: Run, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    report = export_run(InfluxTarget(url, "perf", "iotperf", TOKEN), run.result, test_id=TEST_ID, timeout_s=3.0)
    assert time.monotonic() - started < 3.0
    assert report.points_written == 0
    assert report.error is not None and url in report.error and "cannot connect" in report.error
    assert_no_token(report, caplog)
    with pytest.raises(InfluxExportError) as raised:
        export_run(InfluxTarget(url, "perf", "iotperf", TOKEN), run.result, test_id=TEST_ID, raise_on_error=True)
    assert TOKEN not in str(raised.value) and url in str(raised.value)


def test_wrong_url_path_says_to_use_the_server_root(
    vm: VictoriaMetrics, run: Run, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    report = export_run(target_of(vm, "/influx/v2"), run.result, test_id=TEST_ID, timeout_s=3.0)
    assert report.error is not None
    assert f"{vm.url}/influx/v2" in report.error and "HTTP 400" in report.error
    assert "server's root without a path" in report.error
    assert_no_token(report, caplog)


def test_hung_server_times_out(run: Run, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # A socket that listens but never answers: the kernel completes the handshake, nobody replies.
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        url = f"http://127.0.0.1:{hung.getsockname()[1]}"
        started = time.monotonic()
        report = export_run(InfluxTarget(url, "perf", "iotperf", TOKEN), run.result, test_id=TEST_ID, timeout_s=0.5)
        elapsed = time.monotonic() - started
    assert 0.4 < elapsed < 3.0
    assert report.error is not None and "no answer within 0.5 s" in report.error and url in report.error
    assert_no_token(report, caplog)


class _Refusing(http.server.BaseHTTPRequestHandler):
    """Answers every write with the configured status, echoing the Authorization header back in the body.

    A careless proxy could do that; the token must still reach neither the error text nor the logs
    (influxdb-client logs a body that is not JSON at DEBUG).
    """

    status = 401
    as_json = True

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        echoed = f"refused {self.headers.get('Authorization')}"
        body = json.dumps({"code": "unauthorized", "message": echoed}) if self.as_json else echoed
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json" if self.as_json else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep the test output clean


@pytest.mark.parametrize(
    ("status", "as_json", "hint"),
    [(401, True, "refused the token"), (401, False, "refused the token"), (404, True, "server's root without a path")],
)
def test_refused_write_names_the_cause_without_the_token(
    run: Run, caplog: pytest.LogCaptureFixture, status: int, as_json: bool, hint: str
) -> None:
    caplog.set_level(logging.DEBUG)
    handler = type("Handler", (_Refusing,), {"status": status, "as_json": as_json})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        report = export_run(InfluxTarget(url, "perf", "iotperf", TOKEN), run.result, test_id=TEST_ID, timeout_s=3.0)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert report.error is not None and f"HTTP {status}" in report.error and hint in report.error
    assert "Token ***" in report.error  # the server echoed the header: scrubbed, not dropped silently
    assert_no_token(report, caplog)
    if not as_json:
        assert "Token ***" in caplog.text  # influxdb-client's DEBUG line with the body went through the filter


def test_malformed_url_is_reported_without_a_request(run: Run) -> None:
    for url in ("influx:8086", "ftp://127.0.0.1:21", "http://", "http://host:port"):
        report = export_run(InfluxTarget(url, "perf", "iotperf", TOKEN), run.result, test_id=TEST_ID)
        assert report.error is not None and "the URL must look like http://host:8086" in report.error, url
        assert report.elapsed_s < 0.5
