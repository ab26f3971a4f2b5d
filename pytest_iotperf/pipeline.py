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

Besides the SLOs it is given, every run is held to the load it was asked for
(:func:`load_slos`): every device connected, every scheduled message sent
(``dropped_offline`` aside), the generator kept its schedule.  A test accepts
less with an SLO on the same metric, or with ``allow_saturated``.

``Pipeline.start()`` runs in the background and returns a :class:`PipelineRun`,
so a script can act on the system during the run (restart a broker) and
still get the same outcome::

    with Pipeline().start(settings, broker.endpoint, slos=["loss == 0"]) as run:
        run.wait_until("30s")  # steady-state time since T0
        restart_the_broker()
    print(run.outcome.summary())
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from pytest_iotperf.abort import abort_rule_for
from pytest_iotperf.baseline import BaselineSettings, Comparison, compare
from pytest_iotperf.broker_endpoint import BrokerEndpoint
from pytest_iotperf.config import RunSettings
from pytest_iotperf.durations import format_duration, parse_duration
from pytest_iotperf.errors import ConfigError, IotPerfError
from pytest_iotperf.extract_hook import ExtractRef
from pytest_iotperf.live import Ended, LiveState
from pytest_iotperf.readback import EventHubAccess
from pytest_iotperf.report.html import write_html
from pytest_iotperf.report.json_report import result_path, write_result
from pytest_iotperf.result import SATURATION_LATENESS_MS, RunResult
from pytest_iotperf.runner import PerfRun, ProgressCallback, RunFailed
from pytest_iotperf.secrets import INFLUX_TOKEN_ENV
from pytest_iotperf.slo import Slo, SloVerdict, failure_message, parse_slo
from pytest_iotperf.standing import StandingProcesses

logger = logging.getLogger("pytest_iotperf")

_KILL_JOIN_S = 60.0  # after kill(): the run's thread unwinds once its children are gone
#: An interrupt stops the run and drains for at most this long before it kills what is left: CI runners
#: send SIGKILL a few seconds after SIGTERM, and whoever pressed Ctrl-C wants the prompt back.
INTERRUPT_WIND_DOWN_S = 5.0
#: What ``PipelineRun.progress()`` always holds.
PROGRESS_KEYS = ("phase", "sent", "received", "connected", "p95_delay_ms", "elapsed_s")

# Why a default verdict exists, and how a test accepts what it rejects (shown when it fails).
_LOAD_HINTS = {
    "connect_failures": "a device never connected; an SLO on connect_failures (e.g. 'connect_failures <= 1') "
    "accepts that",
    "unsent": "scheduled messages were never sent (not counting dropped_offline); an SLO on unsent accepts that",
    "lateness_p99_ms": "the load generator could not keep its schedule (add workers or lower the rate); "
    "--iot-allow-saturated or an SLO on lateness_p99_ms accepts that",
}


