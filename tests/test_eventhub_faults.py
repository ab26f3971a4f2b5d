"""Event Hubs path faults: the bridge or the endpoint dies mid-run, or the key is wrong at start.

Each ends within 30 s with the reason, keeps what was measured, and leaves no process behind.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from wallclock import StartUp

from pytest_iotperf.broker_endpoint import BrokerEndpoint
from pytest_iotperf.config import resolve
from pytest_iotperf.embedded.broker import EmbeddedBroker, find_mosquitto
from pytest_iotperf.errors import IotPerfError, SinkError
from pytest_iotperf.processes import Child
from pytest_iotperf.readback import EventHubAccess, start_embedded_eventhub
from pytest_iotperf.runner import PerfRun, RunFailed

pytestmark = [pytest.mark.fleet, pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")]


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerEndpoint]:
    with EmbeddedBroker(prefer="mosquitto") as embedded:
        yield embedded.endpoint


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[tuple[Child, EventHubAccess]]:
    """The embedded endpoint as its own process, as the plugin's session runs it."""
    child, access = start_embedded_eventhub(tmp_path, partitions=2)
    try:
        yield child, access
    finally:
        child.stop()


def _run(broker: BrokerEndpoint, hub: EventHubAccess, progress: Any = None) -> Any:
    settings = resolve({}, {}, {}).for_run(
        {"devices": 10, "rate_per_device": 5, "duration": "60s", "workers": 1, "sink": "eventhub", "drain": "3s"}
    )
    return PerfRun(settings, broker, eventhub=hub, progress=progress).execute()


def _kill_once(marker: str, killed: list[int]) -> Any:
    def progress(state: dict[str, Any]) -> None:
        if killed or state.get("phase") != "publishing" or float(state.get("elapsed_s", 0)) < 1.0:
            return
        for process in psutil.Process().children(recursive=True):
            if marker in " ".join(process.cmdline()):
                killed.append(process.pid)
                process.kill()
                return

    return progress


@pytest.mark.parametrize(
    ("marker", "reason"),
    [
        ("pytest_iotperf.bridge", "the platform bridge exited"),
        ("pytest_iotperf.embedded.eventhub", "the embedded Event Hubs endpoint exited"),
    ],
    ids=["bridge", "endpoint"],
)
def test_a_process_of_the_chain_dies_mid_run(
    broker: BrokerEndpoint, endpoint: tuple[Child, EventHubAccess], marker: str, reason: str, startup: StartUp
) -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    killed: list[int] = []
    started = time.monotonic()
    with pytest.raises(RunFailed) as failure:
        _run(broker, endpoint[1], _kill_once(marker, killed))
    assert killed
    elapsed_s = time.monotonic() - started
    assert elapsed_s < startup.ceiling_s(startups=16, own_s=30), startup  # the 30 s budget after the fault
    assert reason in str(failure.value)
    result = failure.value.result
    assert 0 < result.sent < result.scheduled  # what was sent before the fault is kept
    left = {p.pid for p in psutil.Process().children(recursive=True)} - before - {endpoint[0].pid}
    assert not {pid for pid in left if psutil.pid_exists(pid)}, "the run left processes behind"


def test_wrong_key_at_start_fails_fast_without_showing_it(
    broker: BrokerEndpoint, endpoint: tuple[Child, EventHubAccess], startup: StartUp
) -> None:
    good = endpoint[1].connection_string
    key = re.search(r"SharedAccessKey=([^;]+)", good)
    assert key is not None
    wrong_key = "d3Jvbmcta2V5LXRoYXQtbXVzdC1uZXZlci1zaG93LTEyMzQ1Ng=="
    wrong = EventHubAccess(good.replace(key.group(1), wrong_key), "test hub", ("0", "1"))
    started = time.monotonic()
    with pytest.raises(IotPerfError) as failure:
        _run(broker, wrong)
    elapsed_s = time.monotonic() - started
    assert elapsed_s < startup.ceiling_s(startups=5), startup
    assert isinstance(failure.value, SinkError)
    message = str(failure.value)
    assert wrong_key not in message and key.group(1) not in message and "SharedAccessKey" not in message
