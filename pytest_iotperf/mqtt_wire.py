"""MQTT framing for the telemetry hot path: PUBLISH built by hand, packet boundaries found in a byte stream.

paho spends ~25 Python calls, three lock round trips and four ``recv`` calls
(one byte, one byte, two bytes, then one that fails with EAGAIN) on every
packet it reads, and builds an ``MQTTMessage`` plus ``MQTTMessageInfo`` per
publish.  Here a publish is one bytes join of a pre-built header, and
:func:`next_packet` walks every complete packet of one ``recv``
(``lean_mqtt`` uses both).  Pure: no sockets, no gevent.

MQTT 5 (:class:`PublishFramerV5`): the same join with a property block
(content type and topic alias pre-encoded, user properties per message);
:func:`user_properties` decodes a received block on demand.
"""

from __future__ import annotations

PUBLISH = 0x30
PUBACK = 0x40
DUP = 0x08  # PUBLISH flag: this may be a retransmission of a packet sent earlier with the same id
_MAX_REMAINING_LENGTH = 268_435_455  # four length bytes (MQTT 3.1.1, 2.2.3)
MAX_PACKET_ID = 0xFFFF


def encode_remaining_length(length: int) -> bytes:
    """MQTT's variable-length integer: 7 bits per byte, high bit = more follows."""
    if not 0 <= length <= _MAX_REMAINING_LENGTH:
        raise ValueError(f"remaining length {length} is outside 0..{_MAX_REMAINING_LENGTH}")
    out = bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        out.append(byte | 0x80 if length else byte)
        if not length:
            return bytes(out)


def length_field(length: int) -> bytes:
    """:func:`encode_remaining_length` with the one- and two-byte cases (packets up to 16 KB) written out."""
    if length < 0x80:
        return bytes((length,))
    if length < 0x4000:
        return bytes((length & 0x7F | 0x80, length >> 7))
    return encode_remaining_length(length)


class PublishFramer:
    """PUBLISH packets for one topic at one QoS; the topic's bytes are encoded once."""

    __slots__ = ("_command", "_fixed", "_qos", "_topic_field")

    def __init__(self, topic: str, qos: int) -> None:
        if qos not in (0, 1):
            raise ValueError(f"the fast path publishes at QoS 0 or 1, not {qos}")
        encoded = topic.encode()
        if not encoded or len(encoded) > 0xFFFF or any(c in topic for c in "+#\0"):
            raise ValueError(f"not a valid topic to publish to: {topic!r}")
        self._topic_field = len(encoded).to_bytes(2, "big") + encoded
        self._qos = qos
        self._command = bytes([PUBLISH | (qos << 1)])
        self._fixed = len(self._topic_field) + (2 if qos else 0)

    def frame(self, payload: bytes, packet_id: int = 0, properties: list[tuple[str, str]] | None = None) -> bytes:
        """The whole packet; ``packet_id`` (1..65535) is used at QoS 1 only.

        ``properties`` is ignored: MQTT 3.1.1 has none (IoT Hub's property bag
        rides in the topic: ``iothub.property_framer``; MQTT 5: :class:`PublishFramerV5`).
        """
        remaining = self._fixed + len(payload)
        length = length_field(remaining)
        if self._qos:
            return b"".join((self._command, length, self._topic_field, packet_id.to_bytes(2, "big"), payload))
        return b"".join((self._command, length, self._topic_field, payload))


def _topic_start(packet: bytes) -> int:
    """Where a PUBLISH's topic (its two length bytes) starts: after the fixed header."""
    index = 1
    while packet[index] & 0x80:  # remaining-length bytes
        index += 1
    return index + 1


def _packet_id_offset(packet: bytes) -> int:
    """Where a QoS 1/2 PUBLISH's packet id starts: after the fixed header and the topic."""
    topic_start = _topic_start(packet)
    return topic_start + 2 + ((packet[topic_start] << 8) | packet[topic_start + 1])


def publish_packet_id(packet: bytes) -> int:
    """The packet id of a framed QoS 1 PUBLISH."""
    offset = _packet_id_offset(packet)
    return (packet[offset] << 8) | packet[offset + 1]


def retransmission(packet: bytes, packet_id: int | None = None) -> bytes:
    """A framed QoS 1 PUBLISH to send again after a reconnect.

    Without ``packet_id``: the same packet with the DUP flag (the broker kept the
    session, so it knows the id).  With one: the same message republished under a
    new id, DUP clear (a new session: the old id means nothing to the broker).
    """
    if packet_id is None:
        return bytes((packet[0] | DUP,)) + packet[1:]
    offset = _packet_id_offset(packet)
    return b"".join(
        (bytes((packet[0] & ~DUP & 0xFF,)), packet[1:offset], packet_id.to_bytes(2, "big"), packet[offset + 2 :])
    )


