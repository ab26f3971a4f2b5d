"""The run handle (``iot_perf.start()`` / ``Pipeline.start()``) and the default load verdicts, on real runs.

A test acts during the run: ``wait_until`` returns after T0 + t on the wall
clock, ``stop()`` ends the steady state early and the run still accounts
exactly, an exception inside the block stops the run, writes what was
measured and propagates, leaving no process behind.  A device that never
connects fails the test by default; an SLO on ``connect_failures`` accepts it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_iotperf import Outputs, Pipeline
from pytest_iotperf.config import resolve
from pytest_iotperf.embedded.broker import EmbeddedBroker, find_mosquitto
from pytest_iotperf.pipeline import RunEnded

pytestmark = [pytest.mark.fleet, pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")]

SUBPROCESS_TIMEOUT_S = 240.0
PROXY_SOURCE = (Path(__file__).resolve().parent / "refusing_proxy.py").read_text()


def _report(directory: Path, test_name: str) -> dict[str, Any]:
    """The JSON result of one test of a pytester session (``<file>.py_<test>.json``)."""
    (path,) = [path for path in directory.glob("*.json") if path.stem.endswith(f"_{test_name}")]
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_act_during_the_run_then_stop_it_and_fail_inside_the_block(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_handle="""
        import json, time
        from pathlib import Path

        import psutil
        import pytest

        RUN = dict(devices=4, rate_per_device=5, duration="60s", drain="10s", workers=1, qos=1)

        @pytest.mark.perf
        def test_act_then_stop(iot_perf):
            asked = time.monotonic()
            with iot_perf.start(**RUN) as run:
                run.wait_until("3s")
                acted = time.time()
                live = run.progress()
                run.stop()
            took = time.monotonic() - asked
            result = run.result
            Path("seen.json").write_text(json.dumps({
                "acted": acted, "t0": result.t0, "live": live, "took_s": took,
                "sent": result.sent, "received": result.received, "scheduled": result.scheduled,
                "lost": result.lost, "duration_s": result.duration_s, "complete": result.complete,
                "errors": result.errors, "slos": result.slos,
            }))

        @pytest.mark.perf
        def test_fails_inside_the_block(iot_perf):
            with iot_perf.start(**RUN) as run:
                run.wait_until("1s")
                raise ValueError("the chaos step broke")

        def test_no_run_process_left(request):
            # Only the master, worker and sink standing for the session's next run may remain.
            from pytest_iotperf.plugin import session_key
            standing = request.config.stash[session_key].standing
            kept = set(standing.pids("fleet") + standing.pids("sink"))
            names = [" ".join(p.cmdline()) for p in psutil.Process().children(recursive=True) if p.pid not in kept]
            left = [n for n in names if "pytest_iotperf.fleet" in n or "pytest_iotperf.sinks" in n]
            assert not left, left
        """
    )
    outcome = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--iot-report-dir", "out", timeout=SUBPROCESS_TIMEOUT_S
    )  # fmt: skip
    outcome.assert_outcomes(passed=2, failed=1)
    # The block's own exception is what fails the test, not a run failure.
    outcome.stdout.fnmatch_lines(["*ValueError: the chaos step broke*"])
    seen = json.loads((pytester.path / "seen.json").read_text())
    # wait_until("3s") returned after T0 + 3 s on the wall clock, and promptly.
    assert seen["t0"] + 3.0 <= seen["acted"] < seen["t0"] + 3.0 + 1.0, seen
    live = seen["live"]
    assert live["phase"] == "publishing" and live["connected"] == 4 and live["elapsed_s"] >= 3.0, live
    assert live["sent"] > 0 and {"received", "p95_delay_ms"} <= live.keys(), live
    # stop(): the steady state ended a moment after the action, not after 60 s, and the run accounted exactly.
    assert 3.0 <= seen["duration_s"] < 5.0, seen
    assert seen["took_s"] < 45.0, seen
    assert seen["complete"] and not seen["errors"], seen
    assert seen["scheduled"] == seen["sent"] == seen["received"] > 4 * 5 * 3 - 4, seen
    assert seen["lost"] == 0
    assert all(verdict["passed"] for verdict in seen["slos"]), seen["slos"]
    # What the failed block's run measured was written, stopped and accounted like any stopped run.
    failed = _report(pytester.path / "out", "test_fails_inside_the_block")
    assert failed["complete"] and failed["scheduled"] == failed["sent"] == failed["received"] > 0, failed
    assert not any("aborted" in error for error in failed["errors"])


def test_exception_inside_the_block_propagates_and_leaves_no_child(
    tmp_path: Path, no_child_left_behind: None
) -> None:
    settings = resolve({}, {}, {}).for_run(
        {"devices": 3, "rate_per_device": 2, "duration": "60s", "drain": "5s", "workers": 1}
    )
    started = time.monotonic()
    with EmbeddedBroker() as broker:
        handle = Pipeline(Outputs(report_dir=tmp_path)).start(settings, broker.endpoint, name="chaos")
        with pytest.raises(ZeroDivisionError), handle as run:
            run.wait_until(1.0)
            _ = 1 / 0
        # The run stopped, drained and wrote what it measured; asking for a later moment now says it ended.
        assert run.outcome.passed and run.outcome.result.sent == run.outcome.result.scheduled > 0
        with pytest.raises(RunEnded, match="ended before T0"):
            run.wait_until("2s")
    assert time.monotonic() - started < 45.0
    assert (tmp_path / "chaos.json").exists()


def test_a_device_that_never_connects_fails_by_default(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(refusing_proxy=PROXY_SOURCE)
    pytester.makeconftest(
        """
        import pytest
        import pytest_iotperf.runner
        from refusing_proxy import RefusingProxy

        # A refused device retries for the connect budget (20 s) before it gives up; 1 s keeps the test short.
        pytest_iotperf.runner._CONNECT_BUDGET_S = 1.0

        @pytest.fixture
        def broker_refusing_one_device(iot_perf):
            endpoint = iot_perf._session.broker_for("embedded")
            # Client ids are the device ids dev000000, dev000001, ...: the second device never gets in.
            with RefusingProxy(endpoint.host, endpoint.port, ("dev000001",)) as proxy:
                yield f"mqtt://127.0.0.1:{proxy.port}"
        """
    )
    pytester.makepyfile(
        test_refused="""
        import pytest

        RUN = dict(devices=3, rate_per_device=2, duration="2s", drain="5s", workers=1)

        @pytest.mark.perf
        def test_by_default(iot_perf, broker_refusing_one_device):
            iot_perf.run(broker=broker_refusing_one_device, **RUN)

        @pytest.mark.perf(slo=["connect_failures <= 1"])
        def test_accepted(iot_perf, broker_refusing_one_device):
            result = iot_perf.run(broker=broker_refusing_one_device, **RUN)
            assert result.connect_failures == 1 and result.unsent == 0
        """
    )
    outcome = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--iot-report-dir", "out", timeout=SUBPROCESS_TIMEOUT_S
    )  # fmt: skip
    outcome.assert_outcomes(passed=1, failed=1)
    outcome.stdout.fnmatch_lines(
        [
            "*test_by_default*",
            "*1 of 3 SLOs violated*",
            "*connect_failures == 0: measured 1*",
            "*connect_failures is checked by default*connect_failures <= 1*",
        ]
    )
    default = {v["slo"]: v["passed"] for v in _report(pytester.path / "out", "test_by_default")["slos"]}
    # The refused device's messages are its connect failure's, not unsent ones: one cause, one verdict.
    assert default == {"connect_failures == 0": False, "unsent == 0": True, "lateness_p99_ms <= 50": True}
    accepted = {v["slo"]: v["passed"] for v in _report(pytester.path / "out", "test_accepted")["slos"]}
    assert accepted == {"connect_failures <= 1": True, "unsent == 0": True, "lateness_p99_ms <= 50": True}