class RunEnded(IotPerfError):
    """``wait_until()`` asked for a moment the run did not reach: it ended, failed or was stopped before."""


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
    #: The metrics of the verdicts the pipeline added by default (:func:`load_slos`).
    load_checks: tuple[str, ...] = ()

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
        hints = [
            f"  ({verdict.slo.metric} is checked by default: {_LOAD_HINTS[verdict.slo.metric]})"
            for verdict in self.verdicts
            if not verdict.passed and verdict.slo.metric in self.load_checks
        ]
        reasons += ["\n".join(hints)] if hints else []
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
        processes: StandingProcesses | None = None,
    ) -> None:
        self.outputs = outputs or Outputs()
        self.abort_early = abort_early
        self.progress = progress
        # Master, workers and sink standing across runs (the session's); None: each run starts its own.
        self.processes = processes

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
        extract: Sequence[ExtractRef] = (),
    ) -> RunOutcome:
        """Run once, then verdicts, baseline comparison and outputs.

        ``name`` names the outputs (``<report_dir>/<name>.json``, the baseline
        entry, the InfluxDB ``test`` tag); ``run_index`` > 1 is a further run of
        the same name (``<name>.run2.json``).  Raises ``IotPerfError`` only when
        nothing was measured (broker unreachable, fleet never started).
        """
        started = self.start(
            settings,
            broker,
            slos=slos,
            name=name,
            run_index=run_index,
            eventhub=eventhub,
            broker_warnings=broker_warnings,
            extract=extract,
        )
        return started.wait()

    def start(
        self,
        settings: RunSettings,
        broker: BrokerEndpoint,
        *,
        slos: Sequence[Slo | str] = (),
        name: str = "run",
        run_index: int = 1,
        eventhub: EventHubAccess | None = None,
        broker_warnings: Sequence[str] = (),
        extract: Sequence[ExtractRef] = (),
    ) -> PipelineRun:
        """Start the run in the background and return its handle; :meth:`PipelineRun.wait` gives what
        :meth:`run` returns.  The arguments are :meth:`run`'s."""
        parsed = [parse_slo(slo) if isinstance(slo, str) else slo for slo in slos]
        planned = settings.planned_messages  # with stages: summed over them
        # A windowed SLO's budget is per window: the whole-run abort rule knows only whole-run ones.
        whole_run = [slo for slo in parsed if slo.window_s is None]
        abort_rule = abort_rule_for(whole_run, planned) if self.abort_early else None
        windows = [slo.window_s for slo in parsed if slo.window_s is not None]
        perf_run = PerfRun(
            settings,
            broker,
            eventhub=eventhub,
            abort_rule=abort_rule,
            extract=extract,
            window_lengths_s=windows,
            processes=self.processes,
        )
        check_windows(parsed, perf_run.fleet_spec.duration_s)
        conclusion = _Conclusion(
            self, parsed, load_slos(parsed, allow_saturated=settings.allow_saturated), name, run_index, broker.kind,
            tuple(broker_warnings),
        )  # fmt: skip
        handle = PipelineRun(perf_run, conclusion, self.progress)
        handle._start()
        return handle

    def conclude(
        self,
        ended: RunResult | RunFailed,
        slos: Sequence[Slo],
        *,
        name: str,
        run_index: int,
        broker_kind: str = "external",
        broker_warnings: Sequence[str] = (),
        load_checks: Sequence[Slo] = (),
    ) -> RunOutcome:
        """Verdicts, baseline comparison and outputs of a run that ended (``RunFailed``: it broke halfway)."""
        metrics = tuple(slo.metric for slo in load_checks)
        if isinstance(ended, RunFailed):
            # What was measured before the break still gets its verdicts and outputs.
            verdicts = judge(slos, ended.result, load_checks)
            outcome = RunOutcome(ended.result, verdicts=verdicts, broke=str(ended), load_checks=metrics)
            self._write(outcome, name, run_index)
            return outcome
        result = ended
        if broker_kind != "external":
            result.warnings[:0] = list(broker_warnings)
        outcome = RunOutcome(result, verdicts=judge(slos, result, load_checks), load_checks=metrics)
        result.warnings.extend(clock_warnings(slos, result))
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


def judge(slos: Sequence[Slo], result: RunResult, load_checks: Sequence[Slo] = ()) -> list[SloVerdict]:
    """Every SLO's verdict on ``result``, then the default load checks' (all recorded on ``result.slos``)."""
    verdicts = [slo.evaluate(result) for slo in slos]
    verdicts += [_load_verdict(slo, result) for slo in load_checks]
    result.slos = [verdict_dict(v) for v in verdicts]
    return verdicts


def check_windows(slos: Sequence[Slo], duration_s: float, where: str = "the run") -> None:
    """A windowed SLO whose window is longer than the run could not judge a single whole window.

    Raises:
        ConfigError: naming the SLO, its window and the duration (before anything starts).
    """
    for slo in slos:
        if slo.window_s is not None and slo.window_s > duration_s:
            raise ConfigError(
                f"SLO {slo.text!r}: its window ({format_duration(slo.window_s)}) is longer than {where} "
                f"({format_duration(duration_s)}); use a shorter window or a longer duration"
            )


