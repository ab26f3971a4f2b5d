"""The capacity search on synthetic systems (no fleet): knee, limit, generator-bound, bisection, bad arguments."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace

import pytest

from pytest_iotperf.capacity_result import CapacityResult, SearchPlan, StepOutcome, StepVerdict
from pytest_iotperf.capacity_search import escalation_counts, search
from pytest_iotperf.errors import ConfigError

RATE = 2.0
SLO = "p95_delay_ms < 500"


class Knee:
    """A system with p95 20 ms up to ``knee`` devices and 2 s past it (it queues); a generator good for ``cap``."""

    def __init__(self, knee: int, generator_cap: int | None = None, fails_too: bool = False) -> None:
        self.knee = knee
        self.generator_cap = generator_cap
        self.fails_too = fails_too
        self.asked: list[int] = []

    def __call__(self, devices: int) -> StepOutcome:
        self.asked.append(devices)
        return self.measure(devices)

    def measure(self, devices: int) -> StepOutcome:
        """The step at ``devices`` (not counted in ``asked``: the probes are)."""
        over = devices > self.knee
        p95 = 2000.0 if over else 20.0
        saturated = self.generator_cap is not None and devices > self.generator_cap
        offered = devices * RATE
        verdict = StepVerdict(SLO, "p95_delay_ms", p95 < 500, p95, f"{p95:.1f} ms")
        return StepOutcome(
            devices=devices,
            offered_per_s=offered,
            throughput_per_s=min(offered, self.knee * RATE),
            p50_delay_ms=p95 / 2,
            p95_delay_ms=p95,
            p99_delay_ms=p95 * 1.2,
            loss=0.0,
            lateness_p99_ms=120.0 if saturated else 2.0,
            verdicts=(verdict,),
            saturation="fleet lateness p99 120.0 ms > 50 ms" if saturated else None,
            broke="aborted" if saturated and self.fails_too else None,
        )


def plan(start: int = 100, limit: int = 10_000, factor: float = 2.0, resolution: float = 0.05) -> SearchPlan:
    return SearchPlan(start, limit, factor, resolution, hold_s=5.0, rate_per_device=RATE, slos=(SLO,))


@pytest.mark.parametrize("knee", [100, 137, 1000, 1234, 9999])
def test_finds_the_knee_within_the_resolution(knee: int) -> None:
    system = Knee(knee)
    found = search(system, plan())
    assert found.bound == "system" and found.failed_devices is not None
    assert knee / 1.05 <= found.max_devices <= knee < found.failed_devices
    assert (found.failed_devices - found.max_devices) / found.max_devices <= 0.05
    assert found.limiting_slo is not None and found.limiting_slo.startswith(f"{SLO}: ")
    assert found.max_throughput_per_s == pytest.approx(found.max_devices * RATE)
    assert found.knee_step is not None and found.knee_step.devices == found.max_devices


def test_escalates_by_factor_then_bisects() -> None:
    system = Knee(1000)  # 1000 passes (p95 20 ms), 1001 fails
    found = search(system, plan())
    # 100..800 pass, 1600 fails; then halves: 1200 F, 1000 P, 1100 F, 1050 F -> (1050-1000)/1000 = 5 %.
    assert system.asked[:5] == [100, 200, 400, 800, 1600]
    assert system.asked[5:] == [1200, 1000, 1100, 1050]
    assert (found.max_devices, found.failed_devices) == (1000, 1050)
    assert "p95_delay_ms < 500: " in (found.limiting_slo or "")
    assert [s.devices for s in found.steps] == system.asked
    assert "knee lies between" in found.hint


def test_bisection_ends_at_adjacent_counts() -> None:
    system = Knee(3)
    found = search(system, plan(start=1, limit=100, resolution=0.01))
    assert (found.max_devices, found.failed_devices) == (3, 4)
    assert system.asked == [1, 2, 4, 3]


def test_limit_reached_says_so() -> None:
    system = Knee(50_000)
    found = search(system, plan(start=100, limit=1000))
    assert system.asked == [100, 200, 400, 800, 1000]  # the last step is capped at the limit
    assert found.bound == "limit" and found.max_devices == 1000 and found.limiting_slo is None
    assert "raise limit" in found.hint and found.failed_devices is None


def test_generator_saturating_before_the_system_broke_stops_the_search() -> None:
    system = Knee(5000, generator_cap=700)
    found = search(system, plan())
    assert system.asked == [100, 200, 400, 800]
    assert found.bound == "generator" and found.max_devices == 400
    assert found.limiting_slo is None
    assert "add workers" in found.hint.lower() and "800 devices" in found.hint
    assert "SATURATED" in found.steps[-1].verdict_text()


def test_a_step_both_saturated_and_failing_is_generator_bound() -> None:
    system = Knee(600, generator_cap=700, fails_too=True)
    found = search(system, plan())
    assert found.bound == "generator" and found.max_devices == 400  # 800 failed too, but its generator saturated


def test_first_step_failing_reports_zero() -> None:
    found = search(Knee(10), plan(start=100))
    assert found.bound == "system" and found.max_devices == 0 and found.failed_devices == 100
    assert "lower start" in found.hint


def test_result_round_trips_through_json() -> None:
    found = search(Knee(1000), plan())
    again = CapacityResult.from_dict(json.loads(json.dumps(found.to_dict(), allow_nan=False)))
    assert again.to_dict() == found.to_dict()
    assert "max_devices 1,000" in found.summary() and "bound system" in found.summary()
    assert found.steps_text().startswith("100: pass; 200: pass")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"factor": 1.0}, "factor=1.0"),
        ({"factor": math.nan}, "factor=nan"),
        ({"resolution": 0}, "resolution=0"),
        ({"start": 2000, "limit": 1000}, "start must not be above limit"),
        ({"start": 0}, "start=0"),
    ],
)
def test_bad_arguments_fail_before_any_step(kwargs: dict[str, float], fragment: str) -> None:
    system = Knee(1000)
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        search(system, plan(**kwargs))  # type: ignore[arg-type]
    assert system.asked == []


# -- the escalation as stages of one run (search(..., escalate=...)) --------------------------------


class Staged:
    """A synthetic ``escalate``: the counts as stages of one run over ``system``, stopped like the live watch would.

    The run stops after the first stage that breaks or saturates (``run_on`` more stages still run), or
    at ``cut_at``: that stage is cut short (its figures, hence its verdict, are the system's all the same).
    """

    def __init__(self, system: Knee, *, cut_at: int | None = None, run_on: int = 0) -> None:
        self.system = system
        self.cut_at = cut_at
        self.run_on = run_on
        self.calls: list[list[int]] = []

    def __call__(self, counts: Sequence[int]) -> list[StepOutcome]:
        self.calls.append(list(counts))
        run_id = f"run{len(self.calls)}"
        out: list[StepOutcome] = []
        left: int | None = None
        for index, devices in enumerate(counts):
            outcome = replace(self.system.measure(devices), run_id=run_id, stage=index)
            if devices == self.cut_at:
                out.append(replace(outcome, cut_short="backlog over what the delay SLOs allow for 2s"))
                break
            out.append(outcome)
            if left is None and (not outcome.passed or outcome.generator_saturated):
                left = self.run_on
            elif left is not None:
                left -= 1
            if left == 0:
                break
        return out


def test_escalation_stages_then_bisection_probes() -> None:
    system = Knee(1000)
    staged = Staged(system)
    found = search(system, plan(), escalate=staged)
    assert staged.calls == [[100, 200, 400, 800, 1600, 3200, 6400, 10_000]]  # one run for the whole escalation
    assert system.asked == [1200, 1000, 1100, 1050]  # the bisection: each probe a run of its own
    assert (found.bound, found.max_devices, found.failed_devices) == ("system", 1000, 1050)
    assert [(s.devices, s.stage, s.run_id) for s in found.steps[:5]] == [
        (100, 0, "run1"), (200, 1, "run1"), (400, 2, "run1"), (800, 3, "run1"), (1600, 4, "run1")
    ]
    assert all(s.stage is None for s in found.steps[5:])
    assert found.runs_text() == "run run1: stages 100, 200, 400, 800, 1,600; own runs: 1,200, 1,000, 1,100, 1,050"
    assert found.steps[0].where() == "stage 1 of run run1"


def test_a_cut_short_stage_that_passed_is_measured_again_on_its_own() -> None:
    system = Knee(1000)
    staged = Staged(system, cut_at=400)  # the live watch stopped the run in the 400 stage, which still passed
    found = search(system, plan(), escalate=staged)
    cut = found.steps[2]
    assert (cut.devices, cut.cut_short is not None, cut.inconclusive) == (400, True, True)
    assert "INCONCLUSIVE" in cut.verdict_text()
    # 400 again as its own run (passes), then a new staged run from 800 on; then the bisection.
    assert found.steps[3].devices == 400 and found.steps[3].stage is None and found.steps[3].passed
    assert staged.calls[1][:2] == [800, 1600]
    assert system.asked == [400, 1200, 1000, 1100, 1050]
    assert (found.max_devices, found.failed_devices) == (1000, 1050)
    again = CapacityResult.from_dict(json.loads(json.dumps(found.to_dict(), allow_nan=False)))
    assert again.steps[2].inconclusive and again.steps[2].stage == 2 and again.to_dict() == found.to_dict()


def test_a_cut_short_stage_that_failed_is_where_the_bisection_starts() -> None:
    system = Knee(1000)
    staged = Staged(system, cut_at=1600)
    found = search(system, plan(), escalate=staged)
    assert len(staged.calls) == 1 and found.steps[4].cut_short is not None and not found.steps[4].passed
    assert system.asked == [1200, 1000, 1100, 1050]  # 1600 is not measured again: it failed on what ran
    assert (found.max_devices, found.failed_devices) == (1000, 1050)


def test_a_generator_bound_stage_in_the_middle_stops_the_search() -> None:
    system = Knee(5000, generator_cap=700)
    staged = Staged(system, run_on=1)  # the run went on one stage past the saturated one
    found = search(system, plan(), escalate=staged)
    assert [s.devices for s in found.steps] == [100, 200, 400, 800, 1600]  # every stage that ran is a step
    assert found.bound == "generator" and found.max_devices == 400 and system.asked == []
    assert "800 devices" in found.hint


def test_stages_past_the_first_failing_one_decide_nothing() -> None:
    system = Knee(1000)
    found = search(system, plan(), escalate=Staged(system, run_on=2))
    assert [s.devices for s in found.steps[:7]] == [100, 200, 400, 800, 1600, 3200, 6400]
    assert (found.max_devices, found.failed_devices) == (1000, 1050)
    assert found.max_throughput_per_s == pytest.approx(1000 * RATE)


def test_an_escalation_that_ran_no_stage_falls_back_to_a_probe() -> None:
    system = Knee(50_000)
    calls: list[list[int]] = []

    def nothing(counts: Sequence[int]) -> list[StepOutcome]:
        calls.append(list(counts))
        return []

    found = search(system, plan(start=100, limit=400), escalate=nothing)
    assert calls == [[100, 200, 400], [200, 400], [400]] and system.asked == [100, 200, 400]
    assert found.bound == "limit" and found.max_devices == 400


def test_escalation_counts_match_the_probed_escalation() -> None:
    assert escalation_counts(plan(start=100, limit=1000)) == [100, 200, 400, 800, 1000]
    assert escalation_counts(plan(start=3, limit=3)) == [3]
    assert escalation_counts(plan(start=10, limit=80, factor=1.5)) == [10, 15, 23, 35, 53, 80]
