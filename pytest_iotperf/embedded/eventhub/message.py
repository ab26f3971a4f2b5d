"""AMQP message sections: split a raw message, unpack batches, and stamp broker annotations.

User sections (properties, application properties, body, footer) are kept as
their original bytes so a consumer receives exactly what the producer sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from pytest_iotperf.embedded.eventhub.codec import Described, Symbol, ULong, decode_value, encode_value
from pytest_iotperf.embedded.eventhub.errors import AmqpDecodeError

__all__ = [
    "BATCH_FORMAT",
    "ParsedMessage",
    "delivery_annotations_section",
    "parse_message",
    "partition_key_of",
    "stamp",
    "unpack_batch",
]

BATCH_FORMAT: Final = 0x80013700
"""Message format of an Event Hubs batch: each Data section holds one complete encoded message."""

HEADER: Final = 0x70
DELIVERY_ANNOTATIONS: Final = 0x71
MESSAGE_ANNOTATIONS: Final = 0x72
PROPERTIES: Final = 0x73
APPLICATION_PROPERTIES: Final = 0x74
DATA: Final = 0x75
FOOTER: Final = 0x78


@dataclass
class ParsedMessage:
    """A message split into the parts the broker looks at, plus the untouched rest."""

    header: bytes
    annotations: dict[Any, Any]
    rest: bytes
    sections: list[tuple[int, Any]]


def parse_message(data: bytes) -> ParsedMessage:
    """Split ``data`` (an encoded message) into header, message annotations and the remaining sections."""
    pos = 0
    header = b""
    annotations: dict[Any, Any] = {}
    rest = bytearray()
    sections: list[tuple[int, Any]] = []
    while pos < len(data):
        start = pos
        value, pos = decode_value(data, pos)
        if not isinstance(value, Described):
            raise AmqpDecodeError("message section is not a described value")
        code = int(value.descriptor)
        sections.append((code, value.value))
        if code == HEADER:
            header = data[start:pos]
        elif code == MESSAGE_ANNOTATIONS:
            if isinstance(value.value, dict):
                annotations.update(value.value)
        elif code == DELIVERY_ANNOTATIONS:
            pass  # delivery annotations are hop-by-hop: never forwarded to consumers
        else:
            rest += data[start:pos]
    return ParsedMessage(header, annotations, bytes(rest), sections)


def unpack_batch(data: bytes) -> list[bytes]:
    """Return the inner messages of a batch message (format ``BATCH_FORMAT``): one per Data section."""
    inner: list[bytes] = []
    for code, value in parse_message(data).sections:
        if code == DATA:
            if not isinstance(value, bytes):
                raise AmqpDecodeError("batch Data section is not binary")
            inner.append(value)
    return inner


def partition_key_of(message: ParsedMessage) -> str | None:
    """Return the ``x-opt-partition-key`` annotation of ``message``, if any."""
    for key, value in message.annotations.items():
        if str(key) == "x-opt-partition-key" and value is not None:
            return value.decode("utf-8") if isinstance(value, bytes) else str(value)
    return None


def stamp(message: ParsedMessage, annotations: dict[Symbol, Any]) -> tuple[bytes, bytes]:
    """Return (header section, message annotations + user sections) with the broker's ``annotations`` merged in.

    The two parts are kept apart so per-delivery annotations can be slotted in between them.
    """
    merged: dict[Any, Any] = {key: value for key, value in message.annotations.items() if str(key) not in annotations}
    merged.update(annotations)
    tail = bytearray()
    encode_value(tail, Described(ULong(MESSAGE_ANNOTATIONS), merged))
    tail += message.rest
    return message.header, bytes(tail)


def delivery_annotations_section(annotations: dict[Symbol, Any]) -> bytes:
    """Encode a delivery-annotations section."""
    out = bytearray()
    encode_value(out, Described(ULong(DELIVERY_ANNOTATIONS), annotations))
    return bytes(out)
