"""Run the embedded IoT Hub as its own process.

``python -m pytest_iotperf.embedded.iothub --port 0 --hub telemetry`` prints one JSON line,
``{"event": "ready", "host": ..., "port": ..., "ca_file": ..., "hub_connection_string": ...,
"registry_connection_string": ..., "eventhub_connection_string": ..., "eventhub_port": ...,
"registry_port": ..., "group_key": ...}``, then serves until SIGINT/SIGTERM, or until stdin
closes with ``--exit-on-stdin-close``.  On stdin, ``{"cmd": "stats"}`` answers with a
``stats`` event (connected devices, refusals and disconnects per reason, messages).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from pytest_iotperf.child_protocol import EventWriter, commands
from pytest_iotperf.embedded.iothub.errors import IotHubError
from pytest_iotperf.embedded.iothub.server import HubOptions, IotHubServer
from pytest_iotperf.errors import IotPerfError
from pytest_iotperf.process_guard import die_with_parent


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pytest_iotperf.embedded.iothub", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="MQTT (TLS) port on 127.0.0.1 (0 = a free one; 8883)")
    parser.add_argument("--hub", default="telemetry", help="the built-in endpoint's Event Hub name")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the built-in endpoint")
    parser.add_argument("--consumer-group", action="append", default=[], help="extra consumer group (repeatable)")
    parser.add_argument("--registry-port", type=int, default=0, help="registry (HTTPS) port (0 = a free one)")
    parser.add_argument("--eventhub-port", type=int, default=0, help="built-in endpoint (AMQP) port (0 = free)")
    parser.add_argument("--device-ca", default=None, help="CA (PEM) whose client certificates (CN = device id) connect")
    parser.add_argument("--throttle-registry", type=int, default=0, help="answer the first K registry calls with 429")
    parser.add_argument("--cert-dir", default=None, help="where to write the CA and server certificate")
    parser.add_argument("--exit-on-stdin-close", action="store_true", help="stop when stdin reaches EOF")
    return parser


# Not scrubbed: the parent reads the connection strings (the hub's own keys) from the ready event.
_emit = EventWriter()


async def _serve(args: argparse.Namespace) -> None:
    options = HubOptions(
        hub=args.hub,
        partitions=args.partitions,
        consumer_groups=("$Default", *args.consumer_group),
        port=args.port,
        registry_port=args.registry_port,
        eventhub_port=args.eventhub_port,
        device_ca=args.device_ca,
        throttle_registry=args.throttle_registry,
        cert_dir=args.cert_dir,
    )
    server = IotHubServer(options)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    if args.exit_on_stdin_close:
        loop.run_in_executor(None, _read_commands, loop, stop, server)
    _emit("ready", **server.ready_fields())
    try:
        await stop.wait()
    finally:
        stats = server.stats()
        await server.stop()
    _emit("stopped", **{k: v for k, v in stats.items() if k != "recent_refusals"})


def _read_commands(loop: asyncio.AbstractEventLoop, stop: asyncio.Event, server: IotHubServer) -> None:
    for command in commands():
        if command.get("cmd") == "stats":
            # State lives on the loop: read it there, emit from here.
            future = asyncio.run_coroutine_threadsafe(_stats(server), loop)
            _emit("stats", **future.result(timeout=10))
    loop.call_soon_threadsafe(stop.set)


async def _stats(server: IotHubServer) -> dict[str, object]:
    return server.stats()


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse arguments, serve, return the exit status."""
    args = _parser().parse_args(argv)
    die_with_parent()  # like every child of a run: gone with the process that started it
    try:
        asyncio.run(_serve(args))
    except (IotHubError, IotPerfError) as exc:
        _emit("error", message=str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
