"""Faults end in a verdict within 30 s, with what was measured kept and no child process left.

The faults are real: the broker process is killed, a Locust worker is SIGKILLed.
"""

from __future__ import annotations

import os
import re
import signal
import time
from typing import Any

import psutil
import pytest
from wallclock import StartUp

from pytest_iotperf.config import resolve
from pytest_iotperf.embedded.broker import EmbeddedBroker, find_mosquitto
from pytest_iotperf.fleet.numbering import TEST_WORKER_REMOVAL_ENV
from pytest_iotperf.result import build_result
from pytest_iotperf.runner import PerfRun, RunFailed

pytestmark = [pytest.mark.fleet, pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")]


def _settings(**extra: Any) -> Any:
    return resolve({}, {}, {}).for_run(
        {"devices": 20, "rate_per_device": 5, "duration": "60s", "drain": "3s", "qos": 0, **extra}
    )


def test_broker_killed_mid_run_without_reconnects(no_child_left_behind: None, startup: StartUp) -> None:
    broker = EmbeddedBroker(prefer="mosquitto")
    endpoint = broker.start()

    def kill_broker_after_a_second(state: dict[str, Any]) -> None:
        if state.get("phase") == "publishing" and float(state.get("elapsed_s", 0)) >= 1.0 and broker.running:
            os.kill(broker.pid or 0, signal.SIGKILL)

    started = time.monotonic()
    try:
        with pytest.raises(RunFailed) as failure:
            settings = _settings(workers=1, no_reconnect=True)
            PerfRun(settings, endpoint, progress=kill_broker_after_a_second).execute()
    finally:
        broker.stop()
    elapsed_s = time.monotonic() - started
    assert elapsed_s < startup.ceiling_s(startups=10, own_s=30), startup  # the 30 s budget after the fault
    result = failure.value.result
    # Devices that do not reconnect cannot measure anything more once the broker is gone: stop at once.
    assert "every device lost its broker connection at t+" in str(failure.value)
    # What was sent before the fault is kept and accounted; what could not be sent shows as well.
    assert 0 < result.sent < result.scheduled == 20 * 5 * 60
    assert result.received <= result.sent
    assert any("connection(s) dropped during the run, the first at t+" in w for w in result.warnings)


def test_broker_gone_for_good_ends_the_run_once_the_outage_budget_is_spent(
    no_child_left_behind: None, startup: StartUp
) -> None:
    broker = EmbeddedBroker(prefer="mosquitto")
    endpoint = broker.start()
    killed_at: list[float] = []

    def kill_broker_after_a_second(state: dict[str, Any]) -> None:
        if state.get("phase") == "publishing" and float(state.get("elapsed_s", 0)) >= 1.0 and broker.running:
            os.kill(broker.pid or 0, signal.SIGKILL)
            killed_at.append(time.monotonic())

    try:
        with pytest.raises(RunFailed) as failure:
            settings = _settings(workers=1, outage_budget="2s")
            PerfRun(settings, endpoint, progress=kill_broker_after_a_second).execute()
    finally:
        broker.stop()
    # Reconnecting devices ride through a lost broker; only when most of the fleet stayed offline past
    # the budget does the run end, saying how many and for how long.
    assert killed_at
    assert time.monotonic() - killed_at[0] < startup.ceiling_s(startups=5, own_s=2 + 30), startup
    message = str(failure.value)
    found = re.search(r"aborted early: (\d+) of 20 devices offline for more than 2s \(longest (\d+\.\d)s\)", message)
    assert found is not None and int(found.group(1)) > 10 and float(found.group(2)) > 2.0, message
    assert "every device lost its broker connection" not in message
    result = failure.value.result
    assert 0 < result.sent < result.scheduled == 20 * 5 * 60
    assert result.received <= result.sent


def test_worker_killed_mid_run_keeps_the_other_workers_data(
    no_child_left_behind: None, startup: StartUp, monkeypatch: pytest.MonkeyPatch
) -> None:
    killed: list[int] = []
    # Locust re-dispatches a lost worker's users once it drops it: after a minute, or at once here.
    monkeypatch.setenv(TEST_WORKER_REMOVAL_ENV, "0")
    reports: dict[str, Any] = {}

    def keep_reports(**kwargs: Any) -> Any:
        reports.update(fleet=kwargs["fleet"], sink=kwargs["sink"])
        return build_result(**kwargs)

    monkeypatch.setattr("pytest_iotperf.runner.build_result", keep_reports)

    def kill_one_worker(state: dict[str, Any]) -> None:
        if killed or state.get("phase") != "publishing" or float(state.get("elapsed_s", 0)) < 1.0:
            return
        workers = [
            p
            for p in psutil.Process().children(recursive=True)
            if "pytest_iotperf.fleet.worker" in " ".join(p.cmdline())
        ]
        if workers:
            killed.append(workers[0].pid)
            workers[0].kill()

    with EmbeddedBroker(prefer="mosquitto") as broker:
        started = time.monotonic()
        with pytest.raises(RunFailed) as failure:
            PerfRun(_settings(workers=2, duration="8s"), broker.endpoint, progress=kill_one_worker).execute()
        elapsed_s = time.monotonic() - started
    assert killed
    assert "worker(s) stopped answering" in str(failure.value)
    result = failure.value.result
    assert result.workers == 1 and len(result.worker_stats) == 1  # the survivor's report is kept
    assert result.sent > 0 and result.received >= result.sent - result.lost
    assert result.unexpected > 0  # the dead worker's messages reached the sink but have no sent count
    # Its 10 users went to the survivor, found every device number taken and never connected: reported,
    # and no device id was used twice (a second connection with its id would have shown as duplicates).
    assert result.redispatched_devices == 10
    assert any("re-dispatched" in error for error in result.errors)
    assert reports["fleet"]["devices"] == 10 and result.duplicates == 0
    assert set(reports["sink"]["ledger"]["devices"]) == {f"dev{n:06d}" for n in range(20)}
    assert elapsed_s < startup.ceiling_s(startups=10, own_s=8 + 30), startup  # the run's 8 s + the 30 s budget
