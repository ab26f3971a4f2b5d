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
delay shows it, honestly.  Pure: no gevent.
"""

from __future__ import annotations

import math
from typing import Final, Protocol

from pytest_iotperf.fleet.spec import phase_of, scheduled_count
from pytest_iotperf.payloads.prng import Seeds, uniform_source

__all__ = ["ARRIVALS", "Arrivals", "arrivals_for", "scheduled_within"]

ARRIVALS: Final = ("spread", "poisson", "aligned")
#: Mixed into a device's seed so its arrival stream never shares numbers with its payload's.
_ARRIVAL_STREAM: Final = 0xA5A1_7E5D_0F1E_E7C3


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

    __slots__ = ("_draw", "_rate")

    def __init__(self, rate: float, seed: int, n: int) -> None:
        self._rate = rate
        self._draw = uniform_source(Seeds(seed, n).device ^ _ARRIVAL_STREAM)

    def _gap(self) -> float:
        # 1 - u is in (0, 1]: the logarithm is finite.
        return -math.log(1.0 - self._draw()) / self._rate

    def first(self) -> float:
        return self._gap()  # the first arrival too: a Poisson process does not start with an event at T0

    def after(self, previous: float, k: int) -> float:
        return previous + self._gap()


def arrivals_for(arrival: str, n: int, rate: float, seed: int = 0) -> Arrivals:
    """Device ``n``'s due times under ``arrival``.

    Raises:
        ValueError: an arrival pattern that is not one of :data:`ARRIVALS`.
    """
    if arrival == "spread":
        return Periodic(phase_of(n, rate), rate)
    if arrival == "aligned":
        return Periodic(0.0, rate)
    if arrival == "poisson":
        return Poisson(rate, seed, n)
    raise ValueError(f"arrival must be one of {', '.join(ARRIVALS)}, not {arrival!r}")


def scheduled_within(arrival: str, n: int, rate: float, duration_s: float, seed: int = 0) -> int:
    """How many of device ``n``'s messages fall due in ``[0, duration_s)`` (a fresh replay of its schedule)."""
    arrivals = arrivals_for(arrival, n, rate, seed)
    if isinstance(arrivals, Periodic):  # closed form: those with phase + k / rate < duration
        return scheduled_count(arrivals.phase_s, rate, duration_s)
    count = 0
    offset = arrivals.first()
    while offset < duration_s:
        count += 1
        offset = arrivals.after(offset, count)
    return count
