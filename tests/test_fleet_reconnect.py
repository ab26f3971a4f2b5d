"""Devices ride through a broker outage: reconnect, offline queue, QoS 1 resend, exact accounting.

A real fleet (one Locust worker, 20 devices at QoS 1) publishes through a TCP
proxy of our own (``cutting_proxy``) to an embedded Mosquitto; the MQTT sink
reads the broker directly.  3 s after T0 the proxy closes every connection and
refuses new ones for 3 s; for the half second before, it holds the broker's
PUBACKs back, so the messages of that half second are in flight at the cut.
Only the devices go through the proxy: the test points the fleet spec's
connection at it (``PerfRun.fleet_spec``), the sink keeps the run's connection
to the broker.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from cutting_proxy import CuttingProxy

from pytest_iotperf.config import resolve
from pytest_iotperf.embedded.broker import EmbeddedBroker, find_mosquitto
from pytest_iotperf.fleet.spec import phase_of
from pytest_iotperf.result import RunResult
from pytest_iotperf.runner import PerfRun

pytestmark = [pytest.mark.fleet, pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")]

DEVICES = 20
RATE = 2.0
DURATION_S = 8.0  # cut at 3 s, back at 6 s (+ backoff <= 0.5 s), 2 s of steady state after
CUT_AFTER_S = 3.0  # after T0
OUTAGE_S = 3.0
HOLD_ACKS_S = 0.5  # before the cut


class Outage:
    """Holds acks, cuts the proxy at T0 + CUT_AFTER_S and resumes it OUTAGE_S later, T0 as the run reports it."""

    def __init__(self, proxy: CuttingProxy) -> None:
        self.proxy = proxy
        self.t0: float | None = None
        self.cut_started: float | None = None  # time.time() just before the first connection was closed
        self.cut_ended: float | None = None  # ... and after the last
        self.resumed: float | None = None  # just before new connections were let through again
        self.cut_count = 0
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None

    def on_progress(self, state: dict[str, Any]) -> None:
        if self._thread is None and state.get("phase") == "publishing" and state.get("t0"):
            self.t0 = float(state["t0"])
            self._thread = threading.Thread(target=self._act, daemon=True)
            self._thread.start()

    def _act(self) -> None:
        assert self.t0 is not None
        # Waiting for an instant of the run's clock is the action under test, not a synchronisation stand-in.
        if self._cancel.wait(max(0.0, self.t0 + CUT_AFTER_S - HOLD_ACKS_S - time.time())):
            return
        self.proxy.hold_replies()
        if self._cancel.wait(max(0.0, self.t0 + CUT_AFTER_S - time.time())):
            return
        self.cut_started = time.time()
        self.cut_count = self.proxy.cut()
        self.cut_ended = time.time()
        if self._cancel.wait(OUTAGE_S):
            return
        self.resumed = time.time()
        self.proxy.resume()

    def stop(self) -> None:
        self._cancel.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


@contextmanager
def _outage_run(**extra: Any) -> Iterator[tuple[RunResult, Outage]]:
    settings = resolve({}, {}, {}).for_run(
        {
            "devices": DEVICES,
            "rate_per_device": RATE,
            "duration": f"{DURATION_S:g}s",
            "qos": 1,
            "workers": 1,
            "drain": "10s",
            **extra,
        }
    )
    with EmbeddedBroker(prefer="mosquitto") as broker:
        endpoint = broker.endpoint
        with CuttingProxy(endpoint.host, endpoint.port) as proxy:
            outage = Outage(proxy)
            run = PerfRun(settings, endpoint, progress=outage.on_progress)
            # Only the devices go through the proxy; the sink reads the broker itself.
            through_proxy = dataclasses.replace(run.connection, host=proxy.host, port=proxy.port)
            run.fleet_spec = dataclasses.replace(run.fleet_spec, connection=through_proxy)
            try:
                result = run.execute()
            finally:
                outage.stop()
            assert outage.resumed is not None, "the run ended before the outage was over"
            assert outage.cut_count == DEVICES  # every device was connected through the proxy when cut
            yield result, outage


@pytest.mark.parametrize("clean_session", [True, False], ids=["clean-session", "persistent-session"])
def test_every_device_reconnects_and_nothing_is_lost_at_qos1(no_child_left_behind: None, clean_session: bool) -> None:
    with _outage_run(reconnect_max="500ms", clean_session=clean_session) as (result, outage):
        assert outage.resumed is not None and outage.cut_started is not None
        outage_s = outage.resumed - outage.cut_started
        dup_publishes = outage.proxy.dup_publishes
    assert result.complete, result.errors
    assert result.disconnects == DEVICES and result.reconnects == DEVICES
    assert result.disconnect_reasons == {"connection closed by the broker": DEVICES}
    # Accounting: every scheduled message sent once (first transmissions), every one received.
    assert result.scheduled == result.sent == DEVICES * RATE * DURATION_S
    assert result.dropped_offline == 0 and result.unsent == 0 and result.publish_errors == 0
    assert result.lost == 0 and result.received == result.sent
    # Unacknowledged at the cut: sent again after the reconnect, not counted as sent. The broker had
    # them all (only its PUBACKs were held), so each resend arrives twice: a duplicate, not a receipt.
    assert 0 < result.resent <= DEVICES * RATE * HOLD_ACKS_S + DEVICES
    assert result.duplicates == result.resent
    # A kept session (CONNACK session present) gets the same packet with DUP set; a new one a new packet id.
    assert dup_publishes == (0 if clean_session else result.resent)
    # The outage shows as delay: the first message due after the cut waited for the reconnect.
    # Backoff windows are capped at 500 ms, so every device is back within that (+ a connect) of the resume.
    assert outage_s - 0.5 <= result.max_delay_ms / 1000 <= outage_s + 0.5 + 0.4, (result.max_delay_ms, outage_s)
    assert outage_s - 0.1 <= result.reconnect_max_ms / 1000 <= outage_s + 0.5 + 0.4, result.reconnect_max_ms
    assert result.reconnect_p50_ms <= result.reconnect_p99_ms <= result.reconnect_max_ms
    assert DEVICES * (outage_s - 0.1) <= result.offline_device_s <= DEVICES * (outage_s + 0.9)
    # Devices connected at the end of each slot: all of them at first and at the end, none in the outage.
    connected = [point.connected for point in result.timeline if point.connected is not None]
    assert connected[0] == DEVICES and connected[-1] == DEVICES and 0 in connected, connected


def test_an_offline_queue_of_one_drops_what_the_schedule_predicts(no_child_left_behind: None) -> None:
    # A 50 ms backoff cap puts every reconnect right after the resume, so the schedule
    # says which messages fell due offline up to a few due times near the cut and the resume.
    with _outage_run(reconnect_max="50ms", offline_queue=1) as (result, outage):
        assert outage.t0 is not None and outage.cut_started is not None and outage.cut_ended is not None
        assert outage.resumed is not None
    assert result.complete, result.errors
    assert result.reconnects == DEVICES and result.unsent == 0
    # Exact: every scheduled message was either sent or dropped by its device while offline.
    assert result.scheduled == result.sent + result.dropped_offline + result.unsent
    assert result.lost == 0 and result.received == result.sent

    # Offline for certain: due after the cut was noticed and before the resume.  Near either edge
    # it depends on the device: the scheduler runs a few ms late, a disconnect is read a moment after
    # the cut, a reconnect lands within the last backoff window plus a CONNACK after the resume.
    back_by = outage.cut_ended + result.reconnect_max_ms / 1000 + 0.05
    fewest = most = 0
    for index in range(DEVICES):
        dues = _due_times(outage.t0, phase_of(index, RATE))
        certain = sum(1 for due in dues if outage.cut_ended + 0.1 <= due < outage.resumed)
        maybe = sum(1 for due in dues if outage.cut_started - 0.05 <= due < outage.cut_ended + 0.1)
        maybe += sum(1 for due in dues if outage.resumed <= due < back_by)
        fewest += max(0, certain - 1)  # the queue keeps one
        most += max(0, certain + maybe - 1)
    assert fewest <= result.dropped_offline <= most, (fewest, result.dropped_offline, most)
    assert back_by - outage.resumed < 0.35  # every device was back right after the resume: the band is narrow


def _due_times(t0: float, phase_s: float) -> list[float]:
    count = math.ceil((DURATION_S - phase_s) * RATE - 1e-9)
    return [t0 + phase_s + k / RATE for k in range(count)]
