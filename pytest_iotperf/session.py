"""The stateful side of the plugin: the embedded broker, the runs, the summary.

``IotPerfSession`` is registered on the plugin manager once per pytest
process (each xdist worker has its own, with its own broker on its own free
port).  The terminal summary is built from the junit properties each perf
test reports, so it is complete under ``-n 2`` too: the controller sees the
workers' reports, not their session objects.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import tempfile
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from pytest_iotperf.abort import abort_rule_for
from pytest_iotperf.baseline import BaselineSettings, compare
from pytest_iotperf.bridge.eventhub_access import parse_target
from pytest_iotperf.config import (
    EVENTHUB_CONNECTION_STRING_ENV,
    INFLUX_TOKEN_ENV,
    SessionSettings,
    SloSettings,
    marker_slos,
)
from pytest_iotperf.embedded.broker import BrokerEndpoint, EmbeddedBroker
from pytest_iotperf.errors import ConfigError, IotPerfError
from pytest_iotperf.processes import Child
from pytest_iotperf.readback import EventHubAccess, start_embedded_eventhub
from pytest_iotperf.report.html import write_html
from pytest_iotperf.report.json_report import result_path, write_result
from pytest_iotperf.report.progress import ProgressReporter
from pytest_iotperf.report.terminal import SUMMARY_KEYS, summary_lines
from pytest_iotperf.result import RunResult
from pytest_iotperf.runner import PerfRun, RunFailed
from pytest_iotperf.slo import Slo, SloVerdict, evaluate_all, failure_message, merge_slos

logger = logging.getLogger("pytest_iotperf")

PROPERTY_PREFIX = "iotperf."
SLO_CASE_MARK = "iotperf_slo_case"  # keyword of the synthetic per-SLO reports


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
        self._rows: dict[str, dict[str, Any]] = defaultdict(dict)

    # -- broker -----------------------------------------------------------------

    def broker_for(self, broker_setting: str) -> BrokerEndpoint:
        """The endpoint a run publishes to; the embedded broker starts on first use."""
        if not broker_setting.startswith("embedded"):
            return BrokerEndpoint.external(broker_setting)
        prefer = broker_setting.partition(":")[2] or "auto"
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
            return self._broker.endpoint

    # -- Event Hubs ---------------------------------------------------------------

    def eventhub_for(self, hub_setting: str) -> EventHubAccess:
        """The hub an eventhub run reads from; the embedded endpoint starts on first use, in its own process."""
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

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.stop_broker()

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.stop_broker()  # also when the session was interrupted before sessionfinish

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if SLO_CASE_MARK in report.keywords:
            return
        if report.when == "teardown" and not hasattr(self.config, "workerinput"):
            # Emitted where the reports are collected: here, or on the xdist
            # controller for its workers' tests (a worker may only report the
            # test it is running).
            self._report_slo_cases(report)
        if report.when != "call":
            return
        for name, value in report.user_properties:
            if not name.startswith(PROPERTY_PREFIX):
                continue
            run, key = _split_property(name[len(PROPERTY_PREFIX) :])
            label = report.nodeid if not run else f"{report.nodeid} ({run})"
            row = self._rows[label]
            if key.startswith("slo["):
                met, total = row.get("slos_met", (0, 0))
                row["slos_met"] = (met + str(value).startswith("PASS"), total + 1)
            else:
                row[key] = value

    def _report_slo_cases(self, teardown: pytest.TestReport) -> None:
        """One junit testcase per SLO verdict, ``<test>::slo[<expression>]``, so CI UIs that show
        testcases but not properties (GitLab, Jenkins, Azure DevOps) show every verdict."""
        for name, value in teardown.user_properties:
            if not name.startswith(PROPERTY_PREFIX):
                continue
            run, key = _split_property(name[len(PROPERTY_PREFIX) :])
            if not key.startswith("slo["):
                continue
            nodeid = f"{teardown.nodeid}::{run + '.' if run else ''}{key}"
            verdict = str(value)
            passed = verdict.startswith("PASS")
            for when in ("setup", "call", "teardown"):
                outcome = "passed" if passed or when != "call" else "failed"
                report = pytest.TestReport(
                    nodeid=nodeid,
                    location=teardown.location,
                    keywords={SLO_CASE_MARK: 1},
                    outcome=outcome,  # type: ignore[arg-type]
                    longrepr=None if outcome == "passed" else f"{key[4:-1]}: {verdict}",
                    when=when,  # type: ignore[arg-type]
                    user_properties=[("iotperf.verdict", verdict)] if when == "call" else [],
                    duration=0.0,
                )
                self.config.hook.pytest_runtest_logreport(report=report)

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


class IotPerf:
    """The ``iot_perf`` fixture: ``result = iot_perf.run(devices=..., rate_per_device=..., duration=...)``."""

    def __init__(self, session: IotPerfSession, item: pytest.Item) -> None:
        self._session = session
        self._item = item
        self.results: list[RunResult] = []

    def run(self, **settings: Any) -> RunResult:
        """Run the fleet once and return what was measured.

        Keyword arguments (``devices``, ``rate_per_device``, ``duration``,
        ``ramp_up``, ``workers``, ``qos``, ``payload_bytes``, ``topic``,
        ``sink_topic``, ``drain``, ``broker``, ``username``, ``sink``) take
        precedence over the ini file; the command line and the environment
        override them.
        """
        config_error: str | None = None
        try:
            run_settings = self._session.settings.for_run(settings)
        except ConfigError as exc:
            config_error = str(exc)
        if config_error is not None:
            pytest.fail(config_error, pytrace=False)
        slos = self.slos()
        progress = self._session.progress_reporter()
        failure: str | None = None
        try:
            broker = self._session.broker_for(run_settings.broker)
            eventhub = (
                self._session.eventhub_for(run_settings.eventhub)
                if run_settings.sink == "eventhub"
                else None
            )
            planned = math.ceil(run_settings.devices * run_settings.rate * run_settings.duration_s)
            abort_rule = abort_rule_for(slos, planned) if self._session.abort_early else None
            result = PerfRun(
                run_settings, broker, progress=progress, eventhub=eventhub, abort_rule=abort_rule
            ).execute()
        except RunFailed as failed:
            # What was measured before the break still gets its verdicts, junit properties and JSON.
            failed.result.slos = [_verdict_dict(v) for v in evaluate_all(slos, failed.result)]
            self._record(failed.result)
            failure = f"perf run {failed.result.run_id} failed: {failed}"
        except IotPerfError as exc:
            failure = str(exc)
        finally:
            progress.close()
        if failure is not None:
            # Outside the except blocks: no "during handling of the above exception" noise.
            pytest.fail(failure, pytrace=False)
        if broker.kind != "external":
            result.warnings[:0] = self._session.broker_warnings
        verdicts = evaluate_all(slos, result)
        result.slos = [_verdict_dict(v) for v in verdicts]
        result.warnings.extend(_clock_warnings(slos, result))
        failures = []
        if any(not verdict.passed for verdict in verdicts):
            failures.append(failure_message(verdicts, result.sent))
        regressions = self._compare_with_baseline(result)
        if regressions:
            failures.append(regressions)
        self._record(result)
        self._save_baseline(result)
        if failures:
            pytest.fail(f"perf run {result.run_id}: " + "\n".join(failures), pytrace=False)
        return result

    def _export_to_influx(self, result: RunResult) -> None:
        """Optional InfluxDB export; a failure is a warning on the run, never a different test outcome."""
        settings = self._session.settings
        if settings.influx_url is None:
            return
        from pytest_iotperf.report.influx import InfluxTarget, export_run, per_minute_from_report

        target = InfluxTarget(
            url=settings.influx_url,
            org=settings.influx_org,
            bucket=settings.influx_bucket,
            token=os.environ.get(INFLUX_TOKEN_ENV, ""),
        )
        data = result.to_dict()
        report = export_run(target, data, test_id=self._item.nodeid, per_minute=per_minute_from_report(data))
        if report.error:
            result.warnings.append(f"InfluxDB export failed (the run's outcome stands): {report.error}")

    def _compare_with_baseline(self, result: RunResult) -> str | None:
        """Compare with the named baseline; the regressions past their margins as a message, or None."""
        baselines = self._session.baselines
        if baselines is None or baselines.compare_with is None:
            return None
        index = len(self.results) + 1
        saved = baselines.store.load(baselines.compare_with, self._item.nodeid, index)
        if saved is None:
            result.warnings.append(f"no baseline {baselines.compare_with!r} saved for this test: nothing compared")
            return None
        comparisons = compare(saved, result.to_dict(), baselines.margins)
        prefix = PROPERTY_PREFIX if index == 1 else f"{PROPERTY_PREFIX}run{index}."
        for comparison in comparisons:
            self._item.user_properties.append((f"{prefix}compare[{comparison.metric}]", comparison.describe()))
        regressed = [c for c in comparisons if c.regressed]
        if not regressed:
            return None
        lines = [f"{len(regressed)} metric(s) regressed against baseline {baselines.compare_with!r}:"]
        lines += [f"  {c.describe()}" for c in regressed]
        return "\n".join(lines)

    def _save_baseline(self, result: RunResult) -> None:
        baselines = self._session.baselines
        if baselines is None or baselines.save is None:
            return
        try:
            baselines.store.save(baselines.save, self._item.nodeid, len(self.results), result)
        except OSError as exc:
            result.errors.append(f"could not save baseline {baselines.save!r}: {exc.strerror or exc}")

    def slos(self) -> list[Slo]:
        """This test's SLOs: ini defaults, its perf markers (outermost first), then env and CLI overrides."""
        from_markers: list[Slo] = []
        for marker in reversed(list(self._item.iter_markers("perf"))):
            from_markers = merge_slos(from_markers, marker_slos(marker.kwargs.get("slo"), self._item.nodeid))
        return self._session.slos.for_test(tuple(from_markers))

    def _record(self, result: RunResult) -> None:
        self.results.append(result)
        index = len(self.results)
        prefix = PROPERTY_PREFIX if index == 1 else f"{PROPERTY_PREFIX}run{index}."
        self._export_to_influx(result)
        report_dir = self._session.settings.report_dir
        if report_dir is not None:
            path = result_path(Path(report_dir), self._item.nodeid, index)
            try:
                write_result(result, path)
                write_html(result.to_dict(), path.with_suffix(".html"), title=self._item.nodeid)
            except (OSError, ValueError) as exc:
                # Disk full, read-only, not a directory: the run's outcome stands; the summary says why.
                result.errors.append(
                    f"could not write the JSON result to {path}: {getattr(exc, 'strerror', None) or exc}"
                )
        figures = result.to_dict()
        for key in SUMMARY_KEYS:
            value = figures.get(key)
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            self._item.user_properties.append((prefix + key, value))
        for key in ("warnings", "errors"):
            if figures[key]:
                self._item.user_properties.append((prefix + key, "; ".join(figures[key])))
        for verdict in result.slos:
            outcome = "PASS" if verdict["passed"] else "FAIL"
            self._item.user_properties.append(
                (f"{prefix}slo[{verdict['slo']}]", f"{outcome} measured {verdict['measured_text']}")
            )


