"""``IotHubServer`` (MQTT over TLS + registry over HTTPS + the built-in Event Hubs endpoint, one asyncio loop)
and ``EmbeddedIotHub`` (that server on a background thread, as a context manager)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from pytest_iotperf.embedded.eventhub.server import EventHubServer
from pytest_iotperf.embedded.iothub.auth import DEVICE_POLICY, REGISTRY_POLICY, HubKeys
from pytest_iotperf.embedded.iothub.certs import make_ca, make_server_certificate
from pytest_iotperf.embedded.iothub.endpoint import BuiltInEndpoint
from pytest_iotperf.embedded.iothub.errors import IotHubError
from pytest_iotperf.embedded.iothub.mqtt import DeviceGateway, MqttListener
from pytest_iotperf.embedded.iothub.registry import Registry, new_key
from pytest_iotperf.embedded.iothub.registry_http import RegistryHttp
from pytest_iotperf.embedded.loop_thread import LoopThread
from pytest_iotperf.iothub.connection_string import IotHubConnectionString
from pytest_iotperf.process_guard import raise_nofile_limit

__all__ = ["EmbeddedIotHub", "HubOptions", "IotHubServer"]

BIND: Final = "127.0.0.1"
SERVICE_POLICY: Final = "service"  # the built-in endpoint's policy (IoT Hub's own is named "service" too)
SWEEP_INTERVAL_S: Final = 5.0
BACKLOG: Final = 4096


@dataclass(frozen=True)
class HubOptions:
    """How to run the hub. Ports 0 pick free ones."""

    hub: str = "telemetry"
    partitions: int = 4
    consumer_groups: tuple[str, ...] = ("$Default",)
    port: int = 0
    registry_port: int = 0
    eventhub_port: int = 0
    host_name: str = "127.0.0.1"
    device_ca: str | None = None  # PEM of a CA whose client certificates (CN = device id) connect without a token
    throttle_registry: int = 0  # answer the first K registry calls with 429
    registry_retry_after_s: int = 1
    cert_dir: str | None = None  # where the CA and the server certificate go (default: a temp dir removed at stop)


class IotHubServer:
    """The embedded IoT Hub on the running asyncio loop: ``await start()``, ``await stop()``."""

    def __init__(self, options: HubOptions | None = None, keys: HubKeys | None = None) -> None:
        self.options = options or HubOptions()
        self.keys = keys or HubKeys(host=self.options.host_name)
        self.registry = Registry()
        self._service_key = new_key()
        self.eventhub = EventHubServer(
            self.options.hub,
            self.options.partitions,
            self.options.consumer_groups,
            port=self.options.eventhub_port,
            key_name=SERVICE_POLICY,
            key=self._service_key,
        )
        self.endpoint = BuiltInEndpoint(self.eventhub.hub)
        self.gateway = DeviceGateway(self.keys, self.registry, self.endpoint)
        self.registry_http = RegistryHttp(
            self.keys, self.registry, self.options.throttle_registry, self.options.registry_retry_after_s
        )
        self.ca_file = ""
        self.port = 0
        self.registry_port = 0
        self._temp_dir: str | None = None
        self._listener: MqttListener | None = None
        self._http: asyncio.base_events.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    # -- what clients need ----------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self.keys.host

    @property
    def eventhub_port(self) -> int:
        return self.eventhub.port

    @property
    def hub_connection_string(self) -> str:
        """``HostName=..;SharedAccessKeyName=device;SharedAccessKey=..`` (a secret)."""
        return IotHubConnectionString(self.host, self.keys.device_policy_key, DEVICE_POLICY).to_string()

    @property
    def registry_connection_string(self) -> str:
        """``HostName=HOST:REGISTRY_PORT;SharedAccessKeyName=registryReadWrite;SharedAccessKey=..`` (a secret).

        The registry listens on its own port, so its HostName carries it: ``python -m pytest_iotperf.iothub
        provision`` takes the string as it is (tokens are signed for the host without the port).
        """
        host = f"{self.host}:{self.registry_port}"
        return IotHubConnectionString(host, self.keys.registry_key, REGISTRY_POLICY).to_string()

    @property
    def eventhub_connection_string(self) -> str:
        """The built-in endpoint's Event Hubs connection string (a secret)."""
        return (
            f"Endpoint=sb://{BIND}:{self.eventhub.port}/;SharedAccessKeyName={SERVICE_POLICY};"
            f"SharedAccessKey={self._service_key};EntityPath={self.options.hub};UseDevelopmentEmulator=true"
        )

    @property
    def group_key(self) -> str:
        """The DPS-style group key: a device key is ``derive_device_key(group_key, device_id)`` (a secret)."""
        return self.keys.group_key

    def ready_fields(self) -> dict[str, Any]:
        """What the standalone hub's ready line carries (secrets included: the parent needs them)."""
        return {
            "host": self.host,
            "port": self.port,
            "ca_file": self.ca_file,
            "hub_connection_string": self.hub_connection_string,
            "registry_connection_string": self.registry_connection_string,
            "eventhub_connection_string": self.eventhub_connection_string,
            "eventhub_port": self.eventhub_port,
            "registry_port": self.registry_port,
            "group_key": self.group_key,
        }

    def stats(self) -> dict[str, Any]:
        """Counters: connected devices, accepted CONNECTs, refusals and disconnects per reason, messages."""
        gateway = self.gateway
        return {
            "connected": len(gateway.devices),
            "connects": gateway.connects,
            "refusals": dict(gateway.refusals),
            "disconnects": dict(gateway.disconnects),
            "dropped_before_connect": dict(gateway.dropped_before_connect),
            "messages": self.endpoint.messages,
            "registry_devices": len(self.registry.devices),
            "registry_calls": self.registry_http.calls,
            "registry_throttled": self.registry_http.throttled,
            "registry_unauthorized": self.registry_http.unauthorized,
            "recent_refusals": list(gateway.recent_refusals)[-20:],
        }

    # -- life cycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Make the certificates, then listen: MQTT, registry, built-in endpoint."""
        raise_nofile_limit()  # one socket per connected device
        options = self.options
        folder = options.cert_dir or tempfile.mkdtemp(prefix="iotperf-iothub-")
        if options.cert_dir is None:
            self._temp_dir = folder
        ca = make_ca(folder, f"pytest-iotperf embedded IoT Hub CA ({options.hub})")
        server_cert = make_server_certificate(folder, ca, ("localhost",), ("127.0.0.1",))
        self.ca_file = ca.cert_file
        mqtt_context = _server_context(server_cert.cert_file, server_cert.key_file, options.device_ca)
        https_context = _server_context(server_cert.cert_file, server_cert.key_file, None)
        loop = asyncio.get_running_loop()
        try:
            await self.eventhub.start()
            sock = _listen(options.port, "MQTT")
            self.port = int(sock.getsockname()[1])
            self._listener = MqttListener(self.gateway, sock, mqtt_context, loop)
            try:
                self._http = await asyncio.start_server(
                    self.registry_http.serve, BIND, options.registry_port, ssl=https_context
                )
            except OSError as exc:
                raise IotHubError(
                    f"The embedded IoT Hub's registry could not listen on {BIND}:{options.registry_port} "
                    f"({exc.strerror}); choose another port or 0 for a free one."
                ) from exc
            self.registry_port = int(self._http.sockets[0].getsockname()[1])
        except BaseException:
            await self.stop()
            raise
        self._sweeper = loop.create_task(self._sweep())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            self.gateway.sweep(time.monotonic())

    async def stop(self) -> None:
        """Close every connection and listener; remove the temporary certificates."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._http is not None:
            self._http.close()
            self._http = None
        await self.eventhub.stop()
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None


def _listen(port: int, what: str) -> socket.socket:
    try:
        return socket.create_server((BIND, port), backlog=BACKLOG)
    except OSError as exc:
        raise IotHubError(
            f"The embedded IoT Hub's {what} port could not listen on {BIND}:{port} ({exc.strerror}); "
            "choose another port or 0 for a free one."
        ) from exc


def _server_context(cert_file: str, key_file: str, device_ca: str | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # as IoT Hub
    context.load_cert_chain(cert_file, key_file)
    if device_ca is not None:
        try:
            context.load_verify_locations(cafile=device_ca)
        except (OSError, ssl.SSLError) as exc:
            raise IotHubError(f"The device CA {device_ca} could not be read: {exc}") from exc
        # A device may present a certificate (then it must chain to the device CA) or a SAS token.
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


class EmbeddedIotHub(LoopThread):
    """Runs an :class:`IotHubServer` on its own event loop in a background thread.

    >>> with EmbeddedIotHub(HubOptions(hub="telemetry")) as hub:
    ...     hub.ready_fields()["port"]
    """

    def __init__(self, options: HubOptions | None = None, *, keys: HubKeys | None = None, start_timeout: float = 20.0):
        self.server = IotHubServer(options, keys)
        super().__init__(self.server, "embedded-iothub", start_timeout, IotHubError, "embedded IoT Hub")

    # Everything a client needs, read from the server (immutable once started).
    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def ca_file(self) -> str:
        return self.server.ca_file

    @property
    def registry_port(self) -> int:
        return self.server.registry_port

    @property
    def eventhub_port(self) -> int:
        return self.server.eventhub_port

    @property
    def hub_connection_string(self) -> str:
        return self.server.hub_connection_string

    @property
    def registry_connection_string(self) -> str:
        return self.server.registry_connection_string

    @property
    def eventhub_connection_string(self) -> str:
        return self.server.eventhub_connection_string

    @property
    def group_key(self) -> str:
        return self.server.group_key

    @property
    def keys(self) -> HubKeys:
        return self.server.keys

    def ready_fields(self) -> dict[str, Any]:
        return self.server.ready_fields()

    def stats(self) -> dict[str, Any]:
        """The server's counters, read on its loop."""
        stats: dict[str, Any] = self.call(self.server.stats)
        return stats

    def create_devices(self, device_ids: Iterable[str]) -> None:
        """Register devices (generated keys) without the REST API."""
        ids = list(device_ids)
        self.call(lambda: [self.server.registry.create(device_id) for device_id in ids])

