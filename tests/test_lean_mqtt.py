"""The lean MQTT hot path: framing on the wire, packets however they are split, order under backpressure.

The socket-pair tests look at the exact bytes both ways; the last two run the
client against a real Mosquitto, as a publisher and as a subscriber.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from wired_client import wired_client

from pytest_iotperf.embedded.broker import EmbeddedBroker, find_mosquitto
from pytest_iotperf.lean_mqtt import LeanClient
from pytest_iotperf.mqtt_wire import PublishFramer, next_packet

OK = MQTTErrorCode.MQTT_ERR_SUCCESS


def _client() -> LeanClient:
    return LeanClient(CallbackAPIVersion.VERSION2, client_id="dev", protocol=mqtt.MQTTv311)


@pytest.fixture
def wired() -> Iterator[tuple[LeanClient, socket.socket]]:
    """A client whose connection is one end of a socket pair; the test plays the broker on the other."""
    with wired_client() as pair:
        yield pair


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


def test_pubacks_split_at_every_byte_are_counted_once_each(wired: tuple[LeanClient, socket.socket]) -> None:
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


def test_unacknowledged_publishes_are_kept_by_id_across_a_lost_connection(
    wired: tuple[LeanClient, socket.socket],
) -> None:
    client, broker = wired
    framer = PublishFramer("devices/d1", qos=1)
    packets = [framer.frame(b"m%d" % seq, client.packet_id()) for seq in range(4)]
    for packet_id, packet in enumerate(packets, start=1):
        assert client.send_publish(packet, qos=1, packet_id=packet_id) == OK
    broker.send(b"\x40\x02\x00\x02")  # PUBACK for id 2 only
    assert client.loop_read() == OK
    assert client.unacked == 3
    assert len(_packets(_read_all(broker))) == 4
    broker.close()  # the connection is lost: what was not acknowledged stays, with its bytes
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_CONN_LOST
    assert client.lost_reason == "connection closed by the broker"
    assert client.take_inflight() == [(1, packets[0]), (3, packets[2]), (4, packets[3])]
    assert client.unacked == 0


def test_writes_keep_their_order_when_the_kernel_buffer_fills(wired: tuple[LeanClient, socket.socket]) -> None:
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


def test_a_closed_connection_is_reported_not_raised(wired: tuple[LeanClient, socket.socket]) -> None:
    client, broker = wired
    reasons: list[object] = []
    client.on_disconnect = lambda *args: reasons.append(args[3])
    broker.close()
    rc = client.send_publish(PublishFramer("t", qos=0).frame(b"x"), qos=0)
    assert rc == MQTTErrorCode.MQTT_ERR_CONN_LOST
    assert client.socket() is None and len(reasons) == 1


def test_garbage_from_the_broker_is_a_protocol_error(wired: tuple[LeanClient, socket.socket]) -> None:
    client, broker = wired
    broker.send(b"\x30\xff\xff\xff\xff\x01")
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_PROTOCOL
    assert client.socket() is None


def _publish(topic: bytes, payload: bytes, qos: int, packet_id: int = 0, dup: bool = False) -> bytes:
    """A PUBLISH framed independently of mqtt_wire, from the spec's layout."""
    body = len(topic).to_bytes(2, "big") + topic + (packet_id.to_bytes(2, "big") if qos else b"") + payload
    assert len(body) < 128
    return bytes([0x30 | (0x08 if dup else 0) | (qos << 1), len(body)]) + body


def test_inbound_publishes_split_at_every_byte_are_handed_over_and_acked(
    wired: tuple[LeanClient, socket.socket],
) -> None:
    client, broker = wired
    payloads: list[bytes] = []
    topics: list[bytes] = []

    def on_raw_message(topic: bytes, payload: bytes, properties: bytes | None) -> None:
        assert properties is None  # MQTT 3.1.1
        topics.append(topic)
        payloads.append(payload)

    client.on_raw_message = on_raw_message
    stream = (
        _publish(b"out/d1", b"first", qos=1, packet_id=7)
        + _publish(b"out/d2", b"second", qos=0)
        + _publish(b"out/d1", b"third", qos=1, packet_id=8, dup=True)
        + b"\xd0\x00"  # PINGRESP, for paho
    )
    first_end = len(_publish(b"out/d1", b"first", qos=1, packet_id=7))
    for index, byte in enumerate(stream):
        broker.send(bytes([byte]))
        assert client.loop_read() == OK
        if index == first_end - 2:
            assert payloads == []  # one byte short of the first packet: nothing yet
        if index == first_end - 1:
            assert payloads == [b"first"]
            assert broker.recv(16) == b"\x40\x02\x00\x07"
    assert payloads == [b"first", b"second", b"third"]
    assert topics == [b"out/d1", b"out/d2", b"out/d1"]
    assert _read_all(broker) == b"\x40\x02\x00\x08"  # QoS 0 is not acknowledged


def test_acks_of_one_read_leave_in_one_write(wired: tuple[LeanClient, socket.socket]) -> None:
    client, broker = wired
    payloads: list[bytes] = []
    client.on_raw_message = lambda _topic, payload, _properties: payloads.append(payload)
    broker.send(b"".join(_publish(b"t", b"%d" % i, qos=1, packet_id=i + 1) for i in range(50)))
    assert client.loop_read() == OK
    assert payloads == [b"%d" % i for i in range(50)]
    assert _read_all(broker) == b"".join(b"\x40\x02" + (i + 1).to_bytes(2, "big") for i in range(50))


