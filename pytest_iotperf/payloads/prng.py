"""Each device's random numbers: small, seeded streams that repeat with the seed.

``random.Random`` keeps 2.5 KB of Mersenne Twister state: 25 MB for 10,000
devices, a quarter more than a device costs today (17 KB).  A device's stream
here is one 64-bit integer: a linear congruential generator (Knuth's MMIX
constants) whose top 53 bits make the float in [0, 1).  Plenty for simulated
readings (uniform, normal, choices); not for cryptography or research-grade
Monte Carlo.  The render function steps it inline (see ``render_code``), so a
draw costs a few integer operations, no call.

Seeds: device n of a run seeded s starts from BLAKE2b("s:n") (the same in every
process, unlike ``hash``); a slot that keeps its own state (``walk``) gets a
sub-stream seeded by SplitMix64 from the device's seed, so streams never overlap
in practice and a device's values do not depend on other devices.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Final

__all__ = ["DRAW", "MASK", "Seeds", "uniform_source"]

MULTIPLIER: Final = 6364136223846793005
INCREMENT: Final = 1442695040888963407
MASK: Final = (1 << 64) - 1
SCALE: Final = 2.0**-53
#: One step of the stream held in the local ``state``, and the float it yields: the code render_code inlines.
DRAW: Final = f"state = (state * {MULTIPLIER} + {INCREMENT}) & {MASK}", f"(state >> 11) * {SCALE!r}"
_GOLDEN: Final = 0x9E3779B97F4A7C15


def _splitmix64(value: int) -> int:
    value = (value + _GOLDEN) & MASK
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & MASK
    return value ^ (value >> 31)


class Seeds:
    """The seeds of one device's streams: ``device`` for the render function, :meth:`sub` for each stateful slot."""

    __slots__ = ("_count", "device")

    def __init__(self, seed: int, n: int) -> None:
        digest = hashlib.blake2b(f"{seed}:{n}".encode(), digest_size=8).digest()
        self.device = int.from_bytes(digest, "little")
        self._count = 0

    def sub(self) -> int:
        self._count += 1
        return _splitmix64((self.device + self._count * _GOLDEN) & MASK)


def uniform_source(seed: int) -> Callable[[], float]:
    """``draw() -> float`` in [0, 1), the same stream as the inlined one, from ``seed``."""
    state = seed

    def draw() -> float:
        nonlocal state
        state = (state * MULTIPLIER + INCREMENT) & MASK
        return (state >> 11) * SCALE

    return draw
