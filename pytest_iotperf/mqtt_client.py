"""The one MQTT client factory: every client of a run is made here.

The devices, the MQTT sink, the platform bridge and the broker check each get
a :class:`~pytest_iotperf.lean_mqtt.LeanClient` for a
:class:`~pytest_iotperf.connection.Connection` (protocol version, transport,
TLS) and a :class:`ClientIdentity` (client id, credentials, TLS context).
The lean client turns Nagle off on every socket it opens (see
``LeanClient._create_socket_connection``), reconnects included.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from pytest_iotperf.connection import Connection
from pytest_iotperf.lean_mqtt import LeanClient
from pytest_iotperf.mqtt_options import mqtt_password

__all__ = ["ClientIdentity", "connect", "make_client", "shared_identity"]

_PROTOCOLS: Final = {"3.1.1": mqtt.MQTTv311, "5": mqtt.MQTTv5}
#: MQTT 5: how long the broker keeps a persistent session (clean session false) after its connection ends.
#: Without a session expiry an MQTT 5 session ends with its connection, so a reader that drops loses what
#: was routed to it meanwhile; 3.1.1 keeps such a session for ever.
SESSION_EXPIRY_S: Final = 3600


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """Who a client is: its client id and credentials.

    ``password`` and ``ssl_context`` stay out of ``repr`` (logs, error messages).
    ``ssl_context`` None with a TLS connection: the factory builds one for this client.
    ``expires_at``: epoch seconds at which these credentials stop working (a SAS
    token's ``se``), None when they never do.
    """

    client_id: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)
    expires_at: float | None = None


def shared_identity(
    connection: Connection,
    client_id: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    environ: Mapping[str, str] = os.environ,
) -> ClientIdentity:
    """``client_id`` with the run's shared credentials: the connection's user name, the password from the env."""
    username = connection.username
    return ClientIdentity(
        client_id=client_id,
        username=username,
        password=mqtt_password(environ) if username else None,
        ssl_context=ssl_context,
    )


def make_client(connection: Connection, identity: ClientIdentity, *, clean_session: bool = True) -> LeanClient:
    """A lean client for ``connection`` as ``identity``, not connected yet (see :func:`connect`).

    MQTT 5 has no clean session (paho refuses it): ``clean_session`` becomes clean
    start at every connect, and a persistent session asks for :data:`SESSION_EXPIRY_S`.
    """
    mqtt5 = connection.protocol_version == "5"
    client = LeanClient(
        CallbackAPIVersion.VERSION2,
        client_id=identity.client_id,
        protocol=_PROTOCOLS[connection.protocol_version],
        clean_session=None if mqtt5 else clean_session,
        transport=connection.transport,  # type: ignore[arg-type]  # validated by Connection
    )
    if mqtt5:
        client.clean_start = clean_session
        client.session_expiry_s = 0 if clean_session else SESSION_EXPIRY_S
    if connection.transport == "websockets":
        client.ws_set_options(path=connection.ws_path)  # framed by ws_client, see LeanClient._create_socket
    if identity.username:
        client.username_pw_set(identity.username, identity.password)
    if connection.tls:
        client.tls_set_context(identity.ssl_context or connection.options.ssl_context())
        if connection.options.insecure:
            client.tls_insecure_set(True)
    return client


def connect(client: LeanClient, connection: Connection) -> MQTTErrorCode:
    """Open the TCP (and TLS) connection and send CONNECT; the CONNACK arrives through the client's loop.

    MQTT 5: with the client's clean start and session expiry (paho's own
    reconnects, ``loop_start``'s, send the same).

    Raises:
        OSError: the connection could not be opened (refused, timed out, TLS failed).
    """
    if connection.protocol_version != "5":
        return client.connect(connection.host, connection.port, connection.keepalive_s)
    properties = None
    if client.session_expiry_s:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it untyped
        properties.SessionExpiryInterval = client.session_expiry_s
    return client.connect(
        connection.host,
        connection.port,
        connection.keepalive_s,
        clean_start=client.clean_start,
        properties=properties,
    )
