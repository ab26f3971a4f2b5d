"""MQTT 5 framing and property decoding, byte for byte against paho's own encoder (pure: no broker)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from pytest_iotperf.lean_mqtt import puback_reason
from pytest_iotperf.mqtt_wire import PublishFramerV5, next_packet, publish_packet_id, user_properties


class _NoSocket:
    def close(self) -> None:
        pass


def _paho_publish(
    topic: bytes, payload: bytes, qos: int, packet_id: int, properties: Properties | None, dup: bool = False
) -> bytes:
    """The PUBLISH paho itself frames for an MQTT 5 client (its queue is caught before any socket)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    queued: list[bytes] = []
    client._packet_queue = lambda _command, packet, *_args, **_kwargs: queued.append(bytes(packet))  # type: ignore[method-assign,assignment]
    client._sock = _NoSocket()  # type: ignore[assignment]
    client._send_publish(packet_id, topic, payload, qos, dup=dup, properties=properties)
    return queued[0]


def _properties(content_type: str | None, alias: bool, user: list[tuple[str, str]] | None) -> Properties | None:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if content_type:
        props.ContentType = content_type
    if alias:
        props.TopicAlias = 1
    if user:
        props.UserProperty = user
    return props if not props.isEmpty() else None  # type: ignore[no-untyped-call]


_text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\0"), max_size=30)


@given(
    topic=st.text(alphabet=st.characters(codec="utf-8", exclude_characters="+#\0"), min_size=1, max_size=40),
    payload=st.binary(max_size=20_000),  # one to three remaining-length bytes
    qos=st.sampled_from([0, 1]),
    packet_id=st.integers(1, 0xFFFF),
    content_type=st.one_of(st.none(), st.just("application/json"), _text),
    alias=st.booleans(),
    user=st.one_of(st.none(), st.lists(st.tuples(_text, _text), max_size=12)),  # up to ~800 property bytes
)
def test_v5_publish_is_byte_for_byte_what_paho_frames(
    topic: str,
    payload: bytes,
    qos: int,
    packet_id: int,
    content_type: str | None,
    alias: bool,
    user: list[tuple[str, str]] | None,
) -> None:
    framer = PublishFramerV5(topic, qos, content_type=content_type, topic_alias=alias)
    props = _properties(content_type, alias, user)
    first = framer.frame(payload, packet_id, user)
    assert first == _paho_publish(topic.encode(), payload, qos, packet_id, props)
    # With the alias, the next packets of the connection carry an empty topic; without it, the topic again.
    second = framer.frame(payload, packet_id, user)
    assert second == _paho_publish(b"" if alias else topic.encode(), payload, qos, packet_id, props)
    framer.reset()  # a new connection: the topic again
    assert framer.frame(payload, packet_id, user) == first


def test_the_alias_is_left_out_when_the_broker_allows_none() -> None:
    framer = PublishFramerV5("devices/d1", 1, topic_alias=True)
    framer.reset(alias_allowed=False)
    assert not framer.alias_in_use
    packets = [framer.frame(b"x", 1), framer.frame(b"x", 2)]
    assert packets == [_paho_publish(b"devices/d1", b"x", 1, i, None) for i in (1, 2)]


def test_an_alias_only_packet_is_sent_again_with_its_topic_and_without_the_alias() -> None:
    user = [("seq", "7"), ("device_id", "d1")]
    framer = PublishFramerV5("devices/d1", 1, content_type="application/json", topic_alias=True)
    with_topic = framer.frame(b"first", 1, user)
    alias_only = framer.frame(b"second", 2, user)
    without_alias = _properties("application/json", False, user)
    # Same session: same id, DUP set; the topic back, the alias gone (it meant something on its connection only).
    again = framer.retransmission(alias_only)
    assert again == _paho_publish(b"devices/d1", b"second", 1, 2, without_alias, dup=True)
    assert publish_packet_id(again) == 2
    # A new session: a new id, DUP clear.
    assert framer.retransmission(again, 9) == _paho_publish(b"devices/d1", b"second", 1, 9, without_alias)
    assert framer.retransmission(alias_only, 9) == _paho_publish(b"devices/d1", b"second", 1, 9, without_alias)
    # A packet that carried its topic keeps everything but its flags and id.
    assert framer.retransmission(with_topic) == bytes([with_topic[0] | 0x08]) + with_topic[1:]
    big = framer.frame(b"x" * 300, 3, user)  # two remaining-length bytes before, two after
    found = next_packet(framer.retransmission(big, 4), 0)
    assert found is not None and found[0] == 0x32
    assert framer.retransmission(big, 4) == _paho_publish(b"devices/d1", b"x" * 300, 1, 4, without_alias)


