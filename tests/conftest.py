"""Fixtures shared by the tests that start processes."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psutil
import pytest
from wallclock import StartUp, measure_startup


def live_children() -> set[int]:
    """PIDs of this process's descendants that are still running (zombies are gone already)."""
    return {p.pid for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE}


@pytest.fixture
def no_child_left_behind() -> Iterator[None]:
    """Fail the test if it leaves a process behind (after 5 s for them to exit)."""
    before = live_children()
    yield
    deadline = time.monotonic() + 5
    while (live_children() - before) and time.monotonic() < deadline:
        time.sleep(0.05)  # processes exit asynchronously; bounded by the deadline
    left = live_children() - before
    assert not left, f"processes left behind by the run: {[psutil.Process(p).cmdline() for p in left]}"


@pytest.fixture(scope="session")
def startup() -> StartUp:
    """A child start-up measured once per session: the unit of the tests' wall-clock ceilings (see wallclock.py)."""
    return measure_startup()
