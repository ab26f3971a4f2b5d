"""A worker's device numbers: ask the master for them, hand one to each new user (see ``numbering.py``).

Only imported inside Locust processes (gevent).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import gevent.event

from pytest_iotperf.fleet.numbering import LocalNumbers

if TYPE_CHECKING:
    from locust.runners import WorkerRunner

__all__ = ["NumberSupply"]


class NumberSupply:
    """Users wait here for a number; requests are sized by Locust's target user count, so one per spawn batch."""

    def __init__(self, runner: WorkerRunner) -> None:
        self.runner = runner
        self.local = LocalNumbers()
        self.waiting = 0  # users waiting for a number now
        self._arrived = gevent.event.Event()  # replaced at each answer: set wakes whoever waited for it

    def take(self, timeout_s: float) -> int | None:
        """A number for a new user; None once the master has none left (a re-dispatched user).

        Raises:
            TimeoutError: the master did not answer within ``timeout_s``.
        """
        local = self.local
        deadline = time.monotonic() + timeout_s
        self.waiting += 1
        try:
            while True:
                number = local.take()
                if number is not None:
                    return number
                if local.exhausted:
                    local.gave_none()
                    return None
                self._ask()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no device number from the master within {timeout_s:g}s")
                self._arrived.wait(remaining)
        finally:
            self.waiting -= 1

    def _ask(self) -> None:
        local = self.local
        count = local.to_ask(int(getattr(self.runner, "target_user_count", 0) or 0))
        if count == 0 and local.asking == 0:
            count = 1  # the target says we hold enough, yet this user found none: ask for its own
        if count:
            local.asked(count)
            self.runner.send_message("iotperf_need_numbers", {"count": count})

    def on_numbers(self, data: dict[str, Any]) -> None:
        """The master's answer: ``{"ranges": [[start, stop], ...], "asked": k}``."""
        self.local.answered(data.get("ranges") or [], int(data.get("asked", 0)))
        arrived, self._arrived = self._arrived, gevent.event.Event()
        arrived.set()

    def status(self) -> dict[str, int]:
        local = self.local
        return {"numbers": local.received, "numbers_free": local.free, "waiting_for_numbers": self.waiting}