def load_slos(slos: Sequence[Slo], *, allow_saturated: bool = False) -> list[Slo]:
    """The verdicts every run gets by default: the load it was asked for is the load that ran.

    Every device connected, every scheduled message was sent (``dropped_offline`` aside: the devices
    dropped those by design), and the generator kept its schedule (fleet lateness p99 within
    ``SATURATION_LATENESS_MS``).  A test that names one of these metrics in its own SLOs has said what it
    accepts, and ``allow_saturated`` accepts a saturated generator: those checks are left out.
    """
    named = {slo.metric for slo in slos}
    checks = [parse_slo("connect_failures == 0"), parse_slo("unsent == 0")]
    if not allow_saturated:
        checks.append(parse_slo(f"lateness_p99_ms <= {SATURATION_LATENESS_MS:g}"))
    return [check for check in checks if check.metric not in named]


def _load_verdict(slo: Slo, result: RunResult) -> SloVerdict:
    if slo.metric == "lateness_p99_ms" and result.lateness_histogram.count == 0:
        # Nothing was sent, so the generator was not late (unsent or connect_failures says what went wrong).
        return SloVerdict(slo=slo, measured=math.nan, passed=True)
    return slo.evaluate(result)


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
        **_window_fields(verdict),
    }


def _window_fields(verdict: SloVerdict) -> dict[str, Any]:
    """A windowed verdict's windows with their figures (``measured``: the worst window's); nothing otherwise."""
    if verdict.slo.window_s is None:
        return {}
    return {
        "window_s": verdict.slo.window_s,
        "verdict_text": verdict.result_text(),
        "windows": [
            {
                "start_s": window.start_s,
                "end_s": window.end_s,
                "measured": window.measured if math.isfinite(window.measured) else None,
                "passed": window.passed,
            }
            for window in verdict.windows
        ],
    }


@dataclass(frozen=True)
class _Conclusion:
    """How a started run is judged and written once it ended (``Pipeline.conclude``'s arguments)."""

    pipeline: Pipeline
    slos: list[Slo]
    load_checks: list[Slo]
    name: str
    run_index: int
    broker_kind: str
    broker_warnings: tuple[str, ...]

    def __call__(self, ended: RunResult | RunFailed) -> RunOutcome:
        return self.pipeline.conclude(
            ended,
            self.slos,
            name=self.name,
            run_index=self.run_index,
            broker_kind=self.broker_kind,
            broker_warnings=self.broker_warnings,
            load_checks=self.load_checks,
        )


