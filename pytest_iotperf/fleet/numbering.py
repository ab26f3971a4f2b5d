"""Global device numbers: the master hands each worker disjoint ones, never one twice.

Locust decides how many users (devices) each worker runs, and changes its mind
when a worker is lost (it re-dispatches that worker's users to the survivors).
So numbers are not derived from worker indexes; they are asked for:

* a worker whose Locust target user count exceeds the numbers it holds or
  asked for sends ``iotperf_need_numbers`` ``{"count": k}``;
* the master answers ``iotperf_numbers`` ``{"ranges": [[start, stop], ...],
  "asked": k}`` from its :class:`NumberPool`: the lowest numbers left, fewer
  than asked (maybe none) once the pool runs dry;
* each new user takes one number from its worker's :class:`LocalNumbers`; a
  user that finds none left anywhere (a re-dispatched user of a lost worker:
  its numbers went with it) gets None and never connects.

A number handed out is never handed out again, even if its worker dies
before using it: a device id then never appears twice in one run, and the
credentials row of device n is used by one connection at most.

Pure: imports neither locust nor gevent (the waiting is ``fleet/worker_numbers.py``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

__all__ = ["TEST_WORKER_REMOVAL_ENV", "LocalNumbers", "NumberPool", "Ranges", "count_of"]

#: Tests only: seconds a lost worker stays "missing" before Locust drops it and re-dispatches its users to
#: the others (Locust waits a minute: longer than a short test runs).  Read by the master.
TEST_WORKER_REMOVAL_ENV = "IOTPERF_TEST_WORKER_REMOVAL_S"

#: Half-open ranges ``[start, stop)`` of device numbers, as they travel (JSON lists).
Ranges = list[list[int]]


def count_of(ranges: Iterable[Sequence[int]]) -> int:
    return sum(stop - start for start, stop in ranges)


class NumberPool:
    """The master's numbers ``offset .. offset + count - 1``, handed out lowest first, each once."""

    def __init__(self, offset: int, count: int) -> None:
        if offset < 0 or count < 0:
            raise ValueError(f"device numbers need offset >= 0 and count >= 0, not {offset}, {count}")
        self.offset = offset
        self.count = count
        self._next = offset
        self._end = offset + count
        self.given: dict[str, int] = {}  # worker node id -> numbers handed to it

    @property
    def remaining(self) -> int:
        return self._end - self._next

    @property
    def exhausted(self) -> bool:
        return self._next >= self._end

    def take(self, count: int, worker: str = "") -> Ranges:
        """Up to ``count`` numbers (fewer once the pool runs dry) as ranges."""
        if count <= 0 or self.exhausted:
            return []
        start = self._next
        self._next = min(self._end, start + count)
        self.given[worker] = self.given.get(worker, 0) + self._next - start
        return [[start, self._next]]


class LocalNumbers:
    """A worker's side: numbers received and not yet used, requests in flight, whether the pool ran dry.

    Numbers are used in the order received (lowest first).
    """

    def __init__(self) -> None:
        self._free: deque[range] = deque()
        self.free = 0  # numbers held and not yet used
        self.received = 0  # numbers received in all
        self.used = 0  # numbers given to devices
        self.none_left = 0  # users that found the pool dry (re-dispatched users): they get no number
        self.asking = 0  # numbers asked for and not answered yet
        self.exhausted = False  # the master's pool ran dry: nothing more will come

    def to_ask(self, target_users: int) -> int:
        """How many numbers to ask for now so every one of ``target_users`` users can get one.

        Users that already got a number or got none count as served.
        """
        if self.exhausted:
            return 0
        return max(0, target_users - (self.used + self.none_left + self.free + self.asking))

    def asked(self, count: int) -> None:
        self.asking += count

    def answered(self, ranges: Iterable[Sequence[int]], asked: int) -> None:
        """The master's answer to a request for ``asked`` numbers."""
        got = 0
        for start, stop in ranges:
            if stop > start:
                self._free.append(range(start, stop))
                got += stop - start
        self.free += got
        self.received += got
        self.asking = max(0, self.asking - asked)
        if got < asked:
            self.exhausted = True

    def take(self) -> int | None:
        """The next free number, or None when none is held now."""
        while self._free:
            first = self._free[0]
            if not first:
                self._free.popleft()
                continue
            number = first.start
            rest = first[1:]
            if rest:
                self._free[0] = rest
            else:
                self._free.popleft()
            self.free -= 1
            self.used += 1
            return number
        return None

    def gave_none(self) -> None:
        """A user found the pool dry: it will not run a device."""
        self.none_left += 1
