"""The capacity search itself: escalate the device count, then bisect to the knee.  Pure and fleet-free.

:func:`search` asks a *probe* for one step at a time: ``probe(devices)`` loads
the system with that many devices for the hold time and returns a
:class:`~pytest_iotperf.capacity_result.StepOutcome` (its figures, its SLO
verdicts, whether the generator saturated and why).  The search:

1. escalates ``start``, ``start * factor``, ``start * factor**2``, ... (rounded
   up, capped at ``limit``) until a step breaks an SLO or the ``limit`` step
   passes (``bound="limit"``: the knee lies above it);
2. then bisects between the last passing and the first failing device counts
   until ``(failing - passing) / passing <= resolution`` (or they are adjacent
   counts), and reports the last passing count (``bound="system"``).

A step whose generator saturated (:attr:`StepOutcome.generator_saturated`)
stops the search at once with ``bound="generator"``, whether or not it also
broke an SLO: a generator that could not keep its schedule measured itself as
much as the system, so its step is never taken for the system's knee.

Two seams run the steps.  ``escalate(counts)`` runs the escalation's counts in
one go, as the stages of one run: the devices already connected stay connected
while each stage adds its share (the fixture's :class:`~pytest_iotperf.capacity_stages.StagedEscalation`).
It returns one outcome per stage that ran, in order, and may end early: its run
is stopped once the live figures show the current stage breaking, so the
system is not loaded up to ``limit`` after it broke.  Without ``escalate`` each
escalation count is a ``probe``.  ``probe(devices)`` runs one count as a run of
its own; every bisection step is a probe, because the next bisection point is
only known once the previous step's verdict is.

How the escalation's outcomes are read, in order (the first decisive one ends
the escalation; any later stage that still ran is kept as a step but decides
nothing):

- generator saturated: the search stops, ``bound="generator"``;
- an SLO broken (on the stage's own exact figures, also when it was cut short):
  the first failing step, bisection follows;
- cut short yet every SLO met (:attr:`StepOutcome.inconclusive`): the live
  signal and the exact figures disagree, and the stage did not hold its load
  for the whole hold, so its count is measured again as a run of its own; the
  search goes on from that run's verdict (a pass escalates on from there with
  a new staged run, a failure is where the bisection starts);
- passed: the next stage.

An ``escalate`` that ran no stage at all (stopped before its first stage had a
message) is followed by a probe of that count, so the search always advances.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from pytest_iotperf.capacity_result import Bound, CapacityResult, SearchPlan, StepOutcome
from pytest_iotperf.errors import ConfigError

__all__ = ["Escalate", "Probe", "check_plan", "escalation_counts", "search"]

#: What the hint names for more load generation (both reach a run's settings).
ADD_WORKERS = "add workers (--iot-workers / workers=, or remote workers with --iot-expect-workers)"


class Probe(Protocol):
    """Loads the system with ``devices`` devices for one step and returns what it measured."""

    def __call__(self, devices: int) -> StepOutcome: ...


class Escalate(Protocol):
    """Runs ``counts`` as the stages of one run; one outcome per stage that ran, in order (maybe fewer)."""

    def __call__(self, counts: Sequence[int]) -> list[StepOutcome]: ...


def escalation_counts(plan: SearchPlan) -> list[int]:
    """The counts the search escalates through: ``start``, ``start * factor``, ... rounded up, capped at ``limit``."""
    counts = [plan.start]
    while counts[-1] < plan.limit:
        counts.append(min(plan.limit, math.ceil(counts[-1] * plan.factor)))
    return counts


def check_plan(start: object, limit: object, factor: object, resolution: object) -> None:
    """Raise :class:`ConfigError` naming the bad argument, before anything runs."""
    for name, value in (("start", start), ("limit", limit)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"find_capacity({name}={value!r}): expected a whole number of devices >= 1")
    assert isinstance(start, int) and isinstance(limit, int)
    if start > limit:
        raise ConfigError(f"find_capacity(start={start}, limit={limit}): start must not be above limit")
    for name, value in (("factor", factor), ("resolution", resolution)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"find_capacity({name}={value!r}): expected a number")
    assert isinstance(factor, (int, float)) and isinstance(resolution, (int, float))
    if factor <= 1:
        raise ConfigError(f"find_capacity(factor={factor!r}): the fleet grows by factor per step, so it must be > 1")
    if resolution <= 0:
        raise ConfigError(
            f"find_capacity(resolution={resolution!r}): the bisection stops within this fraction of the knee "
            "(0.05: 5 %), so it must be > 0"
        )


def search(
    probe: Probe,
    plan: SearchPlan,
    *,
    escalate: Escalate | None = None,
    on_step: Callable[[StepOutcome], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> CapacityResult:
    """Run the search of ``plan``: escalate (``escalate``, else ``probe`` per count), then bisect with ``probe``.

    ``on_step`` sees each step as the search takes it in.
    """
    check_plan(plan.start, plan.limit, plan.factor, plan.resolution)
    started = clock()
    steps: list[StepOutcome] = []

    def record(outcome: StepOutcome) -> StepOutcome:
        steps.append(outcome)
        if on_step is not None:
            on_step(outcome)
        return outcome

    def step(devices: int) -> StepOutcome:
        return record(probe(devices))

    def result(bound: Bound, passing: StepOutcome | None, failing: StepOutcome | None, hint: str) -> CapacityResult:
        # Passing steps at or below max_devices (a stage that ran past the first failing one decides nothing).
        ceiling = passing.devices if passing is not None else 0
        trusted = [s for s in steps if s.passed and not s.generator_saturated and not s.inconclusive
                   and s.devices <= ceiling]  # fmt: skip
        return CapacityResult(
            max_devices=passing.devices if passing is not None else 0,
            max_throughput_per_s=max((s.throughput_per_s for s in trusted), default=0.0),
            limiting_slo=failing.why_failed() if failing is not None else None,
            steps=tuple(steps),
            bound=bound,
            hint=hint,
            search_s=clock() - started,
            failed_devices=failing.devices if failing is not None else None,
            plan=plan,
        )

    # 1. Escalate: stages of one run (or a probe per count), re-measuring an inconclusive stage on its own.
    counts = escalation_counts(plan)
    passing: StepOutcome | None = None
    failing: StepOutcome | None = None
    done = 0  # counts[:done] are decided
    while failing is None and done < len(counts):
        batch = _escalated(escalate, counts[done:]) if escalate is not None else []
        if not batch:
            batch = [probe(counts[done])]  # no escalate, or it ran no stage: the next count as its own run
        for outcome in batch:
            record(outcome)
        for outcome in batch:
            done += 1
            remeasured = outcome.inconclusive
            if remeasured:
                outcome = step(outcome.devices)  # the same count as its own run, for its whole hold
            if outcome.generator_saturated:
                return result("generator", passing, None, _generator_hint(outcome, passing))
            if not outcome.passed:
                failing = outcome
                break
            passing = outcome
            if remeasured:
                break  # the staged run ended there: escalate on from the next count with a new one
    if failing is None:
        assert passing is not None
        return result("limit", passing, None, _limit_hint(plan, passing))

    if passing is None:
        return result("system", None, failing, _first_step_hint(plan, failing))

    # 2. Bisect between the last passing and the first failing count.  Every bisection step is a probe (a run
    # of its own): where the next one lies is only known once this one's verdict is.
    while (failing.devices - passing.devices) / passing.devices > plan.resolution:
        middle = (passing.devices + failing.devices) // 2
        if middle <= passing.devices:  # adjacent counts: as close as whole devices get
            break
        outcome = step(middle)
        if outcome.generator_saturated:
            return result("generator", passing, None, _generator_hint(outcome, passing, broke_at=failing))
        if outcome.passed:
            passing = outcome
        else:
            failing = outcome
    return result("system", passing, failing, _system_hint(plan, passing, failing))


def _escalated(escalate: Escalate, counts: Sequence[int]) -> list[StepOutcome]:
    """``escalate(counts)``, checked: one outcome per leading count, in order (a stage that did not run is absent)."""
    outcomes = list(escalate(counts))[: len(counts)]
    for outcome, devices in zip(outcomes, counts, strict=False):
        if outcome.devices != devices:
            raise ValueError(
                f"escalate({list(counts)}) returned a step at {outcome.devices} devices where {devices} was due"
            )
    return outcomes


def _system_hint(plan: SearchPlan, passing: StepOutcome, failing: StepOutcome) -> str:
    return (
        f"the system met every SLO at {passing.devices:,} devices ({passing.offered_per_s:,.0f} msg/s offered) "
        f"and broke {failing.why_failed()} at {failing.devices:,}: the knee lies between "
        f"(resolution {plan.resolution:.0%})"
    )


def _first_step_hint(plan: SearchPlan, failing: StepOutcome) -> str:
    return (
        f"the first step (start={plan.start:,} devices) already broke {failing.why_failed()}: "
        "search again with a lower start"
    )


def _limit_hint(plan: SearchPlan, passing: StepOutcome) -> str:
    return (
        f"every SLO was met up to limit={plan.limit:,} devices ({passing.offered_per_s:,.0f} msg/s offered): "
        "the knee lies above it; raise limit to find it"
    )


def _generator_hint(saturated: StepOutcome, passing: StepOutcome | None, broke_at: StepOutcome | None = None) -> str:
    measured = (
        f"max_devices is {passing.devices:,}, the largest count measured with a generator that kept up"
        if passing is not None
        else "no step was measured with a generator that kept up"
    )
    broke = (
        f"; the system had broken {broke_at.why_failed()} at {broke_at.devices:,} devices"
        if broke_at is not None
        else " before the system broke an SLO"
    )
    return (
        f"the load generator saturated at {saturated.devices:,} devices ({saturated.saturation}){broke}: "
        f"that step describes the generator, not the system. {ADD_WORKERS[0].upper()}{ADD_WORKERS[1:]} "
        f"and search again; {measured}"
    )
