"""The connect-rate token bucket, on a fake clock (no sleeps stand in for synchronisation), and in a real fleet."""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections import Counter
from typing import Any

import pytest
from cutting_proxy import CuttingProxy

from pytest_iotperf import runner
from pytest_iotperf.config import resolve
from pytest_iotperf.embedded.broker import EmbeddedBroker, find_mosquitto
from pytest_iotperf.fleet.connect_limiter import ConnectLimiter, worker_share
from pytest_iotperf.result import build_result
from pytest_iotperf.runner import PerfRun
from pytest_iotperf.wire_reports import FleetReport


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


# -- a real fleet ------------------------------------------------------------------------------------------------


class _StormAtT0:
    """Closes every device connection CUT_AFTER_S after T0 and lets them straight back: a reconnect storm."""

    CUT_AFTER_S = 0.5

    def __init__(self, proxy: CuttingProxy) -> None:
        self.proxy = proxy
        self.cut = 0
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None

    def on_progress(self, state: dict[str, Any]) -> None:
        if self._thread is None and state.get("phase") == "publishing" and state.get("t0"):
            self._thread = threading.Thread(target=self._act, args=(float(state["t0"]),), daemon=True)
            self._thread.start()

    def _act(self, t0: float) -> None:
        # Waiting for an instant of the run's clock is the action under test, not a synchronisation stand-in.
        if not self._cancel.wait(max(0.0, t0 + self.CUT_AFTER_S - time.time())):
            self.cut = self.proxy.cut()
            self.proxy.resume()

    def stop(self) -> None:
        self._cancel.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


@pytest.mark.fleet
@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")
def test_a_fleet_never_connects_faster_than_its_connect_rate(
    no_child_left_behind: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """60 devices on two workers at 20 connects/s, connecting over the ramp and then all dropped at once.

    No 1 s window of the merged connect timeline holds more than the rate (+ each worker's burst of 1),
    the initial connects (paced by the master's spawn rate too) and the reconnect storm (paced by the
    workers' buckets alone: without them every device would be back within the 200 ms backoff cap).
    """
    devices, connect_rate, workers = 60, 20.0, 2
    fleets: list[FleetReport | None] = []

    def keep_fleet_report(*args: Any, fleet: FleetReport | None, **kwargs: Any) -> Any:
        fleets.append(fleet)
        return build_result(*args, fleet=fleet, **kwargs)

    monkeypatch.setattr(runner, "build_result", keep_fleet_report)
    settings = resolve({}, {}, {}).for_run(
        {
            "devices": devices,
            "rate_per_device": 1.0,
            "duration": "5s",
            "qos": 1,
            "workers": workers,
            "connect_rate": connect_rate,
            "reconnect_max": "200ms",
        }
    )
    assert settings.ramp_up_s == pytest.approx(devices / connect_rate)
    with EmbeddedBroker(prefer="mosquitto") as broker:
        endpoint = broker.endpoint
        with CuttingProxy(endpoint.host, endpoint.port) as proxy:
            storm = _StormAtT0(proxy)
            run = PerfRun(settings, endpoint, progress=storm.on_progress)
            # Only the devices go through the proxy; the sink reads the broker itself.
            through_proxy = dataclasses.replace(run.connection, host=proxy.host, port=proxy.port)
            run.fleet_spec = dataclasses.replace(run.fleet_spec, connection=through_proxy)
            try:
                result = run.execute()
            finally:
                storm.stop()
    assert storm.cut == devices
    assert result.reconnects == devices
    assert result.lost == 0 and result.unsent == 0 and result.received == result.sent == result.scheduled

    (fleet,) = fleets
    assert fleet is not None
    buckets = Counter({int(bucket): n for bucket, n in fleet.get("connect_timeline", {}).items()})
    assert sum(buckets.values()) >= 2 * devices  # each connected, and reconnected after the cut
    first, last = min(buckets), max(buckets)
    # 100 ms buckets: ten in a row are a 1 s window.  Each worker's bucket lets one attempt through at once
    # after a quiet spell (burst 1), so two workers may together run one ahead of the schedule each.
    allowed = connect_rate * 1.0 + workers
    for start in range(first, last + 1):
        window = sum(buckets[b] for b in range(start, start + 10))
        assert window <= allowed, f"{window} connects in the second from bucket {start}"
    # The storm itself was spread by the buckets: 60 reconnects at 20/s take about 3 s.
    storm_buckets = Counter({int(b): n for b, n in fleet.get("reconnect_timeline", {}).items()})
    spread_s = (max(storm_buckets) - min(storm_buckets) + 1) / 10
    assert spread_s >= (devices - allowed) / connect_rate
