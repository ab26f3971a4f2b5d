"""A header in MQTT 5 user properties crosses the bridge as Event Hubs application properties.

mosquitto (MQTT 5) -> the platform bridge (an MQTT 5 subscriber, one topic for
the whole fleet) -> the embedded Event Hub -> the Event Hubs sink, each started
as a run starts it.  The bodies are not JSON: only the properties say which
device sent what, for the partition key and for the sink's accounting.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from pytest_iotperf.connection import Connection
from pytest_iotperf.embedded.broker import EmbeddedBroker, find_mosquitto
from pytest_iotperf.embedded.eventhub import EmbeddedEventHub
from pytest_iotperf.message_spec import MessageSpec
from pytest_iotperf.processes import Child, ProcessGroup
from pytest_iotperf.secrets import EVENTHUB_CONNECTION_STRING_ENV

pytestmark = [
    pytest.mark.fleet,
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed (apt-get install mosquitto)"),
]

RUN_ID = "run-props-bridge"
TOPIC = "fleet/telemetry"  # one topic for the fleet: no {device_id}
DEVICES, SEQS = 4, 5
START_S = WAIT_S = 20.0


@pytest.fixture
def group() -> Iterator[ProcessGroup]:
    with ProcessGroup() as processes:
        yield processes


def start(group: ProcessGroup, workdir: Path, name: str, module: str, spec: dict[str, Any]) -> Child:
    spec_path = workdir / f"{name}-spec.json"
    spec_path.write_text(json.dumps(spec))
    args = [str(spec_path), str(workdir / f"{name}-report.json")]
    return group.add(Child.python_module(name, module, args, workdir / f"{name}.log", stdin=True))


def publish_with_header_in_properties(port: int) -> None:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"test-v5-devices-{secrets.token_hex(4)}", protocol=mqtt.MQTTv5
    )
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for seq in range(SEQS):
            for device in range(DEVICES):
                at = time.time_ns() // 1_000_000 * 1000  # on the hub's millisecond grid: enqueued - intended >= 0
                properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                header = {"run_id": RUN_ID, "device_id": f"dev-{device}", "seq": seq, "intended_at": at, "sent_at": at}
                properties.UserProperty = [(name, str(value)) for name, value in header.items()]
                body = bytes([0, device, seq]) + b"\xff binary reading"
                client.publish(TOPIC, body, qos=1, properties=properties).wait_for_publish(WAIT_S)
    finally:
        client.disconnect()
        client.loop_stop()


def test_user_properties_become_application_properties_through_the_bridge(
    group: ProcessGroup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = MessageSpec(header="properties").to_dict()
    with EmbeddedBroker(prefer="mosquitto") as broker, EmbeddedEventHub(hub="telemetry", partitions=2) as hub:
        monkeypatch.setenv(EVENTHUB_CONNECTION_STRING_ENV, hub.connection_string)
        port = broker.endpoint.port
        connection = Connection("127.0.0.1", port, qos=1, protocol_version="5").to_dict()
        bridge_spec = {
            "connection": connection,
            "topic_filter": TOPIC,
            "topic_template": TOPIC,
            "run_id": RUN_ID,
            "grouping": "partition",
            "message": message,
        }
        bridge = start(group, tmp_path, "bridge", "pytest_iotperf.bridge", bridge_spec)
        sink_spec = {"run_id": RUN_ID, "start_time_epoch_s": time.time() - 1, "message": message}
        sink = start(group, tmp_path, "sink", "pytest_iotperf.sinks.eventhub_sink", sink_spec)
        bridge.wait_for("ready", START_S)
        sink.wait_for("ready", START_S)
        publish_with_header_in_properties(port)
        bridge.send({"cmd": "stop", "timeout_s": 10})
        bridge.wait_for("done", WAIT_S)
        sink.send({"cmd": "drain", "expected": DEVICES * SEQS, "timeout_s": WAIT_S})
        sink.wait_for("done", WAIT_S + 10)
    bridged = json.loads((tmp_path / "bridge-report.json").read_text())
    assert bridged["forwarded"] == DEVICES * SEQS and bridged["errors"] == []
    # The partition key came from the header's device_id in the properties: no topic names it, no body holds it.
    assert bridged["partition_key_from"] == {"topic": 0, "properties": DEVICES * SEQS, "payload": 0, "none": 0}
    report = json.loads((tmp_path / "sink-report.json").read_text())
    assert report["drain"] == "complete" and report["errors"] == []
    assert (report["received"], report["malformed"], report["duplicates"]) == (DEVICES * SEQS, 0, 0)
    assert report["ledger"]["devices"] == {f"dev-{d}": [[0, SEQS]] for d in range(DEVICES)}
    assert report["delay"]["min_us"] >= 0
