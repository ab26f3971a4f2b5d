"""A capacity search through the pipeline, and its outputs (JSON, HTML capacity page, baseline); no pytest.

The escalation is one run in stages (:class:`~pytest_iotperf.capacity_stages.StagedEscalation`:
the devices already connected stay connected while each stage adds its share,
and the run is stopped once its live figures show a stage breaking).  Every
bisection step is a run of its own (:class:`PipelineProbe`: ``devices=N``,
``duration=hold``), since where the next one lies depends on this one's
verdict; the master, workers and sink stand across the runs, so such a step
costs its ramp, hold and drain.  Every step is judged with the search's SLOs
plus the default ``connect_failures`` / ``unsent`` checks; the generator's
saturation is judged by the search itself (:func:`saturation_of`), not as an SLO.

From a script::

    from pytest_iotperf.capacity_run import find_capacity
    found = find_capacity(broker.endpoint, slos=["p95_delay_ms < 500"], start=100, limit=5000, hold="20s",
                          rate_per_device=1.0).capacity
    print(found.summary())
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_iotperf.baseline import Comparison, compare_capacity
from pytest_iotperf.broker_endpoint import BrokerEndpoint
from pytest_iotperf.capacity_result import CapacityResult, SearchPlan, StepOutcome, StepVerdict
from pytest_iotperf.capacity_search import check_plan, search
from pytest_iotperf.capacity_stages import (
    StagedEscalation,
    StopCheck,
    busiest_worker_cpu,
    delivered_between,
    escalation_settings,
    run_watched,
)
from pytest_iotperf.config import SETTINGS_BY_NAME, Resolved, RunSettings, SessionSettings, resolve
from pytest_iotperf.durations import parse_duration
from pytest_iotperf.errors import ConfigError
from pytest_iotperf.files import write_json_atomically
from pytest_iotperf.fleet.capacity import broker_shortfall
from pytest_iotperf.pipeline import Outputs, Pipeline, RunOutcome
from pytest_iotperf.report.capacity_html import write_capacity_html
from pytest_iotperf.report.json_report import result_path
from pytest_iotperf.result import SATURATION_LATENESS_MS, RunResult
from pytest_iotperf.slo import Slo, parse_slo

#: A worker at or above this CPU (per cent of one core, over its run) cannot be trusted to keep its schedule.
CPU_SATURATION_PERCENT = 90.0
#: The source the settings a search sets per step show (``result.sources``).
SEARCH_SOURCE = "capacity search"
#: Settings the search owns: devices and duration per step; no stages (a step is one constant load).
SEARCH_OWNED = ("devices", "duration", "stages")


# -- the plan -----------------------------------------------------------------------------------


def make_plan(
    slos: Sequence[Slo | str] | None,
    *,
    start: object,
    limit: object,
    hold: float | str,
    factor: object,
    resolution: object,
    rate_per_device: float,
) -> tuple[SearchPlan, list[Slo]]:
    """The search's plan and parsed SLOs; :class:`ConfigError` for a bad argument, before anything runs."""
    check_plan(start, limit, factor, resolution)
    assert isinstance(start, int) and isinstance(limit, int)
    assert isinstance(factor, (int, float)) and isinstance(resolution, (int, float))
    if isinstance(slos, (str, Slo)) or not slos:
        raise ConfigError(
            "find_capacity(slo=[...]): give the SLOs that define 'the system copes' as a list, "
            "e.g. slo=['p95_delay_ms < 500', 'loss < 0.1%']"
        )
    parsed = [parse_slo(slo) if isinstance(slo, str) else slo for slo in slos]
    try:
        hold_s = float(hold) if isinstance(hold, (int, float)) and not isinstance(hold, bool) else parse_duration(
            str(hold)
        )
    except ValueError as exc:
        raise ConfigError(f"find_capacity(hold={hold!r}): {exc}") from None
    if not math.isfinite(hold_s) or hold_s <= 0:
        raise ConfigError(f"find_capacity(hold={hold!r}): each step holds its load this long, so it must be > 0")
    if abs(hold_s * 10 - round(hold_s * 10)) > 1e-6:
        raise ConfigError(
            f"find_capacity(hold={hold!r}): the escalation's stages start every hold, on the 100 ms due-time "
            "grid: give a whole number of tenths of a second"
        )
    for slo in parsed:
        if slo.window_s is not None and slo.window_s > hold_s:
            raise ConfigError(
                f"find_capacity(hold={hold!r}): the SLO {slo.text!r} judges windows of {slo.window_s:g}s, longer "
                f"than each step's hold of {hold_s:g}s: hold longer or shorten the window"
            )
    plan = SearchPlan(
        start=start,
        limit=limit,
        factor=float(factor),
        resolution=float(resolution),
        hold_s=hold_s,
        rate_per_device=rate_per_device,
        slos=tuple(slo.text for slo in parsed),
    )
    return plan, parsed


