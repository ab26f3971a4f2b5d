"""Ctrl-C, SIGTERM, SIGHUP, SIGKILL and pytest-timeout during a run: every child (master, workers, sink,
embedded servers) is gone."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from wallclock import StartUp

from pytest_iotperf.embedded.broker import find_mosquitto

pytestmark = [pytest.mark.fleet, pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")]

LONG_RUN = """
import pytest

@pytest.mark.perf
def test_long(iot_perf):
    iot_perf.run(devices=10, rate_per_device=2, duration="120s", workers=2)
"""


def _start(path: Path, *args: str) -> subprocess.Popen[str]:
    (path / "test_long.py").write_text(LONG_RUN)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "IOTPERF_"))}
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s", "test_long.py", *args],
        cwd=path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def _descendants_once_publishing(process: subprocess.Popen[str], timeout_s: float = 60) -> list[psutil.Process]:
    """Wait for the progress line of the publishing phase; then every process the run started."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    for line in process.stdout:
        if " connected | sent " in line:
            break
        assert time.monotonic() < deadline, "the run never reached the publishing phase"
    descendants: list[psutil.Process] = psutil.Process(process.pid).children(recursive=True)
    names = " ".join(" ".join(p.cmdline()) for p in descendants)
    assert "pytest_iotperf.fleet.master" in names and "pytest_iotperf.fleet.worker" in names
    assert "mosquitto" in names and "pytest_iotperf.sinks.mqtt_sink" in names
    return descendants


def _assert_all_gone(processes: list[psutil.Process], timeout_s: float = 10) -> None:
    _gone, alive = psutil.wait_procs(processes, timeout=timeout_s)
    assert not alive, f"left behind: {[' '.join(p.cmdline()) for p in alive]}"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_an_interrupt_during_a_run_stops_every_child(tmp_path: Path, signum: signal.Signals) -> None:
    # SIGTERM is what timeout, CI runners and Kubernetes send on cancel; SIGHUP a closed terminal: both act as Ctrl-C.
    # The run stops and drains briefly, and what it measured is written, marked interrupted.
    process = _start(tmp_path, "--iot-report-dir", "out")
    try:
        descendants = _descendants_once_publishing(process)
        process.send_signal(signum)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == pytest.ExitCode.INTERRUPTED, output
    assert "KeyboardInterrupt" in output
    _assert_all_gone(descendants)
    (written,) = (tmp_path / "out").glob("*.json")
    result = json.loads(written.read_text())
    cause = "Ctrl-C" if signum == signal.SIGINT else signum.name
    assert result["errors"][0].startswith(f"interrupted by {cause} after "), result["errors"]
    assert not result["complete"] and result["sent"] > 0, result
    # The wind-down stopped the schedules and drained: what was sent arrived, nothing was killed halfway.
    assert "killed" not in result["errors"][0] and result["lost"] == result["sent"] - result["received"], result


def test_sigkill_of_pytest_takes_every_child_with_it(tmp_path: Path) -> None:
    # Nothing in pytest runs: each child, mosquitto included, gets its parent-death signal from the kernel.
    process = _start(tmp_path)
    try:
        descendants = _descendants_once_publishing(process)
        process.kill()
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    _assert_all_gone(descendants)


def _broker_connections(descendants: list[psutil.Process]) -> int:
    brokers = [p for p in descendants if "mosquitto" in p.name()]
    return sum(len([c for c in p.net_connections("tcp") if c.status == psutil.CONN_ESTABLISHED]) for p in brokers)


def test_sigterm_to_an_xdist_controller_stops_its_workers_and_their_children(tmp_path: Path) -> None:
    process = _start(tmp_path, "-n", "1")
    try:
        deadline = time.monotonic() + 90
        while True:  # every device of the xdist worker's run connected to that worker's broker
            assert process.poll() is None and time.monotonic() < deadline, "the run never connected its devices"
            descendants = psutil.Process(process.pid).children(recursive=True)
            with contextlib.suppress(psutil.Error):
                if _broker_connections(descendants) >= 10:
                    break
            time.sleep(0.2)  # polling the process table, bounded by the deadline
        names = " ".join(" ".join(p.cmdline()) for p in descendants)
        assert "pytest_iotperf.fleet.worker" in names and "pytest_iotperf.sinks.mqtt_sink" in names
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0, output
    _assert_all_gone(descendants)


def test_pytest_timeout_during_a_run_stops_every_child(tmp_path: Path, startup: StartUp) -> None:
    # The timeout must fire while the run publishes: after pytest, the broker and the fleet have started,
    # and long before the 120 s run ends.
    timeout_s = round(startup.ceiling_s(startups=10))
    process = _start(tmp_path, "--timeout", str(timeout_s))
    try:
        descendants = _descendants_once_publishing(process)
        output, _ = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
    assert "Timeout" in output and "1 failed" in output, output[-2000:]
    _assert_all_gone(descendants)
