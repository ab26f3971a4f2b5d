"""Session lifetime: the embedded servers, the pipeline's settings, the summary and the junit SLO cases.

``IotPerfSession`` is registered on the plugin manager once per pytest
process (each xdist worker has its own, with its own broker on its own free
port).  The terminal summary and the junit SLO testcases are built from the
properties each perf test reports, so they are complete under ``-n 2`` too:
the controller sees the workers' reports, not their session objects.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from pytest_iotperf.baseline import BaselineSettings
from pytest_iotperf.bridge.eventhub_access import parse_target
from pytest_iotperf.broker_endpoint import BrokerEndpoint
from pytest_iotperf.config import SessionSettings, SloSettings
from pytest_iotperf.embedded.broker import EmbeddedBroker
from pytest_iotperf.embedded.iothub_child import EmbeddedIotHubAccess, start_embedded_iothub
from pytest_iotperf.errors import ConfigError
from pytest_iotperf.junit import PROPERTY_PREFIX, SloCase, add_slo_testcases, junit_path, slo_cases, split_property
from pytest_iotperf.pipeline import InfluxOutput, Outputs, Pipeline
from pytest_iotperf.processes import Child
from pytest_iotperf.readback import EventHubAccess, start_embedded_eventhub
from pytest_iotperf.report.progress import ProgressReporter
from pytest_iotperf.report.terminal import summary_lines
from pytest_iotperf.secrets import EVENTHUB_CONNECTION_STRING_ENV
from pytest_iotperf.standing import StandingProcesses

logger = logging.getLogger("pytest_iotperf")


class IotPerfSession:
    """Session-wide state: settings, the lazily started embedded broker, summary rows."""

    def __init__(self, config: pytest.Config, settings: SessionSettings, slos: SloSettings | None = None) -> None:
        self.config = config
        self.settings = settings
        self.slos = slos or SloSettings()
        self.abort_early = True
        self.baselines: BaselineSettings | None = None
        self._broker: EmbeddedBroker | None = None
        self._broker_lock = threading.Lock()
        self._eventhub: tuple[Child, EventHubAccess] | None = None
        self._eventhub_dir: Path | None = None
        self._iothub: tuple[Child, EmbeddedIotHubAccess] | None = None
        self._iothub_dir: Path | None = None
        self._rows: dict[str, dict[str, Any]] = defaultdict(dict)
        # The Locust master, workers and MQTT sink stay up across this session's runs (standing.py); None:
        # every run starts and stops its own (--iot-fresh-processes).
        self.standing: StandingProcesses | None = StandingProcesses()
        self._slo_cases: dict[str, list[SloCase]] = {}
        # Resolved now, as pytest's junitxml resolves it: the working directory may change later.
        self._junit_path = junit_path(getattr(config.option, "xmlpath", None))

    # -- broker -----------------------------------------------------------------

    def broker_for(self, broker_setting: str, transport: str = "tcp") -> BrokerEndpoint:
        """The endpoint a run publishes to; the embedded broker starts on first use.

        ``transport`` ``websockets``: the embedded broker also serves MQTT over WebSockets (its
        gateway starts on first use and stays for the session).
        """
        if not broker_setting.startswith("embedded"):
            return BrokerEndpoint.external(broker_setting)
        prefer = broker_setting.partition(":")[2] or "auto"
        if prefer == "iothub":
            return self.embedded_iothub().endpoint
        with self._broker_lock:
            if self._broker is not None and (self._broker.prefer != prefer or not self._broker.running):
                self._broker.stop()
                self._broker = None
            if self._broker is None:
                broker = EmbeddedBroker(prefer=prefer)
                broker.start()
                self._broker = broker
                for warning in broker.warnings:
                    logger.warning(warning)
            if transport == "websockets":
                return self._broker.start_websockets()
            return self._broker.endpoint

    def embedded_iothub(self) -> EmbeddedIotHubAccess:
        """The session's embedded IoT Hub (its own process), started on first use and again if it died."""
        with self._broker_lock:
            if self._iothub is None or not self._iothub[0].alive():
                self._stop_iothub()
                self._iothub_dir = Path(tempfile.mkdtemp(prefix="iotperf-iothub-"))
                self._iothub = start_embedded_iothub(self._iothub_dir)
            return self._iothub[1]

    def _stop_iothub(self) -> None:
        if self._iothub is not None:
            self._iothub[0].stop()
            self._iothub = None
        if self._iothub_dir is not None:
            shutil.rmtree(self._iothub_dir, ignore_errors=True)
            self._iothub_dir = None

    # -- Event Hubs ---------------------------------------------------------------

    def eventhub_for(self, hub_setting: str, broker: BrokerEndpoint | None = None) -> EventHubAccess:
        """The hub an eventhub run reads from; the embedded endpoint starts on first use, in its own process.

        With the embedded IoT Hub as the broker, ``embedded`` is its built-in endpoint (the hub writes
        there itself: no bridge).
        """
        if hub_setting == "embedded" and broker is not None and broker.kind == "iothub-embedded":
            return self.embedded_iothub().eventhub
        if hub_setting != "embedded":
            connection_string = os.environ.get(EVENTHUB_CONNECTION_STRING_ENV, "").strip()
            if not connection_string:
                raise ConfigError(
                    f"--iot-eventhub {hub_setting}: set ${EVENTHUB_CONNECTION_STRING_ENV} to the namespace's "
                    "connection string (it is read from the environment only, never printed)"
                )
            target = parse_target(connection_string)
            return EventHubAccess(
                connection_string, f"{target.host}/{hub_setting} (external)", eventhub_name=hub_setting
            )
        with self._broker_lock:
            if self._eventhub is None or not self._eventhub[0].alive():
                self._stop_eventhub()
                self._eventhub = self._start_embedded_eventhub()
            return self._eventhub[1]

    def _start_embedded_eventhub(self) -> tuple[Child, EventHubAccess]:
        self._eventhub_dir = Path(tempfile.mkdtemp(prefix="iotperf-eventhub-"))
        return start_embedded_eventhub(self._eventhub_dir)

    def _stop_eventhub(self) -> None:
        if self._eventhub is not None:
            self._eventhub[0].stop()
            self._eventhub = None
        if self._eventhub_dir is not None:
            shutil.rmtree(self._eventhub_dir, ignore_errors=True)
            self._eventhub_dir = None

    @property
    def broker_warnings(self) -> list[str]:
        return list(self._broker.warnings) if self._broker is not None else []

    def stop_broker(self) -> None:
        """Stop every embedded server this session started."""
        with self._broker_lock:
            if self._broker is not None:
                self._broker.stop()
                self._broker = None
            self._stop_eventhub()
            self._stop_iothub()

    # -- progress ---------------------------------------------------------------

    def progress_reporter(self) -> ProgressReporter:
        """Live progress on the terminal, around pytest's output capture; logging where there is none."""
        terminal = self.config.pluginmanager.get_plugin("terminalreporter")
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        quiet = self.config.get_verbosity() < 0
        if terminal is None or quiet:
            return ProgressReporter(_log_line, tty=False)

        def write(text: str) -> None:
            if capture is not None:
                with capture.global_and_fixture_disabled():
                    terminal.write(text)
                    terminal.flush()
            else:
                terminal.write(text)

        if not terminal.isatty:
            write("\n")  # start below pytest's "path::test " prefix
        return ProgressReporter(write, tty=terminal.isatty)

    # -- hooks ------------------------------------------------------------------

    # -- the pipeline -------------------------------------------------------------------

    def outputs(self) -> Outputs:
        """What every run of this session writes: reports, InfluxDB export, baselines."""
        settings = self.settings
        influx = (
            InfluxOutput(settings.influx_url, settings.influx_org, settings.influx_bucket)
            if settings.influx_url is not None
            else None
        )
        return Outputs(report_dir=settings.report_dir, influx=influx, baselines=self.baselines)

    def pipeline(self, progress: ProgressReporter) -> Pipeline:
        return Pipeline(self.outputs(), abort_early=self.abort_early, progress=progress, processes=self.standing)

    def stop_standing(self) -> None:
        """Stop the master, workers and sink standing between runs (before the broker they are connected to)."""
        if self.standing is not None:
            self.standing.stop()

    # -- hooks ------------------------------------------------------------------

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.stop_standing()
        self.stop_broker()
        # trylast: after pytest's junitxml wrote the file the SLO testcases go into.
        if self._junit_path is not None and not hasattr(self.config, "workerinput"):
            add_slo_testcases(self._junit_path, self._slo_cases, getattr(self.config.option, "junitprefix", None))

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.stop_standing()  # also when the session was interrupted before sessionfinish
        self.stop_broker()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # Here, or on the xdist controller for its workers' tests: the reports carry the properties.
        if report.when == "teardown":
            cases = slo_cases(report.nodeid, report.user_properties)
            if cases:
                self._slo_cases[report.nodeid] = cases
        if report.when != "call":
            return
        for name, value in report.user_properties:
            if not name.startswith(PROPERTY_PREFIX):
                continue
            run, key = split_property(name)
            label = report.nodeid if not run else f"{report.nodeid} ({run})"
            row = self._rows[label]
            if key.startswith("slo["):
                met, total = row.get("slos_met", (0, 0))
                row["slos_met"] = (met + str(value).startswith("PASS"), total + 1)
            else:
                row[key] = value

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self._rows:
            return
        rows = []
        for test, figures in self._rows.items():
            row: dict[str, Any] = {"test": test, **figures}
            for key in ("warnings", "errors"):
                text = figures.get(key)
                row[key] = [text] if text else []
            rows.append(row)
        terminalreporter.write_sep("=", "iotperf summary")
        for line in summary_lines(rows):
            terminalreporter.write_line(line)
        for nodeid, cases in self._slo_cases.items():
            for case in cases:
                verdict = "PASS" if case.passed else "FAIL"
                run = case.name.partition("slo[")[0].rstrip(".")
                test = f"{nodeid} ({run})" if run else nodeid
                terminalreporter.write_line(f"SLO {verdict} {test}: {case.expression}: {case.verdict[5:]}")


def _log_line(text: str) -> None:
    logger.info(text.strip())
