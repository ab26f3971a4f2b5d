"""Whole runs against what platforms do to messages: an MQTT 5 broker that refuses a device, IoT Hub's property bag.

- MQTT 5 against a Mosquitto 2 whose ACL refuses one device's topic: the refusals come back as PUBACK 0x87,
  are counted per reason, the refused device's messages are lost (never seen by the sink) and the run ends.
- The header in IoT Hub's property bag (MQTT 3.1.1): the embedded hub turns it into Event Hubs application
  properties, the sink finds it there, and the events' bodies are the template's bytes and nothing else.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from acl_mosquitto import acl_mosquitto
from azure.eventhub import EventData, EventHubConsumerClient
from wallclock import StartUp

from pytest_iotperf.broker_endpoint import BrokerEndpoint
from pytest_iotperf.config import resolve
from pytest_iotperf.embedded.broker import find_mosquitto
from pytest_iotperf.embedded.iothub_child import start_embedded_iothub
from pytest_iotperf.fleet.naming import DeviceName
from pytest_iotperf.fleet.outgoing import renderer_for
from pytest_iotperf.payloads import device_id, uniform
from pytest_iotperf.runner import PerfRun

pytestmark = pytest.mark.fleet
WAIT_S = 10.0
DEVICES = 4
REFUSED = "dev000002"


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[BrokerEndpoint]:
    """Mosquitto 2 with an ACL: anyone may read devices/+/telemetry; every device but REFUSED may publish there.

    Anonymous clients take the ``topic`` lines before any ``user`` line (``pattern`` lines would apply to every
    client too); what no line grants is refused, so REFUSED's topic is simply not listed.
    """
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed")
    granted = [f"dev{n:06d}" for n in range(DEVICES) if f"dev{n:06d}" != REFUSED]
    acl = "topic read devices/+/telemetry\n" + "".join(f"topic write devices/{d}/telemetry\n" for d in granted)
    with acl_mosquitto(tmp_path, acl) as port:
        yield BrokerEndpoint.external(f"mqtt://127.0.0.1:{port}")


def test_mqtt5_acl_refusal_is_counted_by_reason_and_lost_and_the_run_ends(
    acl_broker: BrokerEndpoint, no_child_left_behind: None, startup: StartUp
) -> None:
    settings = resolve({}, {}, {}).for_run(
        {"devices": DEVICES, "rate_per_device": 4.0, "duration": "2s", "drain": "2s", "workers": 1}
        | {"mqtt_version": "5", "qos": 1}
    )
    started = time.monotonic()
    result = PerfRun(settings, acl_broker).execute()  # returns: a refused publish is settled, never left unacked
    took = time.monotonic() - started
    assert result.connected == DEVICES and result.connect_failures == 0
    assert result.sent == result.scheduled > 0 and result.duplicates == 0 and result.malformed == 0
    # Only the refused device misses messages, all of them: [(0, its sent count)] (seq counts from 0).
    assert set(result.missing) == {REFUSED}, result.missing
    ((first, refused_sent),) = result.missing[REFUSED]
    assert first == 0 and refused_sent > 0
    assert result.lost == refused_sent == result.sent - result.received
    assert result.received == result.sent - refused_sent  # every other device's messages arrived
    # Every one of them came back as PUBACK 0x87, counted by reason (and nothing else was an error).
    assert result.publish_errors_by_reason == {"0x87 not authorized": refused_sent}
    assert result.publish_errors == refused_sent
    assert result.errors == [f"publish refused by the broker: 0x87 not authorized (x{refused_sent})"]
    assert result.worst_devices[0] == (REFUSED, refused_sent)
    # The sink waited its drain time for what never came, then the run ended: schedule + drain + start-ups.
    assert result.drain == "timeout"
    assert took < startup.ceiling_s(startups=8, own_s=2.0 + 2.0), (took, str(startup))


READING = {"deviceId": device_id(), "temperature": uniform(15, 30, digits=2)}


def _read_all(
    connection_string: str, partitions: tuple[str, ...], expected: int, timeout: float = 20.0
) -> list[EventData]:
    """Every partition's events from the start, until ``expected`` arrived (or ``timeout``).

    A client and a thread per partition, as the sink reads: one client's receive loop would serve its
    partitions in turn, and a load-balanced one claims them a round at a time (seconds here).
    """
    events: list[EventData] = []
    lock = threading.Lock()
    enough = threading.Event()

    def on_batch(_: Any, batch: list[EventData]) -> None:
        with lock:
            events.extend(batch)
            if len(events) >= expected:
                enough.set()

    clients = [
        EventHubConsumerClient.from_connection_string(connection_string, "$Default", retry_total=0, auth_timeout=5)
        for _ in partitions
    ]
    threads = [
        threading.Thread(
            target=client.receive_batch,
            kwargs={"on_event_batch": on_batch, "partition_id": partition, "starting_position": "-1"}
            | {"max_wait_time": 0.05},
            daemon=True,
        )
        for client, partition in zip(clients, partitions, strict=True)
    ]
    for thread in threads:
        thread.start()
    enough.wait(timeout)
    for client in clients:
        client.close()
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()
    return events


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def test_header_in_the_iothub_property_bag_reaches_the_sink_and_leaves_the_body_alone(
    tmp_path: Path, no_child_left_behind: None
) -> None:
    child, hub = start_embedded_iothub(tmp_path)
    try:
        settings = resolve({}, {}, {}).for_run(
            {"devices": DEVICES, "rate_per_device": 4.0, "duration": "1500ms", "drain": "10s", "workers": 1}
            | {"sink": "eventhub", "bridge": "none", "payload": READING, "header": "properties", "seed": 11}
        )
        run = PerfRun(settings, hub.endpoint, eventhub=hub.eventhub)
        result = run.execute()
        # The sink read the header from the application properties: exact accounting, nothing malformed.
        assert result.connected == DEVICES and result.connect_failures == 0
        assert result.sent == result.scheduled > 0
        assert result.received == result.sent and result.lost == 0 and result.duplicates == 0
        assert result.malformed == 0 and not result.errors and result.drain == "complete"
        # What the hub wrote, read with the SDK: the header in application properties, the body the template's.
        events = _read_all(hub.eventhub.connection_string, hub.eventhub.partitions, result.sent)
    finally:
        child.stop()
    assert len(events) == result.sent
    by_device: dict[str, list[tuple[int, bytes]]] = {}
    for event in events:
        props = {_text(key): _text(value) for key, value in (event.properties or {}).items()}
        assert props["run_id"] == run.run_id and {"intended_at", "sent_at"} <= set(props)
        device = props["device_id"]
        assert _text(event.system_properties[b"iothub-connection-device-id"]) == device
        body = event.body_as_str().encode()  # JSON: UTF-8 text
        assert b"_iotperf" not in body and json.loads(body)["deviceId"] == device
        by_device.setdefault(device, []).append((int(props["seq"]), body))
    assert len(by_device) == DEVICES
    # Byte-exact: replaying each device's renderer (its seeded streams advance message by message) in seq
    # order gives exactly the bodies that arrived.
    for device, arrived in by_device.items():
        replay = renderer_for(run.message, run.run_id, DeviceName(int(device[3:]), device), 0)
        assert [seq for seq, _ in sorted(arrived)] == list(range(len(arrived)))
        assert [body for _, body in sorted(arrived)] == [replay.render(seq, 0, 0)[0] for seq in range(len(arrived))]
