"""How every MQTT client of a run connects: one value, built once, serialised once into every child's spec.

The devices, the MQTT sink, the platform bridge and the broker check all
connect the same way, so what they need travels as one :class:`Connection`
(``to_dict``/``from_dict``) instead of host, port, TLS, user name and QoS
copied field by field.  Pure data: no client library is imported here, and
no secret lives in it (the password comes from ``$IOTPERF_MQTT_PASSWORD``,
see :mod:`pytest_iotperf.mqtt_options`).
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from pytest_iotperf.mqtt_options import MqttClientOptions

if TYPE_CHECKING:
    from pytest_iotperf.broker_endpoint import BrokerEndpoint
    from pytest_iotperf.config import RunSettings

#: MQTT protocol versions a client can speak (the factory maps them to paho's constants).
PROTOCOL_VERSIONS: Final = ("3.1.1", "5")
#: Transports a client can use.
TRANSPORTS: Final = ("tcp", "websockets")
#: The WebSocket path when none is given (Mosquitto's and most brokers'; IoT Hub uses /$iothub/websocket).
DEFAULT_WS_PATH: Final = "/mqtt"
IOTHUB_WS_PATH: Final = "/$iothub/websocket"
#: Keep-alive of every client of a run, in seconds.
DEFAULT_KEEPALIVE_S: Final = 60


@dataclass(frozen=True)
class Connection:
    """Where the broker is and how a client talks to it.

    Attributes:
        host: Broker host name or IP address.
        port: Broker TCP port.
        tls: Whether clients use TLS (``mqtts``).
        options: TLS files, ``insecure`` and the user name.
        qos: QoS of the telemetry: devices publish and readers subscribe with it.
        protocol_version: ``"3.1.1"`` or ``"5"``.
        transport: ``"tcp"`` or ``"websockets"`` (MQTT over WebSockets to ``ws_path``).
        keepalive_s: MQTT keep-alive interval.
        ws_path: the HTTP path of the WebSocket upgrade (transport ``websockets`` only).
    """

    host: str
    port: int
    tls: bool = False
    options: MqttClientOptions = field(default_factory=MqttClientOptions)
    qos: int = 1
    protocol_version: str = "3.1.1"
    transport: str = "tcp"
    keepalive_s: int = DEFAULT_KEEPALIVE_S
    ws_path: str = DEFAULT_WS_PATH

    def __post_init__(self) -> None:
        if self.protocol_version not in PROTOCOL_VERSIONS:
            raise ValueError(f"MQTT protocol version {self.protocol_version!r} is not supported; use 3.1.1 or 5")
        if self.transport not in TRANSPORTS:
            raise ValueError(f"MQTT transport {self.transport!r} is not supported; use tcp or websockets")
        if not self.ws_path.startswith("/"):
            raise ValueError(f"the WebSocket path must start with /, not {self.ws_path!r}")
        if self.qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, not {self.qos}")

    @classmethod
    def for_run(cls, settings: RunSettings, broker: BrokerEndpoint) -> Connection:
        """How the clients of a run with ``settings`` connect to ``broker`` (built on the pytest side).

        An embedded server's own CA is trusted unless ``--iot-tls-ca`` names another.
        """
        options = settings.mqtt_options()
        if broker.ca_file and options.ca_file is None:
            options = dataclasses.replace(options, ca_file=broker.ca_file)
        # A ws:// URL is WebSockets whatever was asked; an IoT Hub serves them on 443.
        transport, port, path = broker.listener_for(settings.transport)
        ws_path = settings.ws_path or path or (IOTHUB_WS_PATH if broker.iothub else DEFAULT_WS_PATH)
        return cls(
            host=broker.host,
            port=port,
            tls=broker.tls,
            options=options,
            qos=settings.qos,
            protocol_version=settings.mqtt_version,
            transport=transport,
            ws_path=ws_path,
        )

    @property
    def address(self) -> str:
        """``host:port`` for messages (``[v6]:port`` for an IPv6 address)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def username(self) -> str | None:
        return self.options.username

    def ssl_context(self) -> ssl.SSLContext | None:
        """A new TLS context for this connection, or None without TLS."""
        return self.options.ssl_context() if self.tls else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; :meth:`from_dict` reads it back."""
        return {
            "host": self.host,
            "port": self.port,
            "tls": self.tls,
            "options": self.options.to_dict(),
            "qos": self.qos,
            "protocol_version": self.protocol_version,
            "transport": self.transport,
            "keepalive_s": self.keepalive_s,
            "ws_path": self.ws_path,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Connection:
        """Build from :meth:`to_dict`'s output.

        Raises:
            KeyError: ``host`` or ``port`` is missing.
            ValueError: a value has the wrong type or is not supported.
        """
        return cls(
            host=str(data["host"]),
            port=int(data["port"]),
            tls=bool(data.get("tls", False)),
            options=MqttClientOptions.from_dict(data.get("options") or {}),
            qos=int(data.get("qos", 1)),
            protocol_version=str(data.get("protocol_version", "3.1.1")),
            transport=str(data.get("transport", "tcp")),
            keepalive_s=int(data.get("keepalive_s", DEFAULT_KEEPALIVE_S)),
            ws_path=str(data.get("ws_path", DEFAULT_WS_PATH)),
        )
