"""Due-time accounting on the sink side (issue 16): by-due slots in the recorder, T0 before/after, merge."""

from __future__ import annotations

import json

from pytest_iotperf.header import MessageView
from pytest_iotperf.metrics import DelayHistogram
from pytest_iotperf.sinks.merge import merge_sink_reports
from pytest_iotperf.sinks.recorder import SinkRecorder, t0_commands

RUN = "run1"
T0_US = 1_700_000_000_123_456
SLOT_US = 500_000


def message(seq: int, due_offset_us: int, device_id: str = "d1") -> MessageView:
    due = T0_US + due_offset_us
    doc = {"run_id": RUN, "device_id": device_id, "seq": seq, "intended_at": due, "sent_at": due}
    return MessageView(json.dumps(doc).encode())


# (seq, due offset from T0, delay): slots 0, 0, 1, 2 (a boundary lands in the slot it starts), 5
ARRIVALS = [(0, 0, 1_000), (1, 499_999, 2_000), (2, 500_000, 3_000), (3, 1_000_000, 300_000), (4, 2_700_000, 5)]


def by_due(report: dict[str, object]) -> dict[str, tuple[int, int | None]]:
    slots = report["by_due"]
    assert isinstance(slots, dict)
    return {slot: (c["received"], DelayHistogram.from_dict(c["delay"]).max_us) for slot, c in slots.items()}


EXPECTED = {"0": (2, 2_000), "1": (1, 3_000), "2": (1, 300_000), "5": (1, 5)}


def record_all(recorder: SinkRecorder, set_t0_after: int | None) -> None:
    for index, (seq, offset, delay) in enumerate(ARRIVALS):
        if index == set_t0_after:
            recorder.set_t0(T0_US)
        recorder.record(message(seq, offset), T0_US + offset + delay)
    recorder.record(message(0, 0), T0_US + 9_000_000)  # a duplicate: not counted again


def test_messages_are_counted_in_their_due_slot_whenever_t0_comes() -> None:
    for set_t0_after in (0, 2, None):  # before every message, halfway, after all of them (folded by report)
        recorder = SinkRecorder(RUN, due_slot_us=SLOT_US)
        record_all(recorder, set_t0_after)
        if set_t0_after is None:
            assert recorder.report("complete", [])["by_due"] == {}  # T0 unknown: nothing by due yet
            recorder.set_t0(T0_US)
        assert by_due(dict(recorder.report("complete", []))) == EXPECTED, set_t0_after


def test_the_t0_command_reaches_the_recorder_and_not_the_drain_loop() -> None:
    recorder = SinkRecorder(RUN, due_slot_us=SLOT_US)
    commands = [{"cmd": "t0", "t0_us": T0_US}, {"cmd": "drain", "expected": 3}]
    assert list(t0_commands(iter(commands), recorder)) == [{"cmd": "drain", "expected": 3}]
    record_all(recorder, None)
    assert by_due(dict(recorder.report("complete", []))) == EXPECTED


def test_merged_sinks_add_up_per_slot() -> None:
    parts = [SinkRecorder(RUN, due_slot_us=SLOT_US) for _ in range(2)]
    for part in parts:
        part.set_t0(T0_US)
    for seq, offset, delay in ARRIVALS:
        parts[seq % 2].record(message(seq, offset), T0_US + offset + delay)
    merged = merge_sink_reports([part.report("complete", []) for part in parts])
    assert by_due(dict(merged)) == EXPECTED
    assert sum(c["received"] for c in merged["by_due"].values()) == merged["received"]
