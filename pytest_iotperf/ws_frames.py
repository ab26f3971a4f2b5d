"""RFC 6455 for MQTT over WebSockets: the upgrade handshake and binary frames, client and server side.

Pure: no sockets.  :mod:`pytest_iotperf.ws_client` (the devices', sink's and
bridge's connections) and :mod:`pytest_iotperf.embedded.ws_gateway` (the
embedded broker's websockets listener) both use it.

MQTT over WebSockets carries MQTT's byte stream in binary frames; a packet may
span frames and a frame may hold several packets (MQTT 3.1.1 section 6), so a
reader joins the payloads of the data frames and never looks for packet
boundaries here.

Client frames are masked (section 5.3): the 4-byte key must be unpredictable,
so keys are drawn from a pool filled by ``os.urandom`` (one system call per
16,384 frames, not one per frame), and the XOR runs in C
(``websockets.speedups``, installed with amqtt) or, without it, as one big-int XOR.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable, Mapping
from typing import Final

__all__ = [
    "BINARY",
    "CLOSE",
    "PING",
    "PONG",
    "FrameDecoder",
    "HandshakeRefused",
    "WebSocketProtocolError",
    "accept_key",
    "client_frame",
    "client_handshake",
    "mask",
    "new_key",
    "parse_client_handshake",
    "parse_server_handshake",
    "server_frame",
    "server_handshake_response",
]

CONTINUATION: Final = 0x0
TEXT: Final = 0x1
BINARY: Final = 0x2
CLOSE: Final = 0x8
PING: Final = 0x9
PONG: Final = 0xA
_DATA_OPCODES: Final = (CONTINUATION, TEXT, BINARY)
_KNOWN_OPCODES: Final = (*_DATA_OPCODES, CLOSE, PING, PONG)
_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: Far above any MQTT packet a run sends; a larger length means the stream is not WebSocket frames.
MAX_FRAME: Final = 1 << 28
#: The most a handshake's HTTP head may take (a server that never ends its head is refused).
MAX_HEAD: Final = 16384
_KEY_POOL_BYTES: Final = 65536


class WebSocketProtocolError(ValueError):
    """Bytes that are not a valid WebSocket frame stream or handshake."""


class HandshakeRefused(WebSocketProtocolError):
    """The server answered the upgrade with something other than 101 Switching Protocols.

    Attributes:
        status: the HTTP status code (0 when the answer was not HTTP).
    """

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def _xor_big_int(data: bytes, key: bytes) -> bytes:
    size = len(data)
    if not size:
        return b""
    keystream = (key * ((size >> 2) + 1))[:size]
    return (int.from_bytes(data, "little") ^ int.from_bytes(keystream, "little")).to_bytes(size, "little")


_apply_mask: Callable[[bytes, bytes], bytes]
try:  # ~0.25 us for a 160-byte packet, against ~1.5 us for the big-int XOR
    from websockets.speedups import apply_mask as _apply_mask
except ImportError:  # pragma: no cover - websockets comes with amqtt, a dependency
    _apply_mask = _xor_big_int


def mask(data: bytes | bytearray, key: bytes) -> bytes:
    """``data`` XOR the repeated 4-byte ``key`` (masking and unmasking are the same)."""
    if isinstance(data, bytearray):  # paho's own packets
        data = bytes(data)
    if key == b"\0\0\0\0":
        return data
    return _apply_mask(data, key)


class _KeyPool:
    """Masking keys from ``os.urandom``, read in bulk: unpredictable, ~0.2 us per key instead of a syscall."""

    __slots__ = ("_pool", "_pos")

    def __init__(self) -> None:
        self._pool = b""
        self._pos = 0

    def next(self) -> bytes:
        pos = self._pos
        if pos >= len(self._pool):
            self._pool = os.urandom(_KEY_POOL_BYTES)
            pos = 0
        self._pos = pos + 4
        return self._pool[pos : pos + 4]


_keys = _KeyPool()


def _length_field(size: int, mask_bit: int) -> bytes:
    if size < 126:
        return bytes((mask_bit | size,))
    if size < 0x10000:
        return bytes((mask_bit | 126,)) + size.to_bytes(2, "big")
    return bytes((mask_bit | 127,)) + size.to_bytes(8, "big")


def client_frame(payload: bytes | bytearray, opcode: int = BINARY, key: bytes | None = None) -> bytes:
    """One final frame from a client: masked with ``key`` (a fresh random one when None)."""
    key = _keys.next() if key is None else key
    size = len(payload)
    if size < 126:  # the hot case, a telemetry PUBLISH or a PUBACK: no helper call
        return b"".join((bytes((0x80 | opcode, 0x80 | size)), key, mask(payload, key)))
    return b"".join((bytes((0x80 | opcode,)), _length_field(size, 0x80), key, mask(payload, key)))


def server_frame(payload: bytes, opcode: int = BINARY) -> bytes:
    """One final, unmasked frame from a server."""
    size = len(payload)
    if size < 126:
        return bytes((0x80 | opcode, size)) + payload
    return bytes((0x80 | opcode,)) + _length_field(size, 0) + payload


class FrameDecoder:
    """Frames out of a byte stream, fed as it arrives.

    :meth:`feed` returns the joined payload of every complete data frame (the
    MQTT bytes) and keeps an incomplete frame for the next call; control frames
    (close, ping, pong) are returned apart, in order, as ``(opcode, payload)``.

    Args:
        masked: whether frames must be masked (a server reading a client) or must
            not be (a client reading a server), as section 5.1 requires.
    """

    __slots__ = ("_buffer", "_masked")

    def __init__(self, *, masked: bool) -> None:
        self._masked = masked
        self._buffer = b""

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buffer)

    def feed(self, data: bytes) -> tuple[bytes, list[tuple[int, bytes]]]:
        """The MQTT bytes and the control frames of every frame completed by ``data``.

        Raises:
            WebSocketProtocolError: a reserved bit, an unknown opcode, a wrong
                masking, a fragmented or oversized control frame, or a length over
                :data:`MAX_FRAME`.
        """
        buffer = self._buffer + data if self._buffer else data
        end = len(buffer)
        pos = 0
        payloads: list[bytes] = []
        controls: list[tuple[int, bytes]] = []
        while end - pos >= 2:
            first, second = buffer[pos], buffer[pos + 1]
            opcode = first & 0x0F
            size = second & 0x7F
            head = 2
            if size == 126:
                if end - pos < 4:
                    break
                size = (buffer[pos + 2] << 8) | buffer[pos + 3]
                head = 4
            elif size == 127:
                if end - pos < 10:
                    break
                size = int.from_bytes(buffer[pos + 2 : pos + 10], "big")
                head = 10
            if first & 0x70 or opcode not in _KNOWN_OPCODES:
                raise WebSocketProtocolError(f"invalid frame header {first:#04x} (reserved bits or opcode)")
            if bool(second & 0x80) != self._masked:
                raise WebSocketProtocolError(
                    "an unmasked frame from a client" if self._masked else "a masked frame from the server"
                )
            if size > MAX_FRAME:
                raise WebSocketProtocolError(f"a frame of {size} bytes (more than {MAX_FRAME})")
            if opcode >= CLOSE and (size > 125 or not first & 0x80):
                raise WebSocketProtocolError("a fragmented or oversized control frame")
            key = b""
            if self._masked:
                key = buffer[pos + head : pos + head + 4]
                head += 4
            if end - pos < head + size:
                break
            payload = buffer[pos + head : pos + head + size]
            if key:
                payload = mask(payload, key)
            pos += head + size
            if opcode in _DATA_OPCODES:
                if payload:
                    payloads.append(payload)
            else:
                controls.append((opcode, payload))
        self._buffer = buffer[pos:] if pos < end else b""
        if not payloads:
            return b"", controls
        return (payloads[0] if len(payloads) == 1 else b"".join(payloads)), controls


# -- the upgrade handshake --------------------------------------------------------------


def new_key() -> str:
    """A fresh ``Sec-WebSocket-Key``: 16 random bytes, base64."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` that answers ``key`` (section 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID, usedforsecurity=False).digest()).decode("ascii")


