"""Clock offset of a worker against the master, NTP-style, over Locust's message channel (pure).

One exchange: the master sends at t1 (its clock), the worker receives at t2
and answers at t3 (its clock), the master receives at t4.  Then

    offset = ((t2 - t1) + (t3 - t4)) / 2      (worker clock - master clock)
    delay  = (t4 - t1) - (t3 - t2)            (round trip spent on the wire)

and the true offset lies within ``offset ± delay / 2``.  Of several exchanges
the one with the smallest delay gives the tightest bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: Environment variable that shifts a worker's time source by this many seconds. Tests only:
#: it stands in for a machine whose clock is wrong.
TEST_CLOCK_SHIFT_ENV = "IOTPERF_TEST_CLOCK_SHIFT_S"


@dataclass(frozen=True)
class ClockSample:
    t1: float
    t2: float
    t3: float
    t4: float

    @property
    def offset_s(self) -> float:
        return ((self.t2 - self.t1) + (self.t3 - self.t4)) / 2

    @property
    def delay_s(self) -> float:
        return max((self.t4 - self.t1) - (self.t3 - self.t2), 0.0)


@dataclass(frozen=True)
class ClockEstimate:
    """Worker clock minus master clock, and the half round trip that bounds its error."""

    offset_s: float
    uncertainty_s: float
    samples: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "offset_ms": self.offset_s * 1000,
            "uncertainty_ms": self.uncertainty_s * 1000,
            "samples": self.samples,
        }


def estimate(samples: Sequence[ClockSample]) -> ClockEstimate | None:
    """The estimate of the exchange with the smallest round trip; None without samples."""
    if not samples:
        return None
    best = min(samples, key=lambda s: s.delay_s)
    return ClockEstimate(best.offset_s, best.delay_s / 2, len(samples))
