"""Where a run's MQTT broker listens, embedded or external: the endpoint, its URL, and the reachability check.

No process management here (that is :mod:`pytest_iotperf.embedded.broker`):
an external broker needs the same URL parsing and the same check.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import ssl
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple
from urllib.parse import urlsplit

from paho.mqtt import client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from pytest_iotperf.connection import Connection
from pytest_iotperf.errors import BrokerError
from pytest_iotperf.mqtt_client import make_client, shared_identity
from pytest_iotperf.secrets import redact_url

__all__ = [
    "DEFAULT_PORTS",
    "BrokerEndpoint",
    "BrokerUrl",
    "parse_broker_url",
    "split_broker_url",
    "wait_for_mqtt",
    "wait_for_tls",
]

DEFAULT_PORTS: Final[dict[str, int]] = {"mqtt": 1883, "mqtts": 8883, "iothub": 8883, "ws": 80, "wss": 443}
"""Port used for each URL scheme when the URL names none."""
_WS_SCHEMES: Final = ("ws", "wss")  # MQTT over WebSockets (wss: with TLS); the URL may carry the path
_TLS_SCHEMES: Final = ("mqtts", "iothub", "wss")


@dataclass(frozen=True)
class BrokerEndpoint:
    """Where the MQTT broker of a run listens, and what it is.

    Attributes:
        host: Host name or IP address clients connect to.
        port: TCP port.
        tls: Whether clients must use TLS (``mqtts``).
        kind: ``"mosquitto"``, ``"amqtt"``, ``"iothub-embedded"`` (embedded), ``"external"`` or ``"iothub"``
            (an Azure IoT Hub: devices sign SAS tokens for ``host``, publish to its telemetry topic).
        description: Human-readable summary for reports, e.g.
            ``"mosquitto 2.0.11 (embedded)"``.
        open_files: The broker process's open-files limit where it is known
            (an embedded broker): each connected client holds one.
    """

    host: str
    port: int
    tls: bool
    kind: str
    description: str
    open_files: int | None = None
    ca_file: str | None = None  # the CA that signed an embedded server's certificate (clients trust it)
    #: What ``port`` speaks: ``"tcp"``, or ``"websockets"`` for a ``ws://``/``wss://`` URL.
    transport: str = "tcp"
    #: A websockets listener of the same broker beside the TCP one (the embedded broker's, when asked for).
    ws_port: int | None = None
    #: The WebSocket path: from a ``ws://`` URL (None when it has none), or the embedded listener's ``/mqtt``.
    ws_path: str | None = None
    # What the fleet's processes need in their environment to authenticate (an embedded IoT Hub's device
    # policy connection string): secrets, so only ever passed to child environments, never shown.
    fleet_env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def iothub(self) -> bool:
        """An Azure IoT Hub (or the embedded one): SAS identities, its topic, its built-in endpoint."""
        return self.kind in ("iothub", "iothub-embedded")

    @property
    def url(self) -> str:
        """The broker as a URL, e.g. ``mqtt://127.0.0.1:41234`` or ``ws://127.0.0.1:41235/mqtt``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.transport == "websockets":
            return f"{'wss' if self.tls else 'ws'}://{host}:{self.port}{self.ws_path or ''}"
        scheme = "iothub" if self.iothub else "mqtts" if self.tls else "mqtt"
        return f"{scheme}://{host}:{self.port}"

    def listener_for(self, transport: str) -> tuple[str, int, str | None]:
        """``(transport, port, WebSocket path or None)`` for clients that want ``transport``.

        A ``ws://``/``wss://`` URL is WebSockets whatever was asked; the path is None when
        the endpoint does not say it (the run's ``--iot-ws-path`` or the default then).
        An Azure IoT Hub serves MQTT over WebSockets on 443 (its 8883 is MQTT over TLS only).

        Raises:
            ValueError: ``websockets`` asked of an endpoint without a websockets listener.
        """
        if self.transport == "websockets":
            return "websockets", self.port, self.ws_path
        if transport == "tcp":
            return "tcp", self.port, None
        if self.ws_port is not None:
            return "websockets", self.ws_port, self.ws_path
        if self.kind in ("mosquitto", "amqtt", "iothub-embedded"):
            raise ValueError(
                f"the embedded broker ({self.description}) was started without a websockets listener; "
                "start it with EmbeddedBroker(websockets=True) or call its start_websockets()"
            )
        if self.kind == "iothub" and self.port == DEFAULT_PORTS["iothub"]:
            return "websockets", DEFAULT_PORTS["wss"], None
        return "websockets", self.port, None  # an external broker: its port speaks what the user says

    @classmethod
    def external(cls, url: str) -> BrokerEndpoint:
        """Build the endpoint of an external broker from its URL.

        Raises:
            ValueError: ``url`` is not ``mqtt://host[:port]``, ``mqtts://host[:port]``,
                ``ws[s]://host[:port][/path]`` or ``iothub://host[:port]``.
        """
        scheme, host, port, path = split_broker_url(url)
        tls = scheme in _TLS_SCHEMES  # IoT Hub speaks MQTT over TLS only
        kind = "iothub" if scheme == "iothub" else "external"
        transport = "websockets" if scheme in _WS_SCHEMES else "tcp"
        bare = cls(host=host, port=port, tls=tls, kind=kind, description="", transport=transport, ws_path=path)
        return dataclasses.replace(bare, description=f"{bare.url} (external)")


