"""Whole runs with the platform's own messages: templates, the header in properties, MQTT 5, WebSockets, callables.

Each run is small and exact (sent == scheduled, received == sent); a
subscriber of the test's own reads what the devices really put on the wire.
A template with the header in the body runs end to end in ``examples/renamed_fields``
(a platform that checks its schema and rejects anything else).
"""

from __future__ import annotations

import dataclasses
import struct
import threading
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from pytest_iotperf.broker_endpoint import BrokerEndpoint
from pytest_iotperf.config import resolve
from pytest_iotperf.embedded.broker import EmbeddedBroker, find_mosquitto
from pytest_iotperf.fleet.naming import DeviceName
from pytest_iotperf.fleet.outgoing import renderer_for
from pytest_iotperf.message_spec import MessageSpec
from pytest_iotperf.payloads import choice, counter, device_id, uniform, walk
from pytest_iotperf.result import RunResult
from pytest_iotperf.runner import PerfRun, RunFailed

pytestmark = [pytest.mark.fleet, pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")]

READING = {
    "deviceId": device_id(),
    "temperature": uniform(15, 30, digits=2),
    "humidity": walk(50, 1.0, 30, 70, digits=1),
    "status": choice(["ok", "warn"], weights=[9, 1]),
    "n": counter(),
    "site": {"name": "plant-1"},
}


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(prefer="mosquitto") as embedded:
        embedded.start_websockets()  # the gateway child lives as long as the broker (not a test's leftover)
        yield embedded


class Capture:
    """A subscriber of the test's own: every (topic, body, user properties) the broker delivered."""

    def __init__(self, endpoint: BrokerEndpoint, topic_filter: str, v5: bool = False) -> None:
        protocol = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
        self.messages: list[tuple[str, bytes, dict[str, str]]] = []
        self._subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=protocol)
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *args: self._subscribed.set()
        self._client.connect(endpoint.host, endpoint.port)
        self._client.subscribe(topic_filter, qos=1)
        self._client.loop_start()
        assert self._subscribed.wait(10.0)

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        props = dict(getattr(message.properties, "UserProperty", None) or [])
        self.messages.append((message.topic, bytes(message.payload), props))

    def stop(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def _assert_exact(result: RunResult, devices: int) -> None:
    assert result.connected == devices and result.connect_failures == 0
    assert result.sent == result.scheduled > 0
    assert result.received == result.sent and result.lost == 0 and result.duplicates == 0
    assert result.malformed == 0 and not result.errors


def _perf_run(endpoint: BrokerEndpoint, **settings: object) -> PerfRun:
    run_settings = resolve({}, {}, {}).for_run({"drain": "5s", "workers": 1, "duration": "1500ms", **settings})
    return PerfRun(run_settings, endpoint)


def test_header_in_mqtt5_properties_leaves_the_body_byte_exact(
    broker: EmbeddedBroker, no_child_left_behind: None
) -> None:
    # One topic for the whole fleet, a topic alias: the header names the device.
    run = _perf_run(
        broker.endpoint,
        devices=5,
        rate_per_device=4.0,
        payload=READING,
        header="properties",
        mqtt_version="5",
        topic_alias=True,
        topic="plant/{run_id}/telemetry",
        seed=7,
    )
    capture = Capture(broker.endpoint, f"plant/{run.run_id}/telemetry", v5=True)
    try:
        result = run.execute()
    finally:
        capture.stop()
    _assert_exact(result, 5)
    assert result.settings["seed"] == 7 == run.message.seed  # the replay below needs nothing else
    by_device: dict[str, list[tuple[int, bytes]]] = {}
    for topic, body, props in capture.messages:
        assert topic == f"plant/{run.run_id}/telemetry"  # the alias resolved by the broker
        assert props["run_id"] == run.run_id
        by_device.setdefault(props["device_id"], []).append((int(props["seq"]), body))
    assert sum(len(bodies) for bodies in by_device.values()) == result.sent
    # Replaying each device's renderer with the run's seed gives exactly the bodies that arrived.
    for number, device in enumerate(sorted(by_device)):
        replay = renderer_for(run.message, run.run_id, DeviceName(number, device), 0)
        for seq, body in sorted(by_device[device]):
            assert body == replay.render(seq, 0, 0)[0]
            assert b"_iotperf" not in body


def binary_reading(device: DeviceName, seq: int) -> bytes:
    """A device that speaks a packed binary format: the header must travel in properties."""
    return struct.pack(">IHf", device.n, seq, 20.5)


def test_callable_binary_payload_over_websockets(broker: EmbeddedBroker, no_child_left_behind: None) -> None:
    endpoint = broker.start_websockets()
    run = _perf_run(
        endpoint,
        devices=4,
        rate_per_device=4.0,
        payload=binary_reading,
        header="properties",
        mqtt_version="5",
        transport="websockets",
    )
    assert run.connection.transport == "websockets" and run.connection.port == endpoint.ws_port
    capture = Capture(broker.endpoint, "devices/+/telemetry", v5=True)
    try:
        result = run.execute()
    finally:
        capture.stop()
    _assert_exact(result, 4)
    bodies = [(props, body) for _, body, props in capture.messages if props.get("run_id") == run.run_id]
    assert len(bodies) == result.sent
    for props, body in bodies:
        number, seq, _ = struct.unpack(">IHf", body)
        assert seq == int(props["seq"]) and props["device_id"] == f"dev{number:06d}"


def test_a_callable_a_worker_cannot_import_fails_before_t0_naming_the_worker(
    broker: EmbeddedBroker, no_child_left_behind: None
) -> None:
    run = _perf_run(broker.endpoint, devices=3, rate_per_device=1.0)
    # Importable here, not on the worker: a module the worker's interpreter has never heard of.
    missing = MessageSpec(kind="callable", callable_ref="iotperf_nowhere_module:reading", source="test code")
    run.fleet_spec = dataclasses.replace(run.fleet_spec, message=missing)
    with pytest.raises(RunFailed, match=r"worker 0 on .*iotperf_nowhere_module.*ModuleNotFoundError"):
        run.execute()
