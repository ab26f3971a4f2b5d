"""Run the embedded Event Hub as its own process.

``python -m pytest_iotperf.embedded.eventhub --port 0 --hub telemetry --partitions 4`` prints one JSON line,
``{"event": "ready", "connection_string": ..., "port": ...}``, then serves until SIGINT/SIGTERM or stdin closes
when ``--exit-on-stdin-close`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from pytest_iotperf.child_protocol import EventWriter, commands
from pytest_iotperf.embedded.eventhub.errors import EventHubError
from pytest_iotperf.embedded.eventhub.server import DEFAULT_KEY_NAME, EventHubServer
from pytest_iotperf.process_guard import die_with_parent


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pytest_iotperf.embedded.eventhub", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = a free one)")
    parser.add_argument("--hub", default="telemetry", help="Event Hub name")
    parser.add_argument("--partitions", type=int, default=4, help="number of partitions")
    parser.add_argument("--consumer-group", action="append", default=[], help="extra consumer group (repeatable)")
    parser.add_argument("--key-name", default=DEFAULT_KEY_NAME, help="SharedAccessKeyName")
    parser.add_argument("--key", default=None, help="SharedAccessKey (default: a random one)")
    parser.add_argument("--exit-on-stdin-close", action="store_true", help="stop when stdin reaches EOF")
    return parser


# Not scrubbed: the parent reads the connection string (the endpoint's own key) from the ready event.
_emit = EventWriter()


async def _serve(args: argparse.Namespace) -> None:
    server = EventHubServer(
        args.hub,
        args.partitions,
        ["$Default", *args.consumer_group],
        port=args.port,
        key_name=args.key_name,
        key=args.key,
    )
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    if args.exit_on_stdin_close:
        loop.run_in_executor(None, _wait_stdin_eof, loop, stop)
    _emit("ready", connection_string=server.connection_string, port=server.port, hub=args.hub)
    await stop.wait()
    await server.stop()
    _emit("stopped")


def _wait_stdin_eof(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    for _ in commands():  # the endpoint takes no command: only the end of stdin matters
        pass
    loop.call_soon_threadsafe(stop.set)


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse arguments, serve, return the exit status."""
    args = _parser().parse_args(argv)
    die_with_parent()  # like every child of a run: gone with the process that started it
    try:
        asyncio.run(_serve(args))
    except EventHubError as exc:
        _emit("error", message=str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
