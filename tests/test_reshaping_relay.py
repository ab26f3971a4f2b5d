"""Reshaped and batched outputs: does the MQTT sink account for exactly what a reshaping platform did?

Real parts: embedded mosquitto, the MQTT sink process started as a run starts
it (its spec naming the header key and the conftest hook to import), a paho
publisher writing device messages (the header under ``_iotperf`` beside a
reading, or in MQTT 5 user properties), and ``reshaping_relay.ReshapingRelay``
between them: it renames the header fields into an envelope (read back by the
conftest-style hook in ``reshaped_platform.py``) or keeps them under
``meta.trace`` (``--iot-header-key meta.trace``), batches 10 readings per
message as a JSON array or JSON lines, drops and duplicates known pairs, and
holds every reading a known time.  Its own record is the reference: loss and
duplicates exactly, delay between what it held and that plus the last leg.

The fleet is left out (the lead's end-to-end test covers it): the sink is
driven directly, so each case takes a couple of seconds.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import reshaped_platform
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from reshaped_platform import Framing, Naming
from reshaping_relay import ReshapingRelay, ReshapingStats

from pytest_iotperf.connection import Connection
from pytest_iotperf.embedded.broker import EmbeddedBroker, find_mosquitto
from pytest_iotperf.message_spec import MessageSpec
from pytest_iotperf.metrics import DeliveryLedger
from pytest_iotperf.processes import Child, ProcessGroup

pytestmark = [
    pytest.mark.fleet,
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed (apt-get install mosquitto)"),
]

RUN_ID = "run-reshaped"
DEVICES = 4
SEQS = 30  # 120 readings: 7 dropped, 113 forwarded (11 full batches of 10 and one of 3)
HOLD_S = 0.05
LAST_LEG_SLACK_US = 300_000  # relay publish -> broker -> sink read, on a loaded 2-core machine
START_S = 20.0
WAIT_S = 20.0
INPUT = "devices/+/telemetry"
OUTPUT = "platform/out"  # one topic for the whole fleet: the header names the device


def dropped(device_id: str, seq: int) -> bool:
    return (device_id == "dev-1" and seq % 10 == 3) or (device_id == "dev-2" and seq % 10 == 0) or (
        device_id == "dev-3" and seq == SEQS - 1
    )


def duplicated(device_id: str, seq: int) -> bool:
    return device_id == "dev-0" and seq % 7 == 5


@dataclass(frozen=True)
class Outcome:
    report: dict[str, Any]
    relay: ReshapingStats
    published: dict[tuple[str, int], bytes]  # the body each pair was published with
    observed: dict[tuple[str, int], bytes]  # the body each pair's output had (properties runs only)


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(prefer="mosquitto") as embedded:
        yield embedded


@pytest.fixture
def group() -> Iterator[ProcessGroup]:
    with ProcessGroup() as processes:
        yield processes


def user_properties(header: dict[str, Any]) -> Properties:
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.UserProperty = [(name, str(value)) for name, value in header.items()]
    return properties


class Publisher:
    """The devices: QoS 1, each publish acknowledged before the next; records what it sent."""

    def __init__(self, port: int, v5: bool) -> None:
        protocol = MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311
        self.v5 = v5
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"test-devices-{secrets.token_hex(4)}", protocol=protocol
        )
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.bodies: dict[tuple[str, int], bytes] = {}

    def publish_all(self) -> None:
        for seq in range(SEQS):
            for device in range(DEVICES):
                device_id = f"dev-{device}"
                now = time.time_ns() // 1000
                header = {"run_id": RUN_ID, "device_id": device_id, "seq": seq, "intended_at": now, "sent_at": now}
                if self.v5:  # the user's own bytes, not JSON: the header travels beside them
                    body = b"\x01reading " + f"{device_id}:{seq}".encode() + b"\xff"
                    properties = user_properties(header)
                else:
                    body, properties = json.dumps({"temperature": 20 + seq / 10, "_iotperf": header}).encode(), None
                info = self.client.publish(f"devices/{device_id}/telemetry", body, qos=1, properties=properties)
                info.wait_for_publish(WAIT_S)
                self.bodies[(device_id, seq)] = body

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Observer:
    """An MQTT 5 subscriber beside the sink: the output bodies, by the pair their user properties name."""

    def __init__(self, port: int) -> None:
        self.bodies: dict[tuple[str, int], bytes] = {}
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"test-observer-{secrets.token_hex(4)}", protocol=mqtt.MQTTv5
        )
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        info = self.client.subscribe(OUTPUT, qos=1)
        assert info[0] == mqtt.MQTT_ERR_SUCCESS

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        header = dict(getattr(message.properties, "UserProperty", None) or [])
        self.bodies[(header["device_id"], int(header["seq"]))] = bytes(message.payload)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def start_sink(group: ProcessGroup, workdir: Path, port: int, header_key: str, v5: bool) -> Child:
    spec = {
        "run_id": RUN_ID,
        "connection": Connection("127.0.0.1", port, qos=1, protocol_version="5" if v5 else "3.1.1").to_dict(),
        "topic_filter": OUTPUT,
        "timeline_slot_s": 1,
        "message": MessageSpec(header_key=header_key, header="properties" if v5 else "body").to_dict(),
        # What the pytest side sends for a conftest hook: its file and function, imported by the sink.
        "extract": [{"path": reshaped_platform.__file__, "function": "pytest_iotperf_extract"}],
    }
    spec_path = workdir / "sink-spec.json"
    spec_path.write_text(json.dumps(spec))
    args = [str(spec_path), str(workdir / "sink-report.json")]
    sink = group.add(
        Child.python_module("mqtt sink", "pytest_iotperf.sinks.mqtt_sink", args, workdir / "sink.log", stdin=True)
    )
    sink.wait_for("ready", START_S)
    return sink


def run_through(
    broker: EmbeddedBroker,
    group: ProcessGroup,
    workdir: Path,
    *,
    naming: Naming = "renamed",
    framing: Framing = "single",
    properties: bool = False,
) -> Outcome:
    port = broker.endpoint.port
    header_key = reshaped_platform.TRACE_KEY if naming == "traced" else "_iotperf"
    sink = start_sink(group, workdir, port, header_key, properties)
    observer = Observer(port) if properties else None
    relay = ReshapingRelay(
        "127.0.0.1",
        port,
        input_filter=INPUT,
        output_topic=OUTPUT,
        hold_s=HOLD_S,
        naming=naming,
        framing=framing,
        properties=properties,
        drop=dropped,
        duplicate=duplicated,
        run_id=RUN_ID,
    )
    publisher = Publisher(port, properties)
    with relay:
        try:
            publisher.publish_all()
        finally:
            publisher.close()
        deadline = time.monotonic() + WAIT_S
        while relay.stats().arrivals < DEVICES * SEQS:
            assert time.monotonic() < deadline, f"the relay saw {relay.stats().arrivals} of {DEVICES * SEQS}"
            time.sleep(0.02)
        relay.flush()  # the last, partial batch
        assert relay.wait_idle(WAIT_S), f"the relay did not finish: {relay.stats().pending} pending"
        stats = relay.stats()
    sink.send({"cmd": "drain", "expected": len(stats.forwarded), "timeout_s": WAIT_S})
    sink.wait_for("done", WAIT_S + 10)
    report: dict[str, Any] = json.loads((workdir / "sink-report.json").read_text())
    observed: dict[tuple[str, int], bytes] = {}
    if observer is not None:
        deadline = time.monotonic() + WAIT_S
        while len(observer.bodies) < len(stats.forwarded) and time.monotonic() < deadline:
            time.sleep(0.02)
        observer.close()
        observed = observer.bodies
    return Outcome(report, stats, publisher.bodies, observed)


def check(outcome: Outcome, *, batched: bool) -> None:
    relay, report = outcome.relay, outcome.report
    # The relay did what it was told: a trustworthy reference.
    assert relay.errors == () and relay.malformed == relay.other_runs == relay.duplicates == 0, relay
    assert len(relay.seen) == DEVICES * SEQS and relay.dropped == {p for p in relay.seen if dropped(*p)}
    assert relay.forwarded == relay.seen - relay.dropped and len(relay.dropped) == 7
    assert relay.messages == relay.acked and relay.elements == len(relay.forwarded) + len(relay.duplicated)
    assert len(relay.duplicated) == 4
    # Loss and duplicates exactly: the pairs the relay dropped are the ones missing, nothing else.
    assert report["drain"] == "complete" and report["errors"] == [], report["errors"]
    assert report["received"] == len(relay.forwarded)
    assert report["duplicates"] == len(relay.duplicated)
    assert report["arrivals"] == relay.messages
    assert (report["malformed"], report["other_runs"], report["extract_errors"]) == (0, 0, 0)
    assert report["batched"] == (relay.elements if batched else 0)
    ledger = DeliveryLedger.from_dict(report["ledger"])
    missing = {
        (device_id, seq)
        for device_id in (f"dev-{d}" for d in range(DEVICES))
        for start, end in ledger.missing(device_id, SEQS)
        for seq in range(start, end)
    }
    assert missing == relay.dropped
    # Delay: never less than what the relay held (intended -> its write), at most that plus the last leg.
    held = [relay.written_by_pair[p] - relay.due_by_pair[p] for p in relay.forwarded]
    assert min(held) >= HOLD_S * 1_000_000
    assert report["delay"]["count"] == len(relay.forwarded)
    assert min(held) <= report["delay"]["min_us"] <= min(held) + LAST_LEG_SLACK_US
    assert max(held) <= report["delay"]["max_us"] <= max(held) + LAST_LEG_SLACK_US


@pytest.mark.parametrize(
    ("naming", "framing"),
    [("renamed", "single"), ("traced", "array"), ("renamed", "lines")],
    ids=["renamed-envelope-by-hook", "array-under-dotted-key", "json-lines-by-hook"],
)
def test_a_reshaped_output_is_accounted_exactly(
    broker: EmbeddedBroker, group: ProcessGroup, tmp_path: Path, naming: Naming, framing: Framing
) -> None:
    outcome = run_through(broker, group, tmp_path, naming=naming, framing=framing)
    check(outcome, batched=framing != "single")
    if framing != "single":  # 10 readings per message, the last batch partial
        assert outcome.relay.messages == 12


def test_a_header_in_user_properties_leaves_the_body_byte_identical(
    broker: EmbeddedBroker, group: ProcessGroup, tmp_path: Path
) -> None:
    outcome = run_through(broker, group, tmp_path, properties=True)
    check(outcome, batched=False)
    assert set(outcome.observed) == outcome.relay.forwarded
    assert all(outcome.observed[pair] == outcome.published[pair] for pair in outcome.observed)
