"""What a capacity search found (:class:`CapacityResult`) and what each of its steps measured (:class:`StepOutcome`).

Pure: no I/O, no pytest, no client library.  ``CapacityResult.to_dict()`` is
the JSON result file of a search (``<report dir>/<test>.capacity.json``), the
input of the HTML capacity page and what a baseline saves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pytest_iotperf.numbers import format_ms, format_percent
from pytest_iotperf.slo import SloVerdict

#: Why a search stopped where it did.
#:
#: ``system``: a step with a generator that kept up broke an SLO; ``max_devices`` is the largest
#: count that met every SLO, within ``resolution`` of the smallest that broke one (the knee).
#: ``generator``: the load generator saturated (fleet lateness p99 over its limit, or a worker's
#: CPU near 100 %) before the system broke: the knee was not found; add workers and search again.
#: ``limit``: every step up to ``limit`` met every SLO: the knee lies above ``limit``.
Bound = Literal["system", "generator", "limit"]
BOUNDS: tuple[Bound, ...] = ("system", "generator", "limit")


@dataclass(frozen=True)
class StepVerdict:
    """One SLO's verdict on one step; ``measured`` in the SLO's unit (None: no data)."""

    slo: str
    metric: str
    passed: bool
    measured: float | None
    measured_text: str

    @classmethod
    def of(cls, verdict: SloVerdict, suffix: str = "") -> StepVerdict:
        """An SLO's verdict on a step; ``suffix`` follows its measured text (where it was judged)."""
        return cls(
            slo=verdict.slo.text,
            metric=verdict.slo.metric,
            passed=verdict.passed,
            measured=verdict.measured if math.isfinite(verdict.measured) else None,
            measured_text=verdict.measured_text + suffix,
        )

    def describe(self) -> str:
        """``p95_delay_ms < 500: 1480.2 ms``."""
        return f"{self.slo}: {self.measured_text}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "slo": self.slo,
            "metric": self.metric,
            "passed": self.passed,
            "measured": self.measured,
            "measured_text": self.measured_text,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepVerdict:
        measured = data.get("measured")
        return cls(
            slo=str(data.get("slo", "")),
            metric=str(data.get("metric", "")),
            passed=bool(data.get("passed")),
            measured=float(measured) if isinstance(measured, (int, float)) else None,
            measured_text=str(data.get("measured_text", "")),
        )


