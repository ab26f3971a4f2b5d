"""Everything from one run to its outputs, without pytest: run -> result -> verdicts -> outputs.

The pytest plugin is one caller (``iot_perf.run()`` turns a :class:`RunOutcome`
into a test outcome and junit rows); a script is another, and gets the same
verdicts, baseline comparison, JSON/HTML reports and InfluxDB export::

    from pathlib import Path
    from pytest_iotperf import Outputs, Pipeline
    from pytest_iotperf.config import resolve
    from pytest_iotperf.embedded.broker import EmbeddedBroker

    settings = resolve({}, {}, {}).for_run({"devices": 100, "duration": "30s"})
    with EmbeddedBroker() as broker:
        outcome = Pipeline(Outputs(report_dir=Path("out"))).run(
            settings, broker.endpoint, slos=["p95_delay_ms < 1000", "loss < 0.1%"], name="nightly"
        )
    print(outcome.summary())

A failed SLO is a verdict, never an exception, so a loop (a capacity search)
can go on past it.  Only a run that produced nothing at all (bad broker, no
fleet) raises :class:`~pytest_iotperf.errors.IotPerfError`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_iotperf.abort import abort_rule_for
from pytest_iotperf.baseline import BaselineSettings, Comparison, compare
from pytest_iotperf.broker_endpoint import BrokerEndpoint
from pytest_iotperf.config import RunSettings
from pytest_iotperf.readback import EventHubAccess
from pytest_iotperf.report.html import write_html
from pytest_iotperf.report.json_report import result_path, write_result
from pytest_iotperf.result import RunResult
from pytest_iotperf.runner import PerfRun, ProgressCallback, RunFailed
from pytest_iotperf.secrets import INFLUX_TOKEN_ENV
from pytest_iotperf.slo import Slo, SloVerdict, evaluate_all, failure_message, parse_slo

logger = logging.getLogger("pytest_iotperf")


@dataclass(frozen=True)
class InfluxOutput:
    """Where runs are exported in InfluxDB v2; the token is read from ``$IOTPERF_INFLUX_TOKEN`` at export time."""

    url: str
    org: str = "iotperf"
    bucket: str = "iotperf"


@dataclass(frozen=True)
class Outputs:
    """What is written after each run; every part is optional."""

    report_dir: Path | None = None  # <dir>/<name>.json and .html
    influx: InfluxOutput | None = None
    baselines: BaselineSettings | None = None  # save under a name and/or compare with one


@dataclass
class RunOutcome:
    """One run judged: what was measured, each SLO's verdict, the baseline comparison, and why it failed."""

    result: RunResult
    verdicts: list[SloVerdict] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    #: Why the run did not complete (what it measured until then is in ``result``), or None.
    broke: str | None = None
    #: Metrics that regressed past their margins against the baseline, as one message, or None.
    regressions: str | None = None

    @property
    def slos_met(self) -> bool:
        return all(verdict.passed for verdict in self.verdicts)

    @property
    def passed(self) -> bool:
        return self.broke is None and self.slos_met and self.regressions is None

    def failure_message(self) -> str:
        """Why the gate fails, every reason (empty when it passed)."""
        if self.broke is not None:
            return f"perf run {self.result.run_id} failed: {self.broke}"
        reasons = [] if self.slos_met else [failure_message(self.verdicts, self.result.sent)]
        reasons += [self.regressions] if self.regressions else []
        return f"perf run {self.result.run_id}: " + "\n".join(reasons) if reasons else ""

    def summary(self) -> str:
        """A few human lines: the run's verdict and every SLO's."""
        lines = [f"perf run {self.result.run_id}: {'passed' if self.passed else 'FAILED'}"]
        lines += [f"  {verdict.describe()}" for verdict in self.verdicts]
        if self.broke is not None:
            lines.append(f"  run broke: {self.broke}")
        if self.regressions:
            lines.append("  " + self.regressions.replace("\n", "\n  "))
        return "\n".join(lines)


