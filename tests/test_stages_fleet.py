"""Stages and arrival patterns on a real fleet (embedded Mosquitto): devices join and leave per stage, every
message is accounted on the due-slot grid, and aligned arrivals send the whole fleet within 10 ms."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from pytest_iotperf import Stage
from pytest_iotperf import result as result_module
from pytest_iotperf import runner as runner_module
from pytest_iotperf.broker_endpoint import BrokerEndpoint
from pytest_iotperf.config import resolve
from pytest_iotperf.embedded.broker import EmbeddedBroker, find_mosquitto
from pytest_iotperf.result import RunResult
from pytest_iotperf.runner import PerfRun
from pytest_iotperf.wire_reports import FleetReport

pytestmark = pytest.mark.fleet


@pytest.fixture(scope="module")
def mosquitto() -> Iterator[BrokerEndpoint]:
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed")
    with EmbeddedBroker(prefer="mosquitto") as broker:
        yield broker.endpoint


def run_with_fleet_report(
    monkeypatch: pytest.MonkeyPatch, broker: BrokerEndpoint, **settings: Any
) -> tuple[RunResult, FleetReport]:
    """A real run, and the master's fleet report it was built from (the result keeps only its figures)."""
    seen: list[FleetReport] = []
    build_result = result_module.build_result  # what runner.py calls (patched there below)

    def keep_fleet_report(*args: Any, **kwargs: Any) -> RunResult:
        seen.append(kwargs["fleet"] if "fleet" in kwargs else args[1])
        return build_result(*args, **kwargs)

    monkeypatch.setattr(runner_module, "build_result", keep_fleet_report)
    result = PerfRun(resolve({}, {}, {}).for_run({"drain": "5s", **settings}), broker).execute()
    assert len(seen) == 1
    return result, seen[0]


def by_stage(slots: dict[str, int], starts: list[int]) -> list[int]:
    """Per-slot counts summed per stage (1 s slots, stages starting at whole seconds)."""
    edges = [*starts, 10**9]
    return [sum(n for slot, n in slots.items() if lo <= int(slot) < hi) for lo, hi in itertools.pairwise(edges)]


def test_stages_add_and_drop_devices_and_account_every_message_by_due_slot(
    mosquitto: BrokerEndpoint, monkeypatch: pytest.MonkeyPatch, no_child_left_behind: None
) -> None:
    stages = [
        Stage("1s", devices=4),
        Stage("1s", devices=8),  # adds 4, connecting during the 1 s before it
        Stage("1s", devices=4, rate_per_device=4.0),  # drops them
        Stage("1s", devices=8, ramp_up="0.5s"),  # takes them back: same devices, connected again
    ]
    result, fleet = run_with_fleet_report(monkeypatch, mosquitto, stages=stages, rate_per_device=2.0, workers=1, qos=1)
    assert fleet["due_slot_us"] == 1_000_000
    assert fleet["dormant"] == 4 and fleet["stage_joins"] == 8 and fleet["stage_leaves"] == 4
    assert (result.stage_joins, result.stage_leaves) == (8, 4)
    assert fleet["disconnects"] == 0 and fleet["reconnects"] == 0  # planned hang-ups are no outage
    assert result.devices == result.connected == 8 and result.connect_failures == 0
    # Every stage's load, exactly: devices x rate x duration, replayed and sent by due slot.
    assert by_stage(fleet["scheduled_by_due_slot"], [0, 1, 2, 3]) == [4 * 2, 8 * 2, 4 * 4, 8 * 2]
    assert fleet["sent_by_due_slot"] == fleet["scheduled_by_due_slot"]
    assert sum(fleet["sent_by_due_slot"].values()) == result.sent == result.scheduled == 56
    assert result.received == result.sent and result.lost == 0 and result.duplicates == 0
    assert len(fleet["stage_lateness"]) == 4 and fleet["stage_lateness"][0]["count"] == 8
    assert sum(int(str(h["count"])) for h in fleet["stage_lateness"]) == result.sent
    # The result's stages are these slots merged (helper figures: due_figures.py).
    assert [(stage.devices, stage.sent, stage.received, stage.lost) for stage in result.stages] == [
        (4, 8, 8, 0), (8, 16, 16, 0), (4, 16, 16, 0), (8, 16, 16, 0)
    ]
    # The same 8 device ids published (numbers 0-7), none twice.
    assert sorted(fleet["sent_by_device"].values()) == [4, 4, 4, 4, 10, 10, 10, 10]


def test_aligned_arrivals_send_the_whole_fleet_within_10_ms_spread_does_not(
    mosquitto: BrokerEndpoint, monkeypatch: pytest.MonkeyPatch, no_child_left_behind: None
) -> None:
    common: dict[str, Any] = {"devices": 50, "rate_per_device": 2.0, "duration": "2s", "workers": 1, "qos": 0}
    aligned, fleet = run_with_fleet_report(monkeypatch, mosquitto, arrival="aligned", **common)
    assert aligned.sent == aligned.received == 200
    peak = fleet["sent_peak_10ms"]
    assert peak is not None and peak["sent"] == 50 and peak["at_s"] in (0.0, 0.5, 1.0, 1.5)
    assert aligned.sent_peak_10ms == {"at_s": peak["at_s"], "sent": 50}
    spread, fleet = run_with_fleet_report(monkeypatch, mosquitto, arrival="spread", **common)
    assert spread.sent == 200
    peak = fleet["sent_peak_10ms"]
    assert peak is not None and peak["sent"] <= 10  # 100 msg/s spread evenly: about one per 10 ms
