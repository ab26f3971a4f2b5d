"""When each device's messages fall due: the arrival pattern of a run (``--iot-arrival``).

* ``spread`` (default): every device publishes every 1/rate, its phase within
  the period spread by the golden-ratio sequence over device numbers, so the
  fleet's aggregate rate is steady (:func:`~pytest_iotperf.fleet.spec.phase_of`).
* ``aligned``: every device is due at the same instants, T0 + k/rate: the
  top-of-the-minute herd real fleets produce when their clocks tick together.
* ``poisson``: independent exponential gaps per device with mean 1/rate, the
  arrivals of many unsynchronised devices; each device's gaps come from its own
  stream seeded from (the run's seed, its number), so a run repeats and every
  process computes the same due times (a worker counts what a device that never
  connected would have sent by replaying its stream).

Due times are offsets from T0 in seconds.  The intended time of a message is
always the schedule's, so when the generator cannot send a herd at once the
delay shows it, honestly.

Stages (``stage_plan.py``): in every stage a device takes part in, its due
times start afresh at the stage's start with the stage's rate
(:func:`stage_arrivals`; :class:`StagedArrivals` walks them across stages).
Stage 0's are exactly a run without stages' (its poisson stream included).
:func:`scheduled_by_slot` replays a fleet's schedules onto the due-time grid.
Pure: no gevent.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Final, Protocol

from pytest_iotperf.fleet.spec import phase_of
from pytest_iotperf.payloads.prng import MASK, Seeds, uniform_source
from pytest_iotperf.stage_plan import StageSpec, due_offset_us

__all__ = [
    "ARRIVALS",
    "Arrivals",
    "StagedArrivals",
    "arrivals_for",
    "scheduled_by_slot",
    "stage_arrivals",
]

ARRIVALS: Final = ("spread", "poisson", "aligned")
#: Mixed into a device's seed so its arrival stream never shares numbers with its payload's.
_ARRIVAL_STREAM: Final = 0xA5A1_7E5D_0F1E_E7C3
#: Mixed in once per stage index (stage 0: nothing, so a run without stages keeps its stream).
_STAGE_STREAM: Final = 0x9E37_79B9_7F4A_7C15


class Arrivals(Protocol):
    """One device's due times, as offsets from T0: ``first()``, then ``after(previous, k)`` for message k."""

    def first(self) -> float: ...

    def after(self, previous: float, k: int) -> float: ...


class Periodic:
    """Every ``period_s`` from ``phase_s``: message k at ``phase + k * period`` (no drift from adding up)."""

    __slots__ = ("period_s", "phase_s")

    def __init__(self, phase_s: float, rate: float) -> None:
        self.phase_s = phase_s
        self.period_s = 1.0 / rate

    def first(self) -> float:
        return self.phase_s

    def after(self, previous: float, k: int) -> float:
        return self.phase_s + k * self.period_s


class Poisson:
    """Exponential gaps with mean 1/rate from the device's own uniform stream."""

    __slots__ = ("_draw", "_rate", "_start_s")

    def __init__(self, rate: float, seed: int, n: int, stage_index: int = 0, start_s: float = 0.0) -> None:
        self._rate = rate
        self._start_s = start_s
        stream = Seeds(seed, n).device ^ _ARRIVAL_STREAM ^ ((stage_index * _STAGE_STREAM) & MASK)
        self._draw = uniform_source(stream)

    def _gap(self) -> float:
        # 1 - u is in (0, 1]: the logarithm is finite.
        return -math.log(1.0 - self._draw()) / self._rate

    def first(self) -> float:
        # The first arrival too is a gap after the start: a Poisson process does not start with an event.
        return self._start_s + self._gap()

    def after(self, previous: float, k: int) -> float:
        return previous + self._gap()


def arrivals_for(arrival: str, n: int, rate: float, seed: int = 0) -> Arrivals:
    """Device ``n``'s due times under ``arrival`` in a run without stages (its one stage, from T0).

    Raises:
        ValueError: an arrival pattern that is not one of :data:`ARRIVALS`.
    """
    return stage_arrivals(arrival, n, rate, seed, 0, 0.0)


