"""A client's MQTT-over-WebSockets connection that behaves like the socket under it.

:class:`~pytest_iotperf.lean_mqtt.LeanClient` uses it instead of paho's
``_WebsocketWrapper``, for three reasons measured or found in paho 2.2
(``benchmarks/websockets_fleet.py --framing`` prints the figures):

* paho masks every byte in a Python loop and reads ``os.urandom`` per frame;
  it reads a frame with three ``recv`` calls and hands over at most one frame
  per call.  Here a frame is one join with the XOR in C, and one ``recv`` takes
  every complete frame it holds.
* paho's ``send`` answers a partial write with 0 ("send the same data again"),
  but paho's own queue (``_packet_write``) drops a packet whose send returned 0,
  and the wrapper then reports the old frame's length for the next packet: under
  back-pressure a PUBLISH is lost.  Here a partial write reports the payload bytes
  that went out (or raises ``BlockingIOError`` when none did), as a socket does.
* the handshake read the answer one byte per ``recv``.

The socket under it (:attr:`WebSocketStream.socket`) is the one
``LeanClient._create_socket_connection`` opened, with Nagle already off.
"""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Callable, Mapping

from pytest_iotperf.ws_frames import (
    CLOSE,
    MAX_HEAD,
    PING,
    PONG,
    FrameDecoder,
    HandshakeRefused,
    WebSocketProtocolError,
    client_frame,
    client_handshake,
    new_key,
    parse_server_handshake,
)

__all__ = ["WebSocketError", "WebSocketStream"]

_CLOSE_NORMAL = (1000).to_bytes(2, "big")
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError)
#: What a refused upgrade usually means, for the error message.
_PATH_HINT = "check --iot-ws-path (Mosquitto and most brokers: /mqtt; Azure IoT Hub: /$iothub/websocket)"

Headers = Mapping[str, str] | Callable[[dict[str, str]], dict[str, str]]