class PipelineRun:
    """A run going on in the background (``Pipeline.start``): act on the system meanwhile, then :meth:`wait`.

    The run measures on its own thread; it only waits on child processes and
    pipes.  Every method is called from the thread that started it, which also
    gets the pipeline's progress callback, from inside :meth:`wait_until` and
    :meth:`wait` (never from the run's thread).

    As a context manager: leaving the block waits for the outcome; an
    exception inside it stops the run, writes what was measured and goes on
    (the block's exception is what the caller sees); an interrupt (Ctrl-C,
    SIGTERM, a timeout) does the same within ``INTERRUPT_WIND_DOWN_S`` (a
    second interrupt, or that bound passing, kills every child at once), marks
    the result incomplete and goes on.
    """

    def __init__(
        self, perf_run: PerfRun, conclude: _Conclusion, progress: ProgressCallback | None = None
    ) -> None:
        self._perf_run = perf_run
        self._conclude = conclude
        self._on_progress = progress
        self._live: LiveState[RunResult] = LiveState(perf_run.snapshot())
        perf_run.progress = self._live.publish  # called on the run's thread
        self._seen = 0
        self._outcome: RunOutcome | None = None
        self._started_at = time.monotonic()
        self._thread = threading.Thread(target=self._measure, name=f"iotperf-run-{perf_run.run_id}", daemon=True)

    @property
    def run_id(self) -> str:
        return self._perf_run.run_id

    def _start(self) -> None:
        self._started_at = time.monotonic()
        self._thread.start()

    def _measure(self) -> None:
        try:
            result = self._perf_run.execute()
        except BaseException as exc:  # handed to the waiting thread, which raises or judges it
            self._live.end(Ended(error=exc))
        else:
            self._live.end(Ended(value=result))

    # -- during the run -----------------------------------------------------------------

    def wait_until(self, t: float | str) -> None:
        """Return once ``t`` (seconds or a duration such as ``"30s"``) of steady state has passed since T0.

        T0 is the master's ``publishing`` time (``result.t0``); this returns on the wall clock at
        T0 + ``t``.  Raises :class:`RunEnded` when the run ended, failed or was stopped before then,
        and ``ValueError`` for a moment past the run's duration.
        """
        offset_s = float(t) if isinstance(t, (int, float)) else parse_duration(t)
        duration_s = self._perf_run.settings.duration_s
        if offset_s > duration_s:
            raise ValueError(f"wait_until({t!r}): the run's steady state lasts {duration_s:g}s")
        timeout_s: float | None = None
        with self._interruptible():
            while True:
                version, snapshot, ended = self._live.wait_newer(self._seen, timeout_s)
                self._report(version, snapshot)
                t0 = snapshot.get("t0")
                remaining_s = float(t0) + offset_s - time.time() if t0 is not None else None
                if remaining_s is not None and remaining_s <= 0:
                    return
                if ended is not None:
                    why = f": {ended.error}" if ended.error is not None else ""
                    raise RunEnded(f"wait_until({t!r}): the run ended before T0 + {offset_s:g}s{why}")
                timeout_s = remaining_s  # None: block until T0 is known

    def progress(self) -> dict[str, Any]:
        """The latest live figures: ``phase``, ``sent``, ``received``, ``connected``, ``p95_delay_ms``,
        ``elapsed_s`` (steady-state seconds since T0), and whatever else the run reported so far."""
        _, snapshot = self._live.latest()
        figures = {key: snapshot.get(key) for key in PROGRESS_KEYS} | snapshot
        t0 = snapshot.get("t0")
        if t0 is not None and snapshot.get("phase") == "publishing":
            figures["elapsed_s"] = min(max(0.0, time.time() - float(t0)), self._perf_run.settings.duration_s)
        return figures

    def stop(self) -> None:
        """End the steady state early: the run drains and accounts as a run of that length (not aborted)."""
        self._perf_run.request_stop()

    def kill(self) -> None:
        """Stop every child now (a run left behind); what was measured is not judged or written (see interrupt())."""
        self._perf_run.kill()
        self._thread.join(_KILL_JOIN_S)

    # -- the end ------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._live.ended is not None

    @property
    def outcome(self) -> RunOutcome:
        """What :meth:`wait` returned; only once it has."""
        if self._outcome is None:
            raise RuntimeError("the run has no outcome yet: wait() for it (or leave its with block)")
        return self._outcome

    def wait(self) -> RunOutcome:
        """Block until the run ended; then its verdicts and outputs, as ``Pipeline.run`` returns them.

        Raises ``IotPerfError`` when nothing was measured (broker unreachable, fleet never started).
        """
        if self._outcome is None:
            with self._interruptible():
                ended: Ended[RunResult] | None = None
                while ended is None:
                    version, snapshot, ended = self._live.wait_newer(self._seen, None)
                    self._report(version, snapshot)
                self._thread.join()
            if ended.error is not None and not isinstance(ended.error, RunFailed):
                raise ended.error
            finished = ended.error if ended.error is not None else ended.value
            assert finished is not None
            self._outcome = self._conclude(finished)
        return self._outcome

    def __enter__(self) -> PipelineRun:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.wait()
        elif isinstance(exc, Exception):
            # The block failed: end the run, keep and write what it measured; the block's exception goes on.
            self.stop()
            try:
                self.wait()
            except IotPerfError as measured_nothing:
                logger.warning("run %s ended with nothing measured: %s", self.run_id, measured_nothing)
        else:
            self.interrupt(exc)

    def interrupt(self, why: BaseException) -> RunOutcome | None:
        """An interrupt (``why``: Ctrl-C, SIGTERM, a timeout): stop, drain briefly, then judge and write.

        The run gets ``INTERRUPT_WIND_DOWN_S`` to end its schedules, hand over its reports and drain;
        a second interrupt meanwhile, or the bound passing, kills every child at once.  What was
        measured is judged and written like a run that broke (``result.complete`` false, the
        interrupt in ``result.errors``) and becomes :attr:`outcome`; None when nothing was measured.
        The caller re-raises the interrupt.
        """
        if self._outcome is not None:
            return self._outcome
        cause = _interrupt_cause(why)
        elapsed_s = time.monotonic() - self._started_at
        wound_down = self._wind_down(INTERRUPT_WIND_DOWN_S)
        ended = self._live.ended
        measured = ended.value if ended is not None else None
        if ended is not None and isinstance(ended.error, RunFailed):
            measured = ended.error.result
        if measured is None:
            return None  # nothing measured (interrupted before the fleet started): nothing to write
        message = f"interrupted by {cause} after {elapsed_s:.0f}s"
        if not wound_down:
            message += f" (not wound down within {INTERRUPT_WIND_DOWN_S:g}s: its children were killed)"
        measured.errors.insert(0, message)
        measured.complete = False
        try:
            self._outcome = self._conclude(RunFailed(message, measured))
        except Exception as exc:  # the interrupt goes on regardless: say why nothing was written
            logger.warning("run %s: could not write what the interrupted run measured: %s", self.run_id, exc)
            return None
        return self._outcome

    def _wind_down(self, bound_s: float) -> bool:
        """Stop the run and wait up to ``bound_s`` for it to end; else (or on an interrupt) kill it.

        True when it ended by itself in time.  The run's thread is done either way on return.
        """
        self.stop()
        deadline = time.monotonic() + bound_s
        seen = self._seen
        try:
            while self._live.ended is None and (remaining_s := deadline - time.monotonic()) > 0:
                seen, _, _ = self._live.wait_newer(seen, remaining_s)
        except BaseException:  # a second interrupt: no more waiting, kill below
            pass
        wound_down = self._live.ended is not None
        if not wound_down:
            self._perf_run.kill()
        self._thread.join(_KILL_JOIN_S)
        return wound_down

    # -- helpers ------------------------------------------------------------------------

    def _report(self, version: int, snapshot: dict[str, Any]) -> None:
        if version > self._seen:
            self._seen = version
            if self._on_progress is not None:
                self._on_progress(snapshot)

    @contextmanager
    def _interruptible(self) -> Iterator[None]:
        """An interrupt while waiting (Ctrl-C, SIGTERM, a test timeout) stops every child before it goes on."""
        try:
            yield
        except Exception:
            raise
        except BaseException as exc:
            self.interrupt(exc)
            raise


def _interrupt_cause(why: BaseException) -> str:
    """What interrupted the run, for its error: SIGTERM/SIGHUP (``process_guard``), Ctrl-C, or a timeout."""
    text = str(why).strip()
    if isinstance(why, KeyboardInterrupt):
        # process_guard raises "SIGTERM received"; Ctrl-C raises a bare KeyboardInterrupt.
        return text.split()[0] if text.startswith("SIG") else "Ctrl-C"
    return text.splitlines()[0] if text else type(why).__name__


__all__ = [
    "INTERRUPT_WIND_DOWN_S",
    "PROGRESS_KEYS",
    "InfluxOutput",
    "Outputs",
    "Pipeline",
    "PipelineRun",
    "RunEnded",
    "RunOutcome",
    "check_windows",
    "clock_warnings",
    "judge",
    "load_slos",
    "verdict_dict",
]
