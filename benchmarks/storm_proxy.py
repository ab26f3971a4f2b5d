"""A TCP proxy for reconnect storms: tens of thousands of connections, cut all at once.

``StormProxy(target, shards)`` forwards ``127.0.0.1:<port>`` to ``target``.
It runs in processes of its own, ``shards`` of them on one port
(``SO_REUSEPORT``: the kernel spreads new connections over them): a proxied
connection holds two sockets, so 10,000 devices need 20,000 descriptors, the
whole open-files limit of one process here.  Each shard is one ``selectors``
loop of non-blocking sockets (the upstream connect too: a broker whose listen
backlog overflows in a storm must not stall the other connections).

``cut(refuse_s)`` closes every connection on both sides (the clients read EOF,
the broker sees them go without a DISCONNECT) and accepts new connections only
to close them at once for ``refuse_s`` seconds, like a broker pod that is gone
behind its service address.  For every connection accepted after the cut the
shard notes when it arrived and when the broker's first bytes (the CONNACK)
went back to the client: an outside view of the storm (retry waves would show
in the arrivals), independent of the fleet's own figures.

Independent of the code under test on purpose: nothing is imported from
``pytest_iotperf``.  Not a test helper for the default suite (``tests/cutting_proxy.py``
is that): the benchmark's.
"""

from __future__ import annotations

import contextlib
import errno
import multiprocessing
import multiprocessing.connection
import resource
import selectors
import socket
import time
from dataclasses import dataclass, field
from typing import Any

_CHUNK = 65536
_MAX_BUFFERED = 4 << 20  # a peer that stops reading this long fails its connection instead of growing the proxy
_BACKLOG = 4096


@dataclass
class _Pair:
    client: socket.socket
    upstream: socket.socket
    after_cut: bool  # accepted after the last cut: its first bytes from the broker are a reconnect's CONNACK
    connected: bool = False  # the upstream connect completed
    answered: bool = False  # the broker's first bytes went back to the client
    out: dict[socket.socket, bytearray] = field(default_factory=dict)  # bytes waiting to be written to a side

    def other(self, sock: socket.socket) -> socket.socket:
        return self.upstream if sock is self.client else self.client


class _Shard:
    """One proxy process's loop (runs in the child)."""

    def __init__(self, port: int, target: tuple[str, int], control: multiprocessing.connection.Connection) -> None:
        self.target = target
        self.control = control
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(_BACKLOG)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        self.selector.register(control, selectors.EVENT_READ, "control")
        self.pairs: dict[socket.socket, _Pair] = {}  # each side -> its pair
        self.refuse_until = 0.0
        self.cut_started: float | None = None
        self.cut_ended: float | None = None
        self.cut_connections = 0
        self.accepted = 0
        self.refused = 0
        self.upstream_failed = 0
        self.connacks: list[float] = []  # time.time() of each post-cut CONNACK sent back to its client
        self.attempts: list[float] = []  # time.time() of each connection accepted after the cut, refused or not
        self.running = True

    # -- the loop ------------------------------------------------------------------------------------

    def run(self) -> None:
        self.control.send({"port": self.port})
        while self.running:
            for key, events in self.selector.select(timeout=1.0):
                if key.data == "accept":
                    self._accept()
                elif key.data == "control":
                    self._command()
                else:
                    self._ready(key.fileobj, events)  # type: ignore[arg-type]
        for sock in list(self.pairs):
            self._close(sock)

    def _command(self) -> None:
        try:
            command, argument = self.control.recv()
        except EOFError:  # the benchmark is gone
            self.running = False
            return
        if command == "cut":
            self.cut_started = time.time()
            self.refuse_until = self.cut_started + float(argument)
            self.connacks.clear()
            self.attempts.clear()
            for sock in list(self.pairs):
                if sock in self.pairs and sock is self.pairs[sock].client:
                    self.cut_connections += 1
                    self._close(sock)
            self.cut_ended = time.time()
            self.control.send({"cut_started": self.cut_started, "cut_ended": self.cut_ended})
        elif command == "stats":
            self.control.send(self.stats())
        elif command == "stop":
            self.running = False
            self.control.send(self.stats())

    def stats(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "connections": sum(1 for sock, pair in self.pairs.items() if sock is pair.client),
            "accepted": self.accepted,
            "refused": self.refused,
            "upstream_failed": self.upstream_failed,
            "cut_connections": self.cut_connections,
            "cut_started": self.cut_started,
            "cut_ended": self.cut_ended,
            "connacks": list(self.connacks),
            "attempts": list(self.attempts),
            "cpu_s": usage.ru_utime + usage.ru_stime,
        }

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    return  # out of descriptors: leave it in the backlog (cannot happen with enough shards)
                raise
            now = time.time()
            if self.cut_started is not None:
                self.attempts.append(now)
            if now < self.refuse_until:
                self.refused += 1
                client.close()
                continue
            upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            for sock in (client, upstream):
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            result = upstream.connect_ex(self.target)
            if result not in (0, errno.EINPROGRESS):
                self.upstream_failed += 1
                client.close()
                upstream.close()
                continue
            pair = _Pair(client, upstream, after_cut=self.cut_started is not None)
            pair.out = {client: bytearray(), upstream: bytearray()}
            self.pairs[client] = self.pairs[upstream] = pair
            self.accepted += 1
            # The client's CONNECT waits in its socket until the broker side is connected.
            self.selector.register(upstream, selectors.EVENT_WRITE, "data")

    def _ready(self, sock: socket.socket, events: int) -> None:
        pair = self.pairs.get(sock)
        if pair is None:
            return
        if not pair.connected:  # the upstream connect finished, one way or the other
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self.upstream_failed += 1
                self._close(sock)
                return
            pair.connected = True
            self.selector.modify(pair.upstream, selectors.EVENT_READ, "data")
            self.selector.register(pair.client, selectors.EVENT_READ, "data")
            return
        if events & selectors.EVENT_WRITE and not self._flush(pair, sock):
            return
        if events & selectors.EVENT_READ:
            try:
                data = sock.recv(_CHUNK)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self._close(sock)  # one side closed or failed: close both, as a broker would
                return
            if sock is pair.upstream and pair.after_cut and not pair.answered:
                self.connacks.append(time.time())
            if sock is pair.upstream:
                pair.answered = True
            other = pair.other(sock)
            pair.out[other] += data
            if len(pair.out[other]) > _MAX_BUFFERED:
                self._close(sock)
                return
            self._flush(pair, other)

    def _flush(self, pair: _Pair, sock: socket.socket) -> bool:
        """Write what waits for ``sock``; wait for writability when the socket is full. False: the pair closed."""
        buffer = pair.out[sock]
        try:
            while buffer:
                sent = sock.send(buffer)
                del buffer[:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._close(sock)
            return False
        self.selector.modify(sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if buffer else 0), "data")
        return True

    def _close(self, sock: socket.socket) -> None:
        pair = self.pairs.pop(sock, None)
        if pair is None:
            return
        self.pairs.pop(pair.other(sock), None)
        for side in (pair.client, pair.upstream):
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(side)
            side.close()


