"""PUBACK latency (QoS 1 publish write -> its PUBACK) as the lean client measures it, on a fake clock."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from wired_client import wired_client

from pytest_iotperf import lean_mqtt
from pytest_iotperf.lean_mqtt import LeanClient
from pytest_iotperf.mqtt_wire import PublishFramer, retransmission

OK = MQTTErrorCode.MQTT_ERR_SUCCESS


class FakeClock:
    def __init__(self) -> None:
        self.ns = 5_000_000_000

    def __call__(self) -> int:
        return self.ns

    def advance_us(self, us: int) -> None:
        self.ns += us * 1000


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(lean_mqtt, "_now_ns", fake)
    return fake


@pytest.fixture
def wired() -> Iterator[tuple[LeanClient, socket.socket]]:
    """A client whose connection is one end of a socket pair; the test plays the broker on the other."""
    with wired_client() as pair:
        yield pair


def _puback(packet_id: int) -> bytes:
    return b"\x40\x02" + packet_id.to_bytes(2, "big")


def _publish(client: LeanClient, framer: PublishFramer, payload: bytes) -> int:
    packet_id = client.packet_id()
    assert client.send_publish(framer.frame(payload, packet_id), 1, packet_id) == OK
    return packet_id


def test_each_puback_counts_the_microseconds_since_its_publish_was_written(
    wired: tuple[LeanClient, socket.socket], clock: FakeClock
) -> None:
    client, broker = wired
    counts: dict[int, int] = {}
    client.ack_latency = counts
    framer = PublishFramer("devices/d1", qos=1)
    first = _publish(client, framer, b"a")
    clock.advance_us(300)
    second = _publish(client, framer, b"b")
    clock.advance_us(1200)
    broker.send(_puback(first) + _puback(second))  # one read: both arrived by the same instant
    assert client.loop_read() == OK
    assert counts == {1500: 1, 1200: 1}
    assert client.unacked == 0


def test_a_puback_for_no_timed_publish_counts_nothing(
    wired: tuple[LeanClient, socket.socket], clock: FakeClock
) -> None:
    client, broker = wired
    counts: dict[int, int] = {}
    client.ack_latency = counts
    broker.send(_puback(42))
    assert client.loop_read() == OK
    assert counts == {}


def test_a_message_sent_again_is_timed_from_the_resend(
    wired: tuple[LeanClient, socket.socket], clock: FakeClock
) -> None:
    client, broker = wired
    counts: dict[int, int] = {}
    client.ack_latency = counts
    framer = PublishFramer("devices/d1", qos=1)
    _publish(client, framer, b"a")
    clock.advance_us(5_000_000)  # the connection is lost meanwhile; the device reconnects
    (packet_id, packet), = client.take_inflight()
    again_id = client.packet_id()
    assert client.send_publish(retransmission(packet, again_id), 1, again_id) == OK
    clock.advance_us(700)
    broker.send(_puback(packet_id) + _puback(again_id))  # a late ack of the old id is no measurement
    assert client.loop_read() == OK
    assert counts == {700: 1}


def test_without_a_counter_nothing_is_timed(wired: tuple[LeanClient, socket.socket], clock: FakeClock) -> None:
    client, broker = wired
    framer = PublishFramer("devices/d1", qos=1)
    packet_id = _publish(client, framer, b"a")
    assert client._sent_ns == {}
    broker.send(_puback(packet_id))
    assert client.loop_read() == OK
    assert client.unacked == 0


def test_many_clients_share_one_counter(clock: FakeClock) -> None:
    counts: dict[int, int] = {}
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        clients = []
        for ours, _ in pairs:
            ours.setblocking(False)
            client = LeanClient(CallbackAPIVersion.VERSION2, client_id="dev", protocol=mqtt.MQTTv311)
            client._sock = ours
            client.ack_latency = counts
            clients.append(client)
        framer = PublishFramer("devices/d1", qos=1)
        ids = [_publish(client, framer, b"x") for client in clients]
        clock.advance_us(250)
        for (_, broker), client, packet_id in zip(pairs, clients, ids, strict=True):
            broker.send(_puback(packet_id))
            assert client.loop_read() == OK
        assert counts == {250: 3}
    finally:
        for a, b in pairs:
            a.close()
            b.close()