class BrokerUrl(NamedTuple):
    """A broker URL's parts; ``path`` only for ``ws``/``wss`` (None when the URL has none)."""

    scheme: str
    host: str
    port: int
    path: str | None


def parse_broker_url(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of a broker URL: :func:`split_broker_url` without the WebSocket path."""
    scheme, host, port, _ = split_broker_url(url)
    return scheme, host, port


def split_broker_url(url: str) -> BrokerUrl:
    """Split ``mqtt://host:port``, ``mqtts://host:port``, ``ws[s]://host:port/path`` or ``iothub://host:port``.

    The one parser of broker URLs: the ``--iot-broker`` setting is validated
    with it too.  The port defaults to 1883 for ``mqtt``, 8883 for ``mqtts``
    and ``iothub``, 80 for ``ws`` and 443 for ``wss`` (MQTT over WebSockets, whose
    URL may name the path: ``ws://host:8080/mqtt``).  The error message never
    repeats credentials embedded in the URL.

    Raises:
        ValueError: the URL has another scheme, no host, a bad port, white
            space, or credentials, a path (but for ws/wss), a query or a fragment.
    """
    shown = redact_url(url)
    expected = (
        "expected mqtt://host[:port], mqtts://host[:port], ws[s]://host[:port][/path] "
        "or iothub://NAME.azure-devices.net[:port]"
    )
    text = url.strip()
    if any(char.isspace() for char in text):
        # urlsplit silently drops tabs and newlines inside a URL; a host never has white space.
        raise ValueError(f"invalid broker URL {shown!r}: white space inside; {expected}")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid broker URL {shown!r}: {exc}; {expected}") from None
    if parts.scheme not in DEFAULT_PORTS:
        got = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise ValueError(f"invalid broker URL {shown!r}: {got}; {expected}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            f"invalid broker URL {shown!r}: credentials in the URL are not supported "
            "(they would end up in logs and reports); remove them"
        )
    if not parts.hostname:
        raise ValueError(f"invalid broker URL {shown!r}: no host; {expected}")
    websockets = parts.scheme in _WS_SCHEMES
    if (parts.path not in ("", "/") and not websockets) or parts.query or parts.fragment:
        raise ValueError(f"invalid broker URL {shown!r}: unexpected path, query or fragment; {expected}")
    if port == 0:
        raise ValueError(f"invalid broker URL {shown!r}: port 0 is not usable; {expected}")
    return BrokerUrl(
        parts.scheme,
        parts.hostname,
        port if port is not None else DEFAULT_PORTS[parts.scheme],
        parts.path or None if websockets else None,
    )


def wait_for_mqtt(connection: Connection, timeout: float) -> None:
    """Connect a client as the run's clients will, wait for a successful CONNACK, disconnect.

    Args:
        connection: The broker and how to connect (TLS files, user name; the
            password comes from the environment).
        timeout: Seconds for the whole exchange (TCP connect, TLS, CONNACK).

    Raises:
        BrokerError: naming ``host:port`` and what happened (refused, timed out,
            closed, or a failure reason code in the CONNACK).
    """
    address = connection.address
    deadline = time.monotonic() + timeout
    outcome: list[ReasonCode] = []

    def on_connect(
        _client: mqtt.Client,
        _userdata: Any,
        _flags: Any,
        reason: ReasonCode,
        _props: Any,
    ) -> None:
        outcome.append(reason)

    client = make_client(connection, shared_identity(connection, f"iotperf-probe-{uuid.uuid4().hex[:12]}"))
    client.on_connect = on_connect
    client.connect_timeout = max(timeout, 0.01)
    try:
        try:
            client.connect(connection.host, connection.port, keepalive=max(5, int(timeout) + 5))
        except ConnectionRefusedError:
            raise BrokerError(
                f"Could not connect to the MQTT broker at {address}: connection refused "
                "(nothing is listening there). Check that the broker is running and the "
                "address is right."
            ) from None
        except TimeoutError:
            raise BrokerError(
                f"Could not connect to the MQTT broker at {address}: no TCP connection "
                f"within {timeout:.1f}s. Check the address and any firewall in between."
            ) from None
        except OSError as exc:
            raise BrokerError(
                f"Could not connect to the MQTT broker at {address}: {exc}. "
                "Check the address and that the broker is running."
            ) from None
        while not outcome:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerError(
                    f"The MQTT broker at {address} accepted the TCP connection but sent no "
                    f"CONNACK within {timeout:.1f}s. Check that an MQTT broker (not another "
                    "service) listens there and that it is not overloaded."
                )
            rc = client.loop(timeout=min(remaining, 0.1))
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and not outcome:
                raise BrokerError(
                    f"The MQTT broker at {address} closed the connection before its CONNACK "
                    f"({mqtt.error_string(rc)}). Check the broker's log."
                )
        if outcome[0].is_failure:
            raise BrokerError(
                f"The MQTT broker at {address} refused the connection: {outcome[0]}. "
                "Check that it allows anonymous clients."
            )
    finally:
        # Sends DISCONNECT and closes the socket (no network thread is running);
        # a failure here must not hide the error being raised.
        with contextlib.suppress(OSError):
            client.disconnect()


def wait_for_tls(connection: Connection, timeout: float) -> None:
    """Open a TCP connection and complete the TLS handshake, as the devices will; then close it.

    For a server that refuses an anonymous MQTT probe (IoT Hub wants a device's
    SAS token): an unreachable host, a wrong port or an untrusted certificate
    still fail here, before any process starts.

    Raises:
        BrokerError: naming ``host:port`` and what happened.
    """
    address = connection.address
    context = connection.ssl_context() or ssl.create_default_context()
    try:
        with (
            socket.create_connection((connection.host, connection.port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=connection.host),
        ):
            pass
    except ssl.SSLError as exc:
        raise BrokerError(
            f"TLS with {address} failed: {exc.reason or exc}. Check --iot-tls-ca (the CA that signed the "
            "server's certificate) and the host name."
        ) from None
    except ConnectionRefusedError:
        raise BrokerError(f"Could not connect to {address}: connection refused (nothing is listening there).") from None
    except TimeoutError:
        raise BrokerError(f"Could not connect to {address}: no TLS connection within {timeout:.1f}s.") from None
    except OSError as exc:
        raise BrokerError(f"Could not connect to {address}: {exc}.") from None
