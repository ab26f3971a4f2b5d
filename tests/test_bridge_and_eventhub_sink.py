"""The platform bridge and the Event Hubs sink as processes: mosquitto -> bridge -> embedded Event Hub -> sink.

Real parts throughout: the embedded mosquitto broker, the embedded Event Hubs
endpoint with the unmodified azure-eventhub SDK, and both processes started
the way the plugin starts its children.  A few pure unit tests cover topic
templates, secret scrubbing and the sink's accounting without any process.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from azure.eventhub import EventHubProducerClient
from paho.mqtt.enums import CallbackAPIVersion
from wallclock import StartUp

from pytest_iotperf.bridge.eventhub_access import parse_target
from pytest_iotperf.bridge.spec import BridgeSpec
from pytest_iotperf.bridge.topics import DeviceKeys
from pytest_iotperf.broker_endpoint import BrokerEndpoint
from pytest_iotperf.embedded.broker import EmbeddedBroker, find_mosquitto
from pytest_iotperf.embedded.eventhub import EmbeddedEventHub, connection_string
from pytest_iotperf.embedded.eventhub.partition_key import partition_for_key
from pytest_iotperf.header import MessageView, PayloadTemplate
from pytest_iotperf.processes import Child, ChildExited, ProcessGroup, free_port
from pytest_iotperf.secrets import EVENTHUB_CONNECTION_STRING_ENV, Scrubber
from pytest_iotperf.sinks.eventhub_sink import EnqueueAccounting

RUN_ID = "run-bridge"
TEMPLATE = "devices/{device_id}/telemetry"
FILTER = "devices/#"
PARTITIONS = 4
START_S = 20.0  # process start-up budget (imports, SDK start-up) on a loaded 2-core machine
WAIT_S = 20.0

needs_mosquitto = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")


# -- fixtures and helpers -------------------------------------------------------------------------------------------


@pytest.fixture
def broker() -> Iterator[BrokerEndpoint]:
    with EmbeddedBroker(prefer="mosquitto") as embedded:
        yield embedded.endpoint


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedEventHub]:
    with EmbeddedEventHub(hub="telemetry", partitions=PARTITIONS) as server:
        # Children inherit the environment: the secret never goes through a spec file or argv.
        monkeypatch.setenv(EVENTHUB_CONNECTION_STRING_ENV, server.connection_string)
        yield server


@pytest.fixture
def group() -> Iterator[ProcessGroup]:
    with ProcessGroup() as processes:
        yield processes


def start_bridge(
    group: ProcessGroup, workdir: Path, broker: BrokerEndpoint, name: str = "bridge", grouping: str = "key"
) -> Child:
    spec = {
        "grouping": grouping,
        "run_id": RUN_ID,
        "host": broker.host,
        "port": broker.port,
        "tls": False,
        "username": None,
        "topic_filter": FILTER,
        "topic_template": TEMPLATE,
        "qos": 1,
    }
    spec_path = workdir / f"{name}-spec.json"
    spec_path.write_text(json.dumps(spec))
    args = [str(spec_path), str(workdir / f"{name}-report.json")]
    return group.add(Child.python_module(name, "pytest_iotperf.bridge", args, workdir / f"{name}.log", stdin=True))


def start_sink(group: ProcessGroup, workdir: Path, start_time_s: float, name: str = "sink") -> Child:
    spec = {"run_id": RUN_ID, "start_time_epoch_s": start_time_s, "partitions": ["0", "1", "2", "3"]}
    spec_path = workdir / f"{name}-spec.json"
    spec_path.write_text(json.dumps(spec))
    args = [str(spec_path), str(workdir / f"{name}-report.json")]
    module = "pytest_iotperf.sinks.eventhub_sink"
    return group.add(Child.python_module(name, module, args, workdir / f"{name}.log", stdin=True))


def read_report(workdir: Path, name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((workdir / f"{name}-report.json").read_text())
    return document


def now_on_ms_grid_us() -> int:
    # Event Hubs stamps x-opt-enqueued-time in whole milliseconds (floored).  An intended time on the same
    # grid keeps enqueued - intended >= 0 even for a hop faster than the millisecond it happened in.
    return time.time_ns() // 1_000_000 * 1000


def telemetry(device_id: str, seq: int, run_id: str = RUN_ID) -> bytes:
    at = now_on_ms_grid_us()
    return PayloadTemplate(run_id, device_id).render(seq, at, at)


class Publisher:
    """A QoS 1 paho publisher; ``publish`` returns once the broker acknowledged."""

    def __init__(self, broker: BrokerEndpoint) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-publisher-{secrets.token_hex(4)}")
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(WAIT_S)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_until_received(sink: Child, count: int) -> None:
    """Follow the sink's progress events (about one a second) until it has read ``count`` messages of the run."""
    deadline = time.monotonic() + WAIT_S
    while True:
        event = sink.next_event(deadline)
        if event.get("event") == "progress" and event["received"] >= count:
            return


