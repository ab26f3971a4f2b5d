"""AMQP 1.0 type system: encode Python values to the wire format and decode them back.

Python values map to AMQP types as follows.  Plain ``int`` encodes as *long*,
``str`` as *string*, ``bytes`` as *binary*, ``float`` as *double*, ``list`` as
*list* and ``dict`` as *map*.  The marker subclasses below (``UInt``, ``ULong``,
``Symbol``, ``Timestamp`` ...) select the other AMQP types; the decoder returns
them too, so a decoded value re-encodes to the same type.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from typing import Any, Final

from pytest_iotperf.embedded.eventhub.errors import AmqpDecodeError

__all__ = [
    "Array",
    "Byte",
    "Described",
    "Int",
    "Short",
    "Symbol",
    "Timestamp",
    "UByte",
    "UInt",
    "ULong",
    "UShort",
    "decode_value",
    "encode_value",
]


class Symbol(str):
    """An AMQP *symbol* (ASCII identifier), as opposed to a UTF-8 *string*."""


class UByte(int):
    """An AMQP *ubyte*."""


class UShort(int):
    """An AMQP *ushort*."""


class UInt(int):
    """An AMQP *uint*."""


class ULong(int):
    """An AMQP *ulong*."""


class Byte(int):
    """An AMQP *byte* (signed)."""


class Short(int):
    """An AMQP *short*."""


class Int(int):
    """An AMQP *int* (32-bit signed)."""


class Timestamp(int):
    """An AMQP *timestamp*: milliseconds since the Unix epoch."""


@dataclass(frozen=True)
class Described:
    """A described value: a descriptor (usually a ``ULong`` code or a ``Symbol``) and the value it describes."""

    descriptor: Any
    value: Any


@dataclass(frozen=True)
class Array:
    """An AMQP *array*: every element has the same type, named by ``constructor`` (e.g. ``0xA3`` for symbols)."""

    constructor: int
    items: tuple[Any, ...]


_U32: Final = struct.Struct(">I")
_S32: Final = struct.Struct(">i")
_U64: Final = struct.Struct(">Q")
_S64: Final = struct.Struct(">q")
_U16: Final = struct.Struct(">H")
_S16: Final = struct.Struct(">h")
_F32: Final = struct.Struct(">f")
_F64: Final = struct.Struct(">d")


def _encode_variable(out: bytearray, small: int, large: int, data: bytes) -> None:
    if len(data) < 256:
        out.append(small)
        out.append(len(data))
    else:
        out.append(large)
        out += _U32.pack(len(data))
    out += data


def _encode_compound(out: bytearray, small: int, large: int, count: int, body: bytes) -> None:
    # The size field counts the count field too: 1 byte in the small form, 4 in the large.
    if len(body) + 1 < 256 and count < 256:
        out.append(small)
        out.append(len(body) + 1)
        out.append(count)
    else:
        out.append(large)
        out += _U32.pack(len(body) + 4)
        out += _U32.pack(count)
    out += body


def _encode_int(out: bytearray, value: int) -> None:
    if isinstance(value, ULong):
        if value == 0:
            out.append(0x44)
        elif value < 256:
            out += bytes((0x53, value))
        else:
            out.append(0x80)
            out += _U64.pack(value)
    elif isinstance(value, UInt):
        if value == 0:
            out.append(0x43)
        elif value < 256:
            out += bytes((0x52, value))
        else:
            out.append(0x70)
            out += _U32.pack(value)
    elif isinstance(value, UByte):
        out += bytes((0x50, value))
    elif isinstance(value, UShort):
        out.append(0x60)
        out += _U16.pack(value)
    elif isinstance(value, Byte):
        out.append(0x51)
        out += struct.pack(">b", value)
    elif isinstance(value, Short):
        out.append(0x61)
        out += _S16.pack(value)
    elif isinstance(value, Int):
        if -128 <= value <= 127:
            out.append(0x54)
            out += struct.pack(">b", value)
        else:
            out.append(0x71)
            out += _S32.pack(value)
    elif isinstance(value, Timestamp):
        out.append(0x83)
        out += _S64.pack(value)
    elif -128 <= value <= 127:
        out.append(0x55)
        out += struct.pack(">b", value)
    else:
        out.append(0x81)
        out += _S64.pack(value)


def encode_value(out: bytearray, value: Any) -> None:
    """Append the AMQP encoding of ``value`` to ``out``."""
    if value is None:
        out.append(0x40)
    elif value is True:
        out.append(0x41)
    elif value is False:
        out.append(0x42)
    elif isinstance(value, int):
        _encode_int(out, value)
    elif isinstance(value, Symbol):
        _encode_variable(out, 0xA3, 0xB3, value.encode("ascii"))
    elif isinstance(value, str):
        _encode_variable(out, 0xA1, 0xB1, value.encode("utf-8"))
    elif isinstance(value, bytes | bytearray | memoryview):
        _encode_variable(out, 0xA0, 0xB0, bytes(value))
    elif isinstance(value, float):
        out.append(0x82)
        out += _F64.pack(value)
    elif isinstance(value, uuid.UUID):
        out.append(0x98)
        out += value.bytes
    elif isinstance(value, Described):
        out.append(0x00)
        encode_value(out, value.descriptor)
        encode_value(out, value.value)
    elif isinstance(value, list | tuple):
        if not value:
            out.append(0x45)
            return
        body = bytearray()
        for item in value:
            encode_value(body, item)
        _encode_compound(out, 0xC0, 0xD0, len(value), bytes(body))
    elif isinstance(value, dict):
        body = bytearray()
        for key, item in value.items():
            encode_value(body, key)
            encode_value(body, item)
        _encode_compound(out, 0xC1, 0xD1, 2 * len(value), bytes(body))
    elif isinstance(value, Array):
        _encode_array(out, value)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as an AMQP value")


def _encode_array(out: bytearray, value: Array) -> None:
    # Element encodings are the bodies of the constructor-less values; only the types the
    # server itself sends (symbols) need support here.
    if value.constructor not in (0xA3, 0xB3):
        raise TypeError(f"arrays of constructor 0x{value.constructor:02x} are not supported")
    body = bytearray((0xB3,))
    for item in value.items:
        data = str(item).encode("ascii")
        body += _U32.pack(len(data))
        body += data
    _encode_compound(out, 0xE0, 0xF0, len(value.items), bytes(body))


def encode(value: Any) -> bytes:
    """Return the AMQP encoding of ``value``."""
    out = bytearray()
    encode_value(out, value)
    return bytes(out)


def _need(buf: bytes | memoryview, pos: int, size: int) -> None:
    if pos + size > len(buf):
        raise AmqpDecodeError(f"truncated AMQP value: need {size} bytes at offset {pos}, have {len(buf) - pos}")


_FIXED: Final[dict[int, tuple[int, Any]]] = {
    0x50: (1, lambda b: UByte(b[0])),
    0x51: (1, lambda b: Byte(struct.unpack(">b", b)[0])),
    0x52: (1, lambda b: UInt(b[0])),
    0x53: (1, lambda b: ULong(b[0])),
    0x54: (1, lambda b: Int(struct.unpack(">b", b)[0])),
    0x55: (1, lambda b: struct.unpack(">b", b)[0]),
    0x56: (1, lambda b: b[0] != 0),
    0x60: (2, lambda b: UShort(_U16.unpack(b)[0])),
    0x61: (2, lambda b: Short(_S16.unpack(b)[0])),
    0x70: (4, lambda b: UInt(_U32.unpack(b)[0])),
    0x71: (4, lambda b: Int(_S32.unpack(b)[0])),
    0x72: (4, lambda b: _F32.unpack(b)[0]),
    0x73: (4, lambda b: chr(_U32.unpack(b)[0])),
    0x80: (8, lambda b: ULong(_U64.unpack(b)[0])),
    0x81: (8, lambda b: _S64.unpack(b)[0]),
    0x82: (8, lambda b: _F64.unpack(b)[0]),
    0x83: (8, lambda b: Timestamp(_S64.unpack(b)[0])),
    0x94: (16, bytes),  # decimal128 kept opaque: the server never interprets it
    0x98: (16, lambda b: uuid.UUID(bytes=bytes(b))),
}

_EMPTY: Final[dict[int, Any]] = {0x40: None, 0x41: True, 0x42: False, 0x43: UInt(0), 0x44: ULong(0)}


def _decode_body(buf: bytes | memoryview, pos: int, code: int) -> tuple[Any, int]:
    if code in _EMPTY:
        return _EMPTY[code], pos
    if code == 0x45:
        return [], pos
    fixed = _FIXED.get(code)
    if fixed is not None:
        size, convert = fixed
        _need(buf, pos, size)
        return convert(buf[pos : pos + size]), pos + size
    if code in (0xA0, 0xA1, 0xA3, 0xB0, 0xB1, 0xB3):
        if code < 0xB0:
            _need(buf, pos, 1)
            length, pos = buf[pos], pos + 1
        else:
            _need(buf, pos, 4)
            length, pos = _U32.unpack(buf[pos : pos + 4])[0], pos + 4
        _need(buf, pos, length)
        raw = bytes(buf[pos : pos + length])
        pos += length
        if code & 0x0F == 0x00:
            return raw, pos
        if code & 0x0F == 0x03:
            return Symbol(raw.decode("ascii", errors="replace")), pos
        return raw.decode("utf-8", errors="replace"), pos
    if code in (0xC0, 0xC1, 0xE0, 0xD0, 0xD1, 0xF0):
        if code in (0xC0, 0xC1, 0xE0):
            _need(buf, pos, 2)
            size, count, pos = buf[pos], buf[pos + 1], pos + 2
            end = pos + size - 1
        else:
            _need(buf, pos, 8)
            size, count = _U32.unpack(buf[pos : pos + 4])[0], _U32.unpack(buf[pos + 4 : pos + 8])[0]
            pos += 8
            end = pos + size - 4
        _need(buf, pos, end - pos)
        if code in (0xE0, 0xF0):
            return _decode_array(buf, pos, count), end
        items: list[Any] = []
        for _ in range(count):
            item, pos = decode_value(buf, pos)
            items.append(item)
        if code in (0xC1, 0xD1):
            return {items[i]: items[i + 1] for i in range(0, len(items) - 1, 2)}, end
        return items, end
    raise AmqpDecodeError(f"unknown AMQP constructor 0x{code:02x}")


def _decode_array(buf: bytes | memoryview, pos: int, count: int) -> list[Any]:
    if count == 0:
        return []
    _need(buf, pos, 1)
    code, pos = buf[pos], pos + 1
    descriptor: Any = None
    if code == 0x00:
        descriptor, pos = decode_value(buf, pos)
        _need(buf, pos, 1)
        code, pos = buf[pos], pos + 1
    items: list[Any] = []
    for _ in range(count):
        item, pos = _decode_body(buf, pos, code)
        items.append(Described(descriptor, item) if descriptor is not None else item)
    return items


def decode_value(buf: bytes | memoryview, pos: int = 0) -> tuple[Any, int]:
    """Decode one AMQP value starting at ``buf[pos]``; return it and the offset just past it."""
    _need(buf, pos, 1)
    code = buf[pos]
    pos += 1
    if code == 0x00:
        descriptor, pos = decode_value(buf, pos)
        value, pos = decode_value(buf, pos)
        return Described(descriptor, value), pos
    return _decode_body(buf, pos, code)


def decode(data: bytes | memoryview) -> Any:
    """Decode exactly one AMQP value from ``data``."""
    value, pos = decode_value(data, 0)
    if pos != len(data):
        raise AmqpDecodeError(f"{len(data) - pos} trailing bytes after an AMQP value")
    return value
