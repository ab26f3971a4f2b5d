"""How the bridge and the Event Hubs sink reach Event Hubs without ever showing the key.

The connection string (it holds the SAS key) comes only from the environment
variable ``IOTPERF_EVENTHUB_CONNECTION_STRING``: never from a spec file or the
command line, where ``ps``, shell history or a kept work directory would show
it.  Everything these processes print or log goes through a
:class:`~pytest_iotperf.secrets.Scrubber` taught the key and the whole
connection string here, so an SDK message that quoted one would still be safe.

Also the SDK settings both processes share: few retries and short timeouts,
and ``call_with_deadline`` for the calls the SDK gives no overall timeout.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pytest_iotperf.secrets import EVENTHUB_CONNECTION_STRING_ENV, Scrubber

_T = TypeVar("_T")


class EventHubConfigError(Exception):
    """The connection string is missing or unusable (the message holds no secret)."""


@dataclass(frozen=True)
class EventHubTarget:
    """What may be shown about an Event Hub: where it is and its name, never the key.

    Attributes:
        host: ``host`` or ``host:port`` of the namespace endpoint.
        eventhub: The Event Hub name (``EntityPath``), or "" when the string has none.
        key_name: ``SharedAccessKeyName`` (a name, not a secret).
    """

    host: str
    eventhub: str
    key_name: str

    def describe(self) -> str:
        """``host/eventhub`` for messages."""
        return f"{self.host}/{self.eventhub}" if self.eventhub else self.host


def parse_target(connection_string: str) -> EventHubTarget:
    """Read the endpoint host, hub name and key name from a connection string.

    Raises:
        EventHubConfigError: there is no usable ``Endpoint``; the message never quotes the string.
    """
    fields: dict[str, str] = {}
    for part in connection_string.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            fields[name.strip().lower()] = value.strip()
    endpoint = fields.get("endpoint", "")
    try:
        host = urlsplit(endpoint).netloc if "://" in endpoint else endpoint
    except ValueError:
        host = ""
    if not host:
        raise EventHubConfigError(f"${EVENTHUB_CONNECTION_STRING_ENV} has no Endpoint=sb://host/ part")
    return EventHubTarget(
        host=host, eventhub=fields.get("entitypath", ""), key_name=fields.get("sharedaccesskeyname", "")
    )


def read_connection_string(environ: dict[str, str], scrubber: Scrubber) -> tuple[str, EventHubTarget]:
    """Take the connection string from the environment and teach ``scrubber`` its secrets.

    Raises:
        EventHubConfigError: the variable is unset or has no endpoint.
    """
    connection_string = environ.get(EVENTHUB_CONNECTION_STRING_ENV, "").strip()
    if not connection_string:
        raise EventHubConfigError(
            f"${EVENTHUB_CONNECTION_STRING_ENV} is not set: it must hold the Event Hubs connection string"
        )
    scrubber.add(connection_string)
    for part in connection_string.split(";"):
        name, sep, value = part.partition("=")
        if sep and name.strip().lower() in ("sharedaccesskey", "sharedaccesssignature") and value.strip():
            scrubber.add(value.strip())
    return connection_string, parse_target(connection_string)


def client_options(spec: dict[str, Any]) -> dict[str, Any]:
    """SDK client keyword arguments: no or few retries and short timeouts, so a dead hub fails in seconds.

    The SDK defaults (3 retries with exponential back-off, a 60 s auth timeout)
    would take minutes to report an unreachable hub or a bad key.
    """
    options: dict[str, Any] = {
        "retry_total": int(spec.get("retry_total", 0)),
        "retry_backoff_factor": 0.2,
        "retry_backoff_max": 2,
        "auth_timeout": float(spec.get("auth_timeout_s", 5.0)),
    }
    if spec.get("eventhub_name"):
        options["eventhub_name"] = str(spec["eventhub_name"])
    if spec.get("transport") == "websocket":
        # AMQP over websockets on 443, for CI runners behind a firewall that blocks 5671.
        from azure.eventhub import TransportType

        options["transport_type"] = TransportType.AmqpOverWebsocket
    return options


def call_with_deadline(call: Callable[[], _T], timeout_s: float, what: str) -> _T:
    """Run ``call`` on a daemon thread and give up after ``timeout_s``.

    The SDK has no overall timeout for opening a connection: a host that drops
    packets would keep a management call waiting for the operating system's
    TCP timeout (minutes).  An abandoned call dies with the process.

    Raises:
        TimeoutError: ``call`` did not return in time.
        BaseException: whatever ``call`` raised.
    """
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as exc:  # handed to the waiting thread
            outcome.append((False, exc))

    thread = threading.Thread(target=run, name=f"iotperf-{what}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not outcome:
        raise TimeoutError(f"{what} did not answer within {timeout_s:g}s")
    ok, value = outcome[0]
    if not ok:
        raise value
    result: _T = value
    return result
