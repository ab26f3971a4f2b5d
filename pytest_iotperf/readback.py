"""Reading the telemetry back: the processes on the far side of the system under test.

Two implementations share one role (``Readback``): the MQTT sink (one
subscriber process) and the Event Hubs path (an optional platform bridge,
MQTT -> Event Hubs, and N consumer processes dividing the hub's partitions).
The runner starts one before the fleet, asks it for progress while the
fleet runs, and finishes it once the fleet reported what it sent.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

from pytest_iotperf.config import RunSettings, topic_filter_for
from pytest_iotperf.connection import Connection
from pytest_iotperf.errors import SinkError
from pytest_iotperf.extract_hook import ExtractRef
from pytest_iotperf.message_spec import MessageSpec
from pytest_iotperf.processes import Child, ChildExited, ProcessGroup, read_json, start_service
from pytest_iotperf.secrets import EVENTHUB_CONNECTION_STRING_ENV
from pytest_iotperf.sinks.merge import merge_sink_reports
from pytest_iotperf.standing import Lease, StandingProcesses, environment_digest
from pytest_iotperf.wire_reports import BridgeReport, SinkReport

_READY_S = 30.0  # an Event Hubs consumer takes ~1.5 s per link to attach; several share a core
_BRIDGE_STOP_S = 15.0
_IDLE_S = 3.0


@dataclass(frozen=True)
class EventHubAccess:
    """How to reach the hub. ``connection_string`` is a secret: it only travels in child environments."""

    connection_string: str
    description: str  # shown in results: no secret
    partitions: tuple[str, ...] = ()  # known ones (embedded); empty: ask the hub
    eventhub_name: str | None = None
    # Embedded endpoint only: why it is gone, or None while it runs.
    failure: Callable[[], str | None] | None = None

    def __repr__(self) -> str:
        return f"EventHubAccess({self.description!r})"


def start_embedded_eventhub(workdir: Path, partitions: int = 4) -> tuple[Child, EventHubAccess]:
    """Our Event Hubs-compatible endpoint in its own process (hub ``telemetry``); the caller stops the child.

    The access it returns reports the endpoint's death (``failure``), so a run stops at once.
    """
    child, ready = start_service(
        "embedded Event Hubs endpoint",
        "pytest_iotperf.embedded.eventhub",
        ["--port", "0", "--hub", "telemetry", "--partitions", str(partitions), "--exit-on-stdin-close"],
        workdir / "eventhub.log",
        SinkError,
        _READY_S,
    )
    access = EventHubAccess(
        str(ready["connection_string"]),  # a secret: it only travels in child environments
        f"embedded Event Hubs endpoint 127.0.0.1:{ready['port']}/telemetry ({partitions} partitions)",
        partitions=tuple(str(p) for p in range(partitions)),
        failure=child.gone_reason,
    )
    return child, access


class Readback(Protocol):
    """The far side of a run."""

    def start(self, group: ProcessGroup, workdir: Path, processes: StandingProcesses | None = None) -> None:
        """Start the processes (or take standing ones from ``processes``); return once they read."""

    def release(self, group: ProcessGroup, workdir: Path, *, healthy: bool) -> None:
        """The run is over: standing processes stand for the next run when ``healthy``, else they stop."""

    def pending_progress(self) -> dict[str, Any]:
        """Latest figures without waiting: ``received``, ``p95_delay_ms`` (may be empty)."""

    def failure(self) -> str | None:
        """Why the far side can no longer read (a process died), or None while it can."""

    def announce_t0(self, t0: float) -> None:
        """The master's T0 (epoch s): every sink accounts by due slot from it (``{"cmd": "t0"}``)."""

    def finish(self, expected: int, drain_s: float) -> tuple[SinkReport | None, list[str]]:
        """Drain until ``expected`` distinct messages arrived or ``drain_s`` passed; the merged report and errors."""


def _write_json(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data))
    return path


def _message_fields(message: MessageSpec | None, extract: Sequence[ExtractRef]) -> dict[str, Any]:
    """What a sink needs to find the headers: the message spec (header key) and the conftest hooks to load."""
    fields: dict[str, Any] = {"extract": list(extract)} if extract else {}
    if message is not None:
        fields["message"] = message.to_dict()
    return fields


def _exited(children: list[Child]) -> str | None:
    for child in children:
        reason = child.gone_reason()
        if reason is not None:
            return reason
    return None


def _announce_t0(children: list[Child], t0: float) -> None:
    """Send T0 to every sink; one that died no longer needs it (``failure()`` says why it is gone)."""
    command = {"cmd": "t0", "t0_us": round(t0 * 1_000_000)}
    for child in children:
        with contextlib.suppress(ChildExited):
            child.send(command)


def _progress_of(children: list[Child], latest: dict[str, dict[str, Any]]) -> dict[str, Any]:
    for child in children:
        for event in child.pending_events():
            if event.get("event") == "progress":
                latest[child.name] = event
    if not latest:
        return {}
    p95s = [e["p95_delay_ms"] for e in latest.values() if e.get("p95_delay_ms") is not None]
    return {
        "received": sum(int(e.get("received", 0)) for e in latest.values()),
        "p95_delay_ms": max(p95s) if p95s else None,  # the worst sink's: a bound, not a merge
        "gaps": sum(int(e.get("gaps", 0)) for e in latest.values()),
    }


