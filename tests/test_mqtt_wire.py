"""Hand framing of PUBLISH and packet boundaries: checked against the MQTT 3.1.1 spec and paho's decoder."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.client import MQTTMessage

from pytest_iotperf.mqtt_wire import (
    PublishFramer,
    encode_remaining_length,
    next_packet,
    publish_packet_id,
    retransmission,
)


@pytest.mark.parametrize(
    ("length", "encoded"),
    [  # MQTT 3.1.1, table 2.4: the boundaries of one to four length bytes
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16_383, b"\xff\x7f"),
        (16_384, b"\x80\x80\x01"),
        (2_097_151, b"\xff\xff\x7f"),
        (2_097_152, b"\x80\x80\x80\x01"),
        (268_435_455, b"\xff\xff\xff\x7f"),
    ],
)
def test_remaining_length_matches_the_spec_table(length: int, encoded: bytes) -> None:
    assert encode_remaining_length(length) == encoded


@pytest.mark.parametrize("length", [-1, 268_435_456])
def test_remaining_length_out_of_range_is_refused(length: int) -> None:
    with pytest.raises(ValueError, match="remaining length"):
        encode_remaining_length(length)


def test_qos1_publish_is_byte_exact() -> None:
    packet = PublishFramer("a/b", qos=1).frame(b"hi", packet_id=10)
    assert packet == b"\x32\x09\x00\x03a/b\x00\x0ahi"


def test_qos0_publish_has_no_packet_id() -> None:
    assert PublishFramer("a/b", qos=0).frame(b"hi", packet_id=10) == b"\x30\x07\x00\x03a/bhi"


@pytest.mark.parametrize("topic", ["", "a/+/b", "a/#", "nul\0"])
def test_topics_one_cannot_publish_to_are_refused(topic: str) -> None:
    with pytest.raises(ValueError, match="topic"):
        PublishFramer(topic, qos=0)


def test_qos2_is_not_on_the_fast_path() -> None:
    with pytest.raises(ValueError, match="QoS 0 or 1"):
        PublishFramer("t", qos=2)


@given(
    topic=st.text(alphabet=st.characters(codec="utf-8", exclude_characters="+#\0"), min_size=1),
    payload=st.binary(max_size=40_000),
    qos=st.sampled_from([0, 1]),
    packet_id=st.integers(1, 0xFFFF),
)
def test_framed_publish_decodes_back_with_paho(topic: str, payload: bytes, qos: int, packet_id: int) -> None:
    packet = PublishFramer(topic, qos).frame(payload, packet_id)
    found = next_packet(packet, 0)
    assert found is not None
    command, start, end = found
    assert command == 0x30 | (qos << 1) and end == len(packet)
    body = packet[start:end]
    topic_length = int.from_bytes(body[:2], "big")
    message = MQTTMessage(topic=body[2 : 2 + topic_length])
    assert message.topic == topic
    rest = body[2 + topic_length :]
    if qos:
        assert int.from_bytes(rest[:2], "big") == packet_id
        rest = rest[2:]
    assert rest == payload


@given(
    topic=st.text(alphabet=st.characters(codec="utf-8", exclude_characters="+#\0"), min_size=1),
    payload=st.binary(max_size=20_000),  # one to three remaining-length bytes
    packet_id=st.integers(1, 0xFFFF),
    new_id=st.integers(1, 0xFFFF),
)
def test_a_qos1_publish_is_sent_again_with_dup_or_under_a_new_id(
    topic: str, payload: bytes, packet_id: int, new_id: int
) -> None:
    framer = PublishFramer(topic, 1)
    packet = framer.frame(payload, packet_id)
    assert publish_packet_id(packet) == packet_id
    # The broker kept the session: the very same packet, DUP set (MQTT 3.1.1, 3.3.1.1).
    dup = retransmission(packet)
    assert dup == bytes([0x3A]) + packet[1:] and publish_packet_id(dup) == packet_id
    # A new session: the same message under a new id, DUP clear, byte for byte what framing it anew gives.
    again = retransmission(dup, new_id)
    assert again == framer.frame(payload, new_id) and publish_packet_id(again) == new_id


def test_next_packet_walks_a_stream_and_waits_for_the_rest() -> None:
    framer = PublishFramer("t", qos=1)
    stream = b"\x40\x02\x00\x01" + framer.frame(b"x" * 200, 2) + b"\xd0\x00"  # PUBACK, PUBLISH, PINGRESP
    boundaries = []
    pos = 0
    while (found := next_packet(stream, pos)) is not None:
        boundaries.append((found[0], found[2] - found[1]))
        pos = found[2]
    assert boundaries == [(0x40, 2), (0x32, 3 + 2 + 200), (0xD0, 0)]
    assert pos == len(stream)
    for cut in range(1, len(stream) - 2):  # any prefix ending inside the PUBLISH is incomplete there
        if 4 < cut < len(stream) - 2:
            assert next_packet(stream[:cut], 4) is None


def test_a_length_longer_than_four_bytes_is_malformed() -> None:
    with pytest.raises(ValueError, match="malformed"):
        next_packet(b"\x30\xff\xff\xff\xff\x01", 0)


@pytest.mark.parametrize("size", [0, 100, 122, 123, 124, 500, 16_000, 16_379, 16_380, 16_381, 20_000, 2_100_000])
def test_frame_length_field_inline_cases_agree_with_the_general_encoder(size: int) -> None:
    framer = PublishFramer("devices/d1/telemetry", 1)
    packet = framer.frame(b"x" * size, 9)
    remaining = 2 + len("devices/d1/telemetry") + 2 + size
    field = encode_remaining_length(remaining)
    assert packet[1 : 1 + len(field)] == field
    assert next_packet(packet, 0) == (0x32, 1 + len(field), len(packet))
