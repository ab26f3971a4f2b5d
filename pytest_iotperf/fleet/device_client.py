"""paho's MQTT client with a lean hot path for a simulated device.

paho keeps the connection (CONNECT/CONNACK, TLS, auth, keep-alive, DISCONNECT,
anything unexpected from the broker).  Two things are replaced, because at
thousands of devices per process they were most of the CPU (py-spy at 7,500
QoS 1 devices: publish 36 %, reading PUBACKs 33 % of samples, 93 % of a core):

* :meth:`DeviceClient.send_publish` writes a PUBLISH framed by
  :class:`~pytest_iotperf.fleet.wire.PublishFramer` straight to the socket:
  no ``MQTTMessage``/``MQTTMessageInfo`` objects, no locks, no mid search.
* :meth:`DeviceClient.loop_read` takes every complete packet from one ``recv``;
  a PUBACK only decrements :attr:`DeviceClient.unacked`; every other packet is
  handed to paho's own handlers exactly as paho's reader would.

Devices never subscribe and publish only through ``send_publish``, so packet
ids (a counter here) cannot collide with paho's own.  It overrides private
paho methods, hence the ``paho-mqtt<3`` pin; ``tests/test_device_client.py``
runs it against a real broker.  Only used inside Locust processes.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from typing import Any

from paho.mqtt import client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.exception import MalformedPacket

from pytest_iotperf.fleet.wire import MAX_PACKET_ID, PUBACK, next_packet

_SUCCESS = MQTTErrorCode.MQTT_ERR_SUCCESS
_READ_CHUNK = 65536
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


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


class DeviceClient(mqtt.Client):
    """One device's connection: paho for the session, our framing for telemetry."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.unacked = 0  # QoS 1 publishes the broker has not acknowledged yet
        self._next_packet_id = 0
        self._unparsed = b""  # the start of a packet whose rest has not arrived

    # -- connecting -----------------------------------------------------------------

    def reconnect(self) -> MQTTErrorCode:
        self._unparsed = b""
        self.unacked = 0
        return super().reconnect()

    def _create_socket_connection(self) -> socket.socket:
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

    def send_publish(self, packet: bytes, qos: int) -> MQTTErrorCode:
        """Write a framed PUBLISH; what the kernel does not take now waits in paho's queue.

        Order is kept: while paho has anything queued the packet goes behind it,
        and ``want_write()`` tells the caller a flush is needed.
        """
        sock = self._sock
        if sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        written = 0
        if not self._out_packet:
            try:
                written = sock.send(packet)
            except _WOULD_BLOCK:
                written = 0
            except OSError:
                return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
        if written < len(packet):
            self._out_packet.append(
                {
                    "command": packet[0],
                    "mid": 0,
                    "qos": qos,
                    "pos": written,
                    "to_process": len(packet) - written,
                    "packet": packet,
                    "info": mqtt.MQTTMessageInfo(0),  # paho marks QoS 0 packets published on write
                }
            )
        if qos:
            self.unacked += 1
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
            except OSError:
                return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
            if not data:
                return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
            self._last_bytes_received = mqtt.time_func()
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
        while pos < end:
            # The hot case first: a 3.1.1 PUBACK is always exactly 0x40 0x02 id id.
            if buffer[pos] == PUBACK and end - pos >= 4 and buffer[pos + 1] == 2:
                self._acknowledged((buffer[pos + 2] << 8) | buffer[pos + 3])
                pos += 4
                continue
            try:
                found = next_packet(buffer, pos)
            except ValueError:
                return MQTTErrorCode.MQTT_ERR_PROTOCOL
            if found is None:
                break
            command, body_start, body_end = found
            rc = self._handle_with_paho(command, buffer[body_start:body_end])
            pos = body_end
            if rc != _SUCCESS or self._sock is None:
                self._unparsed = b""
                return rc
        self._unparsed = buffer[pos:]
        return _SUCCESS

    def _acknowledged(self, packet_id: int) -> None:
        if self._out_messages and packet_id in self._out_messages:
            # Not one of ours (paho published it itself): let paho settle it.
            self._handle_with_paho(PUBACK, packet_id.to_bytes(2, "big"))
        elif self.unacked > 0:
            self.unacked -= 1

    def _handle_with_paho(self, command: int, body: bytes) -> MQTTErrorCode:
        """Hand one complete packet to paho, in the state its own reader leaves before handling."""
        self._in_packet = _in_packet(command, body)
        try:
            rc = self._packet_handle()
        except MalformedPacket:
            rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
        self._in_packet = _in_packet()
        return rc


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