def _start_sink(group: ProcessGroup, log_dir: Path, standing: bool) -> tuple[Child, list[Child]]:
    module = "pytest_iotperf.sinks.mqtt_sink"
    sink = group.add(Child.python_module("mqtt sink", module, ["--serve"], log_dir / "sink.log", stdin=True))
    return sink, [sink]


class MqttReadback:
    """One subscriber on the output topic filter, measuring at receive time."""

    def __init__(
        self,
        settings: RunSettings,
        connection: Connection,
        run_id: str,
        timeline_slot_s: int,
        message: MessageSpec | None = None,
        extract: Sequence[ExtractRef] = (),
        due_slot_us: int = 0,
    ) -> None:
        self.spec = {
            "run_id": run_id,
            "connection": connection.to_dict(),
            "topic_filter": settings.sink_topic.replace("{run_id}", run_id),
            "timeline_slot_s": timeline_slot_s,
            "due_slot_us": due_slot_us,  # the by-due grid (0: the timeline's slot)
            **_message_fields(message, extract),
        }
        self._sink: Child | None = None
        self._report_path: Path | None = None
        self._latest: dict[str, dict[str, Any]] = {}
        self._processes: StandingProcesses | None = None
        self._lease: Lease[Child] | None = None

    def start(self, group: ProcessGroup, workdir: Path, processes: StandingProcesses | None = None) -> None:
        """The sink of this run: a standing one (``sinks.mqtt_sink --serve``) told about the run, or a fresh one."""
        self._report_path = workdir / "sink-report.json"
        spec_path = _write_json(workdir / "sink-spec.json", self.spec)
        self._processes = processes = processes or StandingProcesses.one_run()
        # The same connection (and environment: credentials) is all a standing sink must share with the run.
        key = (json.dumps(self.spec["connection"], sort_keys=True), environment_digest())
        command = {"cmd": "run", "spec": str(spec_path), "report": str(self._report_path)}
        while True:
            lease = processes.lease("sink", key, _start_sink, group, workdir)
            try:
                lease.handle.send(command | {"last": not lease.standing})
                lease.handle.wait_for("ready", _READY_S)
            except ChildExited as exc:
                if lease.reused:  # a standing sink that cannot serve this run (offline, say): a fresh one may
                    processes.discard(lease, group)
                    continue
                processes.give_back(lease, group, workdir, healthy=False)
                raise SinkError(f"the MQTT sink could not start: {exc}") from None
            self._lease, self._sink = lease, lease.handle
            return

    def release(self, group: ProcessGroup, workdir: Path, *, healthy: bool) -> None:
        lease, processes, self._lease = self._lease, self._processes, None
        if lease is not None and processes is not None:
            processes.give_back(lease, group, workdir, healthy=healthy)

    def pending_progress(self) -> dict[str, Any]:
        return _progress_of([self._sink], self._latest) if self._sink else {}

    def failure(self) -> str | None:
        return _exited([self._sink]) if self._sink else None

    def announce_t0(self, t0: float) -> None:
        if self._sink is not None:
            _announce_t0([self._sink], t0)

    def finish(self, expected: int, drain_s: float) -> tuple[SinkReport | None, list[str]]:
        assert self._sink is not None and self._report_path is not None
        errors: list[str] = []
        try:
            self._sink.send({"cmd": "drain", "expected": expected, "timeout_s": drain_s})
            self._sink.wait_for("done", drain_s + 30.0)
        except ChildExited as exc:
            errors.append(str(exc))
        return cast(SinkReport | None, read_json(self._report_path)), errors


