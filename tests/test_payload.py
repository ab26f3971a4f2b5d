"""The telemetry payload: compact, padded exactly, decoded strictly."""

from __future__ import annotations

import json

from pytest_iotperf.fleet.spec import phase_of, scheduled_count
from pytest_iotperf.header import MessageView, PayloadTemplate, Telemetry
from pytest_iotperf.header_finders import find_headers


def decode(payload: bytes, annotations: dict[bytes, object] | None = None) -> Telemetry | None:
    """The one header the sinks find in a single-object body, or None when they find none of ours."""
    found = find_headers(MessageView(payload, None, None, annotations))
    assert len(found) <= 1, found  # none of these bodies is a batch
    return found[0] if found else None


def test_payload_carries_the_accounting_fields() -> None:
    payload = PayloadTemplate("run1", "w0d7").render(5, 1_700_000_000_000_000, 1_700_000_000_000_123)
    assert json.loads(payload) == {
        "run_id": "run1",
        "device_id": "w0d7",
        "seq": 5,
        "intended_at": 1_700_000_000_000_000,
        "sent_at": 1_700_000_000_000_123,
    }
    telemetry = decode(payload)
    assert telemetry is not None and telemetry.seq == 5 and telemetry.sent_at_us - telemetry.intended_at_us == 123


def test_padding_reaches_the_exact_size_for_any_seq() -> None:
    template = PayloadTemplate("run1", "w0d7", payload_bytes=256)
    for seq in (0, 9, 10, 12345, 10**9):
        payload = template.render(seq, 1_700_000_000_000_000, 1_700_000_000_000_001)
        assert len(payload) == 256
        assert decode(payload) is not None


def test_decode_rejects_what_is_not_ours() -> None:
    for payload in (
        b"",
        b"not json",
        b"[]",
        b'{"run_id":"r"}',
        b'{"run_id":"r","device_id":"d","seq":-1,"intended_at":1,"sent_at":1}',
        b'{"run_id":"r","device_id":"d","seq":1.5,"intended_at":1,"sent_at":1}',
        b"\xff\xfe",
    ):
        assert decode(payload) is None


def test_schedule_counts_and_phases() -> None:
    rate = 2.0
    phases = [phase_of(i, rate) for i in range(1000)]
    assert all(0 <= p < 1 / rate for p in phases)
    # evenly spread: every tenth of the period holds about a tenth of the devices
    buckets = [0] * 10
    for p in phases:
        buckets[int(p * rate * 10)] += 1
    assert max(buckets) - min(buckets) < 30
    assert scheduled_count(0.1, rate, 3.0) == 6  # due at 0.1, 0.6, ..., 2.6
    assert scheduled_count(0.0, rate, 3.0) == 6  # 0, 0.5, ..., 2.5 (3.0 excluded)
    assert scheduled_count(5.0, rate, 3.0) == 0


def test_iothub_annotation_names_the_device_when_the_body_does_not() -> None:
    # IoT Hub's built-in endpoint stamps the authenticated sender on every event.
    body = b'{"run_id":"r1","seq":3,"intended_at":10,"sent_at":12}'
    annotations = {b"iothub-connection-device-id": b"dev000007", b"x-opt-enqueued-time": 1}
    telemetry = decode(body, annotations)
    assert telemetry is not None
    assert (telemetry.device_id, telemetry.seq) == ("dev000007", 3)
    # Without the annotation such a body is not telemetry of ours; a body naming its device keeps its own.
    assert decode(body) is None
    named = b'{"run_id":"r1","device_id":"dev000001","seq":3,"intended_at":10,"sent_at":12}'
    kept = decode(named, annotations)
    assert kept is not None and kept.device_id == "dev000001"
