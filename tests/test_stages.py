"""Stages on the fleet side, pure: staged due times, their replay onto the due-slot grid, the stages setting."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from test_arrival import scheduled_within

import pytest_iotperf
from pytest_iotperf.config import resolve
from pytest_iotperf.errors import ConfigError
from pytest_iotperf.fleet.arrival import StagedArrivals, arrivals_for, scheduled_by_slot
from pytest_iotperf.fleet.spec import phase_of
from pytest_iotperf.stage_plan import Stage, StageSpec, device_life, due_offset_us, single_stage, starts_dormant

PLAN = (StageSpec(0.0, 1.5, 4, 2.0, 1.0), StageSpec(1.5, 1.0, 8, 2.0, 0.5), StageSpec(2.5, 1.5, 4, 4.0, 0.5))


def walk(arrival: str, n: int, index: int, plan: tuple[StageSpec, ...], seed: int = 0) -> list[tuple[float, int]]:
    """(offset, stage) of every message device n walks, as the device does."""
    schedule = StagedArrivals(arrival, n, index, plan, seed)
    out: list[tuple[float, int]] = []
    offset = schedule.first()
    while offset != math.inf:
        out.append((offset, schedule.stage))
        offset = schedule.after(offset, len(out))
    return out


def replay_by_walking(
    arrival: str, count: int, plan: tuple[StageSpec, ...], slot_us: int, seed: int = 0, stop_s: float | None = None
) -> Counter[int]:
    slots: Counter[int] = Counter()
    for n in range(count):
        for offset, _ in walk(arrival, n, n, plan, seed):
            if stop_s is None or offset < stop_s:
                slots[due_offset_us(offset) // slot_us] += 1
    return slots


def test_each_stage_restarts_the_schedule_at_its_start_with_its_rate() -> None:
    # Device 5 takes part in stage 1 only; device 1 in all three (rate 2, 2, then 4).
    only_stage_1 = walk("spread", 5, 5, PLAN)
    assert [offset for offset, _ in only_stage_1] == pytest.approx([1.5 + phase_of(5, 2.0) + k / 2.0 for k in range(2)])
    assert [stage for _, stage in only_stage_1] == [1, 1]
    due = walk("spread", 1, 1, PLAN)
    assert [stage for _, stage in due] == [0] * 3 + [1] * 2 + [2] * 6
    assert due[5][0] == pytest.approx(2.5 + phase_of(1, 4.0))
    assert [offset for offset, _ in walk("aligned", 2, 2, PLAN)] == pytest.approx(
        [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 2.75, 3.0, 3.25, 3.5, 3.75])


def test_stage_zero_is_a_run_without_stages_poisson_stream_included() -> None:
    one = single_stage(3, 2.0, 20.0, 1.0)
    for arrival in ("spread", "aligned", "poisson"):
        schedule = arrivals_for(arrival, 2, 2.0, seed=9)
        expected, offset = [], schedule.first()
        while offset < 20.0:
            expected.append(offset)
            offset = schedule.after(offset, len(expected))
        assert [offset for offset, _ in walk(arrival, 2, 2, one, seed=9)] == expected
        assert len(expected) == scheduled_within(arrival, 2, 2.0, 20.0, seed=9)
    # Later stages draw their own poisson streams.
    later = walk("poisson", 1, 1, (StageSpec(0.0, 30.0, 2, 2.0, 0.0), StageSpec(30.0, 30.0, 2, 2.0, 0.0)), seed=9)
    stage_0 = [offset for offset, stage in later if stage == 0][:5]
    stage_1 = [offset - 30.0 for offset, stage in later if stage == 1][:5]
    assert stage_0 != pytest.approx(stage_1)


@pytest.mark.parametrize("arrival", ["spread", "aligned", "poisson"])
@pytest.mark.parametrize("stop_s", [None, 2.1])
def test_replay_per_due_slot_is_what_the_devices_walk(arrival: str, stop_s: float | None) -> None:
    for slot_us in (100_000, 500_000):
        replay = scheduled_by_slot(arrival, [(n, n) for n in range(8)], PLAN, slot_us, seed=4, stop_s=stop_s)
        assert +replay == +replay_by_walking(arrival, 8, PLAN, slot_us, seed=4, stop_s=stop_s)
    # Stage figures: devices x rate x duration, each stage on its own whole slots.
    if arrival != "poisson" and stop_s is None:
        replay = scheduled_by_slot(arrival, [(n, n) for n in range(8)], PLAN, 500_000)
        per_stage = [sum(n for slot, n in replay.items() if s.start_s <= slot * 0.5 < s.end_s) for s in PLAN]
        assert per_stage == [4 * 2 * 1.5, 8 * 2 * 1.0, 4 * 4 * 1.5]


def test_replay_is_exact_where_offsets_fall_on_slot_boundaries_and_is_fast() -> None:
    # aligned at 10/s: every tenth of a second is a slot boundary and a due time of every device
    plan = (StageSpec(0.0, 2.0, 50, 10.0, 0.0),)
    replay = scheduled_by_slot("aligned", [(n, n) for n in range(50)], plan, 100_000)
    assert replay == Counter({slot: 50 for slot in range(20)})
    big = (StageSpec(0.0, 600.0, 10_000, 1.0, 1.0),)
    replay = scheduled_by_slot("spread", [(n, n) for n in range(10_000)], big, 1_000_000)
    assert sum(replay.values()) == 6_000_000 and set(replay.values()) == {10_000}


def test_stages_setting_sets_devices_duration_and_the_plan() -> None:
    settings = resolve({"stages": "4@1.5s,8@1s,4x2@1.5s"}, {}, {"rate": ("2", "pytest.ini")}).for_run({})
    assert (settings.devices, settings.duration_s, settings.ramp_up_s) == (8, 4.0, 0.25)  # auto: >= 0.25 s
    plan = [(stage.start_s, stage.devices, stage.rate) for stage in settings.stage_plan]
    assert plan == [(0.0, 4, 2.0), (1.5, 8, 2.0), (2.5, 4, 2.0)]
    assert settings.describe()["stages"] == "4@1.5s,8@1s,4x2@1.5s"
    assert settings.planned_messages == 4 * 2 * 1.5 + 8 * 2 * 1 + 4 * 2 * 1.5  # what abort budgets count on
    code = resolve({}, {}, {"devices": ("50", "pytest.ini")}).for_run(
        {"stages": [Stage("1m", devices=10), Stage(30, devices=20, rate_per_device=3.0)]}
    )
    assert (code.devices, code.duration_s) == (20, 90.0)  # the ini's devices give way to the stages
    plain = resolve({}, {}, {}).for_run({"devices": 3, "duration": "2s"})
    assert plain.stages is None and plain.stage_plan == single_stage(3, 1.0, 2.0, 0.25)
    assert pytest_iotperf.Stage is Stage


def test_bad_stages_name_the_stage_and_the_source() -> None:
    with pytest.raises(ConfigError, match=r"--iot-stages=4@1s,five@2s \(command line\): stage 'five@2s'"):
        resolve({"stages": "4@1s,five@2s"}, {}, {})
    # What the text alone gets wrong stops the session at its start, before any test runs.
    for text, why in (("4@1s,8@0s", "duration must be longer than 0"), ("0@1s", "at least 1 device"),
                      ("4x0@1s", "rate per device must be a number > 0")):
        with pytest.raises(ConfigError, match=rf"--iot-stages={text} \(command line\): stage '[^']+': .*{why}"):
            resolve({"stages": text}, {}, {})
    with pytest.raises(ConfigError, match=r"iot_perf.run\(stages=\.\.\.\) \(test code\): stage 2 \(0@1s\): devices"):
        resolve({}, {}, {}).for_run({"stages": [Stage("1s", devices=2), Stage("1s", devices=0)]})
    with pytest.raises(ConfigError, match=r"--iot-stages \(command line\): .*100 ms grid"):
        resolve({"stages": "4@1.05s,5@1s"}, {}, {}).for_run({})
    with pytest.raises(ConfigError, match=r"expected a list of pytest_iotperf.Stage"):
        resolve({}, {}, {}).for_run({"stages": [("1s", 3)]})


def test_devices_or_duration_beside_stages_is_refused_naming_both() -> None:
    with pytest.raises(ConfigError, match=r"iot_perf.run\(stages=\.\.\.\) \(test code\) and --iot-devices \(command"):
        resolve({"devices": "5"}, {}, {}).for_run({"stages": "4@1s"})
    with pytest.raises(ConfigError, match=r"run\(stages=\.\.\.\) \(test code\) and iot_perf.run\(duration=\.\.\.\)"):
        resolve({}, {}, {}).for_run({"stages": "4@1s", "duration": "3s"})
    with pytest.raises(ConfigError, match=r"IOTPERF_STAGES \(environment\) and --iot-duration \(command line\)"):
        resolve({"duration": "5s"}, {"IOTPERF_STAGES": "4@1s"}, {})
    # The command line's stages override the test code's duration like any setting.
    assert resolve({"stages": "4@1s"}, {}, {}).for_run({"duration": "3s"}).duration_s == 1.0


def test_device_life_joins_over_the_ramp_and_leaves_at_the_start() -> None:
    plan = (StageSpec(0.0, 2.0, 2, 1.0, 1.0), StageSpec(2.0, 2.0, 6, 1.0, 1.0), StageSpec(4.0, 2.0, 2, 1.0, 0.0))
    assert [starts_dormant(index, plan) for index in (0, 1, 2, 5)] == [False, False, True, True]
    assert device_life(0, plan) == ()  # stage 0's: connected before T0, to the end
    # The 4 added devices connect evenly over the second stage's ramp [1 s, 2 s), and leave when the third starts.
    assert [device_life(index, plan) for index in (2, 5)] == [
        ((1.0, True, 1), (4.0, False, 2)),
        ((1.75, True, 1), (4.0, False, 2)),
    ]
