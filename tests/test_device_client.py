"""The device's lean MQTT hot path: framing on the wire, PUBACKs however they are split, order under backpressure.

The socket-pair tests look at the exact bytes both ways; the last test runs the
client against a real Mosquitto with a real subscriber.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from pytest_iotperf.embedded.broker import EmbeddedBroker, find_mosquitto
from pytest_iotperf.fleet.device_client import DeviceClient
from pytest_iotperf.fleet.wire import PublishFramer, next_packet

OK = MQTTErrorCode.MQTT_ERR_SUCCESS


def _client() -> DeviceClient:
    return DeviceClient(CallbackAPIVersion.VERSION2, client_id="dev", protocol=mqtt.MQTTv311)


@pytest.fixture
def wired() -> Iterator[tuple[DeviceClient, socket.socket]]:
    """A client whose connection is one end of a socket pair; the test plays the broker on the other."""
    ours, broker_side = socket.socketpair()
    ours.setblocking(False)
    client = _client()
    client._sock = ours  # what paho's connect leaves behind, minus the handshake
    yield client, broker_side
    ours.close()
    broker_side.close()


def _packets(data: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while (found := next_packet(data, pos)) is not None:
        out.append((found[0], data[found[1] : found[2]]))
        pos = found[2]
    assert pos == len(data), "a packet was cut short"
    return out


def _read_all(sock: socket.socket) -> bytes:
    sock.setblocking(False)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            return b"".join(chunks)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_pubacks_split_at_every_byte_are_counted_once_each(wired: tuple[DeviceClient, socket.socket]) -> None:
    client, broker = wired
    framer = PublishFramer("devices/d1", qos=1)
    for seq in range(3):
        assert client.send_publish(framer.frame(b"m%d" % seq, client.packet_id()), qos=1) == OK
    assert client.unacked == 3
    sent = _packets(broker.recv(65536))
    packet_ids = [int.from_bytes(body[12:14], "big") for _, body in sent]
    assert [command for command, _ in sent] == [0x32] * 3 and packet_ids == [1, 2, 3]

    client._ping_t = time.monotonic()  # a PINGREQ is outstanding: paho clears this on PINGRESP
    stream = b"".join(b"\x40\x02" + i.to_bytes(2, "big") for i in packet_ids[:2]) + b"\xd0\x00"
    stream += b"\x40\x02" + packet_ids[2].to_bytes(2, "big")
    complete_after = {3: 2, 7: 1, 9: "ping", 13: 0}  # byte index -> state once that byte arrived
    for index, byte in enumerate(stream):
        broker.send(bytes([byte]))
        assert client.loop_read() == OK
        expected = complete_after.get(index)
        if expected == "ping":
            assert client._ping_t == 0
        elif expected is not None:
            assert client.unacked == expected
    assert client.unacked == 0


def test_writes_keep_their_order_when_the_kernel_buffer_fills(wired: tuple[DeviceClient, socket.socket]) -> None:
    client, broker = wired
    client._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # type: ignore[union-attr]
    framer = PublishFramer("t", qos=1)
    payload = b"x" * 1000
    sent = 0
    while not client.want_write():  # the broker is not reading: fill the buffer
        assert client.send_publish(framer.frame(payload, client.packet_id()), qos=1) == OK
        sent += 1
    received = _read_all(broker)  # room in the kernel again, but paho still holds a partial packet
    for _ in range(20):  # so these must queue behind it, not jump ahead
        assert client.send_publish(framer.frame(payload, client.packet_id()), qos=1) == OK
        sent += 1
    while client.want_write():
        received += _read_all(broker)
        assert client.loop_write() == OK
    received += _read_all(broker)
    packets = _packets(received)
    assert [int.from_bytes(body[3:5], "big") for _, body in packets] == list(range(1, sent + 1))
    assert all(body[5:] == payload for _, body in packets)
    assert client.unacked == sent


def test_a_closed_connection_is_reported_not_raised(wired: tuple[DeviceClient, socket.socket]) -> None:
    client, broker = wired
    reasons: list[object] = []
    client.on_disconnect = lambda *args: reasons.append(args[3])
    broker.close()
    rc = client.send_publish(PublishFramer("t", qos=0).frame(b"x"), qos=0)
    assert rc == MQTTErrorCode.MQTT_ERR_CONN_LOST
    assert client.socket() is None and len(reasons) == 1


def test_garbage_from_the_broker_is_a_protocol_error(wired: tuple[DeviceClient, socket.socket]) -> None:
    client, broker = wired
    broker.send(b"\x30\xff\xff\xff\xff\x01")
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_PROTOCOL
    assert client.socket() is None


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")
def test_every_qos1_publish_reaches_a_subscriber_in_order_and_is_acknowledged() -> None:
    with EmbeddedBroker(prefer="mosquitto") as embedded:
        host, port = embedded.endpoint.host, embedded.endpoint.port
        received: list[bytes] = []
        subscribed, all_in = threading.Event(), threading.Event()
        count = 2000

        def on_message(_c: object, _u: object, message: mqtt.MQTTMessage) -> None:
            received.append(bytes(message.payload))
            if len(received) == count:
                all_in.set()

        subscriber = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="sub")
        subscriber.on_message = on_message
        subscriber.on_subscribe = lambda *_: subscribed.set()
        subscriber.connect(host, port)
        subscriber.subscribe("devices/#", qos=1)
        subscriber.loop_start()
        try:
            assert subscribed.wait(10)
            device = _client()
            connected = threading.Event()
            device.on_connect = lambda *_: connected.set()
            device.connect(host, port)
            while not connected.is_set():
                assert device.loop(timeout=1.0) == OK
            framer = PublishFramer("devices/d1", qos=1)
            for seq in range(count):
                assert device.send_publish(framer.frame(b"%d" % seq, device.packet_id()), qos=1) == OK
                if seq % 100 == 0:
                    device.loop(timeout=0)
            deadline = time.monotonic() + 10
            while device.unacked and time.monotonic() < deadline:
                device.loop(timeout=0.1)
            assert device.unacked == 0
            assert all_in.wait(10)
            assert received == [b"%d" % seq for seq in range(count)]
            device.disconnect()
        finally:
            subscriber.disconnect()
            subscriber.loop_stop()