def stage_arrivals(arrival: str, n: int, rate: float, seed: int, stage_index: int, start_s: float) -> Arrivals:
    """Device ``n``'s due times in one stage: they start afresh at ``start_s`` with the stage's rate.

    Stage 0 (start 0) is a run without stages (:func:`arrivals_for`).

    Raises:
        ValueError: an arrival pattern that is not one of :data:`ARRIVALS`.
    """
    if arrival == "spread":
        return Periodic(start_s + phase_of(n, rate), rate)
    if arrival == "aligned":
        return Periodic(start_s, rate)
    if arrival == "poisson":
        return Poisson(rate, seed, n, stage_index, start_s)
    raise ValueError(f"arrival must be one of {', '.join(ARRIVALS)}, not {arrival!r}")


class StagedArrivals:
    """A device's due times across the stages it takes part in (``index < stage.devices``).

    Within a stage, message k is due at the stage's own ``after(previous, k)`` (k from
    0 at the stage's start), while the offset is before the stage's end; then the next
    stage the device takes part in begins.  ``math.inf`` once none is left.  ``stage``
    is the index of the stage of the offset returned last (-1 after the last).
    """

    __slots__ = ("_active", "_arrival", "_current", "_end_s", "_k", "_n", "_plan", "_pos", "_seed", "stage")

    def __init__(self, arrival: str, n: int, index: int, plan: Sequence[StageSpec], seed: int = 0) -> None:
        self._arrival = arrival
        self._n = n  # the global device number (seeds the poisson stream)
        self._seed = seed
        self._plan = tuple(plan)
        # ``index``: the device's place in the fleet (its number minus the run's device offset).
        self._active = tuple(i for i, stage in enumerate(self._plan) if index < stage.devices)
        self._pos = -1
        self._current: Arrivals | None = None
        self._end_s = 0.0
        self._k = 0
        self.stage = -1

    def first(self) -> float:
        self._pos = -1
        return self._next_stage()

    def after(self, previous: float, k: int) -> float:
        current = self._current
        if current is None:
            return math.inf
        self._k += 1
        offset = current.after(previous, self._k)
        if offset < self._end_s:
            return offset
        return self._next_stage()

    def _next_stage(self) -> float:
        while self._pos + 1 < len(self._active):
            self._pos += 1
            index = self._active[self._pos]
            stage = self._plan[index]
            current = stage_arrivals(self._arrival, self._n, stage.rate, self._seed, index, stage.start_s)
            offset = current.first()
            if offset < stage.end_s:
                self._current, self._end_s, self._k, self.stage = current, stage.end_s, 0, index
                return offset
        self._current, self.stage = None, -1
        return math.inf


def _count_below(phase_s: float, period_s: float, bound_us: int, cut_s: float) -> int:
    """Messages ``k >= 0`` of ``phase + k * period`` (floats, as Periodic walks them) with
    ``due_offset_us(offset) < bound_us`` and ``offset < cut_s``: exact, in O(1) tries."""

    def inside(k: int) -> bool:
        offset = phase_s + k * period_s
        return offset < cut_s and due_offset_us(offset) < bound_us

    guess = max(0, math.ceil((min(bound_us / 1e6, cut_s) - phase_s) / period_s))
    while guess > 0 and not inside(guess - 1):
        guess -= 1
    while inside(guess):
        guess += 1
    return guess


