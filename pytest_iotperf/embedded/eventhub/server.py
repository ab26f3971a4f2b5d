"""The asyncio TCP server, and ``EmbeddedEventHub``: the server on a background thread as a context manager."""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import Iterable
from typing import Final

from pytest_iotperf.embedded.eventhub.cbs import SasVerifier
from pytest_iotperf.embedded.eventhub.connection import AmqpConnection, Namespace
from pytest_iotperf.embedded.eventhub.errors import EventHubError
from pytest_iotperf.embedded.eventhub.hub import EventHub
from pytest_iotperf.embedded.loop_thread import LoopThread

__all__ = ["DEFAULT_KEY_NAME", "EmbeddedEventHub", "EventHubServer", "connection_string"]

HOST: Final = "127.0.0.1"
DEFAULT_KEY_NAME: Final = "RootManageSharedAccessKey"


def connection_string(host: str, port: int, key_name: str, key: str, hub: str) -> str:
    """Return an SDK connection string for the endpoint; ``UseDevelopmentEmulator=true`` selects plain AMQP."""
    return (
        f"Endpoint=sb://{host}:{port};SharedAccessKeyName={key_name};SharedAccessKey={key};"
        f"EntityPath={hub};UseDevelopmentEmulator=true"
    )


class EventHubServer:
    """An Event Hubs-compatible AMQP 1.0 server on an asyncio loop (create, ``await start()``, ``await stop()``)."""

    def __init__(
        self,
        hub: str = "telemetry",
        partitions: int = 4,
        consumer_groups: Iterable[str] = ("$Default",),
        *,
        port: int = 0,
        key_name: str = DEFAULT_KEY_NAME,
        key: str | None = None,
        max_message_size: int = 1024 * 1024,
    ) -> None:
        self.hub_name = hub
        self.key_name = key_name
        self._key = key or base64.b64encode(secrets.token_bytes(32)).decode()
        groups = frozenset(consumer_groups) | {"$Default"}
        self.namespace = Namespace(
            hubs={hub: EventHub(hub, partitions, groups)},
            verifier=SasVerifier(key_name, self._key),
            max_message_size=max_message_size,
        )
        self._requested_port = port
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[AmqpConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def hub(self) -> EventHub:
        """The Event Hub this server hosts."""
        return self.namespace.hubs[self.hub_name]

    @property
    def connection_string(self) -> str:
        """Connection string for the SDK (it contains the key: treat it as a secret)."""
        return connection_string(HOST, self.port, self.key_name, self._key, self.hub_name)

    async def start(self) -> None:
        """Listen on 127.0.0.1 (port 0 picks a free one; see ``port`` afterwards)."""
        try:
            self._server = await asyncio.start_server(self._accept, HOST, self._requested_port)
        except OSError as exc:
            raise EventHubError(
                f"The embedded Event Hub could not listen on {HOST}:{self._requested_port} ({exc.strerror}); "
                "choose another port or 0 for a free one."
            ) from exc
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening and close every client connection."""
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.shutdown()
        # Closing a connection's socket ends its reader with EOF, so its task finishes on its own; cancelling
        # instead would make asyncio's stream callback log the CancelledError as an unhandled exception.
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=5)
            for task in pending:
                task.cancel()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = AmqpConnection(reader, writer, self.namespace, self._connections.discard)
        self._connections.add(connection)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await connection.serve()
        finally:
            if task is not None:
                self._tasks.discard(task)


class EmbeddedEventHub(LoopThread):
    """Runs an ``EventHubServer`` on its own event loop in a background thread.

    >>> with EmbeddedEventHub(hub="telemetry", partitions=4) as hub:
    ...     producer = EventHubProducerClient.from_connection_string(hub.connection_string)
    """

    def __init__(
        self,
        hub: str = "telemetry",
        partitions: int = 4,
        consumer_groups: Iterable[str] = ("$Default",),
        *,
        port: int = 0,
        key_name: str = DEFAULT_KEY_NAME,
        key: str | None = None,
        max_message_size: int = 1024 * 1024,
        start_timeout: float = 10.0,
    ) -> None:
        self.server = EventHubServer(
            hub,
            partitions,
            consumer_groups,
            port=port,
            key_name=key_name,
            key=key,
            max_message_size=max_message_size,
        )
        super().__init__(self.server, "embedded-eventhub", start_timeout, EventHubError, "embedded Event Hub")

    @property
    def connection_string(self) -> str:
        """Connection string for the SDK (contains the key)."""
        return self.server.connection_string

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        return self.server.port

