"""paho's MQTT client with a lean path for telemetry, both ways.

paho keeps the session (CONNECT/CONNACK, TLS, auth, SUBSCRIBE, keep-alive,
DISCONNECT, anything unusual from the broker).  The per-message work is
replaced, because at thousands of messages a second it was most of the CPU:
py-spy at 7,500 QoS 1 devices showed publish 36 % and reading PUBACKs 33 % of
samples at 93 % of a core; the MQTT sink at 12,000 msg/s spent 87 % of a core,
a ``select()`` and four ``recv`` calls per message among it.

* :meth:`LeanClient.send_publish` writes a PUBLISH framed by
  :class:`~pytest_iotperf.mqtt_wire.PublishFramer` straight to the socket:
  no ``MQTTMessage``/``MQTTMessageInfo`` objects, no locks, no mid search.
* :meth:`LeanClient.loop_read` takes every complete packet from one ``recv``:
  a PUBACK only drops its packet from :attr:`LeanClient.inflight`; with
  :attr:`LeanClient.on_raw_message` set, a QoS 0/1 PUBLISH hands over its
  topic, payload and (MQTT 5) raw property block as bytes, after the PUBACKs
  of one read left in one write (QoS 2 reaches it too, after paho's
  handshake); every other packet goes to paho's own handlers exactly as
  paho's reader would.

MQTT 5: a PUBACK may carry a reason code (``0x40 0x03 id id rc``, or with a
property block).  Any PUBACK settles its packet (it never stays in
``inflight``); a failure code (>= 0x80: quota exceeded, not authorized, ...)
also goes to :attr:`LeanClient.on_publish_refused`.  0x10 "no matching
subscribers" is a success.  The 3.1.1 form ``0x40 0x02`` keeps its fast path.

Telemetry is published only through ``send_publish``, with packet ids from a
counter here, so they cannot collide with paho's (a PUBACK paho is waiting for
is still given to paho).  It overrides private paho methods, hence the
``paho-mqtt<3`` pin; ``tests/test_lean_mqtt.py`` checks the bytes both ways
and runs it against a real broker.

QoS 1 publishes stay in :attr:`LeanClient.inflight` (packet id -> framed bytes)
until their PUBACK, across a lost connection too: after a reconnect the
device sends them again (:meth:`LeanClient.take_inflight`).  One dict insert
and one delete per message.

PUBACK latency (publish write -> PUBACK, QoS 1): with :attr:`LeanClient.ack_latency`
set, the write's ``time.monotonic_ns()`` is kept beside the packet and the PUBACK
adds one to ``ack_latency[µs]``: a plain dict of counts (~60 ns), folded into a
``DelayHistogram`` off the hot path (its ``record`` costs ~700 ns).  The clock is
read once per write and once per ``recv``, not per PUBACK.  A message sent again
is timed from the resend.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

from paho.mqtt import client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from pytest_iotperf.mqtt_wire import (
    MAX_PACKET_ID,
    PUBACK,
    PUBLISH,
    decode_variable_int,
    next_packet,
    publish_packet_id,
)

_SUCCESS = MQTTErrorCode.MQTT_ERR_SUCCESS
_READ_CHUNK = 65536
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
_SSL_SOURCE = re.compile(r"\s*\(_ssl\.c:\d+\)$")
#: The PUBACK latency clock (a module global: one lookup on the hot path, and tests can set it).
_now_ns = time.monotonic_ns
#: ``on_raw_message(topic, payload, properties)``: properties are the raw MQTT 5 property block, None if none.
RawMessageHandler = Callable[[bytes, bytes, bytes | None], None]


@functools.lru_cache(maxsize=256)
def puback_reason(reason_code: int) -> str:
    """An MQTT 5 PUBACK reason code as a report names it: ``"0x87 not authorized"``."""
    try:
        name = ReasonCode(PacketTypes.PUBACK, identifier=reason_code).getName().lower()
    except ValueError:  # not a PUBACK reason code the standard defines
        name = "unknown reason"
    return f"0x{reason_code:02x} {name}"


def _in_packet(command: int = 0, body: bytes = b"") -> Any:
    """paho's reader state: nothing read yet, or (with a command) one whole packet read."""
    return {
        "command": command,
        "have_remaining": 1 if command else 0,
        "remaining_count": [],
        "remaining_mult": 1,
        "remaining_length": len(body),
        "packet": bytearray(body),
        "to_process": 0,
        "pos": 0,
    }


