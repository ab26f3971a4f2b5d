"""The connect-rate token bucket, on a fake clock: no sleeps stand in for synchronisation."""

from __future__ import annotations

import random

import pytest

from pytest_iotperf.fleet.connect_limiter import ConnectLimiter, worker_share


class FakeClock:
    """A clock that only moves when something sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _limiter(rate: float, burst: int = 1) -> tuple[ConnectLimiter, FakeClock]:
    clock = FakeClock()
    return ConnectLimiter(rate, burst, clock=clock, sleep=clock.sleep), clock


def test_the_first_attempt_goes_at_once_then_one_per_interval() -> None:
    limiter, clock = _limiter(20.0)
    times = []
    for _ in range(5):
        limiter.wait()
        times.append(clock.now)
    assert times == pytest.approx([1000.0, 1000.05, 1000.10, 1000.15, 1000.20])


def test_a_burst_passes_at_once_then_the_rate_holds() -> None:
    limiter, _clock = _limiter(10.0, burst=3)
    waits = [limiter.reserve() for _ in range(6)]  # six greenlets arriving together
    assert waits == pytest.approx([0.0, 0.0, 0.0, 0.1, 0.2, 0.3])


def test_greenlets_waiting_together_get_successive_slots() -> None:
    # Reservations, not polling: each caller is told its own slot, in arrival order.
    limiter, clock = _limiter(4.0)
    assert [limiter.reserve() for _ in range(4)] == pytest.approx([0.0, 0.25, 0.5, 0.75])
    clock.now += 0.75
    assert limiter.reserve() == pytest.approx(0.25)


def test_an_idle_bucket_refills_to_its_burst_not_beyond() -> None:
    limiter, clock = _limiter(10.0, burst=2)
    for _ in range(4):
        limiter.wait()
    clock.now += 60.0  # a long quiet spell saves up no more than the burst
    assert [limiter.reserve() for _ in range(4)] == pytest.approx([0.0, 0.0, 0.1, 0.2])


@pytest.mark.parametrize(("rate", "burst"), [(20.0, 1), (20.0, 3), (7.5, 2), (1000.0, 5)])
def test_no_window_holds_more_than_rate_times_width_plus_burst(rate: float, burst: int) -> None:
    limiter, clock = _limiter(rate, burst)
    rng = random.Random(7)
    attempts: list[float] = []
    for _ in range(400):
        if rng.random() < 0.3:
            clock.now += rng.uniform(0.0, 3.0 / rate)  # arrivals come unevenly, sometimes in crowds
        limiter.wait()
        attempts.append(clock.now)
    width = 1.0
    for i, start in enumerate(attempts):
        inside = sum(1 for t in attempts[i:] if t <= start + width + 1e-9)
        assert inside <= rate * width + burst


def test_the_fleet_rate_is_split_evenly_over_the_workers() -> None:
    assert worker_share(None, 4) is None
    assert worker_share(20.0, 1) == 20.0
    assert worker_share(20.0, 4) == 5.0
    assert worker_share(20.0, 0) == 20.0


@pytest.mark.parametrize("rate", [0.0, -1.0, float("nan")])
def test_a_rate_must_be_positive(rate: float) -> None:
    with pytest.raises(ValueError, match="connect rate"):
        ConnectLimiter(rate)