def _periodic_stage_slots(
    phases: Iterable[float], period_s: float, start_s: float, cut_s: float, slot_us: int, into: Counter[int]
) -> None:
    """Add the due slots of periodic devices in one stage (offsets ``phase + k * period < cut``) to ``into``.

    Per slot boundary B, the devices' counts below B sum in closed form: with
    ``phase = start + u * period``, ``x = (B - start) / period``, a device has
    ``floor(x) + (u < frac(x))`` messages below B, so the fleet's count is one bisection over
    the sorted ``u``.  Devices whose ``u`` is within a µs of ``frac(x)`` (an offset that near
    B: rounding decides) are counted exactly instead.  O(devices log devices + slots).
    """
    groups: Counter[float] = Counter(phases)  # aligned: one phase for the whole fleet
    if not groups or cut_s <= start_s:
        return
    highest = math.nextafter(1.0, 0.0)
    entries = sorted(
        (min(max((phase - start_s) / period_s, 0.0), highest), phase, weight) for phase, weight in groups.items()
    )
    fractions = [u for u, _, _ in entries]
    weights_below = [0]
    for _, _, weight in entries:
        weights_below.append(weights_below[-1] + weight)
    devices = weights_below[-1]
    # Rounding to whole µs and float error move an offset by under a µs: in period units, this.
    margin = 1.5e-6 / period_s + 1e-9

    def exact(bound_us: int) -> int:
        return sum(weight * _count_below(phase, period_s, bound_us, cut_s) for _, phase, weight in entries)

    def below(bound_us: int) -> int:
        if bound_us / 1e6 > cut_s - 2e-6:  # the cut, not the slot boundary, may decide: count each one
            return exact(bound_us)
        x = (bound_us / 1e6 - start_s) / period_s
        if x <= margin:
            return exact(bound_us)
        whole = math.floor(x)
        fraction = x - whole
        total = devices * whole + weights_below[bisect.bisect_left(fractions, fraction)]
        # Near frac(x), and across the wrap (u near 1 with frac(x) near 0, and the other way round).
        near = ((fraction - margin, fraction + margin), (fraction - margin + 1.0, 2.0), (-1.0, fraction + margin - 1.0))
        for lo, hi in near:
            for position in range(bisect.bisect_left(fractions, lo), bisect.bisect_right(fractions, hi)):
                u, phase, weight = entries[position]
                approximate = whole + (1 if u < fraction else 0)
                total += weight * (_count_below(phase, period_s, bound_us, cut_s) - approximate)
        return total

    first_slot = due_offset_us(start_s) // slot_us
    last_slot = due_offset_us(cut_s) // slot_us
    previous = 0
    for slot in range(first_slot, last_slot + 1):
        bound_us = (slot + 1) * slot_us
        count = exact(bound_us) if slot == last_slot else below(bound_us)
        if count != previous:
            into[slot] += count - previous
        previous = count


def scheduled_by_slot(
    arrival: str,
    devices: Iterable[tuple[int, int]],
    plan: Sequence[StageSpec],
    slot_us: int,
    seed: int = 0,
    stop_s: float | None = None,
) -> Counter[int]:
    """Messages due to ``devices`` (``(number, index)`` pairs) per due slot, replaying their staged arrivals.

    Slot of a message: ``due_offset_us(offset) // slot_us``, as the workers and sinks account it.
    ``stop_s``: the run was stopped then; only offsets before it count.  Spread and aligned
    arrivals are counted in closed form per stage, poisson ones by walking each device's stream.
    """
    slots: Counter[int] = Counter()
    pairs = list(devices)
    for stage_index, stage in enumerate(plan):
        cut_s = stage.end_s if stop_s is None else min(stage.end_s, stop_s)
        if cut_s <= stage.start_s:
            continue
        members = [n for n, index in pairs if index < stage.devices]
        if arrival == "poisson":
            for n in members:
                schedule = stage_arrivals(arrival, n, stage.rate, seed, stage_index, stage.start_s)
                offset, k = schedule.first(), 0
                while offset < cut_s:
                    slots[due_offset_us(offset) // slot_us] += 1
                    k += 1
                    offset = schedule.after(offset, k)
            continue
        phases = []
        period_s = 0.0
        for n in members:
            schedule = stage_arrivals(arrival, n, stage.rate, seed, stage_index, stage.start_s)
            assert isinstance(schedule, Periodic)
            phases.append(schedule.phase_s)
            period_s = schedule.period_s
        _periodic_stage_slots(phases, period_s, stage.start_s, cut_s, slot_us, slots)
    return slots
