"""Arrival patterns: when each device's messages fall due (pure: no fleet)."""

from __future__ import annotations

import statistics

import pytest

from pytest_iotperf.config import resolve
from pytest_iotperf.errors import ConfigError
from pytest_iotperf.fleet.arrival import arrivals_for, scheduled_by_slot
from pytest_iotperf.fleet.spec import phase_of, scheduled_count
from pytest_iotperf.stage_plan import single_stage


def scheduled_within(arrival: str, n: int, rate: float, duration_s: float, seed: int = 0) -> int:
    """How many of device n's messages the workers count as scheduled in ``[0, duration_s)`` (their replay)."""
    plan = single_stage(n + 1, rate, duration_s, 0.0)
    return sum(scheduled_by_slot(arrival, [(n, n)], plan, 1_000_000, seed).values())


def offsets(arrival: str, n: int, rate: float, duration_s: float, seed: int = 0) -> list[float]:
    """Every due offset of device n in [0, duration), as the device walks its schedule."""
    schedule = arrivals_for(arrival, n, rate, seed)
    out: list[float] = []
    offset = schedule.first()
    while offset < duration_s:
        out.append(offset)
        offset = schedule.after(offset, len(out))
    return out


def test_spread_is_todays_schedule() -> None:
    for n in range(50):
        due = offsets("spread", n, 2.0, 5.0)
        assert due == pytest.approx([phase_of(n, 2.0) + k / 2.0 for k in range(len(due))])
        assert len(due) == scheduled_within("spread", n, 2.0, 5.0) == scheduled_count(phase_of(n, 2.0), 2.0, 5.0)


def test_aligned_devices_are_all_due_at_the_same_instants() -> None:
    herd = {tuple(offsets("aligned", n, 4.0, 2.0)) for n in range(100)}
    assert herd == {tuple(k / 4.0 for k in range(8))}
    assert scheduled_within("aligned", 7, 4.0, 2.0) == 8


def test_poisson_gaps_are_exponential_with_mean_one_over_rate() -> None:
    rate = 5.0
    due = offsets("poisson", 3, rate, 2000.0, seed=42)
    gaps = [b - a for a, b in zip([0.0, *due], due, strict=False)]
    assert len(gaps) == pytest.approx(rate * 2000, rel=0.05)
    assert statistics.fmean(gaps) == pytest.approx(1 / rate, rel=0.05)
    assert statistics.stdev(gaps) == pytest.approx(1 / rate, rel=0.05)  # exponential: sd == mean
    assert sum(gap < 0.05 for gap in gaps) / len(gaps) == pytest.approx(1 - 2.718281828 ** (-rate * 0.05), abs=0.02)


def test_poisson_repeats_with_the_seed_and_differs_per_device_and_seed() -> None:
    assert offsets("poisson", 1, 2.0, 30.0, seed=7) == offsets("poisson", 1, 2.0, 30.0, seed=7)
    assert offsets("poisson", 1, 2.0, 30.0, seed=7) != offsets("poisson", 2, 2.0, 30.0, seed=7)
    assert offsets("poisson", 1, 2.0, 30.0, seed=7) != offsets("poisson", 1, 2.0, 30.0, seed=8)


def test_poisson_scheduled_count_is_what_the_device_will_walk() -> None:
    for n in range(20):
        assert scheduled_within("poisson", n, 3.0, 4.0, seed=5) == len(offsets("poisson", n, 3.0, 4.0, seed=5))


def test_arrival_setting_names_its_choices() -> None:
    assert resolve({}, {}, {}).for_run({}).arrival == "spread"
    assert resolve({"arrival": "poisson"}, {}, {}).for_run({}).arrival == "poisson"
    with pytest.raises(ConfigError, match=r"--iot-arrival=herd \(command line\).*'spread' or 'poisson' or 'aligned'"):
        resolve({"arrival": "herd"}, {}, {})
    with pytest.raises(ValueError, match="arrival must be one of"):
        arrivals_for("herd", 0, 1.0)