# -- end to end -----------------------------------------------------------------------------------------------------


@needs_mosquitto
@pytest.mark.fleet
@pytest.mark.parametrize("grouping", ["key", "partition"])
def test_fleet_messages_pass_bridge_and_hub_and_are_accounted_at_enqueue_time(
    broker: BrokerEndpoint, hub: EmbeddedEventHub, group: ProcessGroup, tmp_path: Path, grouping: str
) -> None:
    start_time = time.time()
    bridge = start_bridge(group, tmp_path, broker, grouping=grouping)
    sink = start_sink(group, tmp_path, start_time)
    bridge.wait_for("ready", START_S)
    sink.wait_for("ready", START_S)

    devices = [f"dev-{i}" for i in range(5)]
    messages: list[tuple[str, bytes]] = [
        (f"devices/{device}/telemetry", telemetry(device, seq)) for device in devices for seq in range(6)
    ]
    messages.append(messages[3])  # a duplicate: counted once
    messages.append(("devices/dev-0/telemetry", telemetry("dev-0", 99, run_id="another-run")))
    messages.append(("devices/dev-1/telemetry", b"not telemetry"))
    # Off-template topic: the partition key comes from the payload's device_id.
    messages.append(("devices/dev-5/status", telemetry("dev-5", 0)))
    distinct = 5 * 6 + 1
    publisher = Publisher(broker)
    try:
        for topic, payload in messages:
            publisher.publish(topic, payload)
    finally:
        publisher.close()

    bridge.send({"cmd": "stop", "timeout_s": 10})
    bridge.wait_for("done", WAIT_S)
    forwarded = read_report(tmp_path, "bridge")
    assert forwarded["received"] == forwarded["forwarded"] == len(messages)
    assert forwarded["failed"] == forwarded["unsent"] == 0
    assert forwarded["fence"] == "ok" and forwarded["stop"] == "flushed"
    assert forwarded["partition_key_from"] == {"topic": len(messages) - 1, "properties": 0, "payload": 1, "none": 0}

    sink.send({"cmd": "drain", "expected": distinct, "timeout_s": WAIT_S})
    sink.wait_for("done", WAIT_S + 10)
    report = read_report(tmp_path, "sink")
    assert report["drain"] == "complete" and report["errors"] == []
    assert report["received"] == distinct
    assert report["duplicates"] == 1 and report["other_runs"] == 1 and report["malformed"] == 1
    # One warm-up event per partition opened the links before the first message: skipped, not malformed.
    assert report["warmups"] == 4
    assert report["arrivals"] == len(messages) + report["warmups"]
    assert report["ledger"]["devices"] == {**{device: [[0, 6]] for device in devices}, "dev-5": [[0, 1]]}
    delay = report["delay"]
    assert delay["count"] == distinct
    assert 0 <= delay["min_us"] <= delay["max_us"] < 5_000_000
    per_minute = report["per_minute"]
    assert sum(n for buckets in per_minute.values() for n in buckets.values()) == distinct
    assert all(int(minute) % 60 == 0 for minute in per_minute)
    assert all(0 <= int(ms) < 5000 for buckets in per_minute.values() for ms in buckets)

    # The partition key is the device id: each partition holds exactly the devices the hub's hash gives it.
    expected_counts = dict.fromkeys(map(str, range(PARTITIONS)), 1)  # each starts with its warm-up event
    for topic, _ in messages:
        device = topic.split("/")[1]
        expected_counts[str(partition_for_key(device, PARTITIONS))] += 1
    producer = EventHubProducerClient.from_connection_string(hub.connection_string, retry_total=0)
    with producer:
        counts = {p: producer.get_partition_properties(p)["last_enqueued_sequence_number"] + 1 for p in expected_counts}
    assert counts == expected_counts

    key = hub.connection_string.split("SharedAccessKey=")[1].split(";")[0]
    for child in (bridge, sink):
        assert child.process.wait(10) == 0
        assert key not in child.log_path.read_text()


