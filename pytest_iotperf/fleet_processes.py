"""The Locust master and local workers of a run, as the pytest side starts them (no locust imported here).

The master (``fleet.master``) takes each run as one ``{"cmd": "run", ...}``
on its stdin.  A run that owns its fleet says it is
the ``last`` (the master quits its workers before ``done``, as a plain run
did); a fleet standing for a session (``standing.StandingProcesses``) waits
for the next run's command after saying ``idle``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_iotperf.errors import FleetError
from pytest_iotperf.processes import Child, ChildExited, ProcessGroup
from pytest_iotperf.standing import StartProcesses

_IDLE_WAIT_S = 20.0  # a standing fleet's devices of the last run disconnect before it says idle


@dataclass(frozen=True)
class FleetKey:
    """What standing fleet processes must share with a run to serve it."""

    workers: int
    bind_host: str
    bind_port: int
    expect_workers: int
    environment: str  # standing.environment_digest of the fleet's environment


@dataclass
class FleetProcesses:
    master: Child
    workers: list[Child]
    port: int  # the master's, as it bound it

    def run_command(
        self, spec: Path, report: Path, abort_file: Path, stop_file: Path, worker_timeout_s: float, *, last: bool
    ) -> dict[str, Any]:
        return {
            "cmd": "run",
            "spec": str(spec),
            "report": str(report),
            "abort_file": str(abort_file),
            "stop_file": str(stop_file),
            "worker_timeout_s": worker_timeout_s,
            "last": last,
        }


def fleet_starter(
    key: FleetKey, master_host: str, env: dict[str, str], startup_s: float, check_killed: Callable[[], None]
) -> StartProcesses[FleetProcesses]:
    """How to start a fleet for ``key``: the master, then the local workers importing while it does.

    ``master_host`` is where local workers reach it; ``check_killed`` raises once the run was interrupted
    (no new child starts after that).
    """

    def start(group: ProcessGroup, log_dir: Path, standing: bool) -> tuple[FleetProcesses, list[Child]]:
        check_killed()
        master = group.add(
            Child.python_module(
                "Locust master",
                "pytest_iotperf.fleet.master",
                [
                    "--bind-host",
                    key.bind_host,
                    "--port",
                    str(key.bind_port),
                    "--worker-timeout",
                    str(startup_s),
                ],
                log_dir / "master.log",
                stdin=True,
                env=dict(env),  # an embedded IoT Hub's key: environment only
            )
        )
        # The workers start now, importing while the master does, and learn its port once it listens.
        workers = []
        for index in range(key.workers):
            check_killed()
            workers.append(
                group.add(
                    Child.python_module(
                        f"Locust worker {index}",
                        "pytest_iotperf.fleet.worker",
                        ["--master-host", master_host, "--master-port", "-"],
                        log_dir / f"worker-{index}.log",
                        stdin=True,
                        env=dict(env),
                    )
                )
            )
        try:
            port = int(master.wait_for("listening", startup_s)["port"])
        except ChildExited as exc:
            # Nothing was measured yet: like a sink that cannot start, this is an error, not a broken run.
            raise FleetError(f"the Locust master could not start: {exc}") from None
        for worker in workers:
            worker.send({"port": port})
        return FleetProcesses(master, workers, port), [master, *workers]

    return start


def ready_for_next_run(fleet: FleetProcesses, timeout_s: float = _IDLE_WAIT_S) -> bool:
    """Whether a standing fleet came back ``idle`` from its last run (its events up to then are consumed)."""
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            kind = fleet.master.next_event(deadline).get("event")
            if kind == "idle":
                return True
            if kind == "unusable":
                return False
    except ChildExited:
        return False


__all__ = ["FleetKey", "FleetProcesses", "fleet_starter", "ready_for_next_run"]
