"""The embedded broker's websockets listener: a WebSocket -> TCP gateway in front of it.

Debian's mosquitto is built without libwebsockets (``protocol websockets`` fails
with "Unable to start any listening sockets"), and the brokers that do serve
MQTT over WebSockets from apt (RabbitMQ's web_mqtt, ejabberd) are Erlang
systems that take seconds to start and leave ``epmd`` behind.  So, as a cloud
load balancer does, this process terminates the WebSockets and opens one TCP
connection to the broker per client: the broker sees ordinary MQTT clients,
and devices, sink and bridge speak MQTT over WebSockets to ``ws://127.0.0.1:PORT/mqtt``.

Per connection: the upgrade (404 for another path, 502 when the broker
refuses), then the binary frames' payloads go to the broker as they are and
the broker's bytes come back as one frame per read.  Ping is answered, close
is echoed and ends the broker connection; the broker ending it sends close.
Back-pressure is passed on (a side whose writes back up pauses the other's reads).

``python -m pytest_iotperf.embedded.ws_gateway --upstream-port 1883`` prints
``{"event": "ready", "port": N}`` and serves until SIGTERM or stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Final

from pytest_iotperf.child_protocol import EventWriter, commands
from pytest_iotperf.process_guard import die_with_parent, raise_nofile_limit
from pytest_iotperf.ws_frames import (
    CLOSE,
    MAX_HEAD,
    PING,
    PONG,
    FrameDecoder,
    WebSocketProtocolError,
    parse_client_handshake,
    server_frame,
    server_handshake_response,
)

__all__ = ["WsGateway", "main"]

HOST: Final = "127.0.0.1"
DEFAULT_PATH: Final = "/mqtt"
_CLOSE_NORMAL: Final = (1000).to_bytes(2, "big")
_CLOSE_GOING_AWAY: Final = (1001).to_bytes(2, "big")
_CLOSE_PROTOCOL_ERROR: Final = (1002).to_bytes(2, "big")


def _http_error(status: str, text: str) -> bytes:
    body = (text + "\n").encode()
    head = f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return head.encode("latin-1") + body


class _Upstream(asyncio.Protocol):
    """The broker side of one client: its bytes go back to the client as binary frames."""

    def __init__(self, client: _Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.client.write(server_frame(data))

    def eof_received(self) -> bool:
        self.client.close(_CLOSE_GOING_AWAY)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close(_CLOSE_GOING_AWAY)

    def pause_writing(self) -> None:
        self.client.pause_reading()

    def resume_writing(self) -> None:
        self.client.resume_reading()


class _Client(asyncio.Protocol):
    """One WebSocket client: upgrade, then its frames' payloads to the broker."""

    def __init__(self, gateway: WsGateway) -> None:
        self.gateway = gateway
        self.transport: asyncio.Transport | None = None
        self.upstream: _Upstream | None = None
        self._head = b""  # the upgrade request until its end, then frames that came before the broker connected
        self._decoder = FrameDecoder(masked=True)
        self._open = False  # upgraded and connected to the broker
        self._closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.gateway.clients.add(self)

    def data_received(self, data: bytes) -> None:
        if self._open:
            self._frames(data)
            return
        self._head += data
        if self.upstream is not None or self._closing:
            return  # upgraded, the broker connection is being opened: kept until then
        head, found, rest = self._head.partition(b"\r\n\r\n")
        if not found:
            if len(self._head) > MAX_HEAD:
                self._refuse("431 Request Header Fields Too Large", "upgrade request too large")
            return
        try:
            path, key, offered = parse_client_handshake(head)
        except WebSocketProtocolError as exc:
            self._refuse("400 Bad Request", f"{exc}; this is an MQTT over WebSockets listener")
            return
        if path != self.gateway.path:
            self._refuse("404 Not Found", f"no WebSocket endpoint at {path}; MQTT is served at {self.gateway.path}")
            return
        self._head = rest
        subprotocol = "mqtt" if "mqtt" in offered else (offered[0] if offered else None)
        self.upstream = _Upstream(self)
        task = asyncio.get_running_loop().create_task(self._connect(key, subprotocol))
        self.gateway.tasks.add(task)
        task.add_done_callback(self.gateway.tasks.discard)

    async def _connect(self, key: str, subprotocol: str | None) -> None:
        assert self.upstream is not None and self.transport is not None
        upstream = self.upstream
        try:
            await asyncio.get_running_loop().create_connection(
                lambda: upstream, self.gateway.upstream_host, self.gateway.upstream_port
            )
        except OSError as exc:
            self._refuse("502 Bad Gateway", f"the MQTT broker behind this listener refused: {exc.strerror or exc}")
            return
        if self._closing or self.transport.is_closing():
            if upstream.transport is not None:
                upstream.transport.close()
            return
        self.transport.write(server_handshake_response(key, subprotocol))
        self._open = True
        early, self._head = self._head, b""
        if early:
            self._frames(early)

    def _frames(self, data: bytes) -> None:
        try:
            payload, controls = self._decoder.feed(data)
        except WebSocketProtocolError:
            self.close(_CLOSE_PROTOCOL_ERROR)
            return
        upstream = self.upstream.transport if self.upstream is not None else None
        if payload and upstream is not None:
            upstream.write(payload)
        for opcode, body in controls:
            if opcode == PING:
                self.write(server_frame(body, PONG))
            elif opcode == CLOSE:
                self.close(body[:2] if len(body) >= 2 else _CLOSE_NORMAL)

    def _refuse(self, status: str, text: str) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.write(_http_error(status, text))
            self.transport.close()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self._closing:
            self.transport.write(data)

    def close(self, code: bytes) -> None:
        """Send close (once), end the broker connection, close after what is queued is written."""
        if self._closing:
            return
        self._closing = True
        if self.transport is not None:
            if self._open:
                self.transport.write(server_frame(code, CLOSE))
            self.transport.close()
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()

    def pause_reading(self) -> None:
        if self.transport is not None and not self._closing:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self._closing:
            self.transport.resume_reading()

    def eof_received(self) -> bool:
        self.close(_CLOSE_NORMAL)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self.gateway.clients.discard(self)
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()

    def pause_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.resume_reading()