def client_handshake(host_port: str, path: str, key: str, headers: Mapping[str, str] | None = None) -> bytes:
    """The HTTP upgrade request for MQTT over WebSockets (subprotocol ``mqtt``)."""
    fields = {
        "Host": host_port,
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Protocol": "mqtt",
    }
    fields.update(headers or {})
    lines = [f"GET {path} HTTP/1.1", *(f"{name}: {value}" for name, value in fields.items()), "", ""]
    return "\r\n".join(lines).encode("latin-1")


def _parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    """The start line and the header fields (names lower-cased) of an HTTP head without its final CRLF CRLF."""
    lines = head.decode("latin-1").split("\r\n")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            fields[name.strip().lower()] = value.strip()
    return lines[0], fields


def _has_token(value: str | None, token: str) -> bool:
    return value is not None and token in (part.strip().lower() for part in value.split(","))


def parse_server_handshake(head: bytes, key: str) -> None:
    """Check the server's answer to the upgrade request sent with ``key``.

    Raises:
        HandshakeRefused: another status than 101 (the message has it), or a 101
            without the upgrade or with a wrong ``Sec-WebSocket-Accept``.
    """
    status_line, fields = _parse_head(head)
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise HandshakeRefused(f"the answer is not HTTP ({status_line[:60]!r})")
    status = int(parts[1])
    if status != 101:
        raise HandshakeRefused(f"HTTP {status} {parts[2] if len(parts) > 2 else ''}".rstrip(), status)
    if not _has_token(fields.get("upgrade"), "websocket") or not _has_token(fields.get("connection"), "upgrade"):
        raise HandshakeRefused("HTTP 101 without Upgrade: websocket", status)
    if fields.get("sec-websocket-accept") != accept_key(key):
        raise HandshakeRefused("HTTP 101 with a wrong Sec-WebSocket-Accept", status)


def parse_client_handshake(head: bytes) -> tuple[str, str, list[str]]:
    """A server reads an upgrade request: ``(path, key, offered subprotocols)``.

    Raises:
        WebSocketProtocolError: not a GET, or not a WebSocket version 13 upgrade.
    """
    request_line, fields = _parse_head(head)
    parts = request_line.split(" ")
    if len(parts) != 3 or parts[0] != "GET" or not parts[2].startswith("HTTP/1."):
        raise WebSocketProtocolError(f"not a GET request ({request_line[:60]!r})")
    key = fields.get("sec-websocket-key", "")
    if (
        not _has_token(fields.get("upgrade"), "websocket")
        or not _has_token(fields.get("connection"), "upgrade")
        or fields.get("sec-websocket-version") != "13"
        or not key
    ):
        raise WebSocketProtocolError("not a WebSocket (version 13) upgrade request")
    offered = [part.strip() for part in fields.get("sec-websocket-protocol", "").split(",") if part.strip()]
    return parts[1].partition("?")[0], key, offered


def server_handshake_response(key: str, subprotocol: str | None) -> bytes:
    """101 Switching Protocols for a request with ``key``, choosing ``subprotocol`` when given."""
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept_key(key)}",
    ]
    if subprotocol:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
