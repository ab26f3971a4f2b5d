"""The lean client speaking MQTT 5 on a socket pair: PUBACK reason codes both ways, properties kept off the payload."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from paho.mqtt import client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from wired_client import wired_client

from pytest_iotperf.lean_mqtt import LeanClient
from pytest_iotperf.mqtt_wire import PublishFramerV5, user_properties

OK = MQTTErrorCode.MQTT_ERR_SUCCESS


@pytest.fixture
def wired() -> Iterator[tuple[LeanClient, socket.socket]]:
    """An MQTT 5 client whose connection is one end of a socket pair; the test plays the broker."""
    with wired_client(mqtt.MQTTv5) as pair:
        yield pair


def test_every_puback_form_settles_its_publish_and_refusals_are_reported(
    wired: tuple[LeanClient, socket.socket],
) -> None:
    client, broker = wired
    refused: list[int] = []
    client.on_publish_refused = refused.append
    framer = PublishFramerV5("devices/d1", 1, content_type="application/json")
    for seq in range(5):
        assert client.send_publish(framer.frame(b"m%d" % seq, client.packet_id()), qos=1) == OK
    assert client.unacked == 5
    reason_string = b"\x1f\x00\x04deny"  # property 0x1F: a reason string
    stream = (
        b"\x40\x02\x00\x01"  # success, reason code omitted
        + b"\x40\x03\x00\x02\x10"  # no matching subscribers: a success
        + b"\x40\x03\x00\x03\x97"  # quota exceeded
        + b"\x40\x04\x00\x04\x00\x00"  # success with an empty property block
        + b"\x40\x0a\x00\x05\x87\x07"
        + reason_string  # not authorized, with a reason string
    )
    for byte in stream:  # split at every byte: each settles once its last byte is in
        broker.send(bytes([byte]))
        assert client.loop_read() == OK
    assert client.unacked == 0
    assert refused == [0x97, 0x87]


def test_a_puback_for_pahos_own_publish_still_reaches_paho(wired: tuple[LeanClient, socket.socket]) -> None:
    client, broker = wired
    reasons: list[int] = []
    client.on_publish = lambda _c, _u, _mid, reason, _props: reasons.append(reason.value)
    info = client.publish("t", b"by paho", qos=1)
    broker.send(b"\x40\x03" + info.mid.to_bytes(2, "big") + b"\x87")
    assert client.loop_read() == OK
    assert reasons == [0x87] and info.is_published()


def test_a_v5_subscriber_gets_payload_and_properties_apart(wired: tuple[LeanClient, socket.socket]) -> None:
    client, broker = wired
    received: list[tuple[bytes, bytes, bytes | None]] = []
    client.on_raw_message = lambda topic, payload, properties: received.append((topic, payload, properties))
    with_props = PublishFramerV5("out/d1", 1, content_type="application/json")
    bare = PublishFramerV5("out/d2", 0)
    header = [("seq", "7"), ("device_id", "d1")]
    big = [("pad", "x" * 200)]  # a property length of two bytes
    stream = (
        with_props.frame(b'{"t":21}', 7, header)
        + bare.frame(b"plain")  # property length 0: None
        + with_props.frame(b"", 8, big)
    )
    for byte in stream:
        broker.send(bytes([byte]))
        assert client.loop_read() == OK
    expected = [(b"out/d1", b'{"t":21}'), (b"out/d2", b"plain"), (b"out/d1", b"")]
    assert [(topic, payload) for topic, payload, _ in received] == expected
    first, second, third = (properties for _, _, properties in received)
    assert first is not None and user_properties(first) == dict(header)
    assert second is None
    assert third is not None and user_properties(third) == dict(big)
    broker.setblocking(False)
    assert broker.recv(16) == b"\x40\x02\x00\x07\x40\x02\x00\x08"  # QoS 1 only, success in the 2-byte form


def test_a_v5_publish_without_its_property_length_is_a_protocol_error(
    wired: tuple[LeanClient, socket.socket],
) -> None:
    client, broker = wired
    client.on_raw_message = lambda topic, payload, properties: None
    broker.send(b"\x32\x05\x00\x01t\x00\x01")  # topic, packet id, then nothing
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_PROTOCOL


def test_qos2_through_paho_hands_over_its_properties_too(wired: tuple[LeanClient, socket.socket]) -> None:
    client, broker = wired
    received: list[tuple[bytes, bytes, bytes | None]] = []
    client.on_raw_message = lambda topic, payload, properties: received.append((topic, payload, properties))
    packet = bytearray(PublishFramerV5("t/2", 1).frame(b"once", 9, [("seq", "3")]))
    packet[0] = 0x34  # the same layout at QoS 2
    broker.send(bytes(packet))
    assert client.loop_read() == OK
    assert broker.recv(16) == b"\x50\x02\x00\x09"  # PUBREC (paho)
    broker.send(b"\x62\x02\x00\x09")  # PUBREL
    assert client.loop_read() == OK
    assert len(received) == 1
    topic, payload, properties = received[0]
    assert (topic, payload) == (b"t/2", b"once")
    assert properties is not None and user_properties(properties) == {"seq": "3"}
