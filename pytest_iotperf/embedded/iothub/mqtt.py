"""IoT Hub's MQTT 3.1.1 device surface over TLS, on an asyncio loop.

Each connection is a non-blocking ``ssl.SSLSocket`` driven by the loop's
``add_reader``/``add_writer`` rather than asyncio's SSL transport: one
``recv`` decrypts in C straight into a bytes object and one ``send`` encrypts
a whole batch of PUBACKs, where asyncio's transport passes every record through
memory BIOs and several Python layers.  At one message per device per second
nearly every read holds one PUBLISH, so the per-read cost is the per-message cost.

What IoT Hub does and this does too: CONNECT checked (``auth.admit``), CONNACK 5
otherwise; telemetry to ``devices/{id}/messages/events/{bag}`` at QoS 0/1 goes to
the built-in endpoint (PUBACK after it is stored); a publish to another device's
topic or at QoS 2 closes the connection; the connection closes when its token
expires; a second CONNECT with the same device id drops the first; SUBSCRIBE to
the device's own topics is granted (nothing is ever sent on them).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import time
from asyncio import AbstractEventLoop as _Loop
from asyncio import TimerHandle as _Timer
from collections import Counter, deque
from typing import Any, Final

from pytest_iotperf.embedded.iothub.auth import Admission, HubKeys, Refused, admit
from pytest_iotperf.embedded.iothub.endpoint import BuiltInEndpoint, Route, auth_method, encode_sections
from pytest_iotperf.embedded.iothub.registry import Registry
from pytest_iotperf.iothub.naming import parse_telemetry_topic

__all__ = ["DeviceGateway", "MqttConnection"]

_LOG = logging.getLogger(__name__)

HANDSHAKE: Final = 0
CONNECTING: Final = 1
CONNECTED: Final = 2
CLOSING: Final = 3  # refused: CONNACK sent, input discarded until the device closes (or a short linger ends)
CLOSED: Final = 4

MAX_PACKET: Final = 256 * 1024 + 1024  # IoT Hub's message limit is 256 KB (payload and properties)
MAX_PENDING_OUTPUT: Final = 1 << 20
FULL_RECORD: Final = 16384  # TLS records carry at most 16 KB: a full one may have more behind it
# One record per read. Not more: CPython allocates the whole size per read and shrinks it after, and
# past glibc's mmap threshold (128 KB) that is an mmap/munmap pair with page faults for every message.
READ_SIZE: Final = FULL_RECORD
CONNECT_TIMEOUT_S: Final = 30.0
REFUSAL_LINGER_S: Final = 1.0
TOPIC_CACHE: Final = 64
LOGGED_REFUSALS: Final = 20

CONNACK_ACCEPTED: Final = b"\x20\x02\x00\x00"
CONNACK_BAD_PROTOCOL: Final = 1
CONNACK_NOT_AUTHORIZED: Final = 5
PINGRESP: Final = b"\xd0\x00"

# Topics the device SDKs subscribe to; SUBACK grants them (QoS capped at 1), anything else gets 0x80.
_SUBSCRIBABLE: Final = ("$iothub/twin/res/", "$iothub/methods/POST/", "$iothub/twin/PATCH/properties/desired/")
_IGNORED_PUBLISH: Final = ("$iothub/twin/", "$iothub/methods/res/")
_IGNORE: Final = b"\x00ignored"  # what _learn returns (by identity) for a publish IoT Hub takes but never routes
_READ: Final = select.EPOLLIN | select.EPOLLRDHUP


class DeviceGateway:
    """What every connection shares: keys, registry, built-in endpoint, the connected devices and the counters."""

    def __init__(self, keys: HubKeys, registry: Registry, endpoint: BuiltInEndpoint) -> None:
        self.keys = keys
        self.registry = registry
        self.endpoint = endpoint
        self.connections: set[MqttConnection] = set()
        self.devices: dict[str, MqttConnection] = {}
        self.refusals: Counter[str] = Counter()
        self.disconnects: Counter[str] = Counter()  # of accepted connections
        self.dropped_before_connect: Counter[str] = Counter()  # neither refused nor accepted: why they ended
        self.connects = 0
        self.recent_refusals: deque[str] = deque(maxlen=100)
        self._logged = 0

    def refused(self, reason: str, detail: str) -> None:
        self.refusals[reason] += 1
        self.recent_refusals.append(detail)
        self._logged += 1
        level = logging.WARNING if self._logged <= LOGGED_REFUSALS else logging.DEBUG
        _LOG.log(level, "CONNECT refused: %s", detail)

    def admitted(self, connection: MqttConnection, device_id: str) -> None:
        self.connects += 1
        old = self.devices.get(device_id)
        self.devices[device_id] = connection
        if old is not None and old is not connection:
            old.close("another connection with the same device id")
        device = self.registry.get(device_id)
        if device is not None:
            device.connected = True
            device.last_activity = time.time()

    def closed(self, connection: MqttConnection, reason: str, state: int) -> None:
        """``connection`` ended for ``reason`` in ``state``; refused ones were counted at their CONNACK."""
        self.connections.discard(connection)
        if state == CONNECTED:
            self.disconnects[reason] += 1
        elif state != CLOSING and reason != "TLS handshake failed":
            self.dropped_before_connect[reason] += 1
        device_id = connection.device_id
        if device_id is not None and self.devices.get(device_id) is connection:
            del self.devices[device_id]
            device = self.registry.get(device_id)
            if device is not None:
                device.connected = False

    def sweep(self, now: float) -> None:
        """Close connections silent past 1.5 keep-alives, and those that never sent CONNECT."""
        for connection in list(self.connections):
            if connection.state == CONNECTED:
                # Reads are counted rather than timed (no clock call per message): silence is a count unchanged.
                if connection.reads != connection.seen_reads:
                    connection.seen_reads, connection.seen_at = connection.reads, now
                elif connection.keepalive and now - connection.seen_at > 1.5 * connection.keepalive:
                    connection.close("keepalive timeout")
            elif connection.state < CONNECTED and now - connection.accepted_at > CONNECT_TIMEOUT_S:
                connection.close("no CONNECT in time" if connection.state == CONNECTING else "TLS handshake timeout")


def _read_string(data: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 2 > len(data):
        raise ValueError("truncated CONNECT")
    end = pos + 2 + ((data[pos] << 8) | data[pos + 1])
    if end > len(data):
        raise ValueError("truncated CONNECT")
    return data[pos + 2 : end], end


def _remaining_length(buf: bytes, pos: int, size: int) -> tuple[int, int] | None:
    """(length, where the packet body starts) of the packet at ``pos``, None when its header is incomplete."""
    length = 0
    shift = 0
    index = pos + 1
    while True:
        if index >= size:
            return None
        byte = buf[index]
        index += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return length, index
        shift += 7
        if shift > 21:
            raise ValueError("malformed remaining length")


class MqttConnection:
    """One device's TLS connection."""

    __slots__ = (
        "_buf",
        "_expiry",
        "_fd",
        "_gateway",
        "_linger",
        "_loop",
        "_out",
        "_poller",
        "_route",
        "_tls",
        "_topics",
        "_writing",
        "accepted_at",
        "device_id",
        "keepalive",
        "method",
        "peer_common_name",
        "reads",
        "seen_at",
        "seen_reads",
        "state",
    )

    def __init__(self, gateway: DeviceGateway, tls: ssl.SSLSocket, poller: Poller) -> None:
        self._gateway = gateway
        self._tls = tls
        self._poller = poller
        self._loop = poller.loop
        self._fd = tls.fileno()
        self._buf = b""
        self._out: list[bytes] | None = None
        self._writing = False
        self._topics: dict[bytes, bytes] = {}
        self._route: Route | None = None
        self._expiry: _Timer | None = None
        self._linger: _Timer | None = None
        self.device_id: str | None = None
        self.method = ""
        self.peer_common_name: str | None = None
        self.keepalive = 0
        self.state = HANDSHAKE
        self.accepted_at = self.seen_at = time.monotonic()
        self.reads = self.seen_reads = 0
        gateway.connections.add(self)
        poller.register(self._fd, self)
        self._handshake()

    # -- TLS ------------------------------------------------------------------------------------------------

    def _handshake(self) -> None:
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            self._want_write(False)
            return
        except ssl.SSLWantWriteError:
            self._want_write(True)
            return
        except (ssl.SSLError, OSError) as exc:
            self._gateway.refusals["TLS handshake failed"] += 1
            _LOG.debug("TLS handshake failed: %s", exc)
            self.close("TLS handshake failed")
            return
        self._want_write(False)
        self.peer_common_name = _common_name(self._tls)
        self.state = CONNECTING

    def _want_write(self, wanted: bool) -> None:
        if wanted != self._writing:
            self._writing = wanted
            self._poller.want_write(self._fd, wanted)

    def on_readable(self) -> None:
        """The socket has bytes (or an error): read what TLS can decrypt and act on the packets."""
        state = self.state
        if state == HANDSHAKE:
            self._handshake()
            return
        tls = self._tls
        try:
            data = tls.read(READ_SIZE)
            if not data:
                self.close("closed by the device")
                return
            # A full record may have more behind it in OpenSSL's buffer, which the selector cannot see.
            while len(data) % FULL_RECORD == 0 and tls.pending():
                data += tls.read(READ_SIZE)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except (ssl.SSLError, OSError):
            self.close("connection lost")
            return
        self.reads += 1
        if state == CONNECTED:
            self._packets(data)
        elif state == CONNECTING:
            self._connect(data)
        # CLOSING: a refused device's further bytes are dropped

    def on_writable(self) -> None:
        """The socket takes bytes again: finish the handshake or send what was queued."""
        if self.state == HANDSHAKE:
            self._handshake()
            return
        out = self._out
        while out:
            chunk = out[0]
            try:
                sent = self._tls.write(chunk)
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return
            except (ssl.SSLError, OSError):
                self.close("connection lost")
                return
            if sent < len(chunk):
                out[0] = chunk[sent:]
                return
            del out[0]
            if len(out) > 1:
                out[:] = [b"".join(out)]
        self._out = None
        self._want_write(False)

    def send(self, data: bytes) -> None:
        """Queue ``data`` for the device; sent at once when the socket takes it."""
        if self.state == CLOSED:
            return
        out = self._out
        if out is not None:
            out.append(data)
            if sum(map(len, out)) > MAX_PENDING_OUTPUT:
                self.close("device stopped reading")
            return
        try:
            sent = self._tls.write(data)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            sent = 0
        except (ssl.SSLError, OSError):
            self.close("connection lost")
            return
        if sent < len(data):
            # OpenSSL wants a retried write to carry the same bytes: the unsent rest is kept as one piece.
            self._out = [data[sent:]]
            self._want_write(True)

    def close(self, reason: str) -> None:
        """Close the connection and count ``reason``."""
        state = self.state
        if state == CLOSED:
            return
        self.state = CLOSED
        for timer in (self._expiry, self._linger):
            if timer is not None:
                timer.cancel()
        self._poller.unregister(self._fd)
        self._writing = False
        with contextlib.suppress(OSError):
            self._tls.close()
        self._gateway.closed(self, reason, state)

    # -- CONNECT --------------------------------------------------------------------------------------------

    def _connect(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        size = len(buf)
        try:
            header = _remaining_length(buf, 0, size) if size >= 2 else None
        except ValueError:
            self.close("malformed packet")
            return
        if header is None:
            self._buf = buf
            return
        length, start = header
        if buf[0] != 0x10:
            self.close("first packet is not CONNECT")
            return
        if length > 65536:
            self.close("malformed packet")
            return
        end = start + length
        if end > size:
            self._buf = buf
            return
        self._buf = b""
        try:
            self._on_connect(buf[start:end])
        except ValueError:
            self.close("malformed packet")
            return
        if self.state == CONNECTED and end < size:
            self._packets(buf[end:])

    def _on_connect(self, body: bytes) -> None:
        name, pos = _read_string(body, 0)
        if pos + 4 > len(body):
            raise ValueError("truncated CONNECT")
        level, flags = body[pos], body[pos + 1]
        keepalive = (body[pos + 2] << 8) | body[pos + 3]
        pos += 4
        client_id_raw, pos = _read_string(body, pos)
        client_id = client_id_raw.decode("utf-8", errors="replace")
        if name != b"MQTT" or level != 4:
            self._refuse(CONNACK_BAD_PROTOCOL, "bad protocol", f"{client_id or '(no client id)'}: not MQTT 3.1.1")
            return
        if flags & 0x04:  # will topic and message: accepted, never sent
            _, pos = _read_string(body, pos)
            _, pos = _read_string(body, pos)
        username: str | None = None
        password: bytes | None = None
        if flags & 0x80:
            raw, pos = _read_string(body, pos)
            username = raw.decode("utf-8", errors="replace")
        if flags & 0x40:
            password, pos = _read_string(body, pos)
        gateway = self._gateway
        try:
            admission = admit(
                gateway.keys, gateway.registry, client_id, username, password, self.peer_common_name, time.time()
            )
        except Refused as refusal:
            self._refuse(CONNACK_NOT_AUTHORIZED, refusal.reason, refusal.detail)
            return
        self._accept(admission, keepalive)

    def _refuse(self, code: int, reason: str, detail: str) -> None:
        self._gateway.refused(reason, detail)
        self.device_id = None
        self.send(b"\x20\x02\x00" + bytes((code,)))
        # Closing at once with the CONNACK in flight could reset the connection before the device reads it.
        self.state = CLOSING
        self._linger = self._loop.call_later(REFUSAL_LINGER_S, self.close, "refused")

    def _accept(self, admission: Admission, keepalive: int) -> None:
        self.device_id = admission.device_id
        self.method = admission.method
        self.keepalive = keepalive
        self._route = self._gateway.endpoint.route(admission.device_id, auth_method(admission.method))
        self.state = CONNECTED
        self.send(CONNACK_ACCEPTED)
        self._gateway.admitted(self, admission.device_id)
        if admission.expires_at is not None:
            delay = max(0.0, admission.expires_at - time.time())
            self._expiry = self._loop.call_later(delay, self.close, "SAS token expired")

    # -- after CONNECT --------------------------------------------------------------------------------------

    def _packets(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        size = len(buf)
        pos = 0
        acks: list[bytes] = []
        route = self._route
        assert route is not None
        topics = self._topics
        append = self._gateway.endpoint.append
        now_ms = 0
        while size - pos >= 2:
            first = buf[pos]
            length = buf[pos + 1]
            start = pos + 2
            if length & 0x80:
                if size - pos > 2 and not buf[pos + 2] & 0x80:  # two length bytes: 128 B..16 KB, the usual
                    length = (length & 0x7F) | (buf[pos + 2] << 7)
                    start = pos + 3
                else:
                    try:
                        header = _remaining_length(buf, pos, size)
                    except ValueError:
                        self.close("malformed packet")
                        return
                    if header is None:
                        break
                    length, start = header
            end = start + length
            if end > size:
                if length > MAX_PACKET:
                    self.close("message too large")
                    return
                break
            kind = first & 0xF0
            if kind == 0x30:  # PUBLISH
                if length < 2:
                    self.close("malformed packet")
                    return
                body = start + 2 + ((buf[start] << 8) | buf[start + 1])
                topic = buf[start + 2 : body]
                qos = first & 0x06
                if qos:
                    if qos != 0x02:
                        self.close("QoS 2 publish")
                        return
                    acks.append(b"\x40\x02" + buf[body : body + 2])
                    body += 2
                if body > end:
                    self.close("malformed packet")
                    return
                sections = topics.get(topic)
                if sections is None:
                    learned = self._learn(topic)
                    if learned is None:
                        return  # closed
                    if learned is _IGNORE:
                        pos = end
                        continue
                    sections = learned
                if not now_ms:
                    now_ms = int(time.time() * 1000)
                append(route, sections, buf[body:end], now_ms)
            elif kind == 0xC0:
                acks.append(PINGRESP)
            elif kind == 0x80:
                acks.append(self._suback(buf[start:end]))
            elif kind == 0xA0:
                if length < 2:
                    self.close("malformed packet")
                    return
                acks.append(b"\xb0\x02" + buf[start : start + 2])
            elif kind == 0xE0:
                if acks:
                    self.send(b"".join(acks))
                self.close("disconnected by the device")
                return
            elif kind == 0x40:
                pass  # PUBACK of a cloud-to-device message: none are ever sent
            else:
                self.close("unexpected packet")
                return
            pos = end
        self._buf = buf[pos:] if pos < size else b""
        if acks:
            self.send(b"".join(acks) if len(acks) > 1 else acks[0])

    def _learn(self, raw: bytes) -> bytes | None:
        """The encoded sections of a telemetry topic (cached), _IGNORE, or None after closing the connection."""
        try:
            topic = raw.decode("utf-8")
        except UnicodeDecodeError:
            self.close("malformed topic")
            return None
        if topic.startswith(_IGNORED_PUBLISH):
            return _IGNORE
        parsed = parse_telemetry_topic(topic)
        if parsed is None:
            self.close(f"publish to an unsupported topic ({topic.split('/')[0]}/...)")
            return None
        if parsed.device_id != self.device_id:
            self.close("publish to another device's topic")
            return None
        sections = encode_sections(parsed.system_properties, parsed.properties)
        if len(self._topics) >= TOPIC_CACHE:
            self._topics.clear()  # a device that varies its property bag per message gets no cache, not a leak
        self._topics[raw] = sections
        return sections

    def _suback(self, body: bytes) -> bytes:
        if len(body) < 2:
            return b""
        granted = bytearray()
        pos = 2
        try:
            while pos < len(body):
                raw, pos = _read_string(body, pos)
                if pos >= len(body):
                    raise ValueError("truncated SUBSCRIBE")
                qos = body[pos]
                pos += 1
                topic = raw.decode("utf-8", errors="replace")
                own = f"devices/{self.device_id}/messages/devicebound/"
                allowed = topic.startswith(own) or topic.startswith(_SUBSCRIBABLE)
                granted.append(min(qos & 0x03, 1) if allowed else 0x80)
        except ValueError:
            granted.append(0x80)
        remaining = 2 + len(granted)
        return bytes((0x90, remaining)) + body[:2] + bytes(granted) if remaining < 128 else b""



def _common_name(tls: ssl.SSLSocket) -> str | None:
    """The CN of a verified client certificate (None without one)."""
    try:
        certificate = tls.getpeercert()
    except (ValueError, ssl.SSLError):
        return None
    if not certificate:
        return None
    subject: Any = certificate.get("subject", ())
    for rdn in subject:
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class Poller:
    """Every device socket in one epoll set, which the asyncio loop watches as a single reader.

    asyncio's per-descriptor dispatch (a Handle per ready socket per turn) costs more Python than the
    PUBLISH itself when each read holds one message; here one loop callback serves every ready socket
    with a dict lookup each.  Still one thread and one loop: the Event Hubs side shares it.
    """

    def __init__(self, loop: _Loop) -> None:
        self.loop = loop
        self._epoll = select.epoll()
        self._handlers: dict[int, MqttConnection] = {}
        loop.add_reader(self._epoll.fileno(), self._ready)

    def register(self, fd: int, connection: MqttConnection) -> None:
        self._handlers[fd] = connection
        self._epoll.register(fd, _READ)

    def want_write(self, fd: int, wanted: bool) -> None:
        with contextlib.suppress(OSError):
            self._epoll.modify(fd, _READ | select.EPOLLOUT if wanted else _READ)

    def unregister(self, fd: int) -> None:
        if self._handlers.pop(fd, None) is not None:
            with contextlib.suppress(OSError):
                self._epoll.unregister(fd)

    def _ready(self) -> None:
        handlers = self._handlers
        for fd, events in self._epoll.poll(0, 4096):
            connection = handlers.get(fd)
            if connection is None:
                continue
            if events == select.EPOLLIN:
                connection.on_readable()
                continue
            if events & select.EPOLLOUT:
                connection.on_writable()
            if events & ~select.EPOLLOUT and connection.state != CLOSED:
                connection.on_readable()

    def close(self) -> None:
        self.loop.remove_reader(self._epoll.fileno())
        self._epoll.close()


class MqttListener:
    """Accepts TLS connections on a listening socket and hands each to a new :class:`MqttConnection`."""

    def __init__(self, gateway: DeviceGateway, sock: socket.socket, context: ssl.SSLContext, loop: _Loop) -> None:
        self._gateway = gateway
        self._sock = sock
        self._context = context
        self._loop = loop
        self._poller = Poller(loop)
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(128):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: the device retries; say why once per burst
                _LOG.warning("accept failed: %s", exc)
                self._gateway.refusals["accept failed"] += 1
                return
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                tls = self._context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
            except (ssl.SSLError, OSError):
                conn.close()
                continue
            MqttConnection(self._gateway, tls, self._poller)

    def close(self) -> None:
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        for connection in list(self._gateway.connections):
            connection.close("hub stopped")
        self._poller.close()