_RUN_PREFIX = re.compile(r"(run\d+)\.(.*)", re.DOTALL)


def _split_property(name: str) -> tuple[str, str]:
    """``run2.sent`` -> (``run2``, ``sent``); ``slo[loss < 0.1%]`` -> ("", ``slo[loss < 0.1%]``)."""
    match = _RUN_PREFIX.fullmatch(name)
    return (match.group(1), match.group(2)) if match else ("", name)


def _clock_warnings(slos: list[Slo], result: RunResult) -> list[str]:
    """A delay SLO whose threshold is within 10x of the clock error cannot be judged reliably."""
    error_ms = result.clock_uncertainty_ms + (0.0 if result.clock_corrected else result.clock_offset_ms)
    out = []
    for slo in slos:
        if slo.unit == "ms" and "delay" in slo.metric and error_ms > 0 and slo.threshold <= 10 * error_ms:
            out.append(
                f"SLO {slo.text}: the workers' clock error (up to {error_ms:.1f} ms) is comparable to its threshold"
            )
    return out


def _verdict_dict(verdict: SloVerdict) -> dict[str, Any]:
    measured = verdict.measured
    return {
        "slo": verdict.slo.text,
        "metric": verdict.slo.metric,
        "op": verdict.slo.op,
        "threshold": verdict.slo.threshold,
        "unit": verdict.slo.unit,
        "measured": measured if math.isfinite(measured) else None,
        "measured_text": verdict.measured_text,
        "passed": verdict.passed,
    }


def _log_line(text: str) -> None:
    logger.info(text.strip())
