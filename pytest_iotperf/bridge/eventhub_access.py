"""How the bridge and the Event Hubs sink reach Event Hubs without ever showing the key.

The connection string (it holds the SAS key) comes only from the environment
variable ``IOTPERF_EVENTHUB_CONNECTION_STRING``: never from a spec file or the
command line, where ``ps``, shell history or a kept work directory would show
it.  Everything these processes print or log goes through a ``Scrubber``
that removes the key, the whole connection string and anything shaped like a
SAS key or token, so an SDK message that quoted one would still be safe.

Also the SDK settings both processes share: few retries and short timeouts,
and ``call_with_deadline`` for the calls the SDK gives no overall timeout.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, TypeVar
from urllib.parse import quote_plus, urlsplit

_T = TypeVar("_T")

CONNECTION_STRING_ENV: Final = "IOTPERF_EVENTHUB_CONNECTION_STRING"
"""Environment variable holding the Event Hubs connection string (a secret)."""

REDACTED: Final = "***"

# Shapes of secrets an SDK or server message might carry: the key field of a
# connection string, a whole SAS token, and a token's signature parameter.
_SECRET_SHAPES: Final = (
    re.compile(r"(SharedAccessKey\s*=\s*)[^;\s'\"]+", re.IGNORECASE),
    re.compile(r"(SharedAccessSignature\s*=?\s*)(?:sr=|sig=|se=|skn=)[^\s'\"]+", re.IGNORECASE),
    re.compile(r"(\bsig=)[^&\s'\"]+", re.IGNORECASE),
)


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


@dataclass
class Scrubber:
    """Removes secrets from text before it is printed, logged or put in a report."""

    secrets: list[str] = field(default_factory=list, repr=False)

    def add(self, secret: str) -> None:
        """Never show ``secret`` (nor its URL-encoded form) again."""
        for variant in (secret, quote_plus(secret)):
            if variant and variant not in self.secrets:
                self.secrets.append(variant)
        # Longest first, so a connection string is removed whole before its key.
        self.secrets.sort(key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        for shape in _SECRET_SHAPES:
            text = shape.sub(lambda m: m.group(1) + REDACTED, text)
        return text


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
        raise EventHubConfigError(f"${CONNECTION_STRING_ENV} has no Endpoint=sb://host/ part")
    return EventHubTarget(
        host=host, eventhub=fields.get("entitypath", ""), key_name=fields.get("sharedaccesskeyname", "")
    )


def read_connection_string(environ: dict[str, str], scrubber: Scrubber) -> tuple[str, EventHubTarget]:
    """Take the connection string from the environment and teach ``scrubber`` its secrets.

    Raises:
        EventHubConfigError: the variable is unset or has no endpoint.
    """
    connection_string = environ.get(CONNECTION_STRING_ENV, "").strip()
    if not connection_string:
        raise EventHubConfigError(f"${CONNECTION_STRING_ENV} is not set: it must hold the Event Hubs connection string")
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


def describe_error(exc: BaseException, scrubber: Scrubber, limit: int = 300) -> str:
    """One scrubbed line for ``exc``: its type and the first line of its message."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    line = scrubber(line)
    return line if len(line) <= limit else line[: limit - 3] + "..."


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


class _ScrubbingFormatter(logging.Formatter):
    """Scrubs the fully formatted record, tracebacks included."""

    def __init__(self, scrubber: Scrubber) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._scrubber = scrubber

    def format(self, record: logging.LogRecord) -> str:
        return self._scrubber(super().format(record))


def install_scrubbed_logging(scrubber: Scrubber, level: int = logging.WARNING) -> None:
    """Send every log record and uncaught exception to stderr through ``scrubber``.

    The SDK logs errors with the exception text, and Python prints uncaught
    exceptions of any thread to stderr directly; both end in the child's log
    file, so both must pass the scrubber.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_ScrubbingFormatter(scrubber))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    log = logging.getLogger("pytest_iotperf")

    def excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        log.error("uncaught exception", exc_info=(kind, exc, tb))

    def thread_excepthook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            name = args.thread.name if args.thread is not None else "?"
            log.error(
                "uncaught exception in thread %s", name, exc_info=(args.exc_type, args.exc_value, args.exc_traceback)
            )

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook
