"""The Locust master of the fleet: ``python -m pytest_iotperf.fleet.master --port P``, runs sent on stdin.

Built with ``Environment.create_master_runner``.  Each
``{"cmd": "run", "spec": ..., "report": ..., "abort_file": ..., "stop_file": ..., "last": ...}``
on stdin is one run: it waits for the workers, hands them the spec, spawns the
devices over the ramp, announces the schedule origin T0 once every device
connected (or gave up), collects every worker's complete report and writes the
merged fleet report to ``report``.  Then, unless it was the ``last`` (the
workers quit before ``done``), the users are stopped (devices disconnect) and
``idle`` (or ``unusable``) says whether the next run may use this fleet: a
master standing for a session's runs.  ``{"cmd": "quit"}`` or EOF quits the
workers and ends it.

It talks to the pytest process through JSON lines on stdout:
``listening``, ``workers``, ``progress``, ``publishing`` (with t0), ``aborting``, ``stopping``, ``error``,
``done``, ``idle``, ``unusable``.
The parent asks it to end a run early through two files it polls: ``abort_file`` (the run failed:
stop now, report it aborted) and ``stop_file`` (the test has seen enough: end the steady state a
moment from now, then drain and account as for a run of that length).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import gevent
import locust  # first: Locust monkey-patches the stdlib with gevent on import
import locust.runners
from locust.env import Environment
from locust.rpc import Message
from locust.runners import STATE_MISSING, MasterRunner

from pytest_iotperf.child_protocol import scrubbing_event_writer
from pytest_iotperf.files import write_json_atomically
from pytest_iotperf.fleet.capacity import NotEnoughOpenFiles, worker_shortfall
from pytest_iotperf.fleet.clock import ClockEstimate, ClockSample, estimate
from pytest_iotperf.fleet.fleet_report import merge_worker_reports
from pytest_iotperf.fleet.numbering import TEST_WORKER_REMOVAL_ENV, NumberPool
from pytest_iotperf.fleet.spec import FleetSpec
from pytest_iotperf.fleet.user import DeviceUser
from pytest_iotperf.process_guard import die_with_parent
from pytest_iotperf.secrets import secret_env_values
from pytest_iotperf.wire_reports import WorkerReport

_LOCUSTFILE = str(Path(__file__).with_name("locustfile.py"))
_PROGRESS_INTERVAL_S = 1.0
_GO_LEAD_S = 0.3  # time for the go message to reach every worker before T0
_REPORT_GRACE_S = 30.0
_DORMANT_SPAWN_RATE = 2000.0  # users per second for later stages' devices: they only take a number
_PREPARE_TIMEOUT_S = 30.0
_SPEC_CHECK_TIMEOUT_S = 30.0  # a worker imports the payload callable's module: may take a moment


class WorkerRefusedSpec(Exception):
    """A worker cannot run the spec (its message is the worker's own reason, naming the worker)."""
_CLOCK_ROUNDS = 8
_QUIT_FLUSH_S = 0.05  # for zmq to send the workers' quit messages
_RESET_TIMEOUT_S = 15.0  # between runs of a standing master: every worker's devices disconnect

# The workers' first errors reach the parent through these lines: keep the MQTT password out of them.
emit = scrubbing_event_writer(*secret_env_values(os.environ))


class MasterFleet:
    """Drives one run through its phases on a MasterRunner."""

    def __init__(
        self, spec: FleetSpec, workers: StandingWorkers, abort_file: Path | None = None, stop_file: Path | None = None
    ) -> None:
        runner = workers.runner
        self.spec = spec
        self.abort_file = abort_file  # the parent writes the reason here to stop the run early
        self.stop_file = stop_file  # the parent creates it to end the steady state early (not a failure)
        self.stopped_at_s: float | None = None  # seconds after T0 at which a stop ended the schedule
        self.runner = runner
        self.statuses: dict[str, dict[str, Any]] = {}
        self.reports: dict[str, WorkerReport] = {}
        self.t0: float | None = None
        self.errors: list[str] = []
        self.aborted = False
        self.lost_workers = False
        runner.register_message("iotperf_status", self._on_status)
        runner.register_message("iotperf_report", self._on_report)
        runner.register_message("iotperf_prepared", self._on_prepared)
        runner.register_message("iotperf_clock_pong", self._on_pong)
        runner.register_message("iotperf_need_numbers", self._on_need_numbers)
        runner.register_message("iotperf_spec_checked", self._on_spec_checked)
        # Global device numbers, each handed out once (numbering.py): a lost worker's numbers are not reused.
        self.numbers = NumberPool(spec.identity.device_offset, spec.devices)
        # Workers that registered our handlers, and their open-files limits: the master's, across its runs.
        self.installed = workers.installed
        self.open_files = workers.open_files
        self.clock_samples: dict[str, list[ClockSample]] = {}
        self.clocks: dict[str, ClockEstimate] = {}
        self.prepared: set[str] = set()
        # Workers that built their devices' messages from the spec: None, or why they could not
        # (a payload callable that does not import there).
        self.spec_checks: dict[str, str | None] = {}

    def _on_status(self, msg: Any, **_: Any) -> None:
        self.statuses[msg.node_id] = msg.data

    def _on_report(self, msg: Any, **_: Any) -> None:
        self.reports[msg.node_id] = msg.data

    def _on_need_numbers(self, msg: Any, **_: Any) -> None:
        asked = int(msg.data.get("count", 0)) if isinstance(msg.data, dict) else 0
        ranges = self.numbers.take(asked, msg.node_id)
        self.runner.send_message("iotperf_numbers", {"ranges": ranges, "asked": asked}, client_id=msg.node_id)

    def _on_spec_checked(self, msg: Any, **_: Any) -> None:
        error = msg.data.get("error") if isinstance(msg.data, dict) else None
        self.spec_checks[msg.node_id] = str(error) if error else None

    def send_spec(self, timeout_s: float = _SPEC_CHECK_TIMEOUT_S) -> None:
        """Send the spec and wait until every worker could build its messages from it, before any device starts.

        Raises:
            WorkerRefusedSpec: a worker cannot (e.g. the payload callable does not import there), naming it.
            TimeoutError: a worker did not answer.
        """
        self.runner.send_message("iotperf_spec", json.loads(self.spec.to_json()))
        deadline = time.monotonic() + timeout_s
        while not set(self._live_worker_ids()).issubset(self.spec_checks):
            if time.monotonic() > deadline:
                missing = len(set(self._live_worker_ids()) - set(self.spec_checks))
                raise TimeoutError(f"{missing} worker(s) did not confirm the run's spec within {timeout_s:g}s")
            gevent.sleep(0.005)
        refusals = [error for error in self.spec_checks.values() if error]
        if refusals:
            raise WorkerRefusedSpec("; ".join(refusals))

    def _on_prepared(self, msg: Any, **_: Any) -> None:
        self.prepared.add(msg.node_id)

    def _on_pong(self, msg: Any, **_: Any) -> None:
        data = msg.data
        sample = ClockSample(float(data["t1"]), float(data["t2"]), float(data["t3"]), time.time())
        self.clock_samples.setdefault(msg.node_id, []).append(sample)

    def measure_clocks(self, rounds: int = _CLOCK_ROUNDS) -> None:
        """NTP-style exchanges with every worker, one at a time so they do not queue behind each other."""
        for node_id in self._live_worker_ids():
            for _ in range(rounds):
                before = len(self.clock_samples.get(node_id, []))
                self.runner.send_message("iotperf_clock_ping", {"t1": time.time()}, client_id=node_id)
                deadline = time.monotonic() + 2.0
                while len(self.clock_samples.get(node_id, [])) == before and time.monotonic() < deadline:
                    gevent.sleep(0.001)
        for node_id, samples in self.clock_samples.items():
            found = estimate(samples)
            if found is not None:
                self.clocks[node_id] = found

    def prepare(self, timeout_s: float = _PREPARE_TIMEOUT_S) -> None:
        """Let every worker do its once-only work (a full GC) before T0 is fixed; measure their clocks."""
        self.measure_clocks()
        self.runner.send_message("iotperf_prepare", {})
        deadline = time.monotonic() + timeout_s
        while not set(self._worker_ids()).issubset(self.prepared):
            if time.monotonic() > deadline:
                missing = len(set(self._worker_ids()) - self.prepared)
                raise TimeoutError(f"{missing} worker(s) did not get ready to publish within {timeout_s:g}s")
            gevent.sleep(0.01)

    def _total(self, key: str) -> int:
        return sum(int(s.get(key, 0)) for s in self.statuses.values())

    def _worker_ids(self) -> list[str]:
        return [node.id for node in self.runner.clients.values()]

    def _usable_workers(self) -> int:
        """Workers that are connected and have registered our message handlers."""
        return sum(1 for node in self.runner.clients.ready if node.id in self.installed)

    def wait_for_workers(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self._usable_workers() < self.spec.expect_workers:
            if time.monotonic() > deadline:
                connected = len(self.runner.clients.ready)
                raise TimeoutError(
                    f"only {self._usable_workers()} of {self.spec.expect_workers} Locust workers ready within "
                    f"{timeout_s:g}s ({connected} connected; a worker without this pytest-iotperf version's "
                    f"locustfile never gets ready); start remote ones with: locust --worker --master-host "
                    f"<this host> --master-port {self.runner.server.port} -f {_LOCUSTFILE}"
                )
            gevent.sleep(0.05)
        emit("workers", count=len(self.runner.clients.ready))

    def check_open_files(self) -> None:
        """Fail before any device connects when a worker's share of devices exceeds its open-files limit."""
        ready = [node.id for node in self.runner.clients.ready]
        limits = [self.open_files[node] for node in ready if node in self.open_files]
        problem = worker_shortfall(self.spec.devices, len(ready), limits)
        if problem is not None:
            raise NotEnoughOpenFiles(problem)

    def spawn_and_connect(self) -> int:
        """Spawn every device over the ramp and wait until each connected or gave up.

        Done when every device number is handed out and every live worker has used the numbers it got, each
        on a device that connected or gave up.  Not by counting devices: a lost worker's devices never
        settle, and the users Locust re-dispatched to the others get no number (they run no device).
        """
        spec = self.spec
        first = spec.stage_plan[0]  # without stages: every device, over the run's ramp
        spawn_rate = first.devices / max(first.ramp_up_s, 0.001)
        if spec.connect_rate is not None:
            # Spawning is not the cap (the workers' limiters are: retries and reconnects count too),
            # but users spawned faster than they may connect would only queue up at the limiters.
            spawn_rate = min(spawn_rate, spec.connect_rate)
        gevent.spawn(self.runner.start, first.devices, spawn_rate)
        # Stages: the first stage's devices spawn and connect over its ramp as without stages; the later
        # stages' devices spawn after them, fast and dormant (no socket until their own stage's ramp).
        # Locust hands out device numbers in spawn order, so the first stage's are the lowest.
        dormant_pending = spec.devices > first.devices
        deadline = time.monotonic() + spec.ramp_up_s + spec.connect_budget_s + 30.0
        next_progress = 0.0
        while True:
            connected, failed = self._total("connected"), self._total("connect_failed")
            if dormant_pending and connected + failed >= first.devices:
                dormant_pending = False
                gevent.spawn(self.runner.start, spec.devices, max(spawn_rate, _DORMANT_SPAWN_RATE))
            now = time.monotonic()
            if now >= next_progress:
                next_progress = now + _PROGRESS_INTERVAL_S
                emit("progress", phase="connecting", connected=connected, connect_failed=failed)
            if self._all_numbers_settled():
                emit("progress", phase="connecting", connected=connected, connect_failed=failed)
                return connected
            if now > deadline:
                raise TimeoutError(
                    f"{connected} of {spec.devices} devices connected and {failed} gave up before the connect deadline"
                )
            gevent.sleep(0.05)

    def _all_numbers_settled(self) -> bool:
        if not self.numbers.exhausted:
            return False
        for node_id in self._live_worker_ids():
            given = self.numbers.given.get(node_id, 0)
            if given == 0:
                continue  # no device of its own (its users, if any, found the numbers taken)
            status = self.statuses.get(node_id)
            if status is None or int(status.get("numbers", -1)) != given:
                return False  # this status predates our last answer to it
            if int(status.get("waiting_for_numbers", 0)) or int(status.get("numbers_free", 0)):
                return False  # users are about to make devices with numbers they hold
            settled = int(status["connected"]) + int(status["connect_failed"]) + int(status.get("dormant", 0))
            if settled < int(status["devices"]):
                return False
        return True

    def publish(self) -> None:
        t0 = time.time() + _GO_LEAD_S
        self.t0 = t0
        offsets = {node: clock.offset_s for node, clock in self.clocks.items()}
        self.runner.send_message("iotperf_go", {"t0": t0, "offsets": offsets, "correct": self.spec.clock_correction})
        emit("publishing", t0=t0)
        deadline = t0 + self.spec.duration_s + _REPORT_GRACE_S
        expected = set(self._worker_ids())
        next_progress = 0.0
        while not expected.issubset(self.reports):
            now = time.time()
            if now >= next_progress:
                next_progress = now + _PROGRESS_INTERVAL_S
                emit(
                    "progress",
                    phase="publishing",
                    connected=self._total("connected"),
                    sent=self._total("sent"),
                    elapsed_s=max(0.0, now - t0),
                    offline=self._total("offline"),
                    offline_over_budget=self._total("offline_over_budget"),
                    offline_longest_s=self._longest_offline_s(),
                )
            if self.abort_file is not None and self.abort_file.exists() and not self.aborted:
                self._abort_run(self.abort_file.read_text().strip() or "aborted by the parent")
            if self._stop_requested():
                self._stop_run(now, t0)
            # A fleet that reconnects rides through a lost broker; the parent's outage budget decides (abort.py).
            if not self.spec.reconnect and not self.aborted and now > t0 + 1.0 and self._all_devices_dropped():
                self._abort_run(
                    f"every device lost its broker connection at t+{now - t0:.1f}s "
                    f"({self._first_error() or 'no reason given'})"
                )
            lost = expected - set(self._live_worker_ids())
            if lost:
                # Locust marks a worker missing after ~3 missed heartbeats: killed, crashed or cut off.
                self.errors.append(
                    f"{len(lost)} worker(s) stopped answering at t+{now - t0:.1f}s, before reporting: "
                    "their devices' sent counts are unknown (their messages show as unexpected)"
                )
                self.lost_workers = True
                expected -= lost
            if now > deadline:
                self.errors.append(
                    f"{len(expected - set(self.reports))} worker(s) did not report within "
                    f"{_REPORT_GRACE_S:g}s after the run ended"
                )
                return
            gevent.sleep(0.05)

    def _abort_run(self, reason: str) -> None:
        self.aborted = True
        self.errors.append(f"aborted early: {reason}")
        emit("aborting", reason=reason)
        self.abort(reason)

    def _stop_requested(self) -> bool:
        if self.stop_file is None or self.stopped_at_s is not None or self.aborted:
            return False
        return self.stop_file.exists()

    def _stop_run(self, now: float, t0: float) -> None:
        """End every schedule at one instant a little ahead (so each worker hears of it in time).

        Each device then sends exactly the messages due before that instant, and each worker counts
        only those as scheduled: the run accounts like one of that duration.
        """
        end_s = min(max(0.0, now + _GO_LEAD_S - t0), self.spec.duration_s)
        self.stopped_at_s = end_s
        self.runner.send_message("iotperf_stop", {"duration_s": end_s})
        emit("stopping", duration_s=end_s)

    def _longest_offline_s(self) -> float:
        return max((float(s.get("offline_longest_s") or 0.0) for s in self.statuses.values()), default=0.0)

    def _all_devices_dropped(self) -> bool:
        connected_at_go = self._total("connected_at_go")
        return (
            connected_at_go > 0 and self._total("connected") == 0 and self._total("finished") < self._total("devices")
        )

    def _first_error(self) -> str | None:
        return next((s["first_error"] for s in self.statuses.values() if s.get("first_error")), None)

    def _live_worker_ids(self) -> list[str]:
        return [node.id for node in self.runner.clients.values() if node.state != STATE_MISSING]

    def abort(self, reason: str) -> None:
        self.runner.send_message("iotperf_abort", {"reason": reason})

    def write_report(self, path: Path) -> None:
        report = merge_worker_reports(self.spec, list(self.reports.values()))
        if not self.reports:
            # Stopped before any worker handed its report over (no device could connect): the last
            # statuses still say how many devices tried and failed.
            for key in ("devices", "connect_failed", "connect_retries"):
                report[key] = self._total(key)  # type: ignore[literal-required]
        report["t0"] = self.t0
        report["clocks"] = {
            str(self.reports[node]["worker_index"] if node in self.reports else node): clock.to_dict()
            for node, clock in self.clocks.items()
        }
        report["clock_corrected"] = self.spec.clock_correction
        report["stopped_at_s"] = self.stopped_at_s
        report["errors"] = self.errors + report["errors"]
        write_json_atomically(path, report)


def quit_fleet(runner: MasterRunner) -> None:
    """Locust's ``MasterRunner.quit()`` without its fixed half-second wait for workers' stats reports.

    We take no Locust stats (our workers hand their reports over before this), so the
    wait only delayed the end of every run by 0.5 s.  The quit messages still go to
    every worker (a remote ``locust --worker`` only ends on one); a short pause lets
    zmq hand them over before the greenlet and, soon after, the process end.
    """
    runner.stop(send_stop_to_client=False)
    for client in runner.clients.all:
        runner.server.send_to_client(Message("quit", None, client.id))  # type: ignore[no-untyped-call]
    gevent.sleep(_QUIT_FLUSH_S)
    runner.greenlet.kill(block=True)


#: Handled by StandingWorkers for the master's whole life, not by one run.
_MASTER_MESSAGES = frozenset({"iotperf_installed"})


def _forget_run_handlers(runner: MasterRunner) -> None:
    """Unregister the last run's ``iotperf_*`` handlers so the next MasterFleet can register its own.

    Locust allows one listener per message type on a runner; a standing master
    has one runner for all its runs, so each run's handlers replace the last's.
    """
    for msg_type in [name for name in runner.custom_messages if name.startswith("iotperf_")]:
        if msg_type not in _MASTER_MESSAGES:
            del runner.custom_messages[msg_type]


class StandingWorkers:
    """What the master knows about its workers across runs: which registered our handlers, their limits.

    A worker says ``iotperf_installed`` once, when it starts (possibly before the first run): every
    run's MasterFleet reads these two collections, so a later run counts the workers as ready.
    """

    def __init__(self, runner: MasterRunner) -> None:
        self.runner = runner
        self.installed: set[str] = set()
        self.open_files: dict[str, int] = {}
        runner.register_message("iotperf_installed", self._on_installed)

    def _on_installed(self, msg: Any, **_: Any) -> None:
        self.installed.add(msg.node_id)
        nofile = msg.data.get("nofile") if isinstance(msg.data, dict) else None
        if isinstance(nofile, int) and nofile > 0:
            self.open_files[msg.node_id] = nofile

    def new_fleet(self, spec: FleetSpec, abort_file: Path | None, stop_file: Path | None) -> MasterFleet:
        _forget_run_handlers(self.runner)
        return MasterFleet(spec, self, abort_file, stop_file)


def run_fleet(fleet: MasterFleet, report: Path, worker_timeout_s: float, *, last: bool) -> int:
    """One run on the master's runner: workers, spec, ramp, T0, reports; the report written, ``done`` said.

    ``last``: quit the workers before ``done`` (a remote ``locust --worker`` only ends on the quit message).
    """
    spec = fleet.spec
    status = 0
    try:
        fleet.wait_for_workers(worker_timeout_s)
        fleet.check_open_files()
        fleet.send_spec()
        connected = fleet.spawn_and_connect()
        if connected == 0:
            first = next((s["first_error"] for s in fleet.statuses.values() if s.get("first_error")), None)
            raise ConnectionError(
                f"no device could connect to {spec.connection.address}: {first or 'no error reported'}"
            )
        fleet.prepare()
        fleet.publish()
        if fleet.aborted or fleet.lost_workers:
            emit("error", message="; ".join(fleet.errors) or "aborted early")
            status = 1
    except (TimeoutError, ConnectionError, NotEnoughOpenFiles, WorkerRefusedSpec) as exc:
        fleet.errors.append(str(exc))
        emit("error", message=str(exc))
        fleet.abort(str(exc))
        status = 1
    finally:
        fleet.write_report(report)
        if last:
            # Quit before saying done: the parent stops this process once it reads "done".
            quit_fleet(fleet.runner)
        emit("done", status=status)
    return status


def stop_users(runner: MasterRunner, timeout_s: float = _RESET_TIMEOUT_S) -> str | None:
    """End a run's users on every worker (their devices disconnect) and wait until each is ready again.

    Locust's own ``stop()`` polls the user count once a second; a worker answers ``stop`` with
    ``client_stopped`` then ``client_ready``, which replaces its node: that replacement is what we wait
    for.  Returns why the workers did not all come back (the fleet is then not reusable), or None.
    """
    before = {node.id: node for node in runner.clients.all}
    runner.stop(send_stop_to_client=False)  # no dispatcher left: the next start() dispatches afresh
    for node_id in before:
        runner.server.send_to_client(Message("stop", None, node_id))  # type: ignore[no-untyped-call]
    deadline = time.monotonic() + timeout_s
    while True:
        back = [i for i, node in before.items() if i in runner.clients and runner.clients[i] is not node]
        if len(back) == len(before):
            return None
        if time.monotonic() > deadline:
            missing = len(before) - len(back)
            return f"{missing} of {len(before)} worker(s) did not stop their users within {timeout_s:g}s"
        gevent.sleep(0.01)


def read_command() -> dict[str, Any] | None:
    """The parent's next command from stdin, without blocking the other greenlets (heartbeats); None at EOF."""
    while True:
        line = gevent.get_hub().threadpool.apply(sys.stdin.readline)
        if not line:
            return None
        try:
            command = json.loads(line)
        except ValueError:
            logging.getLogger(__name__).warning("ignored a command line that is not JSON")
            continue
        if isinstance(command, dict):
            return command


def _optional_path(value: Any) -> Path | None:
    return Path(value) if value else None


def serve_runs(workers: StandingWorkers, worker_timeout_s: float) -> int:
    """A standing master: runs one fleet run per ``{"cmd": "run", ...}`` on stdin until ``quit`` or EOF.

    A run command: ``spec``, ``report``, ``abort_file``, ``stop_file`` (paths), ``worker_timeout_s`` and
    ``last`` (quit after it).  After a run that went well, the users are stopped (devices disconnect)
    and ``idle`` says the fleet is ready for the next; a run that failed, or workers that did not
    come back, say ``unusable`` (the parent then stops this process and starts afresh).
    """
    while True:
        command = read_command()
        if command is None or command.get("cmd") != "run":
            quit_fleet(workers.runner)
            return 0
        last = bool(command.get("last"))
        fleet = workers.new_fleet(
            FleetSpec.load(Path(command["spec"])),
            _optional_path(command.get("abort_file")),
            _optional_path(command.get("stop_file")),
        )
        timeout_s = float(command.get("worker_timeout_s", worker_timeout_s))
        status = run_fleet(fleet, Path(command["report"]), timeout_s, last=last)
        if last:
            return status
        problem = "the run failed" if status else stop_users(workers.runner)
        if problem is not None:
            emit("unusable", reason=problem)
            continue  # the parent stops this process; until then, answer what it asks
        emit("idle")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bind-host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port, reported in the 'listening' event")
    parser.add_argument("--worker-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s master %(levelname)s %(name)s: %(message)s")
    die_with_parent()
    removal_s = os.environ.get(TEST_WORKER_REMOVAL_ENV)
    if removal_s:
        locust.runners.HEARTBEAT_DEAD_INTERNAL = -int(float(removal_s))
    environment = Environment(user_classes=[DeviceUser])
    runner = environment.create_master_runner(args.bind_host, args.port)
    workers = StandingWorkers(runner)  # registered before any worker can say it installed our handlers
    # Binding port 0 here (not a port picked by the parent) leaves no window
    # in which another process can take it.
    emit("listening", host=args.bind_host, port=int(runner.server.port), locustfile=_LOCUSTFILE)
    return serve_runs(workers, args.worker_timeout)


if __name__ == "__main__":
    raise SystemExit(main())
