"""More devices than a worker or the embedded broker may open sockets for: the run fails before any device connects.

Issue 13: 30,000 devices in one worker (open-files limit 20,000 here) used to fail device by device over a
minute and a half, and the test passed on a third of the load.  The device count is derived from this machine's
limit (1.5 times it: 30,000 here), so the check is the same wherever the suite runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from wallclock import StartUp

from pytest_iotperf.embedded.broker import EmbeddedBroker, find_mosquitto
from pytest_iotperf.process_guard import raise_nofile_limit

pytestmark = [pytest.mark.fleet, pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")]

PERF_TEST = """
import pytest

@pytest.mark.perf
def test_big(iot_perf):
    iot_perf.run(rate_per_device=0.1, duration="60s")
"""


def _limit() -> int:
    """What a worker or the embedded broker may open here: they raise their limit as this does."""
    limit = raise_nofile_limit()
    if limit > 1_000_000:
        pytest.skip(f"the open-files limit here ({limit:,}) is too high to exceed with a spec of devices")
    return limit


def _pytest(path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    (path / "test_big.py").write_text(PERF_TEST)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "IOTPERF_"))}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_big.py", *args],
        cwd=path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    return done, time.monotonic() - started


def test_one_worker_for_more_devices_than_it_may_open_fails_before_any_connects(
    tmp_path: Path, startup: StartUp
) -> None:
    limit = _limit()
    devices = limit * 3 // 2
    # Used as an external broker: only the workers' limit is checked (an external broker's is unknown).
    with EmbeddedBroker(prefer="mosquitto") as broker:
        done, elapsed_s = _pytest(
            tmp_path, "--iot-devices", str(devices), "--iot-workers", "1", "--iot-broker", broker.endpoint.url
        )
        assert broker.log_path is not None
        broker_log = broker.log_path.read_text()
    output = done.stdout + done.stderr
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, output
    assert f"{devices:,} devices need at least 2 worker processes here: each may open {limit:,} files" in output
    # Nothing connected: the broker saw the reachability probes and the sink, not one device.
    assert broker_log.count("New connection from") < 10, broker_log[-2000:]
    # pytest, the sink, the master and one worker started; connecting 20,000 devices alone takes longer.
    assert elapsed_s < startup.ceiling_s(startups=12), f"{elapsed_s:.1f} s; {startup}"


def test_more_devices_than_the_embedded_broker_may_hold_fail_before_the_fleet_starts(
    tmp_path: Path, startup: StartUp
) -> None:
    limit = _limit()
    devices = limit * 3 // 2
    done, elapsed_s = _pytest(tmp_path, "--iot-devices", str(devices), "--iot-workers", "2")
    output = done.stdout + done.stderr
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, output
    assert f"{devices:,} devices need more open files than the embedded broker may have ({limit:,})" in output
    assert "Locust" not in output  # no master, no worker was started
    assert elapsed_s < startup.ceiling_s(startups=6), f"{elapsed_s:.1f} s; {startup}"
