"""Standing processes (issue 16 §5): the master, workers and sink serve a session's runs, a broken run is not reused.

Real runs against embedded Mosquitto, 10 devices for 1 s each; each run has its own run id and exact accounting.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from pytest_iotperf.broker_endpoint import BrokerEndpoint
from pytest_iotperf.config import resolve
from pytest_iotperf.embedded.broker import EmbeddedBroker, find_mosquitto
from pytest_iotperf.processes import Child, ProcessGroup
from pytest_iotperf.result import RunResult
from pytest_iotperf.runner import PerfRun, RunFailed
from pytest_iotperf.standing import StandingProcesses

needs_mosquitto = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")


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


@pytest.mark.fleet
@needs_mosquitto
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


@pytest.mark.fleet
@needs_mosquitto
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


# -- the lending rules, on stand-in children (no fleet: fast) ------------------------------------------

_STAND_IN = "import sys\nfor line in sys.stdin:\n    if 'quit' in line:\n        break\n"


def _stand_in_starter(started: list[Path]) -> Any:
    def start(group: ProcessGroup, log_dir: Path, standing: bool) -> tuple[Child, list[Child]]:
        started.append(log_dir)
        child = group.add(Child("stand-in", [sys.executable, "-c", _STAND_IN], log_dir / "stand-in.log", stdin=True))
        return child, [child]

    return start


def test_lending_rules_key_busy_failure_and_stop(tmp_path: Path, no_child_left_behind: None) -> None:
    processes = StandingProcesses()
    started: list[Path] = []
    start = _stand_in_starter(started)
    with ProcessGroup() as group:
        first = processes.lease("sink", "key-a", start, group, tmp_path)
        assert first.standing and not first.reused and started[-1] != tmp_path  # logs in the standing directory
        # A second run while the first holds them: processes of its own, in its own directory.
        overlapping = processes.lease("sink", "key-a", start, group, tmp_path)
        assert not overlapping.standing and started[-1] == tmp_path
        processes.give_back(overlapping, group, tmp_path, healthy=True)
        processes.give_back(first, group, tmp_path, healthy=True)
    # The group ended without stopping the standing child; the overlapping one is gone.
    assert first.handle.alive() and not overlapping.handle.alive()
    assert processes.pids("sink") == [first.handle.pid]
    with ProcessGroup() as group:
        again = processes.lease("sink", "key-a", start, group, tmp_path)
        assert again.reused and again.handle is first.handle
        first.handle.log_path.write_text("earlier run\n")
        again.marks = [first.handle.log_size()]
        with first.handle.log_path.open("a") as log:
            log.write("this run's line\n")
        processes.give_back(again, group, tmp_path, healthy=False)  # a failed run: stopped, its lines kept
    assert not first.handle.alive() and processes.pids("sink") == []
    assert (tmp_path / "stand-in.log").read_text() == "this run's line\n"
    with ProcessGroup() as group:
        fresh = processes.lease("sink", "key-a", start, group, tmp_path)
        processes.give_back(fresh, group, tmp_path, healthy=True)
        other_key = processes.lease("sink", "key-b", start, group, tmp_path)  # another connection: replaced
        assert not other_key.reused and not fresh.handle.alive()
        processes.give_back(other_key, group, tmp_path, healthy=True)
    processes.stop()
    assert not other_key.handle.alive() and processes.pids("sink") == []
    with ProcessGroup() as group:  # after the session's end nothing stands any more
        late = processes.lease("sink", "key-b", start, group, tmp_path)
        assert not late.standing
