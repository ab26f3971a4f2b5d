"""The MQTT sink: ``python -m pytest_iotperf.sinks.mqtt_sink SPEC REPORT``.

Subscribes to the output topic filter in its own process (the pytest
process stays light) and measures the delay at receive time.  Talks to the
pytest process by JSON lines: it prints ``ready`` once the subscription is
acknowledged, ``progress`` about once a second while messages arrive, then
reads ``{"cmd": "drain", "expected": N, "timeout_s": D}`` from stdin, keeps
reading until N distinct messages of the run arrived or D passed
(``sinks.drain``), closes its persistent session on the broker, writes REPORT
(``wire_reports.SinkReport``) and prints ``done``.  EOF on stdin also ends
the drain.  After a dropped connection it prints ``reconnected`` once it
reads again (``session_present``: whether the broker kept its session).

The spec's ``message`` (header key) and ``extract`` (conftest hooks, imported
here before connecting: one that does not import is an ``error``) say how to
find the headers (``sinks.finding``).  With MQTT 5, a message's user
properties are decoded only when it has properties at all.

``--serve`` (no SPEC REPORT): a standing sink for a session's runs.  Each
``{"cmd": "run", "spec": PATH, "report": PATH, "last": bool}`` starts a run
(a fresh recorder; the run's topic filter subscribed, the last run's
unsubscribed) and says ``ready``; ``t0`` and ``drain`` follow as above and
end in ``done``.  The connection and its persistent session stay between
runs; ``last``, ``{"cmd": "quit"}`` or EOF close them and end the process.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from paho.mqtt import client as mqtt

from pytest_iotperf.child_protocol import EventWriter, commands, scrubbing_event_writer
from pytest_iotperf.connection import Connection
from pytest_iotperf.extract_hook import ExtractLoadError
from pytest_iotperf.files import write_json_atomically
from pytest_iotperf.header import MessageView
from pytest_iotperf.mqtt_client import make_client, shared_identity
from pytest_iotperf.mqtt_wire import user_properties
from pytest_iotperf.persistent_session import PersistentSession, subscription_qos
from pytest_iotperf.process_guard import die_with_parent
from pytest_iotperf.secrets import secret_env_values
from pytest_iotperf.sinks.drain import Drain, serve_drain
from pytest_iotperf.sinks.finding import finder_for
from pytest_iotperf.sinks.recorder import SinkRecorder, t0_commands
from pytest_iotperf.wire_reports import SinkReport

_READY_TIMEOUT_S = 10.0
_PROGRESS_INTERVAL_US = 1_000_000


class MqttSink:
    """One subscriber on the output topic, accounting into a SinkRecorder.

    It keeps a persistent session (``persistent_session``): after a dropped
    connection it reconnects within ~100 ms (backoff capped at 2 s), and what
    the broker queued for it meanwhile (QoS 1 and 2) still arrives; the report
    counts its ``disconnects`` and ``reconnects``.  The session is closed on
    the broker once the drain is over (:meth:`close`).
    """

    def __init__(self, spec: dict[str, Any], emit: EventWriter | None = None) -> None:
        self.spec = spec
        self.emit = emit or EventWriter()
        # First: a conftest hook that does not import here fails the sink before it connects (ExtractLoadError).
        self.recorder = SinkRecorder(
            spec["run_id"], int(spec.get("timeline_slot_s", 1)), finder_for(spec), int(spec.get("due_slot_us", 0))
        )
        self.drain = Drain(lambda: self.recorder.received)
        self.errors: list[str] = []
        self.subscribed = threading.Event()
        self._next_progress_us = 0
        self._session_counts = (0, 0)  # the session's (disconnects, reconnects) when this run began
        # The lean client hands each payload over without paho's per-message objects
        # and acknowledges a whole read at once: ~3x the messages per core of paho's loop.
        self.connection = Connection.from_dict(spec["connection"])
        # One client id for the whole run (``{run_id}-sink``): the broker finds the session again after a drop.
        identity = shared_identity(self.connection, f"{spec['run_id']}-sink")
        self.client = make_client(self.connection, identity, clean_session=False)
        self.session = PersistentSession(self.client, self.connection, identity, self._on_online)
        self.client.on_subscribe = self._on_subscribe
        self.client.on_raw_message = self._on_raw_message

    def _on_online(self, client: mqtt.Client, fresh: bool) -> None:
        if fresh:  # the first connection, or the broker lost the session (it restarted): subscribe (again)
            # Nagle is off already (the factory's client): our PUBACKs are not held back.
            client.subscribe(self.spec["topic_filter"], qos=subscription_qos(self.connection.qos))
        else:
            self.emit("reconnected", session_present=True, reconnects=self.session.reconnects)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        if any(r.is_failure for r in reasons):
            self.errors.append(f"subscription to {self.spec['topic_filter']!r} refused: {reasons[0]}")
        if self.subscribed.is_set():
            self.emit("reconnected", session_present=False, reconnects=self.session.reconnects)
        self.subscribed.set()

    def _on_raw_message(self, topic: bytes, payload: bytes, properties: bytes | None) -> None:
        # The hot path (12,000+ messages/s): a NamedTuple view, no decoding beyond the header.
        seen_at_us = time.time_ns() // 1000
        recorder = self.recorder
        # MQTT 5 properties (raw bytes) are decoded only when present: 3.1.1 costs nothing more.
        recorder.record(MessageView(payload, topic, _user_properties(properties) if properties else None), seen_at_us)
        self.drain.arrived(recorder.ledger.received)
        # Progress from the thread that owns the recorder: no locking, no copy.
        if seen_at_us >= self._next_progress_us:
            self._next_progress_us = seen_at_us + _PROGRESS_INTERVAL_US
            self.emit("progress", **recorder.progress())

    def start(self) -> None:
        self.session.start()
        if not self.session.answered.wait(_READY_TIMEOUT_S):
            raise TimeoutError(f"no CONNACK from {self.connection.address} within {_READY_TIMEOUT_S:g}s")
        if self.session.refused:
            raise ConnectionError(f"sink {self.session.refused}")
        if not self.subscribed.wait(_READY_TIMEOUT_S):
            raise TimeoutError(f"no SUBACK for {self.spec['topic_filter']!r} within {_READY_TIMEOUT_S:g}s")
        if self.errors:
            raise ConnectionError(self.errors[0])

    def next_run(self, spec: dict[str, Any]) -> None:
        """Account for the next run of a standing sink: a fresh recorder, the run's topic filter subscribed.

        Raises:
            ExtractLoadError, ValueError: the run's headers cannot be found (a hook that does not import).
            TimeoutError, ConnectionError: offline, or the new subscription was not acknowledged.
        """
        recorder = SinkRecorder(
            spec["run_id"], int(spec.get("timeline_slot_s", 1)), finder_for(spec), int(spec.get("due_slot_us", 0))
        )
        offline = self.session.offline_problem()
        if offline:
            raise ConnectionError(f"the standing sink is {offline}")
        old_filter = self.spec["topic_filter"]
        self.spec = spec  # a lost session is subscribed again with this run's filter (_on_online)
        self.recorder = recorder  # the network thread reads it per message: swapped, never mutated
        self.drain = Drain(lambda: self.recorder.received)
        self.errors = []
        self._session_counts = (self.session.disconnects, self.session.reconnects)
        if spec["topic_filter"] == old_filter:
            return
        self.subscribed.clear()
        self.client.subscribe(spec["topic_filter"], qos=subscription_qos(self.connection.qos))
        if not self.subscribed.wait(_READY_TIMEOUT_S):
            raise TimeoutError(f"no SUBACK for {spec['topic_filter']!r} within {_READY_TIMEOUT_S:g}s")
        if self.errors:
            raise ConnectionError(self.errors[0])
        self.client.unsubscribe(old_filter)  # nothing of the last run is routed here any more

    def stop(self) -> None:
        """Stop reading (no reconnect after this); a sink still offline says so in ``errors``."""
        offline = self.session.offline_problem()
        self.session.stop()
        if offline:
            self.errors.append(f"the sink was {offline}")

    def close(self) -> None:
        """End the persistent session on the broker (after :meth:`stop`): nothing is queued for it any more."""
        problem = self.session.close()
        if problem:
            self.errors.append(problem)

    def report(self, drain_result: str) -> SinkReport:
        """The recorder's report with the connection's own figures."""
        report = self.recorder.report(drain_result, self.errors)
        disconnects, reconnects = self._session_counts
        report["disconnects"] = self.session.disconnects - disconnects
        report["reconnects"] = self.session.reconnects - reconnects
        return report


def _user_properties(raw: bytes) -> dict[str, str] | None:
    """A PUBLISH's user properties; None for a malformed property block (the body may still hold the header)."""
    try:
        return user_properties(raw)
    except ValueError:
        return None