def check_settings(settings: Mapping[str, Any]) -> None:
    """The caller's run settings must leave the device count and duration to the search."""
    owned = [name for name in SEARCH_OWNED if name in settings]
    if owned:
        raise ConfigError(
            f"find_capacity() sets {', '.join(owned)} itself (devices from start/limit, duration from hold, one "
            "constant load per step): leave them out"
        )


def set_aside_by_search(base: RunSettings) -> list[str]:
    """What the command line or environment asked for that a search overrides (devices, duration, stages).

    A session scaled with ``--iot-devices 6000`` still runs its capacity searches from ``start`` to
    ``limit``: said in a warning, never dropped silently.
    """
    return [
        f"{name}={base[name]!r} ({base.source(name)})"
        for name in SEARCH_OWNED
        if name in base.values and base.source(name) in ("command line", "environment")
    ]


def step_settings(base: SessionSettings, code: Mapping[str, Any], devices: int, hold_s: float) -> RunSettings:
    """One step's settings: the caller's, with the search's device count and hold (over the command line too).

    ``allow_saturated``: the search judges the generator itself (:func:`saturation_of`), so a
    saturated step is told apart from one the system failed rather than failing a lateness SLO.
    """
    values = dict(base.for_run(code).values)
    values["devices"] = Resolved(devices, SEARCH_SOURCE)
    values["duration"] = Resolved(hold_s, SEARCH_SOURCE)
    values["allow_saturated"] = Resolved(True, SEARCH_SOURCE)
    if "stages" in SETTINGS_BY_NAME:
        values["stages"] = Resolved(SETTINGS_BY_NAME["stages"].default, SEARCH_SOURCE)
    return RunSettings(values)


# -- one step -----------------------------------------------------------------------------------


def saturation_of(result: RunResult) -> str | None:
    """Why the generator could not keep its schedule in ``result`` (None: it kept up).

    Its lateness p99 over ``SATURATION_LATENESS_MS`` (``result.generator_saturated``), or a worker
    that used ``CPU_SATURATION_PERCENT`` of its core or more (it had nothing left to keep up with).
    """
    if result.generator_saturated:
        return f"fleet lateness p99 {result.lateness_p99_ms:.1f} ms > {SATURATION_LATENESS_MS:g} ms"
    busiest = busiest_worker_cpu(result)
    if busiest is not None and busiest[0] >= CPU_SATURATION_PERCENT:
        return f"worker {busiest[1]} CPU {busiest[0]:.0f}% >= {CPU_SATURATION_PERCENT:g}%"
    return None


def delivered_per_s(result: RunResult) -> float:
    """Messages received per second while the load was on: the mean of the timeline's whole slots in the hold.

    ``throughput_per_s`` counts what the drain still brought in after the hold, so past the knee it
    equals the offered load; this is the rate the system actually sustained (NaN: no whole slot).
    """
    return delivered_between(result, 0.0, result.duration_s)


def step_outcome(outcome: RunOutcome, offered_per_s: float, elapsed_s: float) -> StepOutcome:
    """A pipeline run's outcome as a step of the search."""
    result = outcome.result
    verdicts = tuple(StepVerdict.of(verdict) for verdict in outcome.verdicts)
    return StepOutcome(
        devices=result.devices,
        offered_per_s=offered_per_s,
        throughput_per_s=result.throughput_per_s,
        delivered_per_s=delivered_per_s(result),
        p50_delay_ms=result.p50_delay_ms,
        p95_delay_ms=result.p95_delay_ms,
        p99_delay_ms=result.p99_delay_ms,
        loss=result.loss,
        lateness_p99_ms=result.lateness_p99_ms,
        verdicts=verdicts,
        saturation=saturation_of(result),
        broke=outcome.broke,
        sent=result.sent,
        received=result.received,
        run_id=result.run_id,
        elapsed_s=elapsed_s,
    )


class PipelineProbe:
    """The search's probe: each step is one run (``run_step``) with the settings ``settings_for(devices)``."""

    def __init__(
        self, run_step: Callable[[RunSettings], RunOutcome], settings_for: Callable[[int], RunSettings]
    ) -> None:
        self._run_step = run_step
        self._settings_for = settings_for
        self.outcomes: list[RunOutcome] = []  # every step's run, in order (results for a caller that wants them)
        self.asked: list[int] = []  # every device count asked for, the one being run included

    def __call__(self, devices: int) -> StepOutcome:
        self.asked.append(devices)
        settings = self._settings_for(devices)
        started = time.monotonic()
        outcome = self._run_step(settings)
        self.outcomes.append(outcome)
        return step_outcome(outcome, devices * settings.rate, time.monotonic() - started)


# -- the search's outputs ------------------------------------------------------------------------