def test_a_disconnect_on_delivery_goes_out_after_the_acks(wired: tuple[LeanClient, socket.socket]) -> None:
    # The sink stops once the last message arrived: its PUBACKs must not be queued behind the DISCONNECT.
    client, broker = wired

    def stop_on_delivery(_topic: bytes, _payload: bytes, _properties: bytes | None) -> None:
        client.disconnect()

    client.on_raw_message = stop_on_delivery
    broker.send(_publish(b"t", b"last", qos=1, packet_id=3) + _publish(b"t", b"later", qos=1, packet_id=4))
    client.loop_read()
    assert _read_all(broker) == b"\x40\x02\x00\x03\x40\x02\x00\x04\xe0\x00"


def test_qos2_goes_through_paho_and_untaken_publishes_stay_with_paho(wired: tuple[LeanClient, socket.socket]) -> None:
    client, broker = wired
    raw: list[tuple[bytes, bytes]] = []
    by_paho: list[tuple[str, bytes, int]] = []
    client.on_message = lambda _c, _u, m: by_paho.append((m.topic, bytes(m.payload), m.qos))
    client.on_raw_message = lambda topic, payload, _properties: raw.append((topic, payload))
    broker.send(_publish(b"t/2", b"exactly-once", qos=2, packet_id=9))
    assert client.loop_read() == OK
    assert raw == [] and broker.recv(16) == b"\x50\x02\x00\x09"  # paho answers PUBREC and holds it
    broker.send(b"\x62\x02\x00\x09")  # PUBREL
    assert client.loop_read() == OK
    assert broker.recv(16) == b"\x70\x02\x00\x09"  # PUBCOMP
    assert raw == [(b"t/2", b"exactly-once")] and by_paho == []  # delivered once, as raw bytes
    client.on_raw_message = None  # without the fast path, QoS 1 goes to paho's on_message
    broker.send(_publish(b"t/1", b"plain", qos=1, packet_id=10))
    assert client.loop_read() == OK
    assert by_paho == [("t/1", b"plain", 1)] and broker.recv(16) == b"\x40\x02\x00\x0a"


def test_a_publish_whose_topic_overruns_it_is_a_protocol_error(wired: tuple[LeanClient, socket.socket]) -> None:
    client, broker = wired
    client.on_raw_message = lambda topic, payload, properties: None
    broker.send(b"\x32\x04\x00\x09ab")  # topic length 9 in a 4-byte body
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


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")
def test_a_lean_subscriber_gets_everything_and_its_acks_reach_the_broker() -> None:
    # With a persistent session the broker keeps every QoS 1 message it was not
    # acknowledged and delivers it again on reconnect: after our batched PUBACKs,
    # the resumed session must bring nothing back but a marker sent after it.
    count = 3000
    with EmbeddedBroker(prefer="mosquitto") as embedded:
        host, port = embedded.endpoint.host, embedded.endpoint.port
        received: list[bytes] = []
        all_in, subscribed = threading.Event(), threading.Event()

        def on_raw_message(topic: bytes, payload: bytes, properties: bytes | None) -> None:
            assert topic == b"out/d1"
            received.append(payload)
            if len(received) == count:
                all_in.set()

        subscriber = LeanClient(CallbackAPIVersion.VERSION2, client_id="lean-sub", clean_session=False)
        subscriber.on_raw_message = on_raw_message
        subscriber.on_subscribe = lambda *_: subscribed.set()
        subscriber.connect(host, port)
        subscriber.subscribe("out/#", qos=1)
        subscriber.loop_start()
        publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pub")
        publisher.max_inflight_messages_set(0)
        publisher.connect(host, port)
        publisher.loop_start()
        try:
            assert subscribed.wait(10)
            for seq in range(count):
                publisher.publish("out/d1", b"%d" % seq, qos=1)
            assert all_in.wait(20), f"{len(received)} of {count} arrived"
            assert received == [b"%d" % seq for seq in range(count)]
            # A fence on the same connection: the broker handles a connection's packets in
            # order, so once our own publish is acknowledged, every PUBACK before it was
            # handled too (a new connection could otherwise take the session over first).
            fence = subscriber.publish("fence/lean-sub", b"fence", qos=1)
            fence.wait_for_publish(10)
            assert fence.is_published()
            subscriber.disconnect()
            subscriber.loop_stop()

            redelivered: list[bytes] = []
            marker_in = threading.Event()
            resumed = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="lean-sub", clean_session=False)

            def on_message(_c: object, _u: object, message: mqtt.MQTTMessage) -> None:
                redelivered.append(bytes(message.payload))
                if message.payload == b"marker":
                    marker_in.set()

            def on_connect(*_: object) -> None:  # sent after the session resumed: it comes last
                publisher.publish("out/d1", b"marker", qos=1)

            resumed.on_message = on_message
            resumed.on_connect = on_connect
            resumed.connect(host, port)
            resumed.loop_start()
            try:
                assert marker_in.wait(10)
                assert redelivered == [b"marker"]
            finally:
                resumed.disconnect()
                resumed.loop_stop()
        finally:
            publisher.disconnect()
            publisher.loop_stop()
            subscriber.disconnect()
            subscriber.loop_stop()
