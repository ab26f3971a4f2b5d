"""What a run running on another thread shows the thread that waits for it: its latest figures and its end.

The run's thread publishes each progress snapshot and, once, how it ended;
any other thread reads the latest snapshot or blocks until a newer one (or
the end) arrives.  Pure: threading only.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Ended(Generic[T]):
    """How the run's thread ended: its value, or the exception it raised."""

    value: T | None = None
    error: BaseException | None = None


class LiveState(Generic[T]):
    """The latest snapshot (numbered, so a reader can wait for a newer one) and the end, behind one condition."""

    def __init__(self, first: dict[str, Any]) -> None:
        self._condition = threading.Condition()
        self._snapshot = dict(first)
        self._version = 0
        self._ended: Ended[T] | None = None

    def publish(self, snapshot: dict[str, Any]) -> None:
        """A newer snapshot (the run's thread)."""
        with self._condition:
            self._snapshot = dict(snapshot)
            self._version += 1
            self._condition.notify_all()

    def end(self, ended: Ended[T]) -> None:
        """The run's thread is done (called once, last)."""
        with self._condition:
            self._ended = ended
            self._condition.notify_all()

    def latest(self) -> tuple[int, dict[str, Any]]:
        with self._condition:
            return self._version, dict(self._snapshot)

    @property
    def ended(self) -> Ended[T] | None:
        with self._condition:
            return self._ended

    def wait_newer(self, version: int, timeout_s: float | None) -> tuple[int, dict[str, Any], Ended[T] | None]:
        """Block until a snapshot newer than ``version``, the end, or ``timeout_s``; then the state as it is."""
        with self._condition:
            self._condition.wait_for(lambda: self._version > version or self._ended is not None, timeout_s)
            return self._version, dict(self._snapshot), self._ended


__all__ = ["Ended", "LiveState"]
