"""Clock skew made visible: a worker whose clock is shifted on purpose is measured, reported and corrected."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pytest_iotperf.broker_endpoint import BrokerEndpoint
from pytest_iotperf.config import resolve
from pytest_iotperf.embedded.broker import EmbeddedBroker, find_mosquitto
from pytest_iotperf.fleet.clock import TEST_CLOCK_SHIFT_ENV, ClockSample, estimate
from pytest_iotperf.runner import PerfRun

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")
SHIFT_S = 0.250


def test_estimate_picks_the_tightest_exchange() -> None:
    # Worker clock 100 ms ahead; the second exchange has the shortest round trip.
    samples = [ClockSample(0.0, 0.130, 0.131, 0.060), ClockSample(1.0, 1.102, 1.1021, 1.0041)]
    found = estimate(samples)
    assert found is not None and found.samples == 2
    assert abs(found.offset_s - 0.100) < 0.0021 and found.uncertainty_s == pytest.approx(0.002, abs=1e-6)
    assert estimate([]) is None


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerEndpoint]:
    with EmbeddedBroker(prefer="mosquitto") as embedded:
        yield embedded.endpoint


@pytest.mark.fleet
@pytest.mark.parametrize("correct", [False, True], ids=["reported", "corrected"])
def test_shifted_worker_clock_is_recovered(
    broker: BrokerEndpoint, monkeypatch: pytest.MonkeyPatch, correct: bool
) -> None:
    monkeypatch.setenv(TEST_CLOCK_SHIFT_ENV, str(SHIFT_S))  # local workers inherit it; master and sink do not
    cli = {"clock_correction": "true"} if correct else {}
    settings = resolve(cli, {}, {}).for_run(
        {"devices": 10, "rate_per_device": 5, "duration": "2s", "workers": 1, "drain": "5s"}
    )
    result = PerfRun(settings, broker).execute()
    (clock,) = result.clock_offsets.values()
    assert abs(clock["offset_ms"] - SHIFT_S * 1000) < 5 + clock["uncertainty_ms"]  # recovered within a few ms
    assert clock["uncertainty_ms"] < 5 and clock["samples"] >= 4
    assert result.received == result.sent == 100
    if correct:
        assert result.clock_corrected
        assert 0 < result.p50_delay_ms < 50  # the true delay through the broker
        assert not any("clock differs" in w for w in result.warnings)
    else:
        # Intended times are stamped on the shifted clock: the delays come out ~250 ms short, and the result says so.
        assert -SHIFT_S * 1000 - 5 < result.p50_delay_ms < -SHIFT_S * 1000 + 50
        assert any("use --iot-clock-correction" in w for w in result.warnings)
