"""Process hygiene: children die with a SIGKILLed parent, SIGTERM/SIGHUP interrupt like Ctrl-C, open-files checks."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

import pytest_iotperf
from pytest_iotperf.embedded.broker import find_mosquitto
from pytest_iotperf.fleet.capacity import WORKER_SPARE_FILES, broker_shortfall, worker_shortfall, workers_needed
from pytest_iotperf.processes import child_environment

_ROOT = Path(pytest_iotperf.__file__).resolve().parents[1]


def _python(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env=child_environment(),
    )


def _gone(pid: int, timeout_s: float) -> bool:
    """Whether ``pid`` ended within ``timeout_s`` (a zombie waiting for init to reap it has ended)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)  # polling the process table, bounded by the deadline
    return False


def _kill_all(processes: list[psutil.Process]) -> None:
    """Clean-up after a failed assertion; psutil refuses a pid that another process reused meanwhile."""
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.kill()


# -- die with the parent -------------------------------------------------------------------


def test_a_child_forked_on_a_short_lived_thread_outlives_the_thread_but_not_a_sigkilled_parent() -> None:
    parent = _python(
        """
        import subprocess, sys, threading, time
        from pytest_iotperf.process_guard import on_long_lived_thread, parent_death_preexec

        def start():
            child = on_long_lived_thread(
                lambda: subprocess.Popen(["sleep", "60"], preexec_fn=parent_death_preexec())
            )
            print(child.pid, flush=True)

        thread = threading.Thread(target=start)
        thread.start()
        thread.join()
        print("thread ended", flush=True)
        time.sleep(60)
        """
    )
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    child = psutil.Process(child_pid)
    try:
        assert parent.stdout.readline().strip() == "thread ended"
        # Linux signals a child when the thread that forked it ends: it was forked on the long-lived one.
        assert not _gone(child_pid, 0.5)
        parent.kill()
        parent.wait()
        assert _gone(child_pid, 10), "the child outlived its SIGKILLed parent"
    finally:
        parent.kill()
        parent.wait()
        _kill_all([child])


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")
def test_embedded_broker_and_event_hubs_endpoint_die_with_a_sigkilled_parent(tmp_path: Path) -> None:
    # What a SIGKILLed pytest (or an OOM kill) leaves: nothing, not even the C broker that cannot watch its parent.
    parent = _python(
        f"""
        import threading, time
        from pathlib import Path
        from pytest_iotperf.embedded.broker import EmbeddedBroker
        from pytest_iotperf.readback import start_embedded_eventhub

        broker = EmbeddedBroker(prefer="mosquitto")
        starter = threading.Thread(target=broker.start)  # as a run handle's thread might
        starter.start()
        starter.join()
        endpoint, _access = start_embedded_eventhub(Path({str(tmp_path)!r}))
        print(broker.pid, endpoint.pid, flush=True)
        time.sleep(120)
        """
    )
    assert parent.stdout is not None
    pids = [int(pid) for pid in parent.stdout.readline().split()]
    children = [psutil.Process(pid) for pid in pids]
    try:
        assert len(pids) == 2 and not any(_gone(pid, 0.2) for pid in pids)
        parent.kill()
        parent.wait()
        left = [" ".join(psutil.Process(pid).cmdline()) for pid in pids if not _gone(pid, 10)]
        assert not left, f"left behind: {left}"
    finally:
        parent.kill()
        parent.wait()
        _kill_all(children)


# -- SIGTERM and SIGHUP interrupt ------------------------------------------------------------


def test_sigterm_and_sighup_raise_keyboard_interrupt_until_undone() -> None:
    done = _python(
        """
        import os, signal, threading, time
        from pytest_iotperf.process_guard import interrupt_on

        undo = interrupt_on()
        for signum in (signal.SIGTERM, signal.SIGHUP):
            try:
                os.kill(os.getpid(), signum)
                time.sleep(10)
                print("not interrupted")
            except KeyboardInterrupt as exc:
                print("interrupted:", exc)
        undo()
        print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, signal.getsignal(signal.SIGHUP) is signal.SIG_DFL)
        # A handler someone else installed stays theirs.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        interrupt_on()
        print(signal.getsignal(signal.SIGTERM) is signal.SIG_IGN)
        # Off the main thread nothing is installed (Python would refuse).
        result = []
        worker = threading.Thread(target=lambda: result.append(interrupt_on()))
        worker.start(); worker.join()
        result[0]()
        print(signal.getsignal(signal.SIGTERM) is signal.SIG_IGN)
        """
    )
    output, _ = done.communicate(timeout=30)
    assert output.splitlines() == [
        "interrupted: SIGTERM received",
        "interrupted: SIGHUP received",
        "True True",
        "True",
        "True",
    ]


# -- open files ----------------------------------------------------------------------------


def test_a_worker_share_beyond_its_open_files_limit_names_the_workers_needed() -> None:
    problem = worker_shortfall(30_000, 1, [20_000])
    assert problem is not None
    assert problem.startswith("30,000 devices need at least 2 worker processes here: each may open 20,000 files")
    assert "1 worker would hold 30,000 devices" in problem and "--iot-workers 2" in problem
    assert worker_shortfall(30_000, 2, [20_000, 20_000]) is None
    # The margin: a worker holds its own files besides one socket per device.
    assert worker_shortfall(20_000 - WORKER_SPARE_FILES, 1, [20_000]) is None
    assert worker_shortfall(20_000 - WORKER_SPARE_FILES + 1, 1, [20_000]) is not None
    # Devices are spread evenly: the smallest limit binds.
    uneven = worker_shortfall(30_000, 2, [65_536, 10_000])
    assert uneven is not None and "at least 4 worker processes here: the smallest may open 10,000 files" in uneven
    assert worker_shortfall(100, 1, []) is None  # no worker said: nothing to check
    assert workers_needed(10, WORKER_SPARE_FILES) is None
    hopeless = worker_shortfall(10, 1, [WORKER_SPARE_FILES])
    assert hopeless is not None and "cannot run here" in hopeless


def test_a_broker_that_cannot_hold_every_device_says_so() -> None:
    problem = broker_shortfall(30_000, 20_000)
    assert problem is not None
    assert problem.startswith("30,000 devices need more open files than the embedded broker may have (20,000)")
    assert broker_shortfall(30_000, None) is None  # external: its limit is unknown here
    assert broker_shortfall(10_000, 20_000) is None