class Pipeline:
    """Runs a fleet, judges the result and writes the outputs; usable without pytest."""

    def __init__(
        self,
        outputs: Outputs | None = None,
        *,
        abort_early: bool = True,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.outputs = outputs or Outputs()
        self.abort_early = abort_early
        self.progress = progress

    def run(
        self,
        settings: RunSettings,
        broker: BrokerEndpoint,
        *,
        slos: Sequence[Slo | str] = (),
        name: str = "run",
        run_index: int = 1,
        eventhub: EventHubAccess | None = None,
        broker_warnings: Sequence[str] = (),
    ) -> RunOutcome:
        """Run once, then verdicts, baseline comparison and outputs.

        ``name`` names the outputs (``<report_dir>/<name>.json``, the baseline
        entry, the InfluxDB ``test`` tag); ``run_index`` > 1 is a further run of
        the same name (``<name>.run2.json``).  Raises ``IotPerfError`` only when
        nothing was measured (broker unreachable, fleet never started).
        """
        parsed = [parse_slo(slo) if isinstance(slo, str) else slo for slo in slos]
        planned = math.ceil(settings.devices * settings.rate * settings.duration_s)
        abort_rule = abort_rule_for(parsed, planned) if self.abort_early else None
        perf_run = PerfRun(settings, broker, progress=self.progress, eventhub=eventhub, abort_rule=abort_rule)
        try:
            result = perf_run.execute()
        except RunFailed as failed:
            # What was measured before the break still gets its verdicts and outputs.
            outcome = RunOutcome(failed.result, verdicts=judge(parsed, failed.result), broke=str(failed))
            self._write(outcome, name, run_index)
            return outcome
        if broker.kind != "external":
            result.warnings[:0] = list(broker_warnings)
        outcome = RunOutcome(result, verdicts=judge(parsed, result))
        result.warnings.extend(clock_warnings(parsed, result))
        self._compare(outcome, name, run_index)
        self._write(outcome, name, run_index)
        self._save_baseline(outcome, name, run_index)
        return outcome

    # -- baselines ----------------------------------------------------------------------

    def _compare(self, outcome: RunOutcome, name: str, run_index: int) -> None:
        baselines = self.outputs.baselines
        if baselines is None or baselines.compare_with is None:
            return
        saved = baselines.store.load(baselines.compare_with, name, run_index)
        if saved is None:
            missing = f"no baseline {baselines.compare_with!r} saved for this test: nothing compared"
            outcome.result.warnings.append(missing)
            return
        outcome.comparisons = compare(saved, outcome.result.to_dict(), baselines.margins)
        regressed = [c for c in outcome.comparisons if c.regressed]
        if regressed:
            lines = [f"{len(regressed)} metric(s) regressed against baseline {baselines.compare_with!r}:"]
            lines += [f"  {c.describe()}" for c in regressed]
            outcome.regressions = "\n".join(lines)

    def _save_baseline(self, outcome: RunOutcome, name: str, run_index: int) -> None:
        baselines = self.outputs.baselines
        if baselines is None or baselines.save is None:
            return
        try:
            baselines.store.save(baselines.save, name, run_index, outcome.result)
        except OSError as exc:
            outcome.result.errors.append(f"could not save baseline {baselines.save!r}: {exc.strerror or exc}")

    # -- outputs ------------------------------------------------------------------------

    def _write(self, outcome: RunOutcome, name: str, run_index: int) -> None:
        """InfluxDB, then JSON and HTML; a failure is noted on the result, never a different outcome."""
        result = outcome.result
        self._export_to_influx(result, name)
        report_dir = self.outputs.report_dir
        if report_dir is None:
            return
        path = result_path(Path(report_dir), name, run_index)
        try:
            write_result(result, path)
            write_html(result.to_dict(), path.with_suffix(".html"), title=name)
        except (OSError, ValueError) as exc:
            # Disk full, read-only, not a directory: the run's outcome stands; the summary says why.
            result.errors.append(f"could not write the JSON result to {path}: {getattr(exc, 'strerror', None) or exc}")

    def _export_to_influx(self, result: RunResult, name: str) -> None:
        influx = self.outputs.influx
        if influx is None:
            return
        # Imported here: influxdb-client is heavy and most runs export nothing.
        from pytest_iotperf.report.influx import InfluxTarget, export_run, per_minute_from_report

        target = InfluxTarget(
            url=influx.url, org=influx.org, bucket=influx.bucket, token=os.environ.get(INFLUX_TOKEN_ENV, "")
        )
        data = result.to_dict()
        report = export_run(target, data, test_id=name, per_minute=per_minute_from_report(data))
        if report.error:
            result.warnings.append(f"InfluxDB export failed (the run's outcome stands): {report.error}")


def judge(slos: Sequence[Slo], result: RunResult) -> list[SloVerdict]:
    """Every SLO's verdict on ``result`` (also recorded on ``result.slos``)."""
    verdicts = evaluate_all(slos, result)
    result.slos = [verdict_dict(v) for v in verdicts]
    return verdicts


def clock_warnings(slos: Sequence[Slo], result: RunResult) -> list[str]:
    """A delay SLO whose threshold is within 10x of the clock error cannot be judged reliably."""
    error_ms = result.clock_uncertainty_ms + (0.0 if result.clock_corrected else result.clock_offset_ms)
    out = []
    for slo in slos:
        if slo.unit == "ms" and "delay" in slo.metric and error_ms > 0 and slo.threshold <= 10 * error_ms:
            out.append(
                f"SLO {slo.text}: the workers' clock error (up to {error_ms:.1f} ms) is comparable to its threshold"
            )
    return out


def verdict_dict(verdict: SloVerdict) -> dict[str, Any]:
    """A verdict as it appears in ``RunResult.slos`` and the JSON result."""
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


__all__ = ["InfluxOutput", "Outputs", "Pipeline", "RunOutcome", "clock_warnings", "judge", "verdict_dict"]
