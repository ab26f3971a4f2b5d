"""Starting positions, partition keys, size limits, and the error paths the SDK must see."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient
from azure.eventhub._buffered_producer._partition_resolver import generate_hash_code as _untyped_hash_code
from azure.eventhub.exceptions import AuthenticationError, EventHubError
from eventhub_helpers import FAST, collect
from wallclock import StartUp

from pytest_iotperf.embedded.eventhub import EmbeddedEventHub, connection_string
from pytest_iotperf.embedded.eventhub.partition_key import hash_code, partition_for_key

# Real SDK clients against the endpoint, ~1.5 s per receive: slow, like a fleet run.
pytestmark = pytest.mark.fleet

# The SDK's client-side resolver is unannotated: partition key -> signed 16-bit hash code.
generate_hash_code: Callable[[str], int] = _untyped_hash_code


def _send(producer: EventHubProducerClient, bodies: list[str], **batch: Any) -> None:
    events = producer.create_batch(**batch)
    for body in bodies:
        events.add(EventData(body))
    producer.send_batch(events)


def test_starting_positions(hub: EmbeddedEventHub, producer: EventHubProducerClient) -> None:
    _send(producer, [f"a{i}" for i in range(5)], partition_id="0")
    middle = collect(hub.connection_string, "0", 5)[2]
    time.sleep(0.002)  # not synchronisation: guarantees the next batch gets a later millisecond timestamp
    _send(producer, [f"b{i}" for i in range(3)], partition_id="0")
    cs = hub.connection_string
    assert [e.body_as_str() for e in collect(cs, "0", 5, starting_position=2)] == ["a3", "a4", "b0", "b1", "b2"]
    assert collect(cs, "0", 6, starting_position=2, inclusive=True)[0].body_as_str() == "a2"
    from_offset = collect(cs, "0", 5, starting_position=middle.offset)
    assert from_offset[0].body_as_str() == "a3"
    inclusive = collect(cs, "0", 6, starting_position=middle.offset, inclusive=True)
    assert inclusive[0].body_as_str() == "a2"
    by_time = collect(cs, "0", 3, starting_position=middle.enqueued_time)
    assert [e.body_as_str() for e in by_time] == ["b0", "b1", "b2"]


def test_latest_only_sees_new_events(hub: EmbeddedEventHub, producer: EventHubProducerClient) -> None:
    _send(producer, ["old"], partition_id="3")
    client = EventHubConsumerClient.from_connection_string(hub.connection_string, "$Default", **FAST)
    received: list[str] = []
    got = threading.Event()
    opened = threading.Event()

    def on_event(_: Any, event: EventData | None) -> None:
        if event is not None:
            received.append(event.body_as_str())
            got.set()

    kwargs = {
        "on_event": on_event,
        "partition_id": "3",
        "starting_position": "@latest",
        "on_partition_initialize": lambda _: opened.set(),
    }
    thread = threading.Thread(target=client.receive, kwargs=kwargs, daemon=True)
    thread.start()
    assert opened.wait(10)
    deadline = time.monotonic() + 10
    while not got.is_set() and time.monotonic() < deadline:
        _send(producer, ["new"], partition_id="3")
        got.wait(0.5)
    client.close()
    thread.join(10)
    assert received and set(received) == {"new"}


def test_partition_key_routing_is_stable(hub: EmbeddedEventHub, producer: EventHubProducerClient) -> None:
    for key in ("device-1", "device-7", "sensor/42"):
        assert hash_code(key) == generate_hash_code(key)
        for _ in range(2):
            _send(producer, [key], partition_key=key)
    expected: dict[str, list[str]] = {"0": [], "1": [], "2": [], "3": []}
    for key in ("device-1", "device-7", "sensor/42"):
        expected[str(partition_for_key(key, 4))] += [key, key]
    for pid, bodies in expected.items():
        if bodies:
            events = collect(hub.connection_string, pid, len(bodies))
            assert sorted(e.body_as_str() for e in events) == sorted(bodies)
            assert {e.partition_key for e in events} <= {k.encode() for k in bodies}


def test_bad_key_is_an_auth_error(hub: EmbeddedEventHub, startup: StartUp) -> None:
    bad = connection_string("127.0.0.1", hub.port, "RootManageSharedAccessKey", "d3JvbmcK", "telemetry")
    client = EventHubProducerClient.from_connection_string(bad, **FAST)
    started = time.monotonic()
    with client, pytest.raises(AuthenticationError):
        client.get_eventhub_properties()
    elapsed_s = time.monotonic() - started
    assert elapsed_s < startup.ceiling_s(startups=4), startup  # at once, not after the SDK's 5 s auth timeout


def test_unknown_hub_is_not_found(hub: EmbeddedEventHub) -> None:
    other = hub.connection_string.replace("EntityPath=telemetry", "EntityPath=nope")
    client = EventHubProducerClient.from_connection_string(other, **FAST)
    with client, pytest.raises(EventHubError, match=r"(?i)not.?found"):
        client.get_eventhub_properties()


def test_unknown_consumer_group_is_not_found(hub: EmbeddedEventHub) -> None:
    client = EventHubConsumerClient.from_connection_string(hub.connection_string, "nope", **FAST)
    errors: list[Exception] = []
    failed = threading.Event()

    def on_error(_: Any, error: Exception) -> None:
        errors.append(error)
        failed.set()

    kwargs = {"on_event": lambda *_: None, "on_error": on_error, "partition_id": "0"}
    thread = threading.Thread(target=client.receive, kwargs=kwargs, daemon=True)
    thread.start()
    assert failed.wait(15)
    client.close()
    thread.join(10)
    assert "could not be found" in str(errors[0])


def test_higher_epoch_steals_the_partition(hub: EmbeddedEventHub, producer: EventHubProducerClient) -> None:
    first = EventHubConsumerClient.from_connection_string(hub.connection_string, "$Default", **FAST)
    errors: list[Exception] = []
    stolen = threading.Event()
    opened = threading.Event()

    def on_error(_: Any, error: Exception) -> None:
        errors.append(error)
        stolen.set()

    kwargs = {
        "on_event": lambda *_: None,
        "on_error": on_error,
        "partition_id": "0",
        "owner_level": 1,
        "on_partition_initialize": lambda _: opened.set(),
        "starting_position": "-1",
    }
    thread = threading.Thread(target=first.receive, kwargs=kwargs, daemon=True)
    thread.start()
    assert opened.wait(10)
    _send(producer, ["x"], partition_id="0")
    events = collect(hub.connection_string, "0", 1, owner_level=2)
    assert [e.body_as_str() for e in events] == ["x"]
    assert stolen.wait(15)
    first.close()
    thread.join(10)
    assert "stolen" in str(errors[0]).lower() or "epoch" in str(errors[0]).lower()


def test_oversize_event_is_rejected(hub: EmbeddedEventHub, producer: EventHubProducerClient) -> None:
    assert producer.create_batch().max_size_in_bytes == 1024 * 1024
    with pytest.raises((ValueError, EventHubError)):
        producer.send_event(EventData(b"x" * (1024 * 1024 + 1)), partition_id="1")
    assert producer.get_partition_properties("1")["is_empty"]
    _send(producer, ["y" * (900 * 1024)], partition_id="1")
    events = collect(hub.connection_string, "1", 1)
    assert len(events[0].body_as_str()) == 900 * 1024
