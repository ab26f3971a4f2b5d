"""The capacity search's escalation as one run in stages: the fleet stays connected while each stage adds devices.

:class:`StagedEscalation` is the search's ``escalate`` seam
(:mod:`pytest_iotperf.capacity_search`): ``escalate([500, 1000, 2000, ...])``
runs one run with a hold stage per count, each ``hold`` long at the caller's
rate and settings, the devices already connected staying connected.  A
stage's added devices connect during its ramp (the ``stage_plan`` defaults:
the run's ramp for the first, the added devices' share for later ones), and
that ramp is a stage of its own between two holds, at the earlier count's load
and never judged: connecting the next count's devices takes the generator's
CPU, and a hold that carried it would measure the generator (seen: one worker
at 800 devices x 10/s went from lateness p99 5 ms to 840 ms while 800 more
connected).  The holds are the run's stages 0, 2, 4, ... (``StepOutcome.stage``).
While it runs, :class:`~pytest_iotperf.capacity_watch.EscalationWatch` reads
the live progress and stops the run once the current stage is clearly broken
(it then drains and is accounted up to the stop), so the system is not loaded
up to ``limit`` past its knee.

Each stage that ran becomes one :class:`StepOutcome` judged on its own exact
figures (``result.stages[i]``, by due time):

- SLOs on a figure a stage has (delay percentiles, loss, lost, sent, received,
  throughput, scheduled, lateness p50/p99; a windowed SLO over the stage's
  windows, counted from its start) are evaluated on the stage;
- SLOs on a whole-run figure only (``connect_failures``, ``unsent``,
  ``duplicates``, ... and the default load checks) are judged on the whole
  escalation run and their verdict is given to the last stage that ran, the
  heaviest: the load only grows, so that is where a whole-run failure is laid
  (the bisection's own runs then judge each count on its own);
- the generator saturated in a stage whose fleet lateness p99 is over
  ``SATURATION_LATENESS_MS``, or (a whole-run figure too: the last stage) when
  a worker's CPU over the run reached ``CPU_SATURATION_PERCENT``;
- the stage in which the run was stopped is ``cut_short`` (with the watch's
  reason) and judged on what ran; a stage that never started, or was cut
  before it had a message, is left out (the search asks for it again).

A run that broke gives its reason to the last stage that ran.
"""

from __future__ import annotations

import itertools
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pytest_iotperf.capacity_result import StepOutcome, StepVerdict
from pytest_iotperf.capacity_watch import EscalationWatch
from pytest_iotperf.config import Resolved, RunSettings, SessionSettings
from pytest_iotperf.due_figures import StageFigures, WindowFigures
from pytest_iotperf.pipeline import Pipeline, PipelineRun, RunOutcome
from pytest_iotperf.result import SATURATION_LATENESS_MS, RunResult
from pytest_iotperf.slo import METRICS, WINDOW_METRICS, Slo
from pytest_iotperf.stage_plan import Stage

__all__ = [
    "STAGE_METRICS",
    "RunStaged",
    "StagedEscalation",
    "busiest_worker_cpu",
    "delivered_between",
    "escalation_settings",
    "hold_indices",
    "judged_on_stage",
    "run_watched",
    "stage_outcomes",
]

#: Whole-run SLO metrics a stage's own figures also answer (besides WINDOW_METRICS and pNN_delay_ms).
STAGE_METRICS = WINDOW_METRICS | {"lateness_p50_ms", "lateness_p99_ms"}
_PERCENTILE = re.compile(r"p[0-9]+(?:\.[0-9]+)?_delay_ms")
_WHOLE_RUN = " (whole escalation run)"

#: Is the run to be stopped now, given its latest progress snapshot?
StopCheck = Callable[[dict[str, Any]], bool]
#: Runs the escalation run with ``settings`` to its outcome, stopping it once the check says so (:func:`run_watched`).
RunStaged = Callable[[RunSettings, StopCheck], RunOutcome]


def run_watched(pipeline: Pipeline, should_stop: StopCheck, start: Callable[[], PipelineRun]) -> RunOutcome:
    """``start()`` a run on ``pipeline`` and wait for it, stopping it once ``should_stop(snapshot)``.

    The pipeline's own progress callback goes on seeing every snapshot.  Its abort rule is off: the
    whole-run loss budget would end an escalation as a broken run; the watch stops it instead.
    """
    shown = pipeline.progress
    handle: list[PipelineRun] = []

    def progress(snapshot: dict[str, Any]) -> None:
        if shown is not None:
            shown(snapshot)
        # Called on this thread from inside wait(), so after start() returned the handle.
        if handle and should_stop(snapshot):
            handle[0].stop()

    pipeline.progress = progress
    pipeline.abort_early = False
    handle.append(start())
    return handle[0].wait()