def next_packet(buffer: bytes, pos: int) -> tuple[int, int, int] | None:
    """The packet starting at ``pos``: (first byte, body start, body end), or None if incomplete.

    Raises ValueError for a remaining length longer than four bytes (a broken stream).
    """
    end = len(buffer)
    length = 0
    shift = 0
    index = pos + 1
    while True:
        if index >= end:
            return None
        byte = buffer[index]
        length |= (byte & 0x7F) << shift
        index += 1
        if not byte & 0x80:
            break
        shift += 7
        if shift > 21:
            raise ValueError("malformed remaining length (more than four bytes)")
    if index + length > end:
        return None
    return buffer[pos], index, index + length


# -- MQTT 5 ------------------------------------------------------------------------------------------------------

CONTENT_TYPE = 0x03
TOPIC_ALIAS = 0x23
USER_PROPERTY = 0x26
#: The alias our devices give their one topic (a connection's aliases are 1..the broker's Topic Alias Maximum).
DEVICE_TOPIC_ALIAS = 1
_NO_TOPIC = b"\x00\x00"  # an empty topic: the alias says which

# How long each property's value is, by identifier (MQTT 5, 2.2.2.2): a fixed number of bytes, or one of the
# variable kinds below.  Every id defined by the standard is listed; anything else is a malformed block.
_FIXED = {
    0x01: 1, 0x17: 1, 0x19: 1, 0x24: 1, 0x25: 1, 0x28: 1, 0x29: 1, 0x2A: 1,  # byte
    0x13: 2, 0x21: 2, 0x22: 2, 0x23: 2,  # two byte integer
    0x02: 4, 0x11: 4, 0x18: 4, 0x27: 4,  # four byte integer
}  # fmt: skip
_VARIABLE_INT = frozenset({0x0B})  # subscription identifier
_PREFIXED = frozenset({0x03, 0x08, 0x09, 0x12, 0x15, 0x16, 0x1A, 0x1C, 0x1F})  # UTF-8 string or binary data


def _utf8_field(text: str) -> bytes:
    """A two-byte length and the UTF-8 bytes (a string of a property)."""
    encoded = text.encode()
    if len(encoded) > 0xFFFF:
        raise ValueError(f"a property string is longer than 65,535 bytes: {text[:40]!r}...")
    return len(encoded).to_bytes(2, "big") + encoded


