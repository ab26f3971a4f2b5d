"""MQTT 5 against a real Mosquitto 2: lean publish with properties and a topic alias, ACL refusals, sessions.

One Mosquitto for the module, with an ACL that grants anonymous clients
``allowed/#`` only: a QoS 1 publish anywhere else is answered with PUBACK 0x87
(Mosquitto 2 tells an MQTT 5 client; a 3.1.1 one would get a plain PUBACK).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from acl_mosquitto import acl_mosquitto

from pytest_iotperf.connection import Connection
from pytest_iotperf.embedded.broker import find_mosquitto
from pytest_iotperf.lean_mqtt import LeanClient, puback_reason
from pytest_iotperf.mqtt_client import ClientIdentity, connect, make_client
from pytest_iotperf.mqtt_wire import PublishFramerV5, user_properties
from pytest_iotperf.persistent_session import Backoff, PersistentSession, close_session

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")
WAIT_S = 10.0


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Connection]:
    """Mosquitto with an ACL: anonymous clients may publish and subscribe under allowed/ only."""
    with acl_mosquitto(tmp_path_factory.mktemp("mosquitto5"), "topic readwrite allowed/#\n") as port:
        yield Connection("127.0.0.1", port, protocol_version="5")


def _loop_until(client: LeanClient, done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        assert client.loop(timeout=0.05) == 0, f"connection lost waiting for {what}"


def _connected(connection: Connection, client_id: str, clean_session: bool = True) -> tuple[LeanClient, Any]:
    """A lean MQTT 5 client, connected: (client, its CONNACK properties)."""
    client = make_client(connection, ClientIdentity(client_id), clean_session=clean_session)
    connacks: list[Any] = []
    client.on_connect = lambda _c, _u, flags, reason, props: connacks.append((flags, reason, props))
    connect(client, connection)
    _loop_until(client, lambda: bool(connacks), "the CONNACK")
    assert not connacks[0][1].is_failure, connacks[0][1]
    return client, connacks[0][2]


class Subscriber:
    """A lean MQTT 5 subscriber on its own thread, keeping every (topic, payload, properties)."""

    def __init__(self, connection: Connection, topic_filter: str) -> None:
        self.received: list[tuple[bytes, bytes, bytes | None]] = []
        self._subscribed = threading.Event()
        self.client, _ = _connected(connection, f"sub-{topic_filter.split('/')[1]}")
        self.client.on_raw_message = lambda topic, payload, props: self.received.append((topic, payload, props))
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.subscribe(topic_filter, qos=1)
        self.client.loop_start()
        assert self._subscribed.wait(WAIT_S)

    def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + WAIT_S
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"{len(self.received)} of {count} arrived"
            time.sleep(0.02)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_lean_v5_publishes_keep_topic_properties_and_payload_across_a_reconnect(broker: Connection) -> None:
    subscriber = Subscriber(broker, "allowed/alias/#")
    try:
        device, connack = _connected(broker, "device-alias")
        assert connack.TopicAliasMaximum >= 1  # mosquitto allows 10 by default
        framer = PublishFramerV5("allowed/alias/d1", 1, content_type="application/json", topic_alias=True)
        framer.reset(alias_allowed=connack.TopicAliasMaximum >= 1)

        def publish(seq: int) -> bytes:
            packet_id = device.packet_id()
            packet = framer.frame(b'{"seq": %d}' % seq, packet_id, [("seq", str(seq)), ("device_id", "d1")])
            assert device.send_publish(packet, 1, packet_id) == 0
            return packet

        for seq in range(10):
            publish(seq)
        _loop_until(device, lambda: device.unacked == 0, "every PUBACK")
        # Two alias-only packets framed on this connection but lost with it (never sent): kept as unacknowledged.
        lost = [framer.frame(b'{"seq": %d}' % seq, device.packet_id(), [("seq", str(seq))]) for seq in (10, 11)]
        device.inflight.update((index, packet) for index, packet in enumerate(lost, start=1000))
        device.socket().shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
        device.loop(timeout=0.5)  # notices the loss

        acks: list[Any] = []
        device.on_connect = lambda _c, _u, flags, reason, props: acks.append(props)
        connect(device, broker)  # a clean start: a new session, so new packet ids
        _loop_until(device, lambda: bool(acks), "the second CONNACK")
        framer.reset(alias_allowed=acks[0].TopicAliasMaximum >= 1)
        for _, packet in device.take_inflight():  # the alias meant nothing on the new connection: the topic again
            again_id = device.packet_id()
            assert device.send_publish(framer.retransmission(packet, again_id), 1, again_id) == 0
        for seq in range(12, 15):  # the first of the new connection sets the alias again
            publish(seq)
        _loop_until(device, lambda: device.unacked == 0, "every PUBACK after the reconnect")
        device.disconnect()

        subscriber.wait_for(15)
        assert [payload for _, payload, _ in subscriber.received] == [b'{"seq": %d}' % seq for seq in range(15)]
        assert {topic for topic, _, _ in subscriber.received} == {b"allowed/alias/d1"}
        properties = [props for _, _, props in subscriber.received]
        assert all(props is not None and b"application/json" in props for props in properties)
        assert [user_properties(props or b"")["seq"] for props in properties] == [str(seq) for seq in range(15)]
        assert user_properties(properties[0] or b"") == {"seq": "0", "device_id": "d1"}
    finally:
        subscriber.close()


def test_a_publish_the_acl_refuses_is_settled_and_counted_by_reason(broker: Connection) -> None:
    device, _ = _connected(broker, "device-acl")
    refused: list[int] = []
    device.on_publish_refused = refused.append
    for topic in ("forbidden/d1", "allowed/nobody-listens", "forbidden/d1"):
        framer = PublishFramerV5(topic, 1)
        packet_id = device.packet_id()
        assert device.send_publish(framer.frame(b"x", packet_id), 1, packet_id) == 0
    _loop_until(device, lambda: device.unacked == 0, "every PUBACK")  # refused ones too: never left unacked
    assert refused == [0x87, 0x87]  # 0x10 "no matching subscribers" is a success
    assert puback_reason(refused[0]) == "0x87 not authorized"
    device.disconnect()


def test_a_v5_persistent_session_survives_a_drop_and_closing_ends_it(broker: Connection) -> None:
    identity = ClientIdentity("reader-v5")
    client = make_client(broker, identity, clean_session=False)
    online: list[bool] = []
    received: list[bytes] = []

    def on_online(c: Any, fresh: bool) -> None:
        online.append(fresh)
        if fresh:
            c.subscribe("allowed/session", qos=1)

    client.on_raw_message = lambda _topic, payload, _props: received.append(payload)
    session = PersistentSession(client, broker, identity, on_online, backoff=Backoff(0.05, 0.1))
    session.start()
    try:
        assert session.online.wait(WAIT_S)
        time.sleep(0.2)  # the SUBACK
        client.socket().shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
        deadline = time.monotonic() + WAIT_S
        while len(online) < 2:
            assert time.monotonic() < deadline, "not reconnected"
            time.sleep(0.02)
        assert online == [True, False]  # the broker kept the session (expiry asked for): no new subscription
        publisher, _ = _connected(broker, "pub-session")
        publisher.publish("allowed/session", b"after the drop", qos=1)
        _loop_until(publisher, lambda: not publisher._out_messages, "the publisher's PUBACK")
        publisher.disconnect()
        while not received:
            assert time.monotonic() < deadline, "the subscription was lost with the connection"
            time.sleep(0.02)
        assert received == [b"after the drop"]
    finally:
        session.stop()
    assert session.close() is None
    again = make_client(broker, identity, clean_session=False)
    flags: list[Any] = []
    again.on_connect = lambda _c, _u, f, _reason, _props: flags.append(f)
    connect(again, broker)
    _loop_until(again, lambda: bool(flags), "the CONNACK")
    assert not flags[0].session_present  # closing ended it
    again.disconnect()
    assert close_session(broker, identity) is None