def _every_property_type() -> list[Properties]:
    """Blocks that hold each kind of MQTT 5 property (byte, 2/4-byte ints, varint, string, binary, pair)."""
    publish = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    publish.PayloadFormatIndicator = 1
    publish.MessageExpiryInterval = 3600
    publish.ContentType = "application/json"
    publish.ResponseTopic = "replies/d1"
    publish.CorrelationData = b"\x00\x01\xff"
    publish.SubscriptionIdentifier = [268_435_455]  # four bytes
    publish.TopicAlias = 3
    publish.UserProperty = [("seq", "7"), ("intended_at", "1764198351123456"), ("seq", "8")]
    connack = Properties(PacketTypes.CONNACK)  # type: ignore[no-untyped-call]
    connack.SessionExpiryInterval = 60
    connack.ReceiveMaximum = 20
    connack.MaximumQoS = 1
    connack.RetainAvailable = 1
    connack.MaximumPacketSize = 1 << 20
    connack.AssignedClientIdentifier = "auto-1"
    connack.TopicAliasMaximum = 10
    connack.ReasonString = "fine"
    connack.WildcardSubscriptionAvailable = 1
    connack.SubscriptionIdentifierAvailable = 1
    connack.SharedSubscriptionAvailable = 0
    connack.ServerKeepAlive = 30
    connack.ResponseInformation = "resp"
    connack.ServerReference = "other:1883"
    connack.AuthenticationMethod = "SCRAM"
    connack.AuthenticationData = b"\x01\x02"
    connack.UserProperty = [("région", "é")]
    connect = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    connect.RequestProblemInformation = 0
    connect.RequestResponseInformation = 1
    will = Properties(PacketTypes.WILLMESSAGE)  # type: ignore[no-untyped-call]
    will.WillDelayInterval = 5
    return [publish, connack, connect, will]


def _unpacked(props: Properties) -> bytes:
    packed: bytes = props.pack()  # type: ignore[no-untyped-call]
    length_bytes = 1
    while packed[length_bytes - 1] & 0x80:
        length_bytes += 1
    return packed[length_bytes:]


def test_user_properties_skip_every_other_property_by_its_type() -> None:
    publish, connack, connect, will = (_unpacked(p) for p in _every_property_type())
    assert user_properties(publish) == {"seq": "8", "intended_at": "1764198351123456"}  # the last of a name
    assert user_properties(connack) == {"région": "é"}
    assert user_properties(connect) == {} and user_properties(will) == {} and user_properties(b"") == {}


@pytest.mark.parametrize(
    "raw",
    [
        b"\x7f\x00",  # no such property
        b"\x26\x00\x03se",  # a name cut short
        b"\x26\x00\x01a\x00\x05ab",  # a value cut short
        b"\x23\x00",  # a two-byte integer cut short
        b"\x0b\xff\xff\xff\xff\x01",  # a variable byte integer of five bytes
        b"\x26\x00\x01\xff\x00\x00",  # a name that is no UTF-8
    ],
)
def test_a_malformed_property_block_is_a_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        user_properties(raw)


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (0x87, "0x87 not authorized"),
        (0x97, "0x97 quota exceeded"),
        (0x90, "0x90 topic name invalid"),
        (0x99, "0x99 payload format invalid"),
        (0x80, "0x80 unspecified error"),
        (0x95, "0x95 unknown reason"),  # a CONNACK/DISCONNECT code, not a PUBACK one
    ],
)
def test_puback_reasons_are_named_as_paho_names_them(code: int, name: str) -> None:
    assert puback_reason(code) == name


def test_a_topic_or_content_type_too_long_is_refused() -> None:
    with pytest.raises(ValueError, match="not a valid topic"):
        PublishFramerV5("a/+", 1)
    with pytest.raises(ValueError, match="longer than 65,535"):
        PublishFramerV5("t", 1, content_type="x" * 70_000)
    framer = PublishFramerV5("t", 0)
    with pytest.raises(ValueError, match="longer than 65,535"):
        framer.frame(b"", 0, [("seq", "x" * 70_000)])
