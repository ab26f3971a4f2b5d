"""The escalation run in stages without a fleet: each stage judged on its own figures, and the live watch."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_iotperf.capacity_stages import escalation_settings, judged_on_stage, stage_outcomes
from pytest_iotperf.capacity_watch import EscalationWatch, allowed_delay_s, p95_bounds_ms
from pytest_iotperf.config import resolve
from pytest_iotperf.errors import ConfigError
from pytest_iotperf.metrics import DelayHistogram
from pytest_iotperf.pipeline import RunOutcome, judge, load_slos
from pytest_iotperf.result import build_result
from pytest_iotperf.slo import parse_slo
from pytest_iotperf.stage_plan import StageSpec

RATE = 10.0
HOLD = 2.0
COUNTS = (10, 20, 40)
# As escalation_settings plans it: holds of 2 s, and 1 s connect stages at the earlier count between them.
PLAN = (
    StageSpec(0.0, HOLD, 10, RATE, 1.0),
    StageSpec(2.0, 1.0, 10, RATE, 0.0),
    StageSpec(3.0, HOLD, 20, RATE, 1.0),
    StageSpec(5.0, 1.0, 20, RATE, 0.0),
    StageSpec(6.0, HOLD, 40, RATE, 1.0),
)


def escalation_run(
    delays_ms: dict[int, float],
    *,
    stopped_at_s: float | None = None,
    late_ms: dict[int, float] | None = None,
    cpu_percent: float = 20.0,
    slos: tuple[str, ...] = ("p95_delay_ms < 250",),
    broke: str | None = None,
) -> RunOutcome:
    """A run over PLAN on a 1 s due grid: every message of hold i (and the connect stage after it) delayed
    ``delays_ms[i]``, all received; ``late_ms[i]`` the lateness p99 of hold i.

    ``stopped_at_s``: the run was stopped there (nothing due after it was sent).
    """
    end_s = stopped_at_s if stopped_at_s is not None else PLAN[-1].end_s
    sent: dict[str, int] = {}
    by_due: dict[str, Any] = {}
    for index, stage in enumerate(PLAN):
        for slot in range(int(stage.start_s), int(stage.end_s)):
            due = max(0.0, min(1.0, end_s - slot))
            count = round(stage.devices * RATE * due)
            if count == 0:
                continue
            sent[str(slot)] = count
            histogram = DelayHistogram()
            histogram.record(round(delays_ms[index // 2] * 1000), count)
            by_due[str(slot)] = {"received": count, "delay": histogram.to_dict()}
    lateness = []
    for index in range(len(PLAN)):
        histogram = DelayHistogram()
        late = (late_ms or {}).get(index // 2, 2.0) if index % 2 == 0 else 2.0
        histogram.record(round(late * 1000), 100)
        lateness.append(histogram.to_dict())
    fleet: dict[str, Any] = {
        "run_id": "esc1",
        "sent_by_due_slot": sent,
        "scheduled_by_due_slot": dict(sent),
        "stage_lateness": lateness,
        "workers": [{"worker_index": 0, "cpu_percent": cpu_percent}],
        "stopped_at_s": stopped_at_s,
        "t0": 1000.0,
    }
    sink: dict[str, Any] = {"by_due": by_due}
    result = build_result(
        settings={"run_id": "esc1", "devices": 40, "rate": RATE, "duration": PLAN[-1].end_s},
        sources={},
        broker="test",
        fleet=fleet,  # type: ignore[arg-type]
        sink=sink,  # type: ignore[arg-type]
        stages=PLAN,
        due_slot_s=1.0,
    )
    parsed = [parse_slo(slo) for slo in slos]
    verdicts = judge(parsed, result, load_slos(parsed, allow_saturated=True))
    return RunOutcome(result, verdicts=verdicts, broke=broke)


def test_each_stage_is_judged_on_its_own_figures() -> None:
    steps = stage_outcomes(escalation_run({0: 10, 1: 20, 2: 900}), cpu_limit_percent=90)
    # The holds are the run's stages 0, 2 and 4 (the connect stages between them are not judged).
    assert [(s.devices, s.stage, s.run_id) for s in steps] == [(10, 0, "esc1"), (20, 2, "esc1"), (40, 4, "esc1")]
    assert [s.passed for s in steps] == [True, True, False]
    assert [s.sent for s in steps] == [200, 400, 800] and [s.offered_per_s for s in steps] == [100, 200, 400]
    assert steps[2].p95_delay_ms == pytest.approx(900, rel=0.02)
    why = steps[2].why_failed()
    assert why is not None and why.startswith("p95_delay_ms < 250: ")
    # Whole-run checks (connect_failures, unsent) judge the escalation run: their verdict is the last stage's.
    assert [v.metric for v in steps[0].verdicts] == ["p95_delay_ms"]
    assert {v.metric for v in steps[2].verdicts} == {"p95_delay_ms", "connect_failures", "unsent"}
    assert all("(whole escalation run)" in v.measured_text for v in steps[2].verdicts if v.metric != "p95_delay_ms")
    assert all(s.cut_short is None and not s.generator_saturated for s in steps)


def test_a_stopped_run_cuts_its_stage_short_and_leaves_out_what_never_ran() -> None:
    steps = stage_outcomes(
        escalation_run({0: 10, 1: 10, 2: 10}, stopped_at_s=7.0), cpu_limit_percent=90, cut_short="backlog"
    )
    assert [s.devices for s in steps] == [10, 20, 40]
    assert [s.cut_short for s in steps] == [None, None, "backlog"]
    assert steps[2].sent == 400 and steps[2].inconclusive  # passed on the 1 s that ran: measured again
    assert steps[2].throughput_per_s == pytest.approx(400.0)  # per second of what ran
    # Stopped right at the third stage's start: it had no message, so it did not run.
    early = stage_outcomes(escalation_run({0: 10, 1: 10, 2: 10}, stopped_at_s=6.0), cpu_limit_percent=90)
    assert [s.devices for s in early] == [10, 20] and early[-1].cut_short is None


def test_a_cut_short_stage_that_broke_an_slo_fails() -> None:
    steps = stage_outcomes(escalation_run({0: 10, 1: 10, 2: 3000}, stopped_at_s=7.0), cpu_limit_percent=90)
    assert steps[2].cut_short == "stopped early" and not steps[2].passed and not steps[2].inconclusive


def test_generator_saturation_per_stage() -> None:
    steps = stage_outcomes(escalation_run({0: 10, 1: 10, 2: 10}, late_ms={1: 120.0}), cpu_limit_percent=90)
    assert [s.generator_saturated for s in steps] == [False, True, False]
    assert "stage lateness p99" in (steps[1].saturation or "")
    # The workers' CPU is a whole-run figure: it is the last stage's.
    busy = stage_outcomes(escalation_run({0: 10, 1: 10, 2: 10}, cpu_percent=97.0), cpu_limit_percent=90)
    assert [s.generator_saturated for s in busy] == [False, False, True]
    assert "CPU 97%" in (busy[2].saturation or "")


def test_windowed_slos_judge_the_stage_windows_and_a_broken_run_is_the_last_stage() -> None:
    outcome = escalation_run({0: 10, 1: 10, 2: 900}, slos=("p95_delay_ms < 250 per 1s",), broke="sink died")
    steps = stage_outcomes(outcome, cpu_limit_percent=90)
    assert [s.passed for s in steps] == [True, True, False]
    assert steps[2].broke == "sink died" and steps[1].broke is None
    assert judged_on_stage(parse_slo("p99.9_delay_ms < 1s")) and judged_on_stage(parse_slo("lateness_p99_ms < 50"))
    assert not judged_on_stage(parse_slo("connect_failures == 0")) and not judged_on_stage(parse_slo("duplicates == 0"))


def test_escalation_settings_are_the_callers_in_stages() -> None:
    base = resolve({}, {}, {})
    counts = [10, 20, 1020]
    settings = escalation_settings(base, {"rate_per_device": 5.0, "ramp_up": "3s"}, counts, 2.0, "search")
    plan = settings.stage_plan
    # Holds of 2 s; between them a connect stage at the earlier count as long as the next count's ramp
    # (the default for the devices it adds: 0.25 s, rounded up to the 0.1 s grid, or 1000 / 500 per second = 2 s).
    assert [(s.start_s, s.duration_s, s.devices, s.rate) for s in plan] == [
        (0.0, 2.0, 10, 5.0), (2.0, 0.3, 10, 5.0), (2.3, 2.0, 20, 5.0), (4.3, 2.0, 20, 5.0), (6.3, 2.0, 1020, 5.0)
    ]
    assert plan[0].ramp_up_s == 3.0 and (plan[2].ramp_up_s, plan[4].ramp_up_s) == (0.3, 2.0)
    assert settings.devices == 1020 and settings.duration_s == 8.3 and settings.allow_saturated
    with pytest.raises(ConfigError):
        escalation_settings(base, {}, [10, 20], 2.05, "search")  # off the 100 ms due grid


# -- the live watch -------------------------------------------------------------------------------------


def snapshot(elapsed_s: float, sent: int, received: int, p95: float | None = None) -> dict[str, Any]:
    return {"phase": "publishing", "elapsed_s": elapsed_s, "sent": sent, "received": received, "p95_delay_ms": p95}


def watch(*slos: str, sustain_s: float = 2.0) -> EscalationWatch:
    return EscalationWatch(PLAN, [parse_slo(s) for s in slos], drain_s=10.0, sustain_s=sustain_s, skew_s=1.0)


def test_a_growing_backlog_stops_the_run_once_sustained() -> None:
    w = watch("p95_delay_ms < 250")
    # The last hold (6 s on, 400 msg/s): 1.25 s of it may be in flight (250 ms + 1 s of skew) = 500 messages.
    assert w.observe(snapshot(6.2, 800, 700)) is None
    assert w.observe(snapshot(6.5, 1000, 400)) is None  # over, not yet for 2 s
    assert w.observe(snapshot(7.5, 1400, 600)) is None
    reason = w.observe(snapshot(8.5, 1800, 800))
    assert reason is not None and reason.startswith("stage 5 (40 devices) live: ") and "in flight" in reason
    assert w.stopped == reason and w.observe(snapshot(8.7, 2000, 800)) is None  # said once


def test_a_breach_must_be_uninterrupted_and_in_the_publishing_phase() -> None:
    w = watch("p95_delay_ms < 250")
    assert w.observe(snapshot(6.2, 1400, 600)) is None
    assert w.observe(snapshot(7.2, 1400, 1300)) is None  # caught up: the clock restarts
    assert w.observe(snapshot(8.1, 2000, 1000)) is None
    assert w.observe({**snapshot(9.0, 3000, 1000), "phase": "draining"}) is None
    assert w.stopped is None


def test_the_live_p95_and_the_generator_falling_behind() -> None:
    w = watch("p99_delay_ms < 250")
    for t in (0.5, 1.5):
        assert w.observe(snapshot(t, round(10 * t * RATE), round(10 * t * RATE), p95=300.0)) is None
    assert "p95 so far 300.0 ms" in (w.observe(snapshot(2.5, 250, 250, p95=300.0)) or "")
    # A p50 bound says nothing about the p95: no delay breach from it.
    assert p95_bounds_ms([parse_slo("p50_delay_ms < 100")]) == []
    g = watch("loss < 1%")
    # In the second hold (200 msg/s): due by 4.0 s = 200 + 100 + 200 = 500; sent 250 is 250 behind (> 1 s of 200/s).
    assert g.breaches(snapshot(4.0, 250, 250)).keys() == {"generator"}
    assert g.observe(snapshot(4.0, 250, 250)) is None and g.observe(snapshot(6.0, 450, 450)) is not None  # 900 due


def test_the_allowed_delay() -> None:
    assert allowed_delay_s([parse_slo("p95_delay_ms < 250"), parse_slo("max_delay_ms < 2s")], 10.0) == 2.0
    assert allowed_delay_s([parse_slo("loss < 0.1%")], 10.0) == 10.0  # no delay SLO: what the drain allows
