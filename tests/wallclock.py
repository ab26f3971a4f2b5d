"""Wall-clock ceilings in units of a start-up measured on this machine, not in fixed seconds.

The suite runs on shared 2-core machines whose speed drifts about 2x between days: "< 15 s" is slack on one
day and a flake on another. A ceiling here is what the test itself waits for (a timeout, a run's duration, a
budget after a fault) plus a number of child start-ups measured in this session, so it scales with the machine
and a hang still fails it.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

# The heaviest import a run waits for: every Locust master and worker process starts with it.
_CHILD_IMPORT = "import pytest_iotperf.fleet.worker"


@dataclass(frozen=True)
class StartUp:
    """How long one child process takes to start here, now."""

    child_s: float

    def ceiling_s(self, *, startups: float, own_s: float = 0.0) -> float:
        """``own_s`` (what the test waits for by design) plus ``startups`` child start-ups."""
        return own_s + startups * self.child_s

    def __str__(self) -> str:
        return f"one child start-up takes {self.child_s:.2f} s here"


def measure_startup(samples: int = 3) -> StartUp:
    """The median of a few starts of a Python child that imports what a fleet process imports, then exits."""
    durations = []
    for _ in range(samples):
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", _CHILD_IMPORT], check=True)
        durations.append(time.monotonic() - started)
    return StartUp(child_s=statistics.median(durations))