class WebSocketError(ConnectionError):
    """The WebSocket handshake or frame stream failed; ``strerror`` says how (device drop reasons read it)."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EPROTO, message)

    def __str__(self) -> str:
        return str(self.strerror)


class WebSocketStream:
    """MQTT bytes in, binary frames out: ``send``/``recv`` as on a non-blocking socket.

    Use :meth:`open` on a connected socket (blocking, with the connect timeout):
    it performs the upgrade and returns the stream.
    """

    def __init__(self, sock: socket.socket, leftover: bytes = b"") -> None:
        #: The TCP (or TLS) socket under the frames.
        self.socket = sock
        self._decoder = FrameDecoder(masked=False)
        self._decoded = b""  # MQTT bytes decoded but not yet asked for (recv(n) with a small n)
        self._out = b""  # frame bytes owed to the wire: the rest of a partly written frame
        self._out_header = 0  # how many of them are not the caller's payload (header, or a control frame)
        self._deferred = b""  # control frames waiting for a partly written data frame to finish
        self._closed = False  # the server's close frame arrived: recv reports the end once drained
        self._tls = isinstance(sock, ssl.SSLSocket)
        if leftover:
            self._take(leftover)

    @classmethod
    def open(
        cls, sock: socket.socket, host: str, port: int, path: str, headers: Headers | None = None
    ) -> WebSocketStream:
        """Upgrade the connected ``sock`` to a WebSocket on ``path`` and return the stream.

        Raises:
            WebSocketError: the server refused the upgrade (the message names the
                path and the HTTP status) or answered something else.
            OSError: the socket failed or timed out.
        """
        tls = isinstance(sock, ssl.SSLSocket)
        default_port = 443 if tls else 80
        host_text = f"[{host}]" if ":" in host else host
        host_port = host_text if port == default_port else f"{host_text}:{port}"
        key = new_key()
        fields: Mapping[str, str] | None
        if callable(headers):
            base = {"Host": host_port, "Sec-WebSocket-Protocol": "mqtt"}
            fields = headers(dict(base))
        else:
            fields = headers
        sock.sendall(client_handshake(host_port, path, key, fields))
        received = b""
        while b"\r\n\r\n" not in received:
            if len(received) > MAX_HEAD:
                raise WebSocketError(f"WebSocket upgrade to {path}: the server's answer has no end")
            try:
                chunk = sock.recv(4096)
            except ConnectionResetError:  # an MQTT listener resets a connection that opens with HTTP
                chunk = b""
            if not chunk:
                raise WebSocketError(
                    f"WebSocket upgrade to {path}: the server closed the connection without an answer "
                    "(is this port a WebSocket listener?)"
                )
            received += chunk
        head, _, leftover = received.partition(b"\r\n\r\n")
        try:
            parse_server_handshake(head, key)
        except HandshakeRefused as exc:
            hint = f"; {_PATH_HINT}" if exc.status in (400, 403, 404) else ""
            raise WebSocketError(f"WebSocket upgrade to {path} refused: {exc}{hint}") from None
        return cls(sock, leftover)

    # -- writing ------------------------------------------------------------------------

    def send(self, data: bytes | bytearray) -> int:
        """Frame ``data`` and write it; returns how many of its bytes went out.

        As with a socket, a caller that got less than ``len(data)`` sends the
        rest again (paho's queue does); the frame already begun is finished from
        here, with those bytes.  Nothing written at all raises ``BlockingIOError``
        (never 0, which paho's queue would take for written).
        """
        if self._out:
            sent_payload = self._flush_out()
            if self._out:
                if sent_payload:
                    return sent_payload
                raise BlockingIOError(errno.EAGAIN, "WebSocket frame still being written")
            if sent_payload:  # that frame was the caller's data, now all out
                self._send_deferred()
                return sent_payload
            self._send_deferred()
            if self._out:
                raise BlockingIOError(errno.EAGAIN, "WebSocket control frame still being written")
        frame = client_frame(data)
        header = len(frame) - len(data)
        try:
            sent = self.socket.send(frame)
        except _WOULD_BLOCK:
            # Kept whole: TLS must be retried with the very same bytes (this frame's random mask).
            self._out, self._out_header = frame, header
            raise
        if sent == len(frame):
            return len(data)
        self._out, self._out_header = frame[sent:], max(header - sent, 0)
        payload_sent = max(sent - header, 0)
        if payload_sent:
            return payload_sent
        raise BlockingIOError(errno.EAGAIN, "WebSocket frame partly written")

    def _flush_out(self) -> int:
        """Write what is owed; returns how many of the caller's payload bytes that finished."""
        try:
            sent = self.socket.send(self._out)
        except _WOULD_BLOCK:
            return 0
        self._out = self._out[sent:]
        payload = max(sent - self._out_header, 0)
        self._out_header = max(self._out_header - sent, 0)
        return payload

    def _send_control(self, opcode: int, payload: bytes) -> None:
        frame = client_frame(payload, opcode)
        if self._out:  # never inside a data frame
            self._deferred += frame
            return
        try:
            sent = self.socket.send(frame)
        except _WOULD_BLOCK:
            sent = 0
        if sent < len(frame):
            self._out = frame[sent:]
            self._out_header = len(self._out)  # none of it is a caller's payload

    def _send_deferred(self) -> None:
        deferred, self._deferred = self._deferred, b""
        if deferred:
            self._out, self._out_header = deferred, len(deferred)
            self._flush_out()

    # -- reading ------------------------------------------------------------------------

    def recv(self, buffer_size: int) -> bytes:
        """The MQTT bytes of every complete frame one ``recv`` brought, at most ``buffer_size`` of them.

        ``b""`` once the connection ended (EOF, or the server's close frame);
        ``BlockingIOError`` when no complete data frame is there yet.
        """
        if not self._decoded:
            if self._closed:
                return b""
            data = self.socket.recv(max(buffer_size, 4096))
            if not data:
                return b""
            self._take(data)
            if not self._decoded:
                if self._closed:
                    return b""
                raise BlockingIOError(errno.EAGAIN, "no complete WebSocket frame yet")
        out = self._decoded
        if len(out) <= buffer_size:
            self._decoded = b""
            return out
        self._decoded = out[buffer_size:]
        return out[:buffer_size]

    def _take(self, data: bytes) -> None:
        try:
            payload, controls = self._decoder.feed(data)
        except WebSocketProtocolError as exc:
            raise WebSocketError(f"bad WebSocket frame from the server: {exc}") from None
        if payload:
            self._decoded = self._decoded + payload if self._decoded else payload
        for opcode, body in controls:
            if opcode == PING:
                self._send_control(PONG, body)
            elif opcode == CLOSE and not self._closed:
                self._closed = True
                self._send_control(CLOSE, _CLOSE_NORMAL)

    def pending(self) -> int:
        """Bytes readable without the kernel: decoded ones, TLS-buffered ones, or an end not reported yet."""
        if self._decoded:
            return len(self._decoded)
        if self._closed:
            return 1
        return self.socket.pending() if self._tls else 0  # type: ignore[attr-defined]

    # -- the socket's own ---------------------------------------------------------------

    def fileno(self) -> int:
        return self.socket.fileno()

    def close(self) -> None:
        self.socket.close()

    def setblocking(self, flag: bool) -> None:
        self.socket.setblocking(flag)

    def settimeout(self, value: float | None) -> None:
        self.socket.settimeout(value)

    def getsockopt(self, level: int, option: int) -> int:
        return self.socket.getsockopt(level, option)

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.socket.setsockopt(level, option, value)

    def __repr__(self) -> str:
        return f"<WebSocketStream fd={self.fileno()}>"
