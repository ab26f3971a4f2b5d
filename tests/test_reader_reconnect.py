"""The readers come back: the MQTT sink and the bridge's subscriber reconnect with a persistent session.

Real parts: embedded mosquitto, the sink started as the plugin starts it
(``python -m pytest_iotperf.sinks.mqtt_sink SPEC REPORT``), paho publishers
with the real telemetry header, and ``cutting_proxy.CuttingProxy`` between a
reader and the broker to cut only the reader's connection (mosquitto without
persistence forgets what it queued when it restarts itself, so the
queue-while-away case needs the broker to stay up).
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
from cutting_proxy import CuttingProxy
from paho.mqtt.enums import CallbackAPIVersion

from pytest_iotperf.bridge.spec import BridgeSpec
from pytest_iotperf.bridge.subscriber import MqttSubscriber
from pytest_iotperf.connection import Connection
from pytest_iotperf.embedded.broker import EmbeddedBroker, find_mosquitto
from pytest_iotperf.header import PayloadTemplate
from pytest_iotperf.persistent_session import Backoff, subscription_qos
from pytest_iotperf.processes import Child, ChildExited, ProcessGroup

RUN_ID = "run-reconnect"
FILTER = "devices/#"
START_S = 20.0  # process start-up on a loaded 2-core machine
WAIT_S = 20.0
OUTAGE_S = 1.0  # long enough for several refused reconnect attempts (100, 200, 400 ms ...)

needs_mosquitto = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")


@pytest.fixture
def embedded() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(prefer="mosquitto") as broker:
        yield broker


@pytest.fixture
def group() -> Iterator[ProcessGroup]:
    with ProcessGroup() as processes:
        yield processes


class Publisher:
    """A QoS 1 paho publisher straight to the broker; ``publish`` returns once the broker acknowledged."""

    def __init__(self, host: str, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-publisher-{secrets.token_hex(4)}")
        self.client.reconnect_delay_set(1, 1)  # its own reconnect, after the broker restarted
        self.client.connect(host, port)
        self.client.loop_start()
        self.templates: dict[str, PayloadTemplate] = {}
        self.published = 0

    def publish(self, device_id: str, seq: int) -> None:
        template = self.templates.setdefault(device_id, PayloadTemplate(RUN_ID, device_id))
        now = time.time_ns() // 1000
        info = self.client.publish(f"devices/{device_id}/telemetry", template.render(seq, now, now), qos=1)
        info.wait_for_publish(WAIT_S)
        self.published += 1

    def publish_range(self, devices: int, seqs: range) -> None:
        for seq in seqs:
            for device in range(devices):
                self.publish(f"dev-{device}", seq)

    def wait_connected(self) -> None:
        deadline = time.monotonic() + WAIT_S
        while not self.client.is_connected():
            assert time.monotonic() < deadline, "the publisher did not reconnect"
            time.sleep(0.05)  # polls paho's state; bounded by the deadline

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def start_sink(group: ProcessGroup, workdir: Path, port: int) -> Child:
    spec = {
        "run_id": RUN_ID,
        "connection": Connection("127.0.0.1", port, qos=1).to_dict(),
        "topic_filter": FILTER,
        "timeline_slot_s": 1,
    }
    spec_path = workdir / "sink-spec.json"
    spec_path.write_text(json.dumps(spec))
    args = [str(spec_path), str(workdir / "sink-report.json")]
    module = "pytest_iotperf.sinks.mqtt_sink"
    sink = group.add(Child.python_module("mqtt sink", module, args, workdir / "sink.log", stdin=True))
    sink.wait_for("ready", START_S)
    return sink


def drain(sink: Child, workdir: Path, expected: int, timeout_s: float = WAIT_S) -> dict[str, Any]:
    sink.send({"cmd": "drain", "expected": expected, "timeout_s": timeout_s})
    sink.wait_for("done", timeout_s + WAIT_S)
    assert sink.process.wait(10) == 0
    report: dict[str, Any] = json.loads((workdir / "sink-report.json").read_text())
    return report


def wait_until_all_seen(sink: Child, publisher: Publisher) -> None:
    """Publish probes until a progress event says the sink read every message published so far.

    The sink reports progress on an arrival at most once a second, so a quiet sink says nothing: each probe
    is an arrival, and one of them comes late enough to be reported.
    """
    deadline = time.monotonic() + WAIT_S
    probe = 0
    while True:
        try:
            while True:
                event = sink.next_event(time.monotonic() + 0.25)
                if event.get("event") == "progress" and event["received"] == publisher.published:
                    return
        except ChildExited:
            assert sink.alive() and time.monotonic() < deadline, "the sink did not read what was published"
        publisher.publish("probe", probe)
        probe += 1


def session_present_for(host: str, port: int, client_id: str) -> bool:
    """Whether the broker holds a session for ``client_id`` (connect with clean session false; closed again after)."""
    flags: list[bool] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    client.on_connect = lambda c, u, connect_flags, reason, p: flags.append(connect_flags.session_present)
    client.connect(host, port)
    deadline = time.monotonic() + WAIT_S
    while not flags and time.monotonic() < deadline:
        client.loop(0.1)
    client.disconnect()
    cleaner = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    cleaner.connect(host, port)  # the probe made a session: drop it
    cleaner.loop(0.5)
    cleaner.disconnect()
    assert flags, f"no CONNACK for {client_id!r}"
    return flags[0]


# -- pure ---------------------------------------------------------------------------------------------------------


def test_backoff_starts_near_100ms_doubles_with_jitter_and_is_capped() -> None:
    backoff = Backoff(first_s=0.1, cap_s=2.0, uniform=lambda low, high: high)  # the longest draw
    assert [round(backoff.next_delay(), 3) for _ in range(7)] == [0.15, 0.3, 0.6, 1.2, 2.0, 2.0, 2.0]
    backoff.reset()
    assert round(backoff.next_delay(), 3) == 0.15
    jittered = Backoff()
    first = [Backoff().next_delay() for _ in range(200)]
    assert all(0.05 <= d <= 0.15 for d in first) and len(set(first)) > 100
    assert all(d <= 2.0 for d in (jittered.next_delay() for _ in range(50)))


def test_readers_subscribe_at_qos_1_at_least() -> None:
    assert [subscription_qos(q) for q in (0, 1, 2)] == [1, 1, 2]


# -- the sink process -----------------------------------------------------------------------------------------------


@needs_mosquitto
@pytest.mark.fleet
def test_sink_cut_off_gets_what_the_broker_queued_meanwhile_and_leaves_no_session(
    embedded: EmbeddedBroker, group: ProcessGroup, tmp_path: Path
) -> None:
    broker = embedded.endpoint
    publisher = Publisher(broker.host, broker.port)
    with CuttingProxy(broker.host, broker.port) as proxy:
        sink = start_sink(group, tmp_path, proxy.port)
        try:
            publisher.publish_range(4, range(0, 25))
            assert proxy.cut() == 1
            # Published and acknowledged while the sink is away: queued by the broker for its session.
            publisher.publish_range(4, range(25, 50))
            time.sleep(OUTAGE_S)  # the outage itself: the sink's attempts meanwhile are refused
            refused = proxy.refused
            proxy.resume()
            publisher.publish_range(4, range(50, 75))
        finally:
            publisher.close()
        event = sink.wait_for("reconnected", WAIT_S)
        assert event["session_present"] is True  # the broker kept the session: no subscription needed
        report = drain(sink, tmp_path, publisher.published)
    assert refused >= 1
    assert report["drain"] == "complete" and report["errors"] == []
    assert report["received"] == publisher.published == 300
    assert report["ledger"]["devices"] == {f"dev-{d}": [[0, 75]] for d in range(4)}
    assert report["disconnects"] == 1 and report["reconnects"] == 1
    # The outage is visible as delay: the queued messages waited for the sink.
    assert report["delay"]["max_us"] >= OUTAGE_S * 1_000_000 * 0.9
    assert "reconnected" in sink.log_path.read_text()
    # Closed at the end: no session is left on the broker for the sink's client id.
    assert session_present_for(broker.host, broker.port, f"{RUN_ID}-sink") is False


@needs_mosquitto
@pytest.mark.fleet
def test_sink_survives_a_broker_restart_and_subscribes_again(
    embedded: EmbeddedBroker, group: ProcessGroup, tmp_path: Path
) -> None:
    broker = embedded.endpoint
    sink = start_sink(group, tmp_path, broker.port)
    publisher = Publisher(broker.host, broker.port)
    try:
        publisher.publish_range(2, range(0, 20))
        wait_until_all_seen(sink, publisher)  # delivered before the broker goes: nothing of it dies with it
        embedded.restart()
        event = sink.wait_for("reconnected", WAIT_S)
        assert event["session_present"] is False  # mosquitto forgot everything: the sink subscribed again
        publisher.wait_connected()
        publisher.publish_range(2, range(20, 40))
    finally:
        publisher.close()
    report = drain(sink, tmp_path, publisher.published)
    assert report["drain"] == "complete" and report["errors"] == []
    assert report["received"] == publisher.published >= 80
    assert report["disconnects"] == 1 and report["reconnects"] == 1


@needs_mosquitto
@pytest.mark.fleet
def test_sink_that_cannot_reconnect_still_reports_and_says_why(
    embedded: EmbeddedBroker, group: ProcessGroup, tmp_path: Path
) -> None:
    broker = embedded.endpoint
    publisher = Publisher(broker.host, broker.port)
    with CuttingProxy(broker.host, broker.port) as proxy:
        sink = start_sink(group, tmp_path, proxy.port)
        try:
            publisher.publish_range(2, range(0, 10))
            wait_until_all_seen(sink, publisher)
            proxy.cut()  # and never resumed
            publisher.publish_range(2, range(10, 20))
        finally:
            publisher.close()
        report = drain(sink, tmp_path, publisher.published, timeout_s=1.5)
    assert report["drain"] == "timeout"
    assert report["received"] == publisher.published - 20 and report["disconnects"] == 1 and report["reconnects"] == 0
    assert any("offline for the last" in e and "not reconnected" in e for e in report["errors"]), report["errors"]
    # It could not close its session either (the proxy still refuses): said, not hidden.
    assert any("may be left on the broker" in e for e in report["errors"]), report["errors"]


# -- the bridge's subscriber (in process: its Event Hubs side is not involved) ---------------------------------------


@needs_mosquitto
def test_bridge_subscriber_reconnects_keeps_its_session_fences_and_closes_it(embedded: EmbeddedBroker) -> None:
    broker = embedded.endpoint
    received: list[bytes] = []
    with CuttingProxy(broker.host, broker.port) as proxy:
        spec = BridgeSpec.from_dict(
            {
                "host": "127.0.0.1",
                "port": proxy.port,
                "topic_filter": FILTER,
                "topic_template": "devices/{device_id}/telemetry",
                "run_id": RUN_ID,
                "qos": 1,
            }
        )
        subscriber = MqttSubscriber(spec, lambda topic, payload, properties: received.append(payload))
        publisher = Publisher(broker.host, broker.port)
        try:
            subscriber.start(WAIT_S)
            publisher.publish_range(3, range(0, 10))
            proxy.cut()
            publisher.publish_range(3, range(10, 20))  # queued for the bridge's session
            proxy.resume()
            # The fence waits for the session to be back, then for everything routed before it.
            assert subscriber.fence(WAIT_S) == "ok"
            # Distinct: a message in flight when the connection broke comes again (a duplicate, not a loss).
            assert len(set(received)) == publisher.published == 60
        finally:
            publisher.close()
            subscriber.stop()
    assert subscriber.disconnects == 1 and subscriber.reconnects == 1
    assert subscriber.errors == []
    assert session_present_for(broker.host, broker.port, spec.client_id) is False