class EventHubReadback:
    """Optional platform bridge (MQTT -> Event Hubs) plus N consumer processes; delay at enqueued time."""

    def __init__(
        self,
        settings: RunSettings,
        connection: Connection,
        hub: EventHubAccess,
        run_id: str,
        timeline_slot_s: int,
        message: MessageSpec | None = None,
        extract: Sequence[ExtractRef] = (),
        due_slot_us: int = 0,
    ) -> None:
        self.settings = settings
        self.due_slot_us = due_slot_us
        self._message_fields = _message_fields(message, extract)
        # The bridge reads the devices' own messages: it needs the header key, not the platform's hooks.
        self._bridge_message = {"message": message.to_dict()} if message is not None else {}
        self.connection = connection
        self.hub = hub
        self.run_id = run_id
        self.timeline_slot_s = timeline_slot_s
        self.bridge: Child | None = None
        self.sinks: list[Child] = []
        self._report_paths: list[Path] = []
        self._bridge_report: Path | None = None
        self._latest: dict[str, dict[str, Any]] = {}
        self._env = {EVENTHUB_CONNECTION_STRING_ENV: hub.connection_string}

    def _client_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"transport": self.settings.eventhub_transport}
        if self.hub.eventhub_name:
            spec["eventhub_name"] = self.hub.eventhub_name
        return spec

    def start(self, group: ProcessGroup, workdir: Path, processes: StandingProcesses | None = None) -> None:
        """Start the consumers (and the bridge) for this run; they are not kept between runs (``processes``
        unused: each consumer reads from its run's start position, and the bridge is the run's)."""
        # Read from a little before now: events of this run cannot be older,
        # and the run id filters out the others.
        start_time = time.time() - 1.0
        consumers = self.settings.eventhub_consumers
        partitions = list(self.hub.partitions)
        shares: list[list[str]] = [partitions[i::consumers] for i in range(consumers)] if partitions else [[]]
        shares = [share for share in shares if share] or [[]]
        for index, share in enumerate(shares):
            spec = {
                "run_id": self.run_id,
                "start_time_epoch_s": start_time,
                "partitions": share or None,
                "consumer_group": self.settings.consumer_group,
                "timeline_slot_s": self.timeline_slot_s,
                "due_slot_us": self.due_slot_us,
                "ready_timeout_s": _READY_S - 5,
                **self._message_fields,
                **self._client_spec(),
            }
            report_path = workdir / f"eventhub-sink-{index}-report.json"
            self._report_paths.append(report_path)
            self.sinks.append(
                group.add(
                    Child.python_module(
                        f"Event Hubs sink {index}",
                        "pytest_iotperf.sinks.eventhub_sink",
                        [str(_write_json(workdir / f"eventhub-sink-{index}-spec.json", spec)), str(report_path)],
                        workdir / f"eventhub-sink-{index}.log",
                        stdin=True,
                        env=self._env,
                    )
                )
            )
        if self.settings.bridge == "embedded":
            self._start_bridge(group, workdir)
        for sink in self.sinks:
            try:
                sink.wait_for("ready", _READY_S)
            except ChildExited as exc:
                raise SinkError(f"the Event Hubs sink could not read from {self.hub.description}: {exc}") from None
        if self.bridge is not None:
            try:
                self.bridge.wait_for("ready", _READY_S)
            except ChildExited as exc:
                raise SinkError(f"the platform bridge could not start: {exc}") from None

    def _start_bridge(self, group: ProcessGroup, workdir: Path) -> None:
        template = self.settings.topic_template.replace("{run_id}", self.run_id)
        spec = {
            "connection": self.connection.to_dict(),
            "topic_filter": topic_filter_for(template, self.run_id),
            "topic_template": template,
            "run_id": self.run_id,
            # One batch per partition (each event keeps its device id as partition key):
            # per-device batches cost a round trip each and cap the bridge near 1,000 events/s.
            "grouping": "partition",
            **self._bridge_message,
            **self._client_spec(),
        }
        self._bridge_report = workdir / "bridge-report.json"
        self.bridge = group.add(
            Child.python_module(
                "platform bridge",
                "pytest_iotperf.bridge",
                [str(_write_json(workdir / "bridge-spec.json", spec)), str(self._bridge_report)],
                workdir / "bridge.log",
                stdin=True,
                env=self._env,
            )
        )

    def release(self, group: ProcessGroup, workdir: Path, *, healthy: bool) -> None:
        """Nothing stands: the run's group stops the consumers and the bridge."""

    def pending_progress(self) -> dict[str, Any]:
        return _progress_of(self.sinks, self._latest)

    def announce_t0(self, t0: float) -> None:
        _announce_t0(self.sinks, t0)

    def failure(self) -> str | None:
        hub_gone = self.hub.failure() if self.hub.failure is not None else None
        return hub_gone or _exited([*([self.bridge] if self.bridge else []), *self.sinks])

    def finish(self, expected: int, drain_s: float) -> tuple[SinkReport | None, list[str]]:
        errors: list[str] = []
        bridge_report: BridgeReport | None = None
        if self.bridge is not None and self._bridge_report is not None:
            # Stop the bridge first: it flushes what it holds, so afterwards every
            # message it will ever forward is in the hub.
            try:
                self.bridge.send({"cmd": "stop", "timeout_s": _BRIDGE_STOP_S})
                self.bridge.wait_for("done", _BRIDGE_STOP_S + 15.0)
            except ChildExited as exc:
                errors.append(str(exc))
            bridge_report = cast(BridgeReport | None, read_json(self._bridge_report))
        single = len(self.sinks) == 1
        for sink in self.sinks:
            try:
                # With several consumers none knows its share, so each ends once idle.
                command = {"cmd": "drain", "expected": expected if single else -1, "timeout_s": drain_s}
                sink.send(command | ({} if single else {"idle_s": min(_IDLE_S, drain_s)}))
            except ChildExited as exc:
                errors.append(str(exc))
        for sink in self.sinks:
            try:
                sink.wait_for("done", drain_s + 30.0)
            except ChildExited as exc:
                errors.append(str(exc))
        reports = [cast(SinkReport, r) for r in (read_json(p) for p in self._report_paths) if r is not None]
        if len(reports) < len(self._report_paths):
            errors.append(f"{len(self._report_paths) - len(reports)} Event Hubs sink(s) wrote no report")
        merged = merge_sink_reports(reports) if reports else None
        if merged is not None and bridge_report is not None:
            merged["bridge"] = bridge_report
        return merged, errors
