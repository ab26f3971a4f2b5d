"""A TCP proxy in front of an MQTT broker that turns chosen clients away, by client id.

It reads each connection's CONNECT packet; a client whose id ends with one of
``refuse_suffixes`` has its connection closed at once (every try, like a
broker whose ACL refuses it), every other connection is forwarded both ways.
So exactly the chosen devices of a run never connect.

Independent of the code under test on purpose: nothing is imported from
``pytest_iotperf``.  Threads: one accepting, two per forwarded connection.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from typing import Self

__all__ = ["RefusingProxy", "connect_client_id"]

_CHUNK = 65536


def _read_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("closed before the CONNECT packet was complete")
        data += chunk
    return data


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def connect_client_id(packet: bytes) -> str:
    """The client id of a complete MQTT 3.1.1 or 5 CONNECT packet."""
    _, pos = _varint(packet, 1)  # fixed header: type, remaining length
    name_length = int.from_bytes(packet[pos : pos + 2], "big")
    pos += 2 + name_length
    level = packet[pos]
    pos += 1 + 1 + 2  # level, flags, keep-alive
    if level == 5:
        properties, pos = _varint(packet, pos)
        pos += properties
    id_length = int.from_bytes(packet[pos : pos + 2], "big")
    return packet[pos + 2 : pos + 2 + id_length].decode("utf-8")


def _read_packet(sock: socket.socket) -> bytes:
    head = _read_exactly(sock, 1)
    length_bytes = b""
    while True:
        byte = _read_exactly(sock, 1)
        length_bytes += byte
        if not byte[0] & 0x80:
            break
    remaining, _ = _varint(length_bytes, 0)
    return head + length_bytes + _read_exactly(sock, remaining)


class RefusingProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target``, closing the connections of refused client ids."""

    def __init__(self, target_host: str, target_port: int, refuse_suffixes: tuple[str, ...]) -> None:
        self.target = (target_host, target_port)
        self.refuse_suffixes = refuse_suffixes
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = "127.0.0.1", self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._running = True
        #: Client ids turned away (one entry per try).
        self.refused: list[str] = []
        self._thread = threading.Thread(target=self._accept_loop, name="refusing-proxy", daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._running = False
        # close() alone does not wake a thread blocked in accept() on Linux: shutdown() does.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        while self._running:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            client.settimeout(10)
            connect = _read_packet(client)
            client_id = connect_client_id(connect)
            if client_id.endswith(self.refuse_suffixes):
                with self._lock:
                    self.refused.append(client_id)
                client.close()
                return
            upstream = socket.create_connection(self.target, timeout=10)
            upstream.sendall(connect)
        except (OSError, ConnectionError, IndexError, UnicodeDecodeError):
            client.close()
            return
        for sock in (client, upstream):
            sock.settimeout(None)
        with self._lock:
            self._sockets.update((client, upstream))
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        self._pump(client, upstream)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(_CHUNK):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