def _shard_main(port: int, target: tuple[str, int], control: multiprocessing.connection.Connection) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    _Shard(port, target, control).run()


class StormProxy:
    """``shards`` proxy processes on one port in front of ``target``; ``cut()`` drops every connection."""

    def __init__(self, target_host: str, target_port: int, shards: int = 2) -> None:
        self.target = (target_host, target_port)
        self.shards = shards
        self.host = "127.0.0.1"
        self.port = 0
        self._controls: list[multiprocessing.connection.Connection] = []
        self._processes: list[multiprocessing.process.BaseProcess] = []

    def start(self) -> StormProxy:
        context = multiprocessing.get_context("spawn")  # no copy of the benchmark's threads and sockets
        for _ in range(self.shards):
            ours, theirs = context.Pipe()
            process = context.Process(target=_shard_main, args=(self.port, self.target, theirs), daemon=True)
            process.start()
            theirs.close()
            if not ours.poll(30):
                raise RuntimeError("a proxy shard did not start within 30 s")
            self.port = int(ours.recv()["port"])  # the first shard picks the port, the others share it
            self._controls.append(ours)
            self._processes.append(process)
        return self

    def _ask(self, command: str, argument: Any = None) -> list[dict[str, Any]]:
        for control in self._controls:  # every shard hears the command before any answer is read
            control.send((command, argument))
        return [control.recv() for control in self._controls]

    def cut(self, refuse_s: float) -> tuple[float, int]:
        """Drop every connection, refuse new ones for ``refuse_s``; (when the cut began, connections cut)."""
        before = sum(s["cut_connections"] for s in self.stats())
        answers = self._ask("cut", refuse_s)
        after = sum(s["cut_connections"] for s in self.stats())
        return min(float(a["cut_started"]) for a in answers), after - before

    def stats(self) -> list[dict[str, Any]]:
        return self._ask("stats")

    def connections(self) -> int:
        return sum(int(s["connections"]) for s in self.stats())

    def stop(self) -> list[dict[str, Any]]:
        answers = self._ask("stop") if self._controls else []
        for process in self._processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
        for control in self._controls:
            control.close()
        self._controls, self._processes = [], []
        return answers

    def __enter__(self) -> StormProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
