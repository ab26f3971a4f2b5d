"""Remote workers join with the standard Locust command; devices are divided across all workers, exactly."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import pytest_iotperf.fleet as fleet_package
from pytest_iotperf.broker_endpoint import BrokerEndpoint
from pytest_iotperf.config import resolve
from pytest_iotperf.embedded.broker import EmbeddedBroker, find_mosquitto
from pytest_iotperf.processes import child_environment, free_port
from pytest_iotperf.runner import PerfRun

pytestmark = [pytest.mark.fleet, pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")]
LOCUSTFILE = Path(fleet_package.__file__).with_name("locustfile.py")


@pytest.fixture
def broker() -> Iterator[BrokerEndpoint]:
    with EmbeddedBroker(prefer="mosquitto") as embedded:
        yield embedded.endpoint


def _locust() -> list[str]:
    found = shutil.which("locust") or str(Path(sys.executable).with_name("locust"))
    return [found]


def test_two_remote_workers_started_with_the_documented_command(broker: BrokerEndpoint, tmp_path: Path) -> None:
    port = free_port()
    command = [*_locust(), "--worker", "--master-host", "127.0.0.1", "--master-port", str(port), "-f", str(LOCUSTFILE)]
    remote = [
        subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=(tmp_path / f"worker{i}.log").open("w"), env=child_environment()
        )
        for i in range(2)
    ]
    try:
        settings = resolve({"master_bind": f"127.0.0.1:{port}", "expect_workers": "2"}, {}, {}).for_run(
            {"devices": 30, "rate_per_device": 2, "duration": "2s", "workers": 0, "drain": "5s"}
        )
        result = PerfRun(settings, broker).execute()
        for process in remote:
            process.wait(timeout=30)  # the master's quit ends the remote workers too
    finally:
        for process in remote:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert result.workers == 2 and sorted(w["devices"] for w in result.worker_stats) == [15, 15]
    assert result.sent == result.scheduled == 120 and result.received == 120 and result.lost == 0
    assert result.settings["expect_workers"] == 2 and result.settings["workers"] == 0


def test_missing_workers_fail_with_the_command_to_start_them(broker: BrokerEndpoint) -> None:
    from pytest_iotperf.runner import RunFailed

    settings = resolve({"expect_workers": "2"}, {}, {}).for_run({"devices": 2, "duration": "1s", "workers": 1})
    runner = PerfRun(settings, broker)
    import pytest_iotperf.runner as runner_module

    original = runner_module._STARTUP_S
    runner_module._STARTUP_S = 5.0  # the default waits a minute for workers to join
    try:
        with pytest.raises(RunFailed) as failure:
            runner.execute()
    finally:
        runner_module._STARTUP_S = original
    message = str(failure.value)
    assert "only 1 of 2 Locust workers ready" in message and "(1 connected;" in message
    assert "locust --worker --master-host" in message and "locustfile.py" in message