def escalation_settings(
    base: SessionSettings, code: Mapping[str, Any], counts: Sequence[int], hold_s: float, source: str
) -> RunSettings:
    """The escalation run's settings: the caller's, in stages of ``counts`` devices ``hold_s`` each.

    Between two holds a connect stage (at the earlier count's load, never judged) lasts the next
    count's ramp (the ``stage_plan`` default for the devices it adds, rounded up to the 100 ms grid):
    the added devices connect during it, so no judged hold carries the next stage's connecting.
    The holds are the run's stages ``0, 2, 4, ...`` (:func:`hold_indices`).

    Raises:
        ConfigError: the stages cannot run (e.g. a hold off the 100 ms due-time grid).
    """
    values = dict(base.for_run(code).values)
    values["allow_saturated"] = Resolved(True, source)  # the search judges the generator itself

    def settings_of(stages: Sequence[Stage]) -> RunSettings:
        values["stages"] = Resolved(tuple(stages), source)
        values["devices"] = Resolved(max(stage.devices for stage in stages), source)
        values["duration"] = Resolved(sum(float(stage.duration) for stage in stages), source)
        settings = RunSettings(dict(values))
        settings.check_stages()
        return settings

    plain = settings_of([Stage(hold_s, devices=count) for count in counts])  # its ramps are the defaults
    stages = [Stage(hold_s, devices=counts[0])]
    for index in range(1, len(counts)):
        ramp_s = math.ceil(plain.stage_plan[index].ramp_up_s * 10 - 1e-9) / 10
        stages.append(Stage(ramp_s, devices=counts[index - 1]))  # the next count's devices connect
        stages.append(Stage(hold_s, devices=counts[index], ramp_up=ramp_s))
    return settings_of(stages)


def hold_indices(stage_count: int) -> list[int]:
    """The run's stages that are holds (judged), of an escalation run of ``stage_count`` stages."""
    return list(range(0, stage_count, 2))


def judged_on_stage(slo: Slo) -> bool:
    """Whether a stage's own figures answer ``slo`` (otherwise it judges the whole escalation run)."""
    if slo.window_s is not None:
        return True  # windowed SLOs only name figures every window has
    return slo.metric in STAGE_METRICS or (slo.metric not in METRICS and bool(_PERCENTILE.fullmatch(slo.metric)))


class _StageView:
    """A stage's figures as a run for ``Slo.evaluate``: ``duration_s`` what ran, windows from the stage's start."""

    def __init__(self, figures: StageFigures, result: RunResult, ran_s: float) -> None:
        self._figures = figures
        self._result = result
        self.duration_s = ran_s

    def window(self, start_s: float, end_s: float) -> WindowFigures:
        return self._result.window(self._figures.start_s + start_s, self._figures.start_s + end_s)

    def percentile(self, q: float) -> float:
        return self._figures.percentile(q)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._figures, name)


def delivered_between(result: RunResult, start_s: float, end_s: float) -> float:
    """Messages received per second (by arrival) over the timeline's whole slots in ``[start_s, end_s)``; NaN: none."""
    points = sorted(result.timeline, key=lambda point: point.t_s)
    gaps = [b.t_s - a.t_s for a, b in itertools.pairwise(points) if b.t_s > a.t_s]
    slot_s = min(gaps, default=1.0)
    inside = [p.received for p in points if p.t_s >= start_s - 1e-6 and p.t_s + slot_s <= end_s + 1e-6]
    return sum(inside) / (len(inside) * slot_s) if inside else math.nan


def busiest_worker_cpu(result: RunResult) -> tuple[float, object] | None:
    """The highest worker CPU of the run (per cent of one core) and that worker's index; None: no figure."""
    busiest: tuple[float, object] | None = None
    for worker in result.worker_stats:
        cpu = worker.get("cpu_percent")
        if isinstance(cpu, (int, float)) and (busiest is None or cpu > busiest[0]):
            busiest = (float(cpu), worker.get("worker_index", "?"))
    return busiest