@needs_mosquitto
@pytest.mark.fleet
def test_sink_skips_events_enqueued_before_its_start_time(
    broker: BrokerEndpoint, hub: EmbeddedEventHub, group: ProcessGroup, tmp_path: Path
) -> None:
    bridge = start_bridge(group, tmp_path, broker)
    bridge.wait_for("ready", START_S)
    publisher = Publisher(broker)
    try:
        for seq in range(5):
            for device in ("a", "b"):
                publisher.publish(f"devices/{device}/telemetry", telemetry(device, seq))
        # Forwarded means enqueued (send_batch returns after the hub accepted the batch).
        deadline = time.monotonic() + WAIT_S
        while bridge.next_event(deadline).get("forwarded", 0) < 10:
            pass
        # Strictly after the last early event's millisecond (the hub's resolution).
        start_time = (time.time_ns() // 1_000_000 + 1) / 1000
        sink = start_sink(group, tmp_path, start_time)
        sink.wait_for("ready", START_S)
        for seq in range(5, 10):
            for device in ("a", "b"):
                publisher.publish(f"devices/{device}/telemetry", telemetry(device, seq))
    finally:
        publisher.close()

    wait_until_received(sink, 10)
    # Unknown expected count: ends once nothing arrived for idle_s.  Events of one partition arrive in order, so
    # with the ten late events read, an early event would have been read before them.
    sink.send({"cmd": "drain", "expected": -1, "timeout_s": WAIT_S, "idle_s": 0.3})
    sink.wait_for("done", WAIT_S + 10)
    report = read_report(tmp_path, "sink")
    assert report["drain"] == "idle"
    assert report["received"] == report["arrivals"] == 10
    assert report["duplicates"] == report["other_runs"] == report["malformed"] == 0
    assert report["ledger"]["devices"] == {"a": [[5, 10]], "b": [[5, 10]]}


@needs_mosquitto
def test_bad_key_or_unreachable_hub_is_an_error_at_start_and_the_key_is_never_shown(
    broker: BrokerEndpoint,
    hub: EmbeddedEventHub,
    group: ProcessGroup,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    startup: StartUp,
) -> None:
    bad_key = base64.b64encode(secrets.token_bytes(32)).decode()
    key_name = "RootManageSharedAccessKey"
    started = time.monotonic()
    # Child.python_module copies os.environ when it starts the child: one environment per start.
    bad_key_string = connection_string("127.0.0.1", hub.port, key_name, bad_key, "telemetry")
    monkeypatch.setenv(EVENTHUB_CONNECTION_STRING_ENV, bad_key_string)
    bad_key_bridge = start_bridge(group, tmp_path, broker, "bridge-bad-key")
    bad_key_sink = start_sink(group, tmp_path, time.time(), "sink-bad-key")
    nobody = free_port()
    unreachable_string = connection_string("127.0.0.1", nobody, key_name, bad_key, "telemetry")
    monkeypatch.setenv(EVENTHUB_CONNECTION_STRING_ENV, unreachable_string)
    unreachable_bridge = start_bridge(group, tmp_path, broker, "bridge-unreachable")
    cases = [(bad_key_bridge, hub.port), (bad_key_sink, hub.port), (unreachable_bridge, nobody)]
    for child, port in cases:
        with pytest.raises(ChildExited) as failure:
            child.wait_for("ready", 15.0)
        message = str(failure.value)
        assert f"127.0.0.1:{port}" in message, message
        assert child.process.wait(10) != 0
        for shown in (message, child.log_path.read_text()):
            assert bad_key not in shown and "SharedAccessKey=" not in shown
    elapsed_s = time.monotonic() - started
    assert elapsed_s < startup.ceiling_s(startups=6), startup  # three children started side by side, all refused


# -- units ----------------------------------------------------------------------------------------------------------


def test_device_id_comes_from_the_topic_template_then_the_payload() -> None:
    keys = DeviceKeys("runs/{run_id}/devices/{device_id}/telemetry")
    assert keys.key_for("runs/r1/devices/dev-7/telemetry", b"") == ("dev-7", "topic")
    assert keys.key_for("runs/r1/devices/dev-7/status", b'{"device_id": "dev-8"}') == ("dev-8", "payload")
    assert keys.key_for("other", b"\xff not json") == (None, "none")
    assert DeviceKeys("dev-{device_id}/t").key_for("dev-42/t", b"") == ("42", "topic")
    with pytest.raises(ValueError, match="device_id"):
        DeviceKeys("devices/+/telemetry")


def test_bridge_spec_refuses_secrets_and_bad_values() -> None:
    base = {"host": "127.0.0.1", "port": 1883, "topic_filter": FILTER, "topic_template": TEMPLATE}
    assert BridgeSpec.from_dict(base).qos == 1
    with pytest.raises(ValueError, match="secrets come from the environment"):
        BridgeSpec.from_dict({**base, "connection_string": "Endpoint=sb://x/;SharedAccessKey=abc"})
    with pytest.raises(ValueError, match="qos"):
        BridgeSpec.from_dict({**base, "qos": 3})
    with pytest.raises(ValueError, match="topic_template"):
        BridgeSpec.from_dict({k: v for k, v in base.items() if k != "topic_template"})


def test_scrubber_removes_key_connection_string_and_token_shapes() -> None:
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    text = connection_string("10.0.0.1", 5671, "Root", key, "hub")
    scrub = Scrubber()
    scrub.add(text)
    scrub.add(key)
    assert key not in scrub(f"failed with {text} and {key}")
    token = "SharedAccessSignature sr=x&sig=abc%2F&se=1"
    assert scrub(f"token {token} refused") == "token SharedAccessSignature *** refused"
    assert scrub("url?sig=abc&se=1") == "url?sig=***&se=1"
    assert "zzz" not in Scrubber()("Endpoint=sb://h/;SharedAccessKey=zzz;EntityPath=e")
    target = parse_target(text)
    assert (target.host, target.eventhub, target.key_name) == ("10.0.0.1:5671", "hub", "Root")


def test_accounting_per_minute_and_idle_drain() -> None:
    accounting = EnqueueAccounting(RUN_ID, 1)
    minute_us = 1_764_000_000 * 1_000_000  # a multiple of 60 s
    rows: list[tuple[MessageView, int | None]] = [
        (MessageView(PayloadTemplate(RUN_ID, "d").render(0, minute_us, minute_us)), minute_us + 1_500),
        (MessageView(PayloadTemplate(RUN_ID, "d").render(0, minute_us, minute_us)), minute_us + 9_000),  # duplicate
        (MessageView(PayloadTemplate(RUN_ID, "d").render(1, minute_us, minute_us)), minute_us + 61_000_700),
        (MessageView(b"junk"), minute_us),
    ]
    accounting.record_batch(rows)
    report = accounting.report("complete", [], 0)
    assert report["received"] == 2 and report["duplicates"] == 1 and report["malformed"] == 1
    first = str(minute_us // 1_000_000)
    second = str(minute_us // 1_000_000 + 60)
    assert report["per_minute"] == {first: {"1": 1}, second: {"61000": 1}}
    drain = accounting.drain
    assert drain.wait(2, 5.0, 0.1) == "complete"
    assert drain.wait(3, 0.05, 10.0) == "timeout"
    # Unknown expected count: returns after idle_s without arrivals, woken by no one.
    assert drain.wait(-1, 5.0, 0.05) == "idle"
    waiter: list[str] = []
    thread = threading.Thread(target=lambda: waiter.append(drain.wait(3, 5.0, 0.0)))
    thread.start()
    accounting.record_batch([(MessageView(PayloadTemplate(RUN_ID, "d").render(2, minute_us, minute_us)), minute_us)])
    thread.join(5.0)
    assert waiter == ["complete"]
