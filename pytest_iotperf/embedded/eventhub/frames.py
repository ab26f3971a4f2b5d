"""AMQP 1.0 framing: frame headers, performatives and their field positions.

A performative is kept as its descriptor code plus the positional field list,
padded with ``None`` to the full field count so handlers can index fields
without length checks.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Final

from pytest_iotperf.embedded.eventhub.codec import Described, ULong, decode_value, encode_value
from pytest_iotperf.embedded.eventhub.errors import AmqpDecodeError

__all__ = [
    "AMQP_HEADER",
    "SASL_HEADER",
    "Performative",
    "encode_frame",
    "parse_frame_body",
]

AMQP_HEADER: Final = b"AMQP\x00\x01\x00\x00"
SASL_HEADER: Final = b"AMQP\x03\x01\x00\x00"

FRAME_AMQP: Final = 0
FRAME_SASL: Final = 1

OPEN: Final = 0x10
BEGIN: Final = 0x11
ATTACH: Final = 0x12
FLOW: Final = 0x13
TRANSFER: Final = 0x14
DISPOSITION: Final = 0x15
DETACH: Final = 0x16
END: Final = 0x17
CLOSE: Final = 0x18
SASL_MECHANISMS: Final = 0x40
SASL_INIT: Final = 0x41
SASL_OUTCOME: Final = 0x44

ERROR: Final = 0x1D
ACCEPTED: Final = 0x24
REJECTED: Final = 0x25
SOURCE: Final = 0x28
TARGET: Final = 0x29

FIELD_COUNTS: Final[dict[int, int]] = {
    OPEN: 10,
    BEGIN: 8,
    ATTACH: 14,
    FLOW: 11,
    TRANSFER: 11,
    DISPOSITION: 6,
    DETACH: 3,
    END: 1,
    CLOSE: 1,
    SASL_MECHANISMS: 1,
    SASL_INIT: 3,
    SASL_OUTCOME: 2,
    SOURCE: 11,
    TARGET: 7,
    ERROR: 3,
    REJECTED: 1,
}

_HEADER: Final = struct.Struct(">IBBH")


@dataclass
class Performative:
    """One decoded frame body: the performative code, its fields, and (for transfers) the payload bytes."""

    code: int
    fields: list[Any]
    payload: bytes = field(default=b"")

    def __getitem__(self, index: int) -> Any:
        return self.fields[index]


def pad(fields: list[Any], code: int) -> list[Any]:
    """Return ``fields`` extended with ``None`` to the full field count of the composite ``code``."""
    count = FIELD_COUNTS.get(code, len(fields))
    return list(fields) + [None] * (count - len(fields))


def described_fields(value: Any, code: int) -> list[Any] | None:
    """Return the padded field list of a described composite value, or None when ``value`` is null."""
    if value is None:
        return None
    if isinstance(value, Described) and isinstance(value.value, list):
        return pad(value.value, code)
    raise AmqpDecodeError(f"expected a described list for composite 0x{code:02x}, got {type(value).__name__}")


def composite(code: int, fields: list[Any]) -> Described:
    """Build a described list with a small-ulong descriptor, padded to its full field count.

    pyamqp indexes composite fields positionally (e.g. ``error_info[0][2]`` of a rejected outcome), so
    trailing nulls are sent rather than trimmed.
    """
    return Described(ULong(code), pad(fields, code))


def encode_frame(
    channel: int, code: int, fields: list[Any], payload: bytes = b"", frame_type: int = FRAME_AMQP
) -> bytes:
    """Encode one frame carrying the performative ``code`` with ``fields`` (and a transfer ``payload``)."""
    body = bytearray(b"\x00\x53")
    body.append(code)
    # pyamqp indexes performative fields positionally without length checks (e.g. open's properties),
    # so every field is sent, nulls included, never trimmed to a shorter list.
    encode_value(body, pad(fields, code))
    body += payload
    return _HEADER.pack(len(body) + 8, 2, frame_type, channel) + bytes(body)


def _uint(value: int) -> bytes:
    if value == 0:
        return b"\x43"
    if value < 256:
        return bytes((0x52, value))
    return b"\x70" + value.to_bytes(4, "big")


# A pre-settled, complete transfer: message-format 0, settled true, more false, then five nulls.
_TRANSFER_TAIL: Final = b"\x43\x41\x42\x40\x40\x40\x40\x40"


def single_transfer_frame(channel: int, handle: int, delivery_id: int, tag: bytes, payload: bytes) -> bytes:
    """``encode_frame(channel, TRANSFER, [handle, delivery_id, tag, 0, True, False], payload)``, fast.

    Consumers get one of these per event: built with joins instead of the generic encoder.
    """
    fields = b"".join((_uint(handle), _uint(delivery_id), bytes((0xA0, len(tag))), tag, _TRANSFER_TAIL))
    performative = bytes((0x00, 0x53, TRANSFER, 0xC0, len(fields) + 1, 11)) + fields
    return b"".join((_HEADER.pack(len(performative) + len(payload) + 8, 2, FRAME_AMQP, channel), performative, payload))


def parse_frame_body(body: bytes | memoryview) -> Performative:
    """Decode a frame body (after the 8-byte header and any extended header) into a ``Performative``."""
    value, pos = decode_value(body, 0)
    if not isinstance(value, Described) or not isinstance(value.value, list):
        raise AmqpDecodeError("frame body is not a described performative")
    code = int(value.descriptor)
    return Performative(code, pad(value.value, code), bytes(body[pos:]))


def frame_header(data: bytes) -> tuple[int, int, int, int]:
    """Return (size, data offset in 4-byte words, frame type, channel) of an 8-byte frame header."""
    size, doff, frame_type, channel = _HEADER.unpack(data)
    return int(size), int(doff), int(frame_type), int(channel)