def _started_sink(spec: dict[str, Any], emit: EventWriter) -> MqttSink | None:
    """The sink of the first run, connected and subscribed; None when it could not (the ``error`` said why)."""
    try:
        sink = MqttSink(spec, emit)
    except (ExtractLoadError, ValueError) as exc:
        emit("error", message=f"sink could not find the run's headers: {exc}")
        return None
    try:
        sink.start()
    except (OSError, TimeoutError, ConnectionError) as exc:
        emit("error", message=f"sink could not subscribe at {sink.connection.address}: {exc}")
        sink.session.stop()
        return None
    return sink


def _finish_run(sink: MqttSink, commands: Iterator[dict[str, Any]], report_path: Path, *, close: bool) -> None:
    """Serve the run's ``t0`` and ``drain``, write its report and say ``done``; ``close``: end the session first."""
    drain_result = serve_drain(t0_commands(commands, sink.recorder), sink.drain)  # {"cmd": "t0"}: by due slot
    if close:
        sink.stop()
        sink.close()
    else:
        offline = sink.session.offline_problem()
        if offline:
            sink.errors.append(f"the sink was {offline}")
    report = sink.report(drain_result)
    write_json_atomically(report_path, report)
    sink.emit("done", received=report["received"])


def serve(emit: EventWriter) -> int:
    """A standing sink: one run per ``{"cmd": "run", ...}`` until ``last``, ``quit`` or EOF (module docstring)."""
    stdin = commands()
    sink: MqttSink | None = None
    try:
        for command in stdin:
            if command.get("cmd") == "quit":
                break
            if command.get("cmd") != "run":
                continue
            spec = json.loads(Path(command["spec"]).read_text())
            if sink is None:
                sink = _started_sink(spec, emit)
                if sink is None:
                    return 1
            else:
                try:
                    sink.next_run(spec)
                except (ExtractLoadError, ValueError, OSError, TimeoutError, ConnectionError) as exc:
                    emit("error", message=f"sink could not start the run: {exc}")
                    return 1  # the parent starts a fresh sink; finally below closes this one's session
            emit("ready")
            last = bool(command.get("last"))
            _finish_run(sink, stdin, Path(command["report"]), close=last)
            if last:
                sink = None
                return 0
        return 0
    finally:
        if sink is not None:
            sink.stop()
            sink.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("spec", type=Path, nargs="?", help="one run of this spec (without it: --serve)")
    parser.add_argument("report", type=Path, nargs="?")
    parser.add_argument("--serve", action="store_true", help="serve each run the parent sends on stdin")
    args = parser.parse_args(argv)
    if not args.serve and (args.spec is None or args.report is None):
        parser.error("SPEC and REPORT are needed without --serve")
    die_with_parent()
    emit = scrubbing_event_writer(*secret_env_values(os.environ))
    if args.serve:
        return serve(emit)
    sink = _started_sink(json.loads(args.spec.read_text()), emit)
    if sink is None:
        return 1
    emit("ready")
    _finish_run(sink, commands(), args.report, close=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
