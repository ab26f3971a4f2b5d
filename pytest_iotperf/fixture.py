"""The ``iot_perf`` fixture: runs through the pipeline, turns its verdicts into a test outcome and junit rows."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import pytest

from pytest_iotperf.capacity_result import CapacityResult, StepOutcome
from pytest_iotperf.capacity_run import (
    CPU_SATURATION_PERCENT,
    SEARCH_SOURCE,
    PipelineProbe,
    check_settings,
    conclude_capacity,
    make_plan,
    set_aside_by_search,
    step_settings,
)
from pytest_iotperf.capacity_search import search
from pytest_iotperf.capacity_stages import StagedEscalation, StopCheck, escalation_settings, run_watched
from pytest_iotperf.config import RunSettings, marker_slos
from pytest_iotperf.errors import ConfigError, IotPerfError
from pytest_iotperf.extract_hook import extract_refs
from pytest_iotperf.fleet.capacity import broker_shortfall
from pytest_iotperf.junit import capacity_properties, run_properties
from pytest_iotperf.pipeline import Outputs, PipelineRun, RunOutcome
from pytest_iotperf.report.progress import ProgressReporter
from pytest_iotperf.result import RunResult
from pytest_iotperf.session import IotPerfSession
from pytest_iotperf.slo import Slo, merge_slos

_logger = logging.getLogger("pytest_iotperf")


class IotPerf:
    """The ``iot_perf`` fixture: ``result = iot_perf.run(devices=..., rate_per_device=..., duration=...)``."""

    def __init__(self, session: IotPerfSession, item: pytest.Item) -> None:
        self._session = session
        self._item = item
        self.results: list[RunResult] = []
        self.outcomes: list[RunOutcome] = []
        self.capacities: list[CapacityResult] = []  # what each find_capacity() of the test found
        # Every run a find_capacity() of the test made (escalation runs in stages, bisection probes), in order.
        self.capacity_runs: list[RunResult] = []
        self._handles: list[RunHandle] = []

    def run(self, *, check: bool = True, **settings: Any) -> RunResult:
        """Run the fleet once and return what was measured, with every SLO's verdict in ``result.slos``.

        Keyword arguments are the settings that have a ``run()`` keyword
        (``devices``, ``rate_per_device``, ``duration``, ``broker``, ``qos``, ...,
        ``offline_queue``, ``outage_budget``: ``config.SETTINGS_BY_KWARG`` and the
        README's option tables list them all); they take precedence over the ini
        file, the command line and the environment override them.  An unknown
        keyword fails the test naming the known ones.

        ``check=True`` (the default) fails the test when an SLO is violated, a
        metric regressed against the compared baseline, or the run broke
        halfway.  ``check=False`` returns the result either way (a run that
        broke has ``result.complete == False`` and says why in
        ``result.errors``), so a test can decide for itself; the junit rows,
        reports and exports are written as with ``check=True``.  A run that
        measured nothing at all (bad settings, unreachable broker) fails the
        test in both cases.
        """
        return self.start(check=check, **settings).wait()

    def start(self, *, check: bool = True, **settings: Any) -> RunHandle:
        """Start the run in the background, so the test can act on the system while it runs::

            with iot_perf.start(devices=2000, rate_per_device=1.0, duration="90s") as run:
                run.wait_until("30s")            # steady-state time since T0
                my_cluster.restart("mqtt-broker")
                print(run.progress())            # live figures
            result = run.result                  # SLOs checked here, exactly as run() checks them

        Takes :meth:`run`'s arguments.  Leaving the block waits for the end of the run and then
        judges it like :meth:`run` (``check=False``: the test decides).  ``run.stop()`` ends the
        steady state early; the run still drains and accounts.  An exception inside the block stops
        the run, writes what was measured and is re-raised.
        """
        config_error: str | None = None
        try:
            run_settings = self._session.settings.for_run(settings)
            # The conftests' pytest_iotperf_extract implementations, loaded by file in each sink process.
            extract = extract_refs(self._item.ihook.pytest_iotperf_extract)
        except ConfigError as exc:
            config_error = str(exc)
        except ValueError as exc:
            config_error = f"pytest_iotperf_extract: {exc}"
        if config_error is not None:
            pytest.fail(config_error, pytrace=False)
        failure: str | None = None
        progress = self._session.progress_reporter()
        try:
            broker = self._session.broker_for(run_settings.broker, run_settings.transport)
            eventhub = (
                self._session.eventhub_for(run_settings.eventhub, broker) if run_settings.sink == "eventhub" else None
            )
            pipeline = self._session.pipeline(progress)
            started = pipeline.start(
                run_settings,
                broker,
                slos=self.slos(),
                name=self._item.nodeid,
                run_index=len(self.results) + len(self._handles) + 1,
                eventhub=eventhub,
                broker_warnings=self._session.broker_warnings,
                extract=extract,
            )
        except IotPerfError as exc:
            failure = str(exc)
            progress.close()
        if failure is not None:
            # Outside the except block: no "during handling of the above exception" noise.
            pytest.fail(failure, pytrace=False)
        handle = RunHandle(self, started, progress, check=check)
        self._handles.append(handle)
        return handle

    def find_capacity(
        self,
        *,
        slo: Sequence[str | Slo],
        start: int,
        limit: int,
        hold: float | str = "60s",
        factor: float = 2.0,
        resolution: float = 0.05,
        check: bool = True,
        **settings: Any,
    ) -> CapacityResult:
        """Find how many devices the system takes while it meets every SLO in ``slo``::

            capacity = iot_perf.find_capacity(slo=["p95_delay_ms < 500", "loss < 0.1%"],
                                              start=500, limit=20000, hold="60s", factor=2.0, resolution=0.05)
            assert capacity.bound == "system" and capacity.max_devices >= 6000

        Steps the fleet up from ``start`` by ``factor`` (capped at ``limit``) until a step breaks an
        SLO, then bisects between the last passing and first failing counts until they are within
        ``resolution`` (0.05: 5 %).  Each step holds its load for ``hold``.  The escalation is one run
        in stages (the devices already connected stay connected; the run is stopped once its live
        figures show a stage breaking, each stage judged on its own exact figures); each bisection
        step is a run of its own, as where it lies depends on the previous verdict
        (:mod:`pytest_iotperf.capacity_stages`).  ``settings`` are :meth:`run`'s keywords except
        ``devices`` and ``duration``, which the search sets (over the command line too).  Each step
        is judged by ``slo`` plus the default ``connect_failures`` / ``unsent`` checks; a step whose
        generator saturated stops the search with ``bound="generator"`` (see :mod:`pytest_iotperf.capacity_search`).

        Returns the :class:`~pytest_iotperf.capacity_result.CapacityResult`: the test asserts on it;
        a step breaking an SLO never fails the test.  Recorded as junit properties
        ``iotperf.capacity.*``, ``<report dir>/<test>.capacity.json`` and ``.html``, and the terminal
        summary; ``--iot-save-baseline`` / ``--iot-compare`` work on it, and with ``check=True`` (the
        default) a regression past ``--iot-compare-fail max_devices:10%`` fails the test.  Bad
        arguments fail the test before any step runs.
        """
        search_index = len(self.capacities) + 1
        failure: str | None = None
        try:
            check_settings(settings)
            base = self._session.settings.for_run(settings)
            plan, parsed = make_plan(
                slo, start=start, limit=limit, hold=hold, factor=factor, resolution=resolution,
                rate_per_device=base.rate,
            )  # fmt: skip
            extract = extract_refs(self._item.ihook.pytest_iotperf_extract)
        except ConfigError as exc:
            failure = f"find_capacity: {exc}" if not str(exc).startswith("find_capacity") else str(exc)
        except ValueError as exc:
            failure = f"pytest_iotperf_extract: {exc}"
        else:
            set_aside = set_aside_by_search(base)
            if set_aside:
                warnings.warn(
                    f"find_capacity sets the device count and duration itself (start={start}, limit={limit}, "
                    f"hold={hold!r}): {', '.join(set_aside)} does not apply to this search",
                    UserWarning,
                    stacklevel=2,
                )
        if failure is not None:
            pytest.fail(failure, pytrace=False)
        name = self._item.nodeid

        running = ["the search"]  # which run is going on, for a failure's message

        def run_search_run(run_settings: RunSettings, what: str, should_stop: StopCheck | None) -> RunOutcome:
            """One run of the search (a step of its own, or the escalation in stages): it writes nothing,
            the search writes its own result; ``should_stop``: watched, and stopped once it says so."""
            running[0] = what
            progress = self._session.progress_reporter()
            try:
                broker = self._session.broker_for(run_settings.broker, run_settings.transport)
                eventhub = (
                    self._session.eventhub_for(run_settings.eventhub, broker)
                    if run_settings.sink == "eventhub"
                    else None
                )
                pipeline = self._session.pipeline(progress)
                pipeline.outputs = Outputs()

                def start() -> PipelineRun:
                    return pipeline.start(
                        run_settings, broker, slos=parsed, name=name, eventhub=eventhub,
                        broker_warnings=self._session.broker_warnings, extract=extract,
                    )  # fmt: skip

                outcome = start().wait() if should_stop is None else run_watched(pipeline, should_stop, start)
                self.capacity_runs.append(outcome.result)
                return outcome
            finally:
                progress.close()

        def run_step(step: RunSettings) -> RunOutcome:
            return run_search_run(step, f"a step at {step.devices:,} devices", None)

        def run_staged(staged: RunSettings, should_stop: StopCheck) -> RunOutcome:
            counts = ", ".join(f"{stage.devices:,}" for stage in staged.stage_plan)
            return run_search_run(staged, f"the escalation run (stages of {counts} devices)", should_stop)

        def log_step(step: StepOutcome) -> None:
            _logger.info("capacity search %s: %s", name, step.describe())

        def settings_for(devices: int) -> RunSettings:
            return step_settings(self._session.settings, settings, devices, plan.hold_s)

        def staged_settings(counts: Sequence[int]) -> RunSettings:
            return escalation_settings(self._session.settings, settings, counts, plan.hold_s, SEARCH_SOURCE)

        probe = PipelineProbe(run_step, settings_for)
        def fits(devices: int) -> bool:
            """Whether the search's broker can hold ``devices`` (the escalation run stages only those)."""
            try:
                broker = self._session.broker_for(base.broker, base.transport)
            except IotPerfError:
                return True  # the run then says why it cannot reach it
            return broker_shortfall(devices, broker.open_files) is None

        escalate = StagedEscalation(
            run_staged, staged_settings, parsed, cpu_limit_percent=CPU_SATURATION_PERCENT, fits=fits
        )
        try:
            capacity = search(probe, plan, escalate=escalate, on_step=log_step)
        except IotPerfError as exc:
            failure = f"capacity search: {running[0]} measured nothing: {exc}"
        if failure is not None:
            pytest.fail(failure, pytrace=False)
        outcome = conclude_capacity(capacity, self._session.outputs(), name, search_index)
        self.capacities.append(capacity)
        self._item.user_properties.extend(capacity_properties(capacity, outcome.comparisons, search_index))
        if check and outcome.regressions is not None:
            pytest.fail(f"capacity search: {outcome.regressions}", pytrace=False)
        return capacity

    def slos(self) -> list[Slo]:
        """This test's SLOs: ini defaults, its perf markers (outermost first), then env and CLI overrides."""
        from_markers: list[Slo] = []
        for marker in reversed(list(self._item.iter_markers("perf"))):
            from_markers = merge_slos(from_markers, marker_slos(marker.kwargs.get("slo"), self._item.nodeid))
        return self._session.slos.for_test(tuple(from_markers))

    def close(self) -> None:
        """At the test's end: a run still going (started, never waited for) stops every child."""
        for handle in self._handles:
            handle.kill()
        self._handles.clear()

    def _record_gone(self, handle: RunHandle) -> None:
        if handle in self._handles:
            self._handles.remove(handle)

    def _record(self, handle: RunHandle, outcome: RunOutcome) -> None:
        self._record_gone(handle)
        self.outcomes.append(outcome)
        self.results.append(outcome.result)
        self._item.user_properties.extend(run_properties(outcome.result, outcome.comparisons, len(self.results)))


class RunHandle:
    """A run going on while the test acts (``iot_perf.start()``); a context manager.

    ``wait_until(t)``, ``progress()`` and ``stop()`` during the run; ``result``
    after it (the ``with`` block, or :meth:`wait`).
    """

    def __init__(self, owner: IotPerf, run: PipelineRun, progress: ProgressReporter, *, check: bool) -> None:
        self._owner = owner
        self._run = run
        self._progress = progress
        self._check = check
        self._outcome: RunOutcome | None = None
        self._closed = False

    @property
    def run_id(self) -> str:
        return self._run.run_id

    def wait_until(self, t: float | str) -> None:
        """Return once ``t`` (seconds, or a duration such as ``"30s"``) of steady state has passed since T0
        (``result.t0``, on the wall clock); raises when the run ended, failed or was stopped before then."""
        self._run.wait_until(t)

    def progress(self) -> dict[str, Any]:
        """Live figures: ``phase``, ``sent``, ``received``, ``connected``, ``p95_delay_ms``, ``elapsed_s``."""
        return self._run.progress()

    def stop(self) -> None:
        """End the steady state now; the run drains and accounts as a run of that length (not aborted)."""
        self._run.stop()

    @property
    def result(self) -> RunResult:
        """What was measured, with every verdict in ``result.slos``: after the ``with`` block."""
        if self._outcome is None:
            raise RuntimeError("the run is still going: read run.result after its with block (or run.wait())")
        return self._outcome.result

    @property
    def outcome(self) -> RunOutcome | None:
        return self._outcome

    def wait(self) -> RunResult:
        """Wait for the end of the run, then judge it as ``iot_perf.run()`` does (and fail the test if so)."""
        if self._outcome is None:
            failure: str | None = None
            try:
                self._outcome = self._run.wait()
            except IotPerfError as exc:
                failure = str(exc)
            except BaseException as exc:
                if not isinstance(exc, Exception):  # an interrupt: the pipeline wrote what was measured
                    self._record_measured()
                raise
            finally:
                self._close()
            if failure is not None:
                self._owner._record_gone(self)
                pytest.fail(failure, pytrace=False)
            assert self._outcome is not None
            self._owner._record(self, self._outcome)
            if self._check and not self._outcome.passed:
                pytest.fail(self._outcome.failure_message(), pytrace=False)
        return self._outcome.result

    def kill(self) -> None:
        """Stop every child now; nothing is judged or written."""
        if self._outcome is None and not self._closed:
            self._run.kill()
            self._close()

    def __enter__(self) -> RunHandle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.wait()
            return
        # The block failed, or an interrupt: the pipeline stops the run and writes what it measured.
        try:
            self._run.__exit__(exc_type, exc, tb)
        finally:
            self._close()
        if self._run.done:
            self._record_measured()

    def _record_measured(self) -> None:
        """The outcome the pipeline wrote for a run that ended early, on this test (junit rows)."""
        try:
            self._outcome = self._run.outcome
        except RuntimeError:  # nothing was measured
            self._owner._record_gone(self)
            return
        self._owner._record(self, self._outcome)

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self._progress.close()