def decode_variable_int(buffer: bytes, pos: int) -> tuple[int, int]:
    """The variable byte integer at ``pos``: (value, position after it).

    Raises ValueError when it is cut short or longer than four bytes.
    """
    value = 0
    shift = 0
    end = len(buffer)
    while True:
        if pos >= end:
            raise ValueError("a variable byte integer is cut short")
        byte = buffer[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 21:
            raise ValueError("malformed variable byte integer (more than four bytes)")


def _property_end(raw: bytes, pos: int) -> tuple[int, int]:
    """The property starting at ``pos``: (its identifier, where it ends).  ValueError if malformed."""
    identifier = raw[pos]
    pos += 1
    size = _FIXED.get(identifier)
    if size is not None:
        end = pos + size
    elif identifier in _PREFIXED:
        end = pos + 2 + int.from_bytes(raw[pos : pos + 2], "big")
    elif identifier == USER_PROPERTY:
        value_at = pos + 2 + int.from_bytes(raw[pos : pos + 2], "big")
        end = value_at + 2 + int.from_bytes(raw[value_at : value_at + 2], "big")
    elif identifier in _VARIABLE_INT:
        _, end = decode_variable_int(raw, pos)
    else:
        raise ValueError(f"unknown MQTT 5 property identifier 0x{identifier:02x}")
    if end > len(raw):
        raise ValueError(f"MQTT 5 property 0x{identifier:02x} runs past the end of the property block")
    return identifier, end


def user_properties(raw: bytes) -> dict[str, str]:
    """The user properties of a PUBLISH's property block (``raw``: without its length); the last of a name wins.

    Every other property is skipped by its type.  Raises ValueError for a
    malformed block (unknown identifier, cut short, invalid UTF-8).
    """
    found: dict[str, str] = {}
    pos = 0
    end = len(raw)
    while pos < end:
        identifier, after = _property_end(raw, pos)
        if identifier == USER_PROPERTY:
            name_end = pos + 3 + int.from_bytes(raw[pos + 1 : pos + 3], "big")
            found[raw[pos + 3 : name_end].decode()] = raw[name_end + 2 : after].decode()
        pos = after
    return found


def _without(raw: bytes, identifier: int) -> bytes:
    """The property block ``raw`` with every property ``identifier`` left out."""
    kept = []
    pos = 0
    while pos < len(raw):
        found, after = _property_end(raw, pos)
        if found != identifier:
            kept.append(raw[pos:after])
        pos = after
    return b"".join(kept)


class PublishFramerV5:
    """MQTT 5 PUBLISH packets for one topic at one QoS, with properties; the constant parts are encoded once.

    ``content_type`` (when given) rides in every packet.  With ``topic_alias``
    the first packet of a connection carries the topic and the alias
    :data:`DEVICE_TOPIC_ALIAS`, later ones an empty topic and the alias:
    :meth:`reset` at every connect (an alias lives as long as its connection).
    Properties are written in paho's order (content type, topic alias, user
    properties), so the bytes equal ``paho.mqtt.properties.Properties.pack``'s.
    """

    __slots__ = (
        "_command",
        "_content_type",
        "_names",
        "_props_later",
        "_props_now",
        "_qos",
        "_switch",
        "_topic_alias",
        "_topic_field",
        "_topic_now",
        "alias_in_use",
    )

    def __init__(self, topic: str, qos: int, *, content_type: str | None = None, topic_alias: bool = False) -> None:
        self._topic_field = PublishFramer(topic, qos)._topic_field  # the same checks, the same encoding
        self._qos = qos
        self._command = bytes([PUBLISH | (qos << 1)])
        self._content_type = bytes([CONTENT_TYPE]) + _utf8_field(content_type) if content_type else b""
        self._topic_alias = topic_alias
        self._names: dict[str, bytes] = {}  # user property name -> its identifier and encoded name
        self._topic_now = self._topic_field
        self._props_now = self._props_later = self._content_type
        self._switch = False
        #: Whether this connection's packets use the alias (set by :meth:`reset`).
        self.alias_in_use = False
        self.reset()

    def reset(self, alias_allowed: bool = True) -> None:
        """A new connection: the next packet carries the topic again.

        ``alias_allowed`` False when the broker's CONNACK allows no alias (its
        Topic Alias Maximum is 0 or absent): this connection sends the topic every time.
        """
        self.alias_in_use = self._topic_alias and alias_allowed
        self._topic_now = self._topic_field
        if self.alias_in_use:
            alias = bytes([TOPIC_ALIAS]) + DEVICE_TOPIC_ALIAS.to_bytes(2, "big")
            self._props_now = self._props_later = self._content_type + alias
            self._switch = True
        else:
            self._props_now = self._props_later = self._content_type
            self._switch = False

    def frame(self, payload: bytes, packet_id: int = 0, properties: list[tuple[str, str]] | None = None) -> bytes:
        """The whole packet; ``packet_id`` (1..65535) is used at QoS 1 only; ``properties``: user properties."""
        topic_field = self._topic_now
        props = self._props_now
        if self._switch:  # the topic went out with the alias once: from now on the alias alone
            self._topic_now = _NO_TOPIC
            self._switch = False
        if properties:
            names = self._names
            props += b"".join(
                [(names.get(name) or self._name(name)) + _utf8_field(value) for name, value in properties]
            )
        props_length = len(props)
        props_field = length_field(props_length)
        remaining = len(topic_field) + len(props_field) + props_length + len(payload)
        if self._qos:
            remaining += 2
            length = length_field(remaining)
            return b"".join(
                (self._command, length, topic_field, packet_id.to_bytes(2, "big"), props_field, props, payload)
            )
        length = length_field(remaining)
        return b"".join((self._command, length, topic_field, props_field, props, payload))

    def _name(self, name: str) -> bytes:
        encoded = self._names[name] = bytes([USER_PROPERTY]) + _utf8_field(name)
        return encoded

    def retransmission(self, packet: bytes, packet_id: int | None = None) -> bytes:
        """A QoS 1 PUBLISH this framer made, to send again on a new connection (see :func:`retransmission`).

        A packet that carried only the alias is framed again with the full
        topic and without the alias: the alias meant something on its own
        connection only (MQTT 5, 3.3.2.3.4).
        """
        return retransmission_v5(packet, self._topic_field, packet_id)


def retransmission_v5(packet: bytes, topic_field: bytes, packet_id: int | None = None) -> bytes:
    """:func:`retransmission` for an MQTT 5 PUBLISH; ``topic_field``: its topic with the two length bytes.

    With the topic in the packet only the DUP flag and the id change; an
    alias-only packet gets ``topic_field`` and loses its topic alias property.
    """
    topic_start = _topic_start(packet)
    if packet[topic_start] or packet[topic_start + 1]:
        return retransmission(packet, packet_id)  # the topic is in it: flags and id only
    offset = topic_start + 2
    first = packet[0] | DUP if packet_id is None else packet[0] & ~DUP & 0xFF
    id_field = packet[offset : offset + 2] if packet_id is None else packet_id.to_bytes(2, "big")
    props_length, props_start = decode_variable_int(packet, offset + 2)
    payload_start = props_start + props_length
    props = _without(packet[props_start:payload_start], TOPIC_ALIAS)
    body = b"".join(
        (topic_field, id_field, encode_remaining_length(len(props)), props, packet[payload_start:])
    )
    return bytes((first,)) + encode_remaining_length(len(body)) + body
