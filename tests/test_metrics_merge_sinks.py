"""Merging sink reports is exact: split traffic merged equals one sink that saw it all."""

from __future__ import annotations

import random

from pytest_iotperf.fleet.payload import PayloadTemplate
from pytest_iotperf.sinks.merge import merge_sink_reports
from pytest_iotperf.sinks.recorder import SinkRecorder


def test_split_sinks_merge_to_the_whole() -> None:
    rng = random.Random(7)
    whole = SinkRecorder("run1")
    parts = [SinkRecorder("run1") for _ in range(3)]
    base_us = 1_700_000_000_000_000
    for device in range(20):
        template = PayloadTemplate("run1", f"d{device}")
        for seq in range(50):
            if (device, seq) in ((3, 7), (11, 0)):
                continue  # lost
            intended = base_us + seq * 1_000_000
            payload = template.render(seq, intended, intended + 100)
            seen = intended + rng.randint(200, 90_000)
            whole.record(payload, seen)
            part = parts[device % 3]  # partitioned by device, as Event Hubs does with a partition key
            part.record(payload, seen)
    for recorder in (whole, parts[0]):
        recorder.record(b"garbage", base_us)
    merged = merge_sink_reports([p.report() | {"drain": "complete", "errors": []} for p in parts])
    expected = whole.report()
    for key in ("received", "duplicates", "out_of_order", "delay", "sent_delay", "ledger"):
        assert merged[key] == expected[key], key
    assert merged["malformed"] == 1 and merged["received"] == 998
    assert merged["timeline"] == expected["timeline"]
    assert merged["drain"] == "complete"


def test_worst_drain_wins() -> None:
    reports = []
    for drain in ("complete", "timeout", "idle"):
        recorder = SinkRecorder("r")
        reports.append(recorder.report() | {"drain": drain, "errors": [f"e-{drain}"]})
    merged = merge_sink_reports(reports)
    assert merged["drain"] == "timeout"
    assert merged["errors"] == ["e-complete", "e-timeout", "e-idle"]
