"""The bridge's spec file: where the broker is, what to subscribe to, how to batch.

It holds no secret: the MQTT password comes from ``IOTPERF_MQTT_PASSWORD`` and
the Event Hubs connection string from ``IOTPERF_EVENTHUB_CONNECTION_STRING``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from pytest_iotperf.bridge.forwarder import Grouping
from pytest_iotperf.bridge.topics import template_pattern
from pytest_iotperf.connection import Connection
from pytest_iotperf.message_spec import DEFAULT_HEADER_KEY, MessageSpec
from pytest_iotperf.mqtt_options import MqttClientOptions

_SECRET_FIELDS = ("password", "connection_string", "shared_access_key", "key")


@dataclass(frozen=True)
class BridgeSpec:
    """What the bridge needs to know (see the package docstring for the JSON field names)."""

    connection: Connection  # broker, TLS, user name, QoS of the subscription
    topic_filter: str
    topic_template: str
    client_id: str = ""
    grouping: Grouping = "key"
    linger_ms: float = 5.0
    max_flush_events: int = 5000
    send_timeout_s: float = 10.0
    stop_timeout_s: float = 10.0
    start_timeout_s: float = 10.0
    client_options: tuple[tuple[str, Any], ...] = ()
    header_path: tuple[str, ...] = (DEFAULT_HEADER_KEY,)  # where a JSON body holds the header (``message``)

    @property
    def qos(self) -> int:
        return self.connection.qos

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> BridgeSpec:
        """Validate and build; ValueError names the bad field (never a secret: secret fields are refused).

        The broker is either ``connection`` (a ``Connection.to_dict()``, what a run
        writes) or the flat fields ``host``, ``port``, ``tls``, ``username``, ``qos``.
        """
        for name in _SECRET_FIELDS:
            if name in doc:
                raise ValueError(f"the spec must not hold {name!r}: secrets come from the environment")
        try:
            spec = cls(
                connection=_connection(doc),
                topic_filter=str(doc["topic_filter"]),
                topic_template=str(doc["topic_template"]),
                client_id=str(doc.get("client_id") or f"iotperf-bridge-{doc.get('run_id', '')}-{uuid.uuid4().hex[:8]}"),
                grouping=doc.get("grouping", "key"),
                linger_ms=float(doc.get("linger_ms", 5.0)),
                max_flush_events=int(doc.get("max_flush_events", 5000)),
                send_timeout_s=float(doc.get("send_timeout_s", 10.0)),
                stop_timeout_s=float(doc.get("stop_timeout_s", 10.0)),
                start_timeout_s=float(doc.get("start_timeout_s", 10.0)),
                client_options=tuple(
                    (name, doc[name]) for name in ("retry_total", "auth_timeout_s", "eventhub_name") if name in doc
                ),
                header_path=_header_path(doc),
            )
        except KeyError as exc:
            raise ValueError(f"the bridge spec lacks {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad value in the bridge spec: {exc}") from None
        template_pattern(spec.topic_template)  # raises ValueError with the template in the message
        if spec.grouping not in ("key", "partition"):
            raise ValueError(f"grouping must be 'key' or 'partition', not {spec.grouping!r}")
        if not 0 <= spec.linger_ms <= 1000:
            raise ValueError(f"linger_ms must be between 0 and 1000, not {spec.linger_ms:g}")
        if spec.max_flush_events < 1:
            raise ValueError("max_flush_events must be at least 1")
        return spec


def _header_path(doc: dict[str, Any]) -> tuple[str, ...]:
    """Where the devices' JSON bodies hold the header: the run's ``message`` spec, else the default key."""
    message = doc.get("message")
    return MessageSpec.from_dict(message).header_path if message else (DEFAULT_HEADER_KEY,)


def _connection(doc: dict[str, Any]) -> Connection:
    """The broker from ``connection``, or from the flat fields of a hand-written spec."""
    if "connection" in doc:
        return Connection.from_dict(doc["connection"])
    return Connection(
        host=str(doc["host"]),
        port=int(doc["port"]),
        tls=bool(doc.get("tls", False)),
        options=MqttClientOptions(username=str(doc["username"]) if doc.get("username") else None),
        qos=int(doc.get("qos", 1)),
    )