class _Taken:
    """QoS 0/1 messages read from one buffer, waiting to be acknowledged and delivered."""

    __slots__ = ("acks", "messages")

    def __init__(self) -> None:
        self.acks = bytearray()  # their PUBACKs, written together
        self.messages: list[tuple[bytes, bytes, bytes | None]] = []  # (topic, payload, MQTT 5 properties)


class LeanClient(mqtt.Client):
    """One connection: paho for the session, our framing for telemetry."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: QoS 1 publishes the broker has not acknowledged yet: packet id -> the framed packet.
        #: Kept across a lost connection (a reconnect does not clear it), so they can be sent again.
        self.inflight: dict[int, bytes] = {}
        #: When set (QoS 1 publishers): PUBACK latency in whole µs -> count, added to on every PUBACK
        #: of a publish this client timed.  One dict for many clients; whoever owns it folds it up.
        self.ack_latency: dict[int, int] | None = None
        self._sent_ns: dict[int, int] = {}  # packet id -> monotonic_ns of its write, while ack_latency is set
        self._read_ns = 0  # monotonic_ns of the last recv, while ack_latency is set
        #: Why the connection was lost, when paho's own reason would only say "Unspecified error".
        self.lost_reason: str | None = None
        #: Receives ``(topic, payload, properties)`` of every message: QoS 0/1 without paho's per-message
        #: objects, QoS 2 once paho finished its handshake.  When None, paho's ``on_message`` does.
        #: ``properties``: the raw MQTT 5 property block (``mqtt_wire.user_properties`` decodes it), None
        #: under 3.1.1 or when empty.
        self.on_raw_message: RawMessageHandler | None = None
        #: MQTT 5: called with the reason code of every PUBACK that refused one of our publishes (>= 0x80);
        #: the publish is settled all the same (see :func:`puback_reason` for its name).
        self.on_publish_refused: Callable[[int], None] | None = None
        #: MQTT 5 CONNECT: clean start, and the session expiry asked for (s; 0: the session ends with the
        #: connection).  Set by ``mqtt_client.make_client``, sent by ``mqtt_client.connect``.
        self.clean_start = True
        self.session_expiry_s = 0
        self._next_packet_id = 0
        self._unparsed = b""  # the start of a packet whose rest has not arrived

    # -- connecting -----------------------------------------------------------------

    @property
    def unacked(self) -> int:
        """QoS 1 publishes the broker has not acknowledged yet."""
        return len(self.inflight)

    def take_inflight(self) -> list[tuple[int, bytes]]:
        """The unacknowledged QoS 1 publishes, oldest first; forgotten here (sending them again re-adds them)."""
        taken = list(self.inflight.items())
        self.inflight.clear()
        self._sent_ns.clear()  # sending them again times them again
        return taken

    def reconnect(self) -> MQTTErrorCode:
        self._unparsed = b""
        self.lost_reason = None
        return super().reconnect()

    def _create_socket(self) -> Any:
        """The connection paho reads and writes: the socket, or over WebSockets our frame stream around it.

        Not paho's ``_WebsocketWrapper`` (see :mod:`pytest_iotperf.ws_client`: it loses a PUBLISH
        under back-pressure and costs more per message).  The socket under the stream comes from
        ``_create_socket_connection`` like any other, so it has Nagle off too.
        """
        if self._transport != "websockets":
            return super()._create_socket()
        from pytest_iotperf.ws_client import WebSocketStream  # imported by websockets clients only

        sock: Any = self._create_socket_connection()
        try:
            if self._ssl:
                sock = self._ssl_wrap_socket(sock)
            sock.settimeout(self._connect_timeout)  # the handshake blocks; paho sets non-blocking after
            return WebSocketStream.open(
                sock, self._host, self._port, self._websocket_path, self._websocket_extra_headers
            )
        except BaseException:
            sock.close()
            raise

    def _create_socket_connection(self) -> socket.socket:
        """Open the TCP connection, with Nagle off: every client of a run sends small packets.

        Nagle would hold a PUBLISH (or a subscriber's PUBACKs) back until the
        previous segment is acknowledged.  Set on every socket opened, so a
        reconnect gets it too, before CONNECT goes out.
        """
        sock = self._open_socket()
        if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                sock.close()
                raise
        return sock

    def _open_socket(self) -> socket.socket:
        """Connect an IP literal directly: no name lookup, no explicit bind.

        paho resolves the host with getaddrinfo (under gevent: a thread-pool round
        trip) and binds to ("", 0) before connecting (an ephemeral-port search in
        the kernel that grows with every open socket).  At thousands of devices
        both dominate the ramp.
        """
        host, port = self._host, self._port
        if self._get_proxy() or self._bind_address or self._bind_port or not _is_ip_literal(host):
            return super()._create_socket_connection()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(self._connect_timeout)
            sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
        return sock

    # -- publishing -------------------------------------------------------------------

    def packet_id(self) -> int:
        """The next QoS 1 packet id, 1..65535 then around again."""
        self._next_packet_id = self._next_packet_id % MAX_PACKET_ID + 1
        return self._next_packet_id

    def send_publish(self, packet: bytes, qos: int, packet_id: int = 0) -> MQTTErrorCode:
        """Write a framed PUBLISH; what the kernel does not take now waits in paho's queue.

        Order is kept: while paho has anything queued the packet goes behind it,
        and ``want_write()`` tells the caller a flush is needed.  At QoS 1 the
        packet is kept under ``packet_id`` (read from the packet when 0) until its PUBACK.
        """
        rc = self._write(packet, qos)
        if rc == MQTTErrorCode.MQTT_ERR_CONN_LOST:
            return self._loop_rc_handle(rc)
        if rc == _SUCCESS and qos:
            packet_id = packet_id or publish_packet_id(packet)
            self.inflight[packet_id] = packet
            if self.ack_latency is not None:
                self._sent_ns[packet_id] = _now_ns()
        return rc

    def _write(self, packet: bytes, qos: int = 0) -> MQTTErrorCode:
        """Send now if nothing is queued, queue the rest; CONN_LOST is for the caller to handle."""
        sock = self._sock
        if sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        written = 0
        if not self._out_packet:
            try:
                written = sock.send(packet)
            except _WOULD_BLOCK:
                written = 0
            except OSError as exc:
                self.lost_reason = _why(exc)
                return MQTTErrorCode.MQTT_ERR_CONN_LOST
        if written < len(packet):
            self._out_packet.append(
                {
                    "command": packet[0],
                    "mid": 0,
                    "qos": qos,
                    "pos": written,
                    "to_process": len(packet) - written,
                    "packet": packet,
                    "info": mqtt.MQTTMessageInfo(0),  # paho marks QoS 0 PUBLISH packets published on write
                }
            )
        # Keep-alive: paho pings only after keepalive seconds without anything sent.
        self._last_msg_out = mqtt.time_func()
        return _SUCCESS

    # -- reading ----------------------------------------------------------------------

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Read what the socket holds and handle every complete packet in it."""
        while True:
            sock = self._sock
            if sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            try:
                data = sock.recv(_READ_CHUNK)
            except _WOULD_BLOCK:
                return _SUCCESS
            except OSError as exc:
                self.lost_reason = _why(exc)
                return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
            if not data:
                self.lost_reason = "connection closed by the broker"
                return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
            self._last_bytes_received = mqtt.time_func()
            if self.ack_latency is not None:
                self._read_ns = _now_ns()  # every PUBACK of this read arrived by now
            rc = self._handle_bytes(self._unparsed + data if self._unparsed else data)
            if rc != _SUCCESS:
                return self._loop_rc_handle(rc)
            # TLS may hold decrypted bytes the kernel no longer signals as readable.
            pending = getattr(self._sock, "pending", None)
            if pending is None or not pending():
                return _SUCCESS

    def _handle_bytes(self, buffer: bytes) -> MQTTErrorCode:
        pos = 0
        end = len(buffer)
        taken = _Taken()
        on_raw_message = self.on_raw_message
        mqtt5 = self._protocol == mqtt.MQTTv5
        rc = _SUCCESS
        while pos < end:
            command = buffer[pos]
            # The hot case of a publisher: a 3.1.1 PUBACK is always exactly 0x40 0x02 id id.
            if command == PUBACK and end - pos >= 4 and buffer[pos + 1] == 2:
                self._acknowledged((buffer[pos + 2] << 8) | buffer[pos + 3])
                pos += 4
                continue
            try:
                found = next_packet(buffer, pos)
            except ValueError:
                rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
                break
            if found is None:
                break
            _, body_start, body_end = found
            pos = body_end
            qos = (command >> 1) & 3
            if on_raw_message is not None and command & 0xF0 == PUBLISH and qos < 2:
                # The hot case of a subscriber: topic length, topic, [packet id], [MQTT 5 properties], payload.
                topic_end = body_start + 2 + ((buffer[body_start] << 8) | buffer[body_start + 1])
                payload_start = topic_end
                if qos:
                    # MQTT 5 too: a PUBACK without a reason code is a success (MQTT 5, 3.4.2.1).
                    taken.acks += b"\x40\x02" + buffer[payload_start : payload_start + 2]
                    payload_start += 2
                properties = None
                if mqtt5:
                    if payload_start >= body_end:  # no property length
                        rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
                        break
                    props_length = buffer[payload_start]
                    props_start = payload_start + 1
                    if props_length & 0x80:  # a block of 128 bytes or more: a longer length
                        try:
                            props_length, props_start = decode_variable_int(buffer, payload_start)
                        except ValueError:
                            rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
                            break
                    payload_start = props_start + props_length
                    if props_length:
                        properties = buffer[props_start:payload_start]
                if payload_start > body_end:
                    rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
                    break
                taken.messages.append(
                    (buffer[body_start + 2 : topic_end], buffer[payload_start:body_end], properties)
                )
                continue
            if command == PUBACK and mqtt5 and body_end - body_start > 2:
                self._acknowledged_with_reason(buffer[body_start:body_end])
                continue
            rc = self._hand_over(taken, on_raw_message)  # keep the order of what paho sees next
            if rc == _SUCCESS:
                rc = self._handle_with_paho(command, buffer[body_start:body_end])
            if rc != _SUCCESS or self._sock is None:
                break
        self._unparsed = buffer[pos:] if rc == _SUCCESS and self._sock is not None else b""
        if rc == _SUCCESS:
            return self._hand_over(taken, on_raw_message)
        self._hand_over(taken, on_raw_message, acknowledge=False)  # well-formed before the error
        return rc

    def _hand_over(
        self, taken: _Taken, on_raw_message: RawMessageHandler | None, acknowledge: bool = True
    ) -> MQTTErrorCode:
        """Acknowledge what was taken in one write, then deliver it.

        Acknowledging first means a ``disconnect()`` called from a delivery (or from
        another thread once the last message arrived) is queued behind the acks,
        not ahead of them.
        """
        rc = _SUCCESS
        if taken.acks and acknowledge and self._sock is not None:
            rc = self._write(bytes(taken.acks))
        if on_raw_message is not None:
            for topic, payload, properties in taken.messages:
                on_raw_message(topic, payload, properties)
        taken.acks.clear()
        taken.messages.clear()
        return rc

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        """Where paho delivers what it read itself (QoS 2): to ``on_raw_message`` when set."""
        on_raw_message = self.on_raw_message
        if on_raw_message is None:
            super()._handle_on_message(message)
        else:
            on_raw_message(message.topic.encode(), bytes(message.payload), _raw_properties(message))

    def _acknowledged(self, packet_id: int) -> None:
        if self._out_messages and packet_id in self._out_messages:
            # Not one of ours (paho published it itself): let paho settle it.
            self._handle_with_paho(PUBACK, packet_id.to_bytes(2, "big"))
        else:
            self.inflight.pop(packet_id, None)
            if self._sent_ns:
                sent_ns = self._sent_ns.pop(packet_id, None)
                latency = self.ack_latency
                if sent_ns is not None and latency is not None:
                    latency_us = (self._read_ns - sent_ns) // 1000
                    latency[latency_us] = latency.get(latency_us, 0) + 1

    def _acknowledged_with_reason(self, body: bytes) -> None:
        """An MQTT 5 PUBACK with a reason code (and maybe properties): it settles its publish, refused or not."""
        packet_id = (body[0] << 8) | body[1]
        if self._out_messages and packet_id in self._out_messages:
            self._handle_with_paho(PUBACK, body)  # paho's own publish: paho tells its on_publish the reason
            return
        self._acknowledged(packet_id)
        reason_code = body[2]
        if reason_code >= 0x80:
            on_publish_refused = self.on_publish_refused
            if on_publish_refused is not None:
                on_publish_refused(reason_code)

    def _handle_with_paho(self, command: int, body: bytes) -> MQTTErrorCode:
        """Hand one complete packet to paho, in the state its own reader leaves before handling."""
        self._in_packet = _in_packet(command, body)
        try:
            rc = self._packet_handle()
        except MalformedPacket:
            rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
        self._in_packet = _in_packet()
        return rc


def _raw_properties(message: mqtt.MQTTMessage) -> bytes | None:
    """The property block of a message paho decoded (MQTT 5), packed again without its length; None if none."""
    properties = getattr(message, "properties", None)
    if properties is None:
        return None
    packed: bytes = properties.pack()
    _, start = decode_variable_int(packed, 0)
    return packed[start:] or None


def _why(exc: OSError) -> str:
    """A lost connection's cause, short and the same for every device it hit (no addresses, no ports).

    An ``ssl`` error's text ends in where OpenSSL's glue raised it ("(_ssl.c:2427)"): dropped, so the
    same cause reads the same on every Python.
    """
    if not exc.strerror:
        return type(exc).__name__
    return f"{type(exc).__name__}: {_SSL_SOURCE.sub('', str(exc.strerror))}"


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