@dataclass(frozen=True)
class StepOutcome:
    """What one step of a search measured at ``devices`` devices, and its verdicts.

    ``saturation`` says why the load generator could not keep its schedule (None: it kept up):
    such a step's figures describe the generator as much as the system, so it is never the knee.
    ``broke`` says why the step's run did not complete (aborted early, a process died); a step
    that broke fails.

    Where it ran: ``stage`` is its index in the stages of the search's escalation run (one run in
    stages, the devices of earlier stages staying connected, a connect stage between two holds;
    every stage shares that run's ``run_id``), None
    for a step that was a run of its own (a bisection probe, or a re-measured inconclusive stage).
    ``cut_short`` says why a stage was ended before its hold was over (the escalation run was
    stopped early because the live figures showed the stage breaking): its figures cover what ran.
    A stage cut short that still met every SLO is :attr:`inconclusive`.
    """

    devices: int
    offered_per_s: float  # devices x rate per device: the load asked for
    throughput_per_s: float  # received per second of the step
    p50_delay_ms: float
    p95_delay_ms: float
    p99_delay_ms: float
    loss: float
    lateness_p99_ms: float
    verdicts: tuple[StepVerdict, ...] = ()
    saturation: str | None = None
    broke: str | None = None
    #: Received per second while the load was on (whole timeline slots of the hold; NaN: none): past the
    #: knee it levels off at what the system sustains, where ``throughput_per_s`` counts the drain too.
    delivered_per_s: float = math.nan
    sent: int = 0
    received: int = 0
    run_id: str = ""
    elapsed_s: float = 0.0  # wall time of the step, start-up and drain included
    stage: int | None = None  # index in the escalation run's stages (its holds: 0, 2, 4, ...); None: a run of its own
    cut_short: str | None = None  # why the stage ended before its hold was over (None: it held the whole hold)

    @property
    def inconclusive(self) -> bool:
        """Cut short yet every SLO met on what ran: not known to pass for a whole hold (re-measured as its own run)."""
        return self.cut_short is not None and self.passed and not self.generator_saturated

    def where(self) -> str:
        """``stage 2 of run 1a2b3c`` or ``own run 4d5e6f``."""
        run = f" {self.run_id}" if self.run_id else ""
        return f"stage {self.stage + 1} of run{run}" if self.stage is not None else f"own run{run}"

    @property
    def generator_saturated(self) -> bool:
        return self.saturation is not None

    @property
    def passed(self) -> bool:
        """Every SLO met and the run completed (whether the generator kept up is :attr:`generator_saturated`)."""
        return self.broke is None and all(verdict.passed for verdict in self.verdicts)

    @property
    def failed(self) -> list[StepVerdict]:
        return [verdict for verdict in self.verdicts if not verdict.passed]

    def why_failed(self) -> str | None:
        """The first SLO the step broke, with its value (``p95_delay_ms < 500: 1480.2 ms``), or why it broke."""
        failed = self.failed
        if failed:
            return failed[0].describe()
        if self.broke is not None:
            return f"run broke: {self.broke}"
        return None

    def verdict_text(self) -> str:
        """``pass``, ``FAIL p95_delay_ms < 500: 1480.2 ms`` or ``SATURATED (fleet lateness p99 ...)``."""
        if self.generator_saturated:
            failed = f"; {self.why_failed()}" if not self.passed else ""
            return f"SATURATED ({self.saturation}){failed}"
        if self.inconclusive:
            return "INCONCLUSIVE (cut short; passed on what ran)"
        return "pass" if self.passed else f"FAIL {self.why_failed()}"

    def describe(self) -> str:
        """One line: devices, offered load, figures, verdict."""
        return (
            f"{self.devices:,} devices ({self.offered_per_s:,.0f} msg/s offered): "
            f"p50 {format_ms(self.p50_delay_ms)}, p95 {format_ms(self.p95_delay_ms)}, "
            f"p99 {format_ms(self.p99_delay_ms)}, {self.throughput_per_s:,.0f} msg/s received, "
            f"loss {_percent(self.loss)}, lateness p99 {format_ms(self.lateness_p99_ms)} -> {self.verdict_text()}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "devices": self.devices,
            "offered_per_s": _finite(self.offered_per_s),
            "throughput_per_s": _finite(self.throughput_per_s),
            "delivered_per_s": _finite(self.delivered_per_s),
            "p50_delay_ms": _finite(self.p50_delay_ms),
            "p95_delay_ms": _finite(self.p95_delay_ms),
            "p99_delay_ms": _finite(self.p99_delay_ms),
            "loss": _finite(self.loss),
            "lateness_p99_ms": _finite(self.lateness_p99_ms),
            "passed": self.passed,
            "generator_saturated": self.generator_saturated,
            "saturation": self.saturation,
            "broke": self.broke,
            "verdict": self.verdict_text(),
            "verdicts": [verdict.to_dict() for verdict in self.verdicts],
            "sent": self.sent,
            "received": self.received,
            "run_id": self.run_id,
            "elapsed_s": round(self.elapsed_s, 3),
            "stage": self.stage,
            "cut_short": self.cut_short,
            "inconclusive": self.inconclusive,
            "where": self.where(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepOutcome:
        stage, cut = data.get("stage"), data.get("cut_short")
        return cls(
            devices=int(data.get("devices", 0)),
            offered_per_s=_number(data.get("offered_per_s")),
            throughput_per_s=_number(data.get("throughput_per_s")),
            delivered_per_s=_number(data.get("delivered_per_s")),
            p50_delay_ms=_number(data.get("p50_delay_ms")),
            p95_delay_ms=_number(data.get("p95_delay_ms")),
            p99_delay_ms=_number(data.get("p99_delay_ms")),
            loss=_number(data.get("loss")),
            lateness_p99_ms=_number(data.get("lateness_p99_ms")),
            verdicts=tuple(StepVerdict.from_dict(v) for v in data.get("verdicts", [])),
            saturation=data.get("saturation"),
            broke=data.get("broke"),
            sent=int(data.get("sent", 0)),
            received=int(data.get("received", 0)),
            run_id=str(data.get("run_id", "")),
            elapsed_s=_number(data.get("elapsed_s")),
            stage=stage if isinstance(stage, int) and not isinstance(stage, bool) else None,
            cut_short=str(cut) if cut is not None else None,
        )


@dataclass(frozen=True)
class SearchPlan:
    """What the search was asked: where to start, how far to go, how to step, how close to bisect."""

    start: int
    limit: int
    factor: float
    resolution: float
    hold_s: float = 0.0
    rate_per_device: float = 0.0
    slos: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "limit": self.limit,
            "factor": self.factor,
            "resolution": self.resolution,
            "hold_s": self.hold_s,
            "rate_per_device": self.rate_per_device,
            "slos": list(self.slos),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchPlan:
        return cls(
            start=int(data.get("start", 0)),
            limit=int(data.get("limit", 0)),
            factor=_number(data.get("factor")),
            resolution=_number(data.get("resolution")),
            hold_s=_number(data.get("hold_s")),
            rate_per_device=_number(data.get("rate_per_device")),
            slos=tuple(str(s) for s in data.get("slos", [])),
        )


@dataclass(frozen=True)
class CapacityResult:
    """What ``iot_perf.find_capacity()`` found.

    ``max_devices``: the largest device count whose step met every SLO with a generator that kept
    up (0 when not even ``start`` did).  ``max_throughput_per_s``: the highest throughput such a
    step received.  ``limiting_slo``: the SLO the smallest failing step broke, with its value
    (``"p95_delay_ms < 500: 1480.2 ms"``; None unless ``bound == "system"``).  ``failed_devices``:
    that step's device count (the knee lies between ``max_devices`` and it).  ``steps``: every
    step in the order it ran.  ``bound``: see :data:`Bound`.  ``hint``: what to do next, in words.
    ``search_s``: wall time of the whole search.
    """

    max_devices: int
    max_throughput_per_s: float
    limiting_slo: str | None
    steps: tuple[StepOutcome, ...]
    bound: Bound
    hint: str
    search_s: float
    failed_devices: int | None = None
    plan: SearchPlan | None = None

    def __repr__(self) -> str:
        return (
            f"CapacityResult(max_devices={self.max_devices}, max_throughput_per_s={self.max_throughput_per_s:.1f}, "
            f"bound={self.bound!r}, limiting_slo={self.limiting_slo!r}, steps={len(self.steps)}, "
            f"search_s={self.search_s:.1f})"
        )

    @property
    def knee_step(self) -> StepOutcome | None:
        """The step at ``max_devices`` (the last one that met every SLO), None when none did."""
        passing = [s for s in self.steps if s.passed and not s.generator_saturated and s.devices == self.max_devices]
        return passing[-1] if passing else None

    def summary(self) -> str:
        """One line for the terminal and junit: what was found, why it stopped, how long it took."""
        head = f"max_devices {self.max_devices:,} ({self.max_throughput_per_s:,.0f} msg/s), bound {self.bound}"
        if self.bound == "system" and self.limiting_slo is not None:
            at = f" at {self.failed_devices:,} devices" if self.failed_devices is not None else ""
            head += f": {self.limiting_slo}{at}"
        elif self.bound == "generator":
            saturated = [s for s in self.steps if s.generator_saturated]
            if saturated:  # the first: where the search stopped (a later stage of its run may have run on)
                head += f": generator saturated at {saturated[0].devices:,} devices ({saturated[0].saturation})"
        elif self.bound == "limit" and self.plan is not None:
            head += f": every SLO met up to limit={self.plan.limit:,}"
        count = len(self.steps)
        return f"{head}; {count} step{'' if count == 1 else 's'} in {self.search_s:.1f}s"

    def runs_text(self) -> str:
        """Which runs measured the steps: ``run 1a2b: stages 500, 1,000, 2,000 (2,000 cut short); own runs: 1,500``."""
        staged: dict[str, list[StepOutcome]] = {}
        own: list[StepOutcome] = []
        for step in self.steps:
            if step.stage is None:
                own.append(step)
            else:
                staged.setdefault(step.run_id, []).append(step)
        parts = []
        for run_id, stages in staged.items():
            cut = [f"{s.devices:,}" for s in stages if s.cut_short is not None]
            text = f"run {run_id}: stages {', '.join(f'{s.devices:,}' for s in stages)}"
            parts.append(text + (f" ({', '.join(cut)} cut short)" if cut else ""))
        if own:
            parts.append(f"own runs: {', '.join(f'{s.devices:,}' for s in own)}")
        return "; ".join(parts)

    def steps_text(self) -> str:
        """Every step in one line: ``500: pass; 1,000: pass; 2,000: FAIL p95_delay_ms < 500: 1480.2 ms``."""
        return "; ".join(f"{step.devices:,}: {step.verdict_text()}" for step in self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_devices": self.max_devices,
            "max_throughput_per_s": _finite(self.max_throughput_per_s),
            "limiting_slo": self.limiting_slo,
            "failed_devices": self.failed_devices,
            "bound": self.bound,
            "hint": self.hint,
            "search_s": round(self.search_s, 3),
            "plan": self.plan.to_dict() if self.plan is not None else None,
            "steps": [step.to_dict() for step in self.steps],
            "runs": self.runs_text(),
            "summary": self.summary(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CapacityResult:
        bound = data.get("bound")
        if bound not in BOUNDS:
            raise ValueError(f"not a capacity result: bound {bound!r} is not one of {', '.join(BOUNDS)}")
        plan = data.get("plan")
        failed = data.get("failed_devices")
        steps = tuple(StepOutcome.from_dict(step) for step in data.get("steps", []))
        return cls(
            max_devices=int(data.get("max_devices", 0)),
            max_throughput_per_s=_number(data.get("max_throughput_per_s")),
            limiting_slo=data.get("limiting_slo"),
            steps=steps,
            bound=bound,
            hint=str(data.get("hint", "")),
            search_s=_number(data.get("search_s")),
            failed_devices=int(failed) if isinstance(failed, int) else None,
            plan=SearchPlan.from_dict(plan) if isinstance(plan, Mapping) else None,
        )


def steps_by_devices(steps: Sequence[StepOutcome]) -> list[StepOutcome]:
    """The steps in device order (a bisection runs them out of order)."""
    return sorted(steps, key=lambda step: step.devices)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _number(value: object) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return math.nan


def _percent(value: float) -> str:
    return format_percent(value) if math.isfinite(value) else "\u2013"