def stage_outcomes(
    outcome: RunOutcome,
    *,
    cpu_limit_percent: float,
    cut_short: str | None = None,
    elapsed_s: float = 0.0,
) -> list[StepOutcome]:
    """The escalation run's stages that ran, each judged on its own figures (see the module's docstring).

    ``outcome.verdicts`` are the whole run's (the search's SLOs and the default load checks);
    ``cut_short`` why the run was stopped early (None: not stopped); ``elapsed_s`` the run's wall
    time (each stage's ``elapsed_s`` is its share: what it ran, the first also the start-up and drain).
    """
    result = outcome.result
    ran_s = result.duration_s  # what ran: a run stopped early is accounted up to the stop
    stopped = ran_s < sum(stage.duration_s for stage in result.stages) - 1e-6
    # The holds; of those, a stage the stop came before, or cut before it had a message, did not run.
    holds = [(i, result.stages[i]) for i in hold_indices(len(result.stages))]
    ran = [(i, s) for i, s in holds if s.start_s < ran_s - 1e-6 and (s.sent > 0 or s.end_s <= ran_s + 1e-6)]
    if outcome.broke is not None:
        while len(ran) > 1 and ran[-1][1].sent == 0:
            ran.pop()  # a run that broke: the stages it never reached
    steps: list[StepOutcome] = []
    for position, (index, stage) in enumerate(ran):
        last = position == len(ran) - 1
        was_cut = stage.end_s > ran_s + 1e-6
        verdicts = []
        for verdict in outcome.verdicts:
            if judged_on_stage(verdict.slo):
                view = _StageView(stage, result, min(stage.end_s, ran_s) - stage.start_s)
                verdicts.append(StepVerdict.of(verdict.slo.evaluate(view)))
            elif last:
                verdicts.append(StepVerdict.of(verdict, _WHOLE_RUN))
        saturation = None
        if math.isfinite(stage.lateness_p99_ms) and stage.lateness_p99_ms > SATURATION_LATENESS_MS:
            saturation = f"stage lateness p99 {stage.lateness_p99_ms:.1f} ms > {SATURATION_LATENESS_MS:g} ms"
        busiest = busiest_worker_cpu(result)
        if saturation is None and last and busiest is not None and busiest[0] >= cpu_limit_percent:
            saturation = f"worker {busiest[1]} CPU {busiest[0]:.0f}% >= {cpu_limit_percent:g}% over the run"
        ran_for = min(stage.end_s, ran_s) - stage.start_s
        # The first hold's step carries the run's start-up, connect stages and drain: the steps sum to its wall time.
        overhead = max(0.0, elapsed_s - sum(min(s.end_s, ran_s) - s.start_s for _, s in ran)) if position == 0 else 0.0
        steps.append(
            StepOutcome(
                devices=stage.devices,
                offered_per_s=stage.devices * stage.rate,
                throughput_per_s=stage.throughput_per_s,
                delivered_per_s=delivered_between(result, stage.start_s, min(stage.end_s, ran_s)),
                p50_delay_ms=stage.p50_delay_ms,
                p95_delay_ms=stage.p95_delay_ms,
                p99_delay_ms=stage.p99_delay_ms,
                loss=stage.loss,
                lateness_p99_ms=stage.lateness_p99_ms,
                verdicts=tuple(verdicts),
                saturation=saturation,
                broke=outcome.broke if last else None,
                sent=stage.sent,
                received=stage.received,
                run_id=result.run_id,
                elapsed_s=ran_for + overhead,
                stage=index,
                cut_short=(cut_short or "stopped early") if was_cut and stopped else None,
            )
        )
    return steps


class StagedEscalation:
    """The search's ``escalate``: the counts as the stages of one run, stopped early by the live watch.

    ``run_staged(settings, should_stop)`` runs it (the caller's pipeline, writing nothing:
    :func:`run_watched`); ``settings_for(counts)`` gives the run's settings
    (:func:`escalation_settings`); ``fits(devices)`` whether the broker can hold that many (the
    run's stages stop before the first count that does not).  ``runs`` keeps every escalation
    run's outcome.  The run's fleet holds the largest stage's devices from its start (those of
    later stages dormant until their ramps).
    """

    def __init__(
        self,
        run_staged: RunStaged,
        settings_for: Callable[[Sequence[int]], RunSettings],
        slos: Sequence[Slo],
        *,
        cpu_limit_percent: float,
        fits: Callable[[int], bool] = lambda devices: True,
    ) -> None:
        self._run_staged = run_staged
        self._fits = fits
        self._settings_for = settings_for
        self._slos = list(slos)
        self._cpu_limit_percent = cpu_limit_percent
        self.runs: list[RunOutcome] = []
        self.asked: list[list[int]] = []

    def __call__(self, counts: Sequence[int]) -> list[StepOutcome]:
        self.asked.append(list(counts))
        # Only the counts the broker can hold (a run plans its largest stage's devices up front): the next
        # count, run on its own, then says why it cannot, as a step of the search always did.
        counts = list(itertools.takewhile(self._fits, counts))
        if not counts:
            return []
        settings = self._settings_for(counts)
        watch = EscalationWatch(settings.stage_plan, self._slos, drain_s=settings.drain_s)
        started = time.monotonic()
        outcome = self._run_staged(settings, lambda snapshot: watch.observe(snapshot) is not None)
        self.runs.append(outcome)
        return stage_outcomes(
            outcome,
            cpu_limit_percent=self._cpu_limit_percent,
            cut_short=watch.stopped,
            elapsed_s=time.monotonic() - started,
        )
