"""How a sink process ends its read-back: the drain, shared by the MQTT and the Event Hubs sink.

Once the fleet has reported what it sent, the parent sends
``{"cmd": "drain", "expected": N, "timeout_s": D, "idle_s": I}``.  The sink
keeps reading until N distinct messages of the run arrived (``complete``),
or D passed (``timeout``).  ``expected: -1`` means "unknown" (several Event
Hubs consumers, none knowing its share): it then ends once no message at all
arrived for I seconds (``idle``).  EOF on stdin before a drain command ends
it too (``stdin closed``).  These four strings are the report's ``drain``
field, read by ``sinks.merge`` and ``result.build_result``.

The threads that record call :meth:`Drain.arrived` after each message (or
batch); it only takes a lock when a waiting drain has its count, so the
per-message cost is an attribute write and a comparison.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

COMPLETE: Final = "complete"
TIMEOUT: Final = "timeout"
IDLE: Final = "idle"
STDIN_CLOSED: Final = "stdin closed"

#: From the worst to the best: a merged report keeps the worst of its sinks' drains.
WORST_FIRST: Final = (TIMEOUT, STDIN_CLOSED, IDLE, COMPLETE)

DEFAULT_TIMEOUT_S: Final = 30.0
DEFAULT_IDLE_S: Final = 2.0

_NEVER: Final = sys.maxsize


class Drain:
    """Waits for a sink's distinct message count, woken by the recording threads.

    ``received`` reads the count (a plain int read; no lock needed under the GIL).
    """

    def __init__(self, received: Callable[[], int]) -> None:
        self._received = received
        self._condition = threading.Condition(threading.Lock())
        # The count a waiting drain needs; _NEVER when none waits, so arrivals never take the lock.
        self._wake_at = _NEVER
        self.last_arrival = time.monotonic()

    def arrived(self, received: int) -> None:
        """Note an arrival (a message or a batch, of any run); ``received`` is the distinct count after it."""
        self.last_arrival = time.monotonic()
        if received >= self._wake_at:
            with self._condition:
                self._condition.notify_all()

    def wait(self, expected: int, timeout_s: float, idle_s: float = DEFAULT_IDLE_S) -> str:
        """Wait for ``expected`` distinct messages (``-1``: until idle for ``idle_s``) or ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._condition:
            # Set under the lock before the count is checked: an arrival that reads it after
            # notifies us once we wait; one that read it before is already in the count.
            self._wake_at = expected if expected >= 0 else _NEVER
            # Idle is measured from the later of the drain's start and the last arrival.
            self.last_arrival = max(self.last_arrival, time.monotonic())
            try:
                while True:
                    now = time.monotonic()
                    if expected >= 0 and self._received() >= expected:
                        return COMPLETE
                    if expected < 0 and now - self.last_arrival >= idle_s:
                        return IDLE
                    if now >= deadline:
                        return TIMEOUT
                    wake = deadline if expected >= 0 else min(deadline, self.last_arrival + idle_s)
                    self._condition.wait(max(wake - now, 0.001))
            finally:
                self._wake_at = _NEVER


def serve_drain(commands: Iterable[dict[str, Any]], drain: Drain) -> str:
    """Read commands until ``drain`` and run it; ``stdin closed`` when they end first. Returns the drain result."""
    for command in commands:
        if command.get("cmd") == "drain":
            return drain.wait(
                int(command.get("expected", -1)),
                float(command.get("timeout_s", DEFAULT_TIMEOUT_S)),
                float(command.get("idle_s", DEFAULT_IDLE_S)),
            )
    return STDIN_CLOSED
