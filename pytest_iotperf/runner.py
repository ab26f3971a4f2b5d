"""One perf run, end to end, without pytest: sink, Locust master and workers, drain, result.

``PerfRun`` measures; it does not judge.  Scripts and the plugin use it
through ``pytest_iotperf.pipeline.Pipeline``, which adds the SLO verdicts,
the baseline comparison and the outputs (JSON/HTML, InfluxDB).

``execute()`` blocks on child processes and pipes only, so the pipeline runs
it on a thread while a test acts on the system; ``request_stop()`` and
``kill()`` may be called from any thread.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from pytest_iotperf.abort import AbortRule, AbortWatch, with_outage_budget
from pytest_iotperf.broker_endpoint import BrokerEndpoint, wait_for_mqtt, wait_for_tls
from pytest_iotperf.config import RunSettings
from pytest_iotperf.connection import Connection
from pytest_iotperf.errors import BrokerError, ConfigError, IotPerfError, SinkError
from pytest_iotperf.extract_hook import ExtractRef
from pytest_iotperf.fleet.capacity import broker_shortfall
from pytest_iotperf.fleet.spec import FleetSpec
from pytest_iotperf.fleet_processes import FleetKey, FleetProcesses, fleet_starter, ready_for_next_run
from pytest_iotperf.processes import ChildExited, ProcessGroup, read_json
from pytest_iotperf.readback import EventHubAccess, EventHubReadback, MqttReadback, Readback
from pytest_iotperf.result import RunResult, build_result
from pytest_iotperf.run_identity import plan_identity
from pytest_iotperf.run_message import check_protocol, plan_message
from pytest_iotperf.stage_plan import due_slot_for, timeline_slot_for
from pytest_iotperf.standing import Lease, StandingProcesses, environment_digest
from pytest_iotperf.wire_reports import FleetReport, SinkReport

ProgressCallback = Callable[[dict[str, Any]], None]

_BROKER_CHECK_S = 5.0
_STARTUP_S = 60.0  # interpreter + locust import + workers joining, on a busy 2-core machine
_CONNECT_BUDGET_S = 20.0
_AMQTT_DEVICES = 250
_AMQTT_MSGS_PER_S = 2000


class RunFailed(IotPerfError):
    """The run broke; ``result`` holds what was measured up to then."""

    def __init__(self, message: str, result: RunResult) -> None:
        super().__init__(message)
        self.result = result


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def with_due_grid(spec: FleetSpec, window_lengths_s: Sequence[float]) -> FleetSpec:
    """``spec`` on the due-time grid every stage start and windowed-SLO window length falls on.

    Raises:
        ConfigError: the boundaries share no grid of at least 100 ms, or need too many slots.
    """
    boundaries = [stage.start_s for stage in spec.stage_plan] + [float(w) for w in window_lengths_s]
    try:
        due_slot_s = due_slot_for(boundaries, spec.duration_s, float(spec.timeline_slot_s))
    except ValueError as exc:
        raise ConfigError(f"stages and SLO windows: {exc}") from None
    return replace(spec, due_slot_s=due_slot_s)


class PerfRun:
    """Runs one fleet against one broker and reads the telemetry back."""

    def __init__(
        self,
        settings: RunSettings,
        broker: BrokerEndpoint,
        *,
        progress: ProgressCallback | None = None,
        workdir: Path | None = None,
        read_back: bool = True,
        eventhub: EventHubAccess | None = None,
        processes: StandingProcesses | None = None,
        abort_rule: AbortRule | None = None,
        extract: Sequence[ExtractRef] = (),
        window_lengths_s: Sequence[float] = (),
    ) -> None:
        self.settings = settings
        self.extract = tuple(extract)  # conftest pytest_iotperf_extract implementations, for the sinks
        self.read_back = read_back  # False: fleet only (benchmarks of the generator itself)
        self.eventhub = eventhub
        planned = settings.planned_messages  # with stages: summed over them
        if settings.reconnect:
            # Devices ride through a lost broker; only a long outage of most of the fleet ends the run.
            abort_rule = with_outage_budget(abort_rule, settings.devices, settings.outage_budget_s)
        self._abort = AbortWatch(abort_rule, planned) if abort_rule is not None else None
        self._abort_file: Path | None = None
        self._stop_file: Path | None = None
        self._stop_wanted = threading.Event()
        self._killed = threading.Event()
        self._group: ProcessGroup | None = None
        # The session's standing master, workers and sink, lent to this run when they fit it (standing.py);
        # without a session, processes started for this run alone.
        self._processes = processes or StandingProcesses.one_run()
        self._fleet_lease: Lease[FleetProcesses] | None = None
        self.broker = broker
        # How every MQTT client of this run connects: built once, serialised into each child's spec.
        check_protocol(settings, broker)  # MQTT version, header placement and transport this broker can carry
        try:
            self.connection = Connection.for_run(settings, broker)
        except ValueError as exc:
            raise ConfigError(f"--iot-transport {settings.transport} ({settings.source('transport')}): {exc}") from None
        self.run_id = new_run_id()
        # The payload and where its header goes; then names, credentials and the IoT Hub topic (whose
        # content type follows the payload). Both checked before anything starts (ConfigError otherwise).
        self.message = plan_message(settings, self.run_id)
        identity = plan_identity(settings, broker, self.run_id, json_body=self.message.json_body)
        self.progress = progress or (lambda state: None)
        self._progress_state: dict[str, Any] = {
            "run_id": self.run_id,
            "phase": "starting",
            "devices": settings.devices,
            "duration_s": settings.duration_s,
            "connected": 0,
            "sent": 0,
            "received": 0,
            "p95_delay_ms": None,
            "elapsed_s": 0.0,
        }
        self._workdir = workdir
        self.fleet_spec = FleetSpec(
            run_id=self.run_id,
            devices=settings.devices,
            rate=settings.rate,
            duration_s=settings.duration_s,
            ramp_up_s=settings.ramp_up_s,
            connection=self.connection,
            payload_bytes=settings.payload_bytes,
            topic_template=identity.topic_template,
            expect_workers=settings.expect_workers,
            timeline_slot_s=timeline_slot_for(settings.duration_s),
            connect_budget_s=_CONNECT_BUDGET_S,
            clock_correction=settings.clock_correction,
            reconnect=settings.reconnect,
            reconnect_max_s=settings.reconnect_max_s,
            offline_queue=settings.offline_queue,
            clean_session=settings.clean_session,
            outage_budget_s=settings.outage_budget_s,
            identity=identity.spec,
            connect_rate=settings.connect_rate,
            message=self.message,
            topic_alias=settings.topic_alias,
            arrival=settings.arrival,
            stages=settings.stage_plan if settings.stages else (),  # devices / duration_s: the stages' max / sum
        )
        self.fleet_spec = with_due_grid(self.fleet_spec, window_lengths_s)

    def warnings(self) -> list[str]:
        out = []
        if self.broker.kind == "amqtt":
            rate = self.settings.devices * self.settings.rate
            if self.settings.devices > _AMQTT_DEVICES or rate > _AMQTT_MSGS_PER_S:
                out.append(
                    f"embedded amqtt broker at {self.settings.devices} devices / {rate:g} msg/s: amqtt distorts "
                    f"delays above ~{_AMQTT_DEVICES} devices or ~{_AMQTT_MSGS_PER_S} msg/s; install mosquitto"
                )
        return out

    def snapshot(self) -> dict[str, Any]:
        """The progress figures as they are now (before ``execute()``: its starting state)."""
        return dict(self._progress_state)

    def request_stop(self) -> None:
        """End the steady state early (any thread): the run then drains and accounts as one of that length."""
        self._stop_wanted.set()
        self._write_stop_file()

    def _write_stop_file(self) -> None:
        path = self._stop_file  # set by the run's thread once its working directory exists
        if path is not None and self._stop_wanted.is_set() and not path.exists():
            path.write_text("stop\n")

    def kill(self) -> None:
        """Stop every child now (any thread; for an interrupt): ``execute()`` then ends with what it has."""
        self._killed.set()
        group = self._group
        if group is not None:
            group.stop_all()

    def _check_killed(self) -> None:
        # Between starting children: after kill() no new one starts (the group stops those that did).
        if self._killed.is_set():
            raise ChildExited("the run was interrupted")

    def execute(self) -> RunResult:
        """Run it; RunFailed (carrying the partial result) when it broke halfway."""
        # Before anything starts: a broker that cannot hold every device fails them one by one otherwise.
        shortfall = broker_shortfall(self.settings.devices, self.broker.open_files)
        if shortfall is not None:
            raise BrokerError(shortfall)
        try:
            if self.broker.iothub:
                # The hub refuses an anonymous probe: reaching it over TLS is what can be checked up front.
                wait_for_tls(self.connection, _BROKER_CHECK_S)
            else:
                wait_for_mqtt(self.connection, _BROKER_CHECK_S)
        except BrokerError as exc:
            raise BrokerError(f"cannot reach the MQTT broker {self.broker.url}: {exc}") from None
        workdir = Path(tempfile.mkdtemp(prefix=f"iotperf-{self.run_id}-", dir=self._workdir))
        try:
            result = self._execute(workdir)
        except BaseException as exc:
            # Keep the logs of a broken run: they are how it gets diagnosed.
            if isinstance(exc, RunFailed):
                note = f"logs of the sink, master and workers kept in {workdir}"
                exc.result.errors.append(note)
                raise RunFailed(f"{exc}; {note}", exc.result) from None
            raise
        shutil.rmtree(workdir, ignore_errors=True)
        return result

    def _execute(self, workdir: Path) -> RunResult:
        spec_path = workdir / "fleet-spec.json"
        spec_path.write_text(self.fleet_spec.to_json())
        fleet_report_path = workdir / "fleet-report.json"
        errors: list[str] = []
        sink_report: SinkReport | None = None
        readback = self._readback()
        self._stop_file = workdir / "stop-request.txt"
        with ProcessGroup() as group:
            self._group = group
            healthy = False
            try:
                self._check_killed()
                if readback is not None:
                    readback.start(group, workdir, self._processes)
                try:
                    self._run_fleet(group, workdir, spec_path, fleet_report_path, readback)
                except ChildExited as exc:
                    errors.append(str(exc))
                fleet_report = cast(FleetReport | None, read_json(fleet_report_path))
                if fleet_report is None and not errors:
                    errors.append("the Locust master wrote no fleet report")
                expected = int(fleet_report["sent"]) if fleet_report else 0
                if readback is not None:
                    self._progress_state.update(phase="draining", sent=expected)
                    self.progress(dict(self._progress_state))
                    sink_report, sink_errors = readback.finish(expected, self.settings.drain_s)
                    errors.extend(sink_errors)
                healthy = not errors and fleet_report is not None and (readback is None or sink_report is not None)
            finally:
                # A run that broke in any way (an interrupt too) leaves nothing standing for the next.
                healthy = healthy and not self._killed.is_set()
                if readback is not None:
                    readback.release(group, workdir, healthy=healthy)
                lease, self._fleet_lease = self._fleet_lease, None
                if lease is not None:
                    self._processes.give_back(lease, group, workdir, healthy=healthy)
        result = build_result(
            settings={"run_id": self.run_id, **self.settings.describe(), "seed": self.message.seed},
            sources=self.settings.sources(),
            broker=self.broker.description,
            fleet=fleet_report,
            sink=sink_report,
            warnings=self.warnings(),
            errors=errors,
            stages=self.fleet_spec.stage_plan,
            due_slot_s=self.fleet_spec.due_slot_us / 1_000_000,
        )
        if self.eventhub is not None:
            result.eventhub = self.eventhub.description
        if errors or fleet_report is None or (readback is not None and sink_report is None):
            raise RunFailed("; ".join(errors) or "the run did not complete", result)
        return result

    def _local_master_host(self) -> str:
        host = self.settings.master_bind[0]
        return "127.0.0.1" if host in ("0.0.0.0", "::", "*", "") else host

    def _abort_file_path(self, workdir: Path) -> Path:
        """Where this run asks the master to stop early (the master polls for it)."""
        self._abort_file = workdir / "abort-reason.txt"
        return self._abort_file

    def _readback(self) -> Readback | None:
        if not self.read_back:
            return None
        slot = self.fleet_spec.timeline_slot_s
        if self.settings.sink == "eventhub":
            if self.eventhub is None:
                raise SinkError("--iot-sink eventhub needs an Event Hub; none was given to this run")
            return EventHubReadback(
                self.settings,
                self.connection,
                self.eventhub,
                self.run_id,
                slot,
                message=self.message,
                extract=self.extract,
                due_slot_us=self.fleet_spec.due_slot_us,
            )
        return MqttReadback(
            self.settings,
            self.connection,
            self.run_id,
            slot,
            message=self.message,
            extract=self.extract,
            due_slot_us=self.fleet_spec.due_slot_us,
        )

    def _run_fleet(
        self, group: ProcessGroup, workdir: Path, spec_path: Path, report_path: Path, readback: Readback | None
    ) -> None:
        """Take a fleet (standing, or started now), send it this run, follow the master until its report."""
        self._check_killed()
        settings = self.settings
        host, port = settings.master_bind
        env = dict(self.broker.fleet_env)  # an embedded IoT Hub's key: environment only
        key = FleetKey(settings.workers, host, port, settings.expect_workers, environment_digest(env))
        start = fleet_starter(key, self._local_master_host(), env, _STARTUP_S, self._check_killed)
        self._fleet_lease = lease = self._processes.lease("fleet", key, start, group, workdir, ready_for_next_run)
        master = lease.handle.master
        self._write_stop_file()  # a stop asked for before the run's directory existed
        stop_file = self._stop_file or workdir / "stop-request.txt"
        abort_file = self._abort_file_path(workdir)
        last = not lease.standing  # a fleet of this run alone quits its workers before "done"
        master.send(lease.handle.run_command(spec_path, report_path, abort_file, stop_file, _STARTUP_S, last=last))
        spec = self.fleet_spec
        deadline = time.monotonic() + _STARTUP_S + spec.ramp_up_s + spec.connect_budget_s + spec.duration_s + 60.0
        failure: str | None = None
        while True:
            event = master.next_event(deadline)
            kind = event.get("event")
            if kind == "done":
                break
            if kind == "error":
                failure = str(event.get("message"))
            self._follow(event, readback)
        if failure:
            raise ChildExited(failure)

    def _follow(self, master_event: dict[str, Any], readback: Readback | None) -> None:
        """Fold the master's and the sink's latest figures into one progress snapshot."""
        state = self._progress_state
        if master_event.get("event") == "progress":
            state.update({k: v for k, v in master_event.items() if k != "event"})
        elif master_event.get("event") == "publishing":
            state.update(phase="publishing", t0=master_event.get("t0"))
            if readback is not None and master_event.get("t0") is not None:
                readback.announce_t0(float(master_event["t0"]))  # the sinks account by due slot from T0
        if readback is not None:
            state.update(readback.pending_progress())
        self._write_stop_file()
        if self._abort_file is None or self._abort_file.exists():
            return
        # A dead reader cannot measure anything more: stop now, keep what was measured.
        reason = readback.failure() if readback is not None else None
        if reason is None and self._abort is not None:
            reason = self._abort.check(state)
        if reason is not None:
            self._abort_file.write_text(reason)
        self.progress(dict(state))


__all__ = ["PerfRun", "RunFailed", "new_run_id"]
