"""Standing processes (issue 16 §5): the master, workers and sink serve a session's runs, a broken run is not reused.

Real runs against embedded Mosquitto, 10 devices for 1 s each; each run has its own run id and exact accounting.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from pytest_iotperf.broker_endpoint import BrokerEndpoint
from pytest_iotperf.config import resolve
from pytest_iotperf.embedded.broker import EmbeddedBroker, find_mosquitto
from pytest_iotperf.result import RunResult
from pytest_iotperf.runner import PerfRun, RunFailed
from pytest_iotperf.standing import StandingProcesses

pytestmark = [pytest.mark.fleet, pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")]


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerEndpoint]:
    with EmbeddedBroker(prefer="mosquitto") as embedded:
        yield embedded.endpoint


def _run(broker: BrokerEndpoint, processes: StandingProcesses, **kwargs: Any) -> RunResult:
    settings = resolve({}, {}, {}).for_run({"devices": 10, "duration": "1s", "drain": "5s", "workers": 1})
    return PerfRun(settings, broker, processes=processes, **kwargs).execute()


def _assert_exact(result: RunResult) -> None:
    assert result.connected == 10 and result.connect_failures == 0
    assert result.sent == result.scheduled == 10 and result.received == 10 and result.lost == 0
    assert result.duplicates == 0 and result.complete and not result.errors


def _gone(pids: list[int]) -> bool:
    return all(not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE for pid in pids)


def test_two_runs_share_master_workers_and_sink_and_a_broken_run_is_not_reused(
    broker: BrokerEndpoint, no_child_left_behind: None
) -> None:
    processes = StandingProcesses()
    try:
        first = _run(broker, processes)
        fleet_pids, sink_pids = processes.pids("fleet"), processes.pids("sink")
        assert len(fleet_pids) == 2 and len(sink_pids) == 1  # master + 1 worker, standing between runs
        second = _run(broker, processes)
        assert processes.pids("fleet") == fleet_pids and processes.pids("sink") == sink_pids
        assert first.run_id != second.run_id
        assert first.worker_stats[0]["pid"] == second.worker_stats[0]["pid"] == fleet_pids[1]
        _assert_exact(first)
        _assert_exact(second)

        # An interrupted run: its processes are stopped, its logs kept, and the next run starts afresh.
        run: list[PerfRun] = []

        def interrupt(state: dict[str, Any]) -> None:
            if state.get("phase") == "publishing" and run:
                run.pop().kill()

        settings = resolve({}, {}, {}).for_run({"devices": 10, "duration": "1s", "drain": "5s", "workers": 1})
        broken = PerfRun(settings, broker, processes=processes, progress=interrupt)
        run.append(broken)
        with pytest.raises(RunFailed) as failure:
            broken.execute()
        assert processes.pids("fleet") == [] and processes.pids("sink") == []
        assert _gone(fleet_pids + sink_pids)
        kept = Path(str(failure.value).rpartition("kept in ")[2])
        assert all((kept / name).exists() for name in ("master.log", "worker-0.log", "sink.log"))

        third = _run(broker, processes)
        _assert_exact(third)
        assert set(processes.pids("fleet")).isdisjoint(fleet_pids) and processes.pids("sink") != sink_pids
    finally:
        processes.stop()
    assert processes.pids("fleet") == []


def test_perf_tests_of_one_session_reuse_the_fleet_and_leave_nothing(
    pytester: pytest.Pytester, broker: BrokerEndpoint
) -> None:
    pytester.makepyfile(
        test_two=textwrap.dedent(
            f"""
            import os

            def _record(result):
                with open("pids.txt", "a") as out:
                    out.write(f"{{result.worker_stats[0]['pid']}} {{result.run_id}}\\n")

            def test_first(iot_perf):
                _record(iot_perf.run(devices=5, duration="1s", drain="5s", workers=1, broker="{broker.url}"))

            def test_second(iot_perf):
                _record(iot_perf.run(devices=5, duration="1s", drain="5s", workers=1, broker="{broker.url}"))
            """
        )
    )
    outcome = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=180)
    outcome.assert_outcomes(passed=2)
    rows = [line.split() for line in (pytester.path / "pids.txt").read_text().splitlines()]
    assert len(rows) == 2
    (pid_a, run_a), (pid_b, run_b) = rows
    assert pid_a == pid_b and run_a != run_b  # one standing worker served both tests, each with its run id
    assert _gone([int(pid_a)])  # stopped with the session
