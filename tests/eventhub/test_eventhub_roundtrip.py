"""Produce/consume round trips through the embedded Event Hub with the real azure-eventhub SDK."""

from __future__ import annotations

import datetime

import pytest
from azure.eventhub import EventData, EventHubProducerClient
from eventhub_helpers import collect

from pytest_iotperf.embedded.eventhub import EmbeddedEventHub

# Real SDK clients against the endpoint, ~1.5 s per receive: slow, like a fleet run.
pytestmark = pytest.mark.fleet


def _send(producer: EventHubProducerClient, count: int, partition_id: str | None = None, start: int = 0) -> None:
    batch = producer.create_batch(partition_id=partition_id)
    for i in range(start, start + count):
        event = EventData(f"event-{i}")
        event.properties = {"index": i}
        try:
            batch.add(event)
        except ValueError:
            producer.send_batch(batch)
            batch = producer.create_batch(partition_id=partition_id)
            batch.add(event)
    producer.send_batch(batch)


def _enqueued_times(events: list[EventData]) -> list[datetime.datetime]:
    times = [e.enqueued_time for e in events if e.enqueued_time is not None]
    assert len(times) == len(events), "the hub stamps every event it delivers with its enqueued time"
    return times


def test_send_batch_round_trip_exactly_once_in_order(hub: EmbeddedEventHub, producer: EventHubProducerClient) -> None:
    _send(producer, 1000, partition_id="2")
    events = collect(hub.connection_string, "2", 1000)
    assert [e.body_as_str() for e in events] == [f"event-{i}" for i in range(1000)]
    assert [e.properties[b"index"] for e in events] == list(range(1000))
    assert [e.sequence_number for e in events] == list(range(1000))
    times = _enqueued_times(events)
    assert times == sorted(times)
    offsets = [int(e.offset) for e in events if e.offset is not None]
    assert offsets == sorted(offsets) and len(set(offsets)) == 1000


def test_unkeyed_batches_spread_round_robin_and_stay_whole(
    hub: EmbeddedEventHub, producer: EventHubProducerClient
) -> None:
    for b in range(4):
        batch = producer.create_batch()
        for i in range(5):
            batch.add(EventData(f"{b}-{i}"))
        producer.send_batch(batch)
    bodies = {}
    for pid in producer.get_partition_ids():
        properties = producer.get_partition_properties(pid)
        assert properties["last_enqueued_sequence_number"] == 4
        bodies[pid] = [e.body_as_str() for e in collect(hub.connection_string, pid, 5)]
    assert sorted(bodies.values()) == [[f"{b}-{i}" for i in range(5)] for b in range(4)]


def test_properties(hub: EmbeddedEventHub, producer: EventHubProducerClient) -> None:
    info = producer.get_eventhub_properties()
    assert info["eventhub_name"] == "telemetry"
    assert info["partition_ids"] == ["0", "1", "2", "3"]
    assert isinstance(info["created_at"], datetime.datetime)
    empty = producer.get_partition_properties("1")
    assert empty["is_empty"] is True
    assert empty["last_enqueued_sequence_number"] == -1
    _send(producer, 3, partition_id="1")
    props = producer.get_partition_properties("1")
    assert props["is_empty"] is False
    assert props["last_enqueued_sequence_number"] == 2
    assert isinstance(props["last_enqueued_offset"], str)
    assert props["last_enqueued_time_utc"].year >= 2024


def test_ten_thousand_events_arrive_exactly_once(hub: EmbeddedEventHub, producer: EventHubProducerClient) -> None:
    for pid in ("0", "1"):
        _send(producer, 5000, partition_id=pid)
    for pid in ("0", "1"):
        events = collect(hub.connection_string, pid, 5000, timeout=40)
        assert [e.properties[b"index"] for e in events] == list(range(5000))
        times = _enqueued_times(events)
        assert times == sorted(times)
