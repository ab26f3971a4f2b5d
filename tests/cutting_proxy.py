"""A TCP proxy that a test can cut: every connection closed at once, new ones refused until resumed.

It stands between MQTT clients and a broker (127.0.0.1, a free port) and
forwards bytes both ways.  ``cut()`` closes every connection on both sides
(the clients read EOF, the broker sees them go without a DISCONNECT) and from
then on accepts each new connection only to close it at once, like a broker
pod that is gone behind its service address, until ``resume()``.
``hold_replies()`` first stops passing on what the broker sends (its PUBACKs
stay unread in the kernel), so the messages published from then until the cut
are in flight, unacknowledged, when it comes.  It counts the PUBLISH packets
clients send with the DUP flag (``dup_publishes``), reading packet boundaries
in the client-to-broker stream.

Independent of the code under test on purpose: nothing is imported from
``pytest_iotperf``.

One thread runs a ``selectors`` loop over the listening socket and every
connection pair; ``cut`` and ``resume`` are handed to it through a wake-up
socket pair and return once it has acted, so a test knows the cut happened
(every socket closed) when ``cut()`` returns.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from types import TracebackType
from typing import Self

__all__ = ["CuttingProxy"]

_CHUNK = 65536
_SEND_TIMEOUT_S = 5.0  # a peer that stops reading fails its connection instead of hanging the proxy


class CuttingProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target``; ``cut()`` / ``resume()`` switch it off and on."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.host, self.port = "127.0.0.1", self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._peer: dict[socket.socket, socket.socket] = {}  # each side -> the other side
        self._upstream: set[socket.socket] = set()  # the broker's sides
        self._parsers: dict[socket.socket, _PacketCounter] = {}  # client side -> its stream's packets
        self._holding = False
        self._commands: list[tuple[str, threading.Event]] = []
        self._lock = threading.Lock()
        self._refusing = False
        self._thread = threading.Thread(target=self._loop, name="cutting-proxy", daemon=True)
        self._running = True
        #: Connections forwarded, connections refused while cut, connections closed by cuts.
        self.accepted = 0
        self.refused = 0
        self.cut_connections = 0
        #: PUBLISH packets clients sent with the DUP flag set.
        self.dup_publishes = 0
        #: time.time() of the last cut and the last resume.
        self.cut_at: float | None = None
        self.resumed_at: float | None = None

    # -- control (any thread) ---------------------------------------------------------

    def start(self) -> Self:
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread.start()
        return self

    def cut(self) -> int:
        """Close every connection and refuse new ones; returns how many connections were cut."""
        before = self.cut_connections
        self._do("cut")
        return self.cut_connections - before

    def resume(self) -> None:
        """Forward new connections again (and the broker's replies on them)."""
        self._do("resume")

    def hold_replies(self) -> None:
        """Stop passing the broker's bytes on to the clients (until the next cut closes the connections)."""
        self._do("hold")

    @property
    def connections(self) -> int:
        """Client connections open now."""
        with self._lock:
            return len(self._peer) // 2

    def stop(self) -> None:
        if not self._running:
            return
        self._do("stop")
        self._thread.join(timeout=5)
        self._selector.close()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _do(self, command: str) -> None:
        done = threading.Event()
        with self._lock:
            self._commands.append((command, done))
        self._wake_w.send(b"x")
        if not done.wait(10):
            raise TimeoutError(f"the proxy did not {command} within 10 s")

    # -- the loop (its own thread) -------------------------------------------------------

    def _loop(self) -> None:
        while self._running:
            for key, _ in self._selector.select(timeout=1.0):
                if key.data == "accept":
                    self._accept()
                elif key.data == "wake":
                    self._run_commands()
                else:
                    self._forward(key.fileobj)  # type: ignore[arg-type]
        for sock in list(self._peer):
            self._close_pair(sock)

    def _run_commands(self) -> None:
        self._wake_r.recv(4096)
        with self._lock:
            commands, self._commands = self._commands, []
        for command, done in commands:
            if command == "hold":
                self._holding = True
                for sock in self._upstream:
                    with contextlib.suppress(KeyError, ValueError):
                        self._selector.unregister(sock)  # what the broker sends stays in the kernel
            elif command == "cut":
                self._refusing = True
                self._holding = False
                for sock in list(self._peer):
                    if sock in self._peer:
                        self.cut_connections += 1
                        self._close_pair(sock)
                self.cut_at = time.time()
            elif command == "resume":
                self._refusing = False
                self.resumed_at = time.time()
            elif command == "stop":
                self._running = False
            done.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except BlockingIOError:
                return
            if self._refusing:
                self.refused += 1
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=_SEND_TIMEOUT_S)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.settimeout(_SEND_TIMEOUT_S)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._peer[client] = upstream
                self._peer[upstream] = client
            self._upstream.add(upstream)
            self._parsers[client] = _PacketCounter()
            self._selector.register(client, selectors.EVENT_READ, "data")
            if not self._holding:
                self._selector.register(upstream, selectors.EVENT_READ, "data")
            self.accepted += 1

    def _forward(self, sock: socket.socket) -> None:
        other = self._peer.get(sock)
        if other is None:
            return
        try:
            data = sock.recv(_CHUNK)
            if data:
                parser = self._parsers.get(sock)
                if parser is not None:
                    self.dup_publishes += parser.feed(data)
                other.sendall(data)
                return
        except OSError:
            pass
        self._close_pair(sock)  # one side closed or failed: close both, as a broker would

    def _close_pair(self, sock: socket.socket) -> None:
        with self._lock:
            other = self._peer.pop(sock, None)
            if other is not None:
                self._peer.pop(other, None)
        for side in (sock, other):
            if side is None:
                continue
            self._upstream.discard(side)
            self._parsers.pop(side, None)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(side)
            side.close()


class _PacketCounter:
    """Finds MQTT packet boundaries in one direction of a stream; counts PUBLISH packets with DUP set."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> int:
        buffer = self._buffer + data
        pos, dups = 0, 0
        while True:
            # Fixed header: one byte of type and flags, then 1-4 bytes of remaining length.
            length, multiplier, index = 0, 1, pos + 1
            while index < len(buffer) and buffer[index] & 0x80:
                length += (buffer[index] & 0x7F) * multiplier
                multiplier *= 128
                index += 1
            if index >= len(buffer):
                break
            length += buffer[index] * multiplier
            end = index + 1 + length
            if end > len(buffer):
                break
            if buffer[pos] & 0xF0 == 0x30 and buffer[pos] & 0x08:
                dups += 1
            pos = end
        self._buffer = buffer[pos:]
        return dups
