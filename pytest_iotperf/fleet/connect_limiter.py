"""New connections per second, for the whole fleet: a token bucket every connect attempt waits on.

IoT Hub (S1: max(100, 12 x units) connects per second) throttles a burst of
CONNECTs, and any broker pays for TLS handshakes at once; ``--iot-connect-rate N``
caps the fleet's attempts: initial connects, their retries, reconnects after an
outage and token renewals alike.

Each worker takes ``N / expect_workers`` (:func:`worker_share`): Locust hands
users to workers evenly, so each worker's share of the connects is its share
of the devices, and nothing has to travel from the master.  A lost worker
leaves its share unused (the fleet stays under the cap, never over it).

The bucket is a GCRA ("virtual scheduling"): an attempt reserves the next free
slot and sleeps until it, so greenlets waiting together go in arrival order
without a lock, and attempts are never closer than ``1 / rate`` apart beyond
the first ``burst``.  Pure: the clock and the sleep are given (``gevent.sleep``
in a worker, a fake in tests).
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["ConnectLimiter", "worker_share"]


def worker_share(connect_rate: float | None, expect_workers: int) -> float | None:
    """This worker's connects per second: the fleet's rate split evenly (None: unlimited)."""
    if connect_rate is None:
        return None
    return connect_rate / max(expect_workers, 1)


class ConnectLimiter:
    """At most ``burst`` attempts at once, then one every ``1 / rate`` seconds.

    Over any window of ``w`` seconds at most ``rate * w + burst`` attempts pass.
    """

    __slots__ = ("_clock", "_interval", "_next", "_sleep", "_tolerance", "rate")

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if not rate > 0:
            raise ValueError(f"connect rate must be positive, got {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst!r}")
        self.rate = rate
        self._interval = 1.0 / rate
        self._tolerance = (burst - 1) * self._interval  # how far ahead of the schedule an attempt may go
        self._next = float("-inf")  # the theoretical time of the next attempt
        self._clock = clock
        self._sleep = sleep

    def reserve(self) -> float:
        """Take the next slot: seconds to wait before it (0 when one is free now)."""
        now = self._clock()
        due = max(self._next, now)
        self._next = due + self._interval
        return max(0.0, due - self._tolerance - now)

    def wait(self) -> None:
        """Block this greenlet until an attempt may go out."""
        delay = self.reserve()
        if delay > 0:
            self._sleep(delay)