@dataclass
class CapacityOutcome:
    """A search judged against its baseline and written: what the fixture records and a script prints."""

    capacity: CapacityResult
    comparisons: list[Comparison] = field(default_factory=list)
    regressions: str | None = None  # metrics that regressed past their margins, as one message
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    report_path: Path | None = None  # the JSON result; the HTML page beside it

    @property
    def passed(self) -> bool:
        """No regression against the baseline (a search's SLO failures are its findings, not failures)."""
        return self.regressions is None


def capacity_report_path(report_dir: Path, name: str, search_index: int) -> Path:
    """``<report_dir>/<test id>.capacity.json`` (``.capacity.run2.json`` for a second search of the test)."""
    return result_path(report_dir, f"{name}.capacity", search_index)


def conclude_capacity(capacity: CapacityResult, outputs: Outputs, name: str, search_index: int = 1) -> CapacityOutcome:
    """Compare with the baseline, write the JSON result and HTML page, save the baseline (in that order)."""
    outcome = CapacityOutcome(capacity)
    data = capacity.to_dict()
    baselines = outputs.baselines
    if baselines is not None and baselines.compare_with is not None:
        saved = baselines.store.load_capacity(baselines.compare_with, name, search_index)
        if saved is None:
            outcome.warnings.append(
                f"no capacity baseline {baselines.compare_with!r} saved for this test: nothing compared"
            )
        else:
            outcome.comparisons = compare_capacity(saved, data, baselines.margins)
            regressed = [c for c in outcome.comparisons if c.regressed]
            if regressed:
                lines = [f"{len(regressed)} capacity metric(s) regressed against baseline {baselines.compare_with!r}:"]
                lines += [f"  {c.describe()}" for c in regressed]
                outcome.regressions = "\n".join(lines)
    data["comparisons"] = [c.describe() for c in outcome.comparisons]
    if outputs.report_dir is not None:
        path = capacity_report_path(Path(outputs.report_dir), name, search_index)
        try:
            write_json_atomically(path, data, indent=2, allow_nan=False)
            write_capacity_html(data, path.with_suffix(".html"), title=name)
            outcome.report_path = path
        except (OSError, ValueError) as exc:
            why = getattr(exc, "strerror", None) or exc
            outcome.errors.append(f"could not write the capacity result to {path}: {why}")
    if baselines is not None and baselines.save is not None:
        try:
            baselines.store.save_capacity(baselines.save, name, search_index, capacity.to_dict())
        except OSError as exc:
            outcome.errors.append(f"could not save capacity baseline {baselines.save!r}: {exc.strerror or exc}")
    return outcome


# -- from a script ------------------------------------------------------------------------------


def find_capacity(
    broker: BrokerEndpoint,
    *,
    slos: Sequence[Slo | str],
    start: int,
    limit: int,
    hold: float | str = "60s",
    factor: float = 2.0,
    resolution: float = 0.05,
    base: SessionSettings | None = None,
    outputs: Outputs | None = None,
    name: str = "capacity",
    on_step: Callable[[StepOutcome], None] | None = None,
    **settings: Any,
) -> CapacityOutcome:
    """``iot_perf.find_capacity()`` without pytest: search, then :func:`conclude_capacity`.

    ``settings`` are ``iot_perf.run()``'s keywords (not ``devices`` / ``duration``); ``base`` the
    resolved session settings (default: the defaults and the ``IOTPERF_*`` environment left out).
    Raises ``IotPerfError`` when a step measured nothing at all.
    """
    check_settings(settings)
    base = base if base is not None else resolve({}, {}, {})
    rate = base.for_run(settings).rate
    plan, parsed = make_plan(
        slos, start=start, limit=limit, hold=hold, factor=factor, resolution=resolution, rate_per_device=rate
    )
    pipeline = Pipeline()  # the steps write nothing: the search writes its own result

    def run_step(step: RunSettings) -> RunOutcome:
        return pipeline.run(step, broker, slos=parsed, name=name)

    def run_staged(staged: RunSettings, should_stop: StopCheck) -> RunOutcome:
        watched = Pipeline()
        return run_watched(watched, should_stop, lambda: watched.start(staged, broker, slos=parsed, name=name))

    probe = PipelineProbe(run_step, lambda devices: step_settings(base, settings, devices, plan.hold_s))
    escalate = StagedEscalation(
        run_staged,
        lambda counts: escalation_settings(base, settings, counts, plan.hold_s, SEARCH_SOURCE),
        parsed,
        cpu_limit_percent=CPU_SATURATION_PERCENT,
        fits=lambda devices: broker_shortfall(devices, broker.open_files) is None,
    )
    capacity = search(probe, plan, escalate=escalate, on_step=on_step)
    return conclude_capacity(capacity, outputs or Outputs(), name)
