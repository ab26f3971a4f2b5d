"""Locustfile for remote workers: ``locust --worker --master-host H --master-port P -f <this file>``.

Local workers do the same through ``python -m pytest_iotperf.fleet.worker``.
"""

from __future__ import annotations

from typing import Any

from locust import events
from locust.env import Environment
from locust.runners import WorkerRunner

from pytest_iotperf.fleet.user import DeviceUser
from pytest_iotperf.fleet.worker_fleet import install_worker
from pytest_iotperf.process_guard import raise_nofile_limit

__all__ = ["DeviceUser"]

raise_nofile_limit()  # one socket per device


@events.init.add_listener  # type: ignore[untyped-decorator]
def _install(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        install_worker(environment)
