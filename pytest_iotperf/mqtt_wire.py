"""MQTT framing for the telemetry hot path: PUBLISH built by hand, packet boundaries found in a byte stream.

paho spends ~25 Python calls, three lock round trips and four ``recv`` calls
(one byte, one byte, two bytes, then one that fails with EAGAIN) on every
packet it reads, and builds an ``MQTTMessage`` plus ``MQTTMessageInfo`` per
publish.  Here a publish is one bytes join of a pre-built header, and
:func:`next_packet` walks every complete packet of one ``recv``
(``lean_mqtt`` uses both).  Pure: no sockets, no gevent.
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

    def frame(self, payload: bytes, packet_id: int = 0) -> bytes:
        """The whole packet; ``packet_id`` (1..65535) is used at QoS 1 only."""
        remaining = self._fixed + len(payload)
        length = bytes((remaining,)) if remaining < 0x80 else encode_remaining_length(remaining)
        if self._qos:
            return b"".join((self._command, length, self._topic_field, packet_id.to_bytes(2, "big"), payload))
        return b"".join((self._command, length, self._topic_field, payload))


def _packet_id_offset(packet: bytes) -> int:
    """Where a QoS 1/2 PUBLISH's packet id starts: after the fixed header and the topic."""
    index = 1
    while packet[index] & 0x80:  # remaining-length bytes
        index += 1
    topic_start = index + 1
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