class WsGateway:
    """MQTT over WebSockets on ``host:port`` (0: a free port) at ``path``, to the MQTT broker at the upstream."""

    def __init__(
        self,
        upstream_port: int,
        *,
        upstream_host: str = HOST,
        path: str = DEFAULT_PATH,
        host: str = HOST,
        port: int = 0,
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.path = path
        self.host = host
        self.clients: set[_Client] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The port listened on (the one the system chose for 0) once started."""
        return self._port

    async def start(self) -> None:
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Client(self), self.host, self._port, backlog=4096
        )
        self._port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for client in list(self.clients):
            client.close(_CLOSE_GOING_AWAY)
        for task in list(self.tasks):
            task.cancel()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None


# -- the child process ----------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pytest_iotperf.embedded.ws_gateway", description=__doc__)
    parser.add_argument("--upstream-port", type=int, required=True, help="the MQTT broker's TCP port on 127.0.0.1")
    parser.add_argument("--path", default=DEFAULT_PATH, help="the WebSocket path served (default /mqtt)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 to listen on (0 = a free one)")
    return parser


_emit = EventWriter()


async def _serve(args: argparse.Namespace) -> None:
    gateway = WsGateway(args.upstream_port, path=args.path, port=args.port)
    await gateway.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    loop.run_in_executor(None, _wait_stdin_eof, loop, stop)
    _emit("ready", port=gateway.port, path=gateway.path)
    await stop.wait()
    await gateway.stop()


def _wait_stdin_eof(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    for _ in commands():  # no command is taken: only the end of stdin matters
        pass
    loop.call_soon_threadsafe(stop.set)


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse arguments, serve until told to stop, return the exit status."""
    args = _parser().parse_args(argv)
    die_with_parent()
    raise_nofile_limit()  # two sockets per client
    try:
        asyncio.run(_serve(args))
    except OSError as exc:
        _emit("error", message=f"the WebSocket gateway could not listen: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
