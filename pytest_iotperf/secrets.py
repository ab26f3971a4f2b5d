"""Where secrets come from, and how every output of the package is kept free of them.

Secrets reach a run only through environment variables (never a CLI option, an
ini key or a spec file, where ``ps``, shell history, git or a kept work
directory would show them): the MQTT password, the Event Hubs connection
string (it carries the SAS key) and the InfluxDB token.

Everything that may carry one on its way out goes through this module:

* :class:`Scrubber`: free text (log records, error messages, event lines)
  without the secret values it was taught and without anything shaped like a
  secret (a SAS key or signature, a URL password, ``token=...``, an HTTP
  ``Token``/``Bearer`` credential);
* :func:`redact_url`: a URL fit for a message;
* :func:`redact_settings`: a run's settings fit for a report;
* :func:`describe_error` and :func:`install_scrubbed_logging`: what a child
  process prints about a failure, and every log line and traceback it writes.

Stdlib only; no pytest, no client library.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final
from urllib.parse import parse_qsl, quote_plus, urlsplit, urlunsplit

__all__ = [
    "EVENTHUB_CONNECTION_STRING_ENV",
    "INFLUX_TOKEN_ENV",
    "IOTHUB_CONNECTION_STRING_ENV",
    "IOTHUB_GROUP_KEY_ENV",
    "MQTT_PASSWORD_ENV",
    "REDACTED",
    "SECRET_ENVS",
    "Scrubber",
    "ScrubbingFilter",
    "describe_error",
    "install_scrubbed_logging",
    "redact_settings",
    "redact_text",
    "redact_url",
    "redact_value",
    "secret_env_values",
]

#: Environment variable holding the MQTT password. It has no CLI option or
#: ini key on purpose: a password on a command line ends up in ps and shell
#: history, and an ini file ends up in git.
MQTT_PASSWORD_ENV: Final = "IOTPERF_MQTT_PASSWORD"

#: Environment variable holding the Event Hubs connection string (it carries the SAS key).
EVENTHUB_CONNECTION_STRING_ENV: Final = "IOTPERF_EVENTHUB_CONNECTION_STRING"

#: Environment variable holding the InfluxDB token (a secret: no CLI option, no ini key).
INFLUX_TOKEN_ENV: Final = "IOTPERF_INFLUX_TOKEN"

#: Environment variable holding an IoT Hub connection string with a policy key: ``device`` (DeviceConnect) to
#: sign the fleet's tokens, ``registryReadWrite`` to provision devices.
IOTHUB_CONNECTION_STRING_ENV: Final = "IOTPERF_IOTHUB_CONNECTION_STRING"

#: Environment variable holding a DPS symmetric-key enrollment group's key (device keys are derived from it).
IOTHUB_GROUP_KEY_ENV: Final = "IOTPERF_IOTHUB_GROUP_KEY"

#: Every environment variable that holds a secret.
SECRET_ENVS: Final = (
    MQTT_PASSWORD_ENV,
    EVENTHUB_CONNECTION_STRING_ENV,
    INFLUX_TOKEN_ENV,
    IOTHUB_CONNECTION_STRING_ENV,
    IOTHUB_GROUP_KEY_ENV,
)

#: What a removed secret shows instead of itself.
REDACTED: Final = "***"

# Shapes of secrets a message might carry, each (pattern, what stays of the match). The kept
# part leaves the message readable: "SharedAccessKey=***", "mqtt://alice:***@host".
_SECRET_SHAPES: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    # The key field of a connection string.
    (re.compile(r"(SharedAccessKey\s*=\s*)[^;\s'\"]+", re.IGNORECASE), r"\g<1>"),
    # A whole SAS token (also as the value of a connection string's SharedAccessSignature field).
    (
        re.compile(
            r"(SharedAccessSignature\s*=?\s*)(?:SharedAccessSignature\s+)?(?:sr=|sig=|se=|skn=)[^;\s'\"]+",
            re.IGNORECASE,
        ),
        r"\g<1>",
    ),
    # A SAS token's signature parameter, wherever it appears (a URL's query, a bare token).
    (re.compile(r"(\bsig=)[^&\s'\"]+", re.IGNORECASE), r"\g<1>"),
    # The password of a URL's user info.
    (re.compile(r"(://[^/\s:@]+:)[^/\s@]+(?=@)"), r"\g<1>"),
    # name=value / name: value pairs whose name says secret.
    (
        re.compile(r"((?:password|passwd|secret|token|api[_-]?key)\s*[=:]\s*)[^;\s,&\"']+", re.IGNORECASE),
        r"\g<1>",
    ),
    # An HTTP credential ("Authorization: Token ..." echoed by a server or proxy). Only a value of
    # 8+ characters counts, so prose ("token has expired") stays readable; a SAS token is the rule above's.
    (
        re.compile(r"(\b(?:token|bearer)\s+)(?!SharedAccessSignature\b)(?!\*\*\*)[^\s'\",]{8,}", re.IGNORECASE),
        r"\g<1>",
    ),
)


@dataclass
class Scrubber:
    """Removes secrets from text before it is printed, logged or put in a report.

    It removes every secret value it was given (:meth:`add`, or the
    constructor) and anything shaped like a secret, known or not.
    ``Scrubber()(text)`` is :func:`redact_text`.
    """

    secrets: list[str] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        given, self.secrets = self.secrets, []
        for secret in given:
            self.add(secret)

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
        for shape, kept in _SECRET_SHAPES:
            text = shape.sub(kept + REDACTED, text)
        return text


_SHAPES_ONLY: Final = Scrubber()


def secret_env_values(environ: Mapping[str, str]) -> list[str]:
    """The values of every secret environment variable that is set (and the keys inside connection strings)."""
    values: list[str] = []
    for name in SECRET_ENVS:
        value = environ.get(name, "").strip()
        if not value:
            continue
        values.append(value)
        values.extend(match.group(1) for match in re.finditer(r"SharedAccessKey\s*=\s*([^;\s]+)", value, re.I))
    return values


def redact_text(text: str) -> str:
    """Mask secret-shaped parts of free text (``SharedAccessKey=...``, URL passwords, ``token=...``) with ``***``."""
    return _SHAPES_ONLY(text)


def redact_url(url: str) -> str:
    """``url`` fit for a message: user info becomes ``***@``, query values ``***``, the fragment goes."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        port = parts.port
    except ValueError:  # e.g. a port that is not a number: still worth showing in the error about it
        return _redact_unparsed_url(url)
    if not parts.scheme or not host:
        return _redact_unparsed_url(url)
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    if "@" in parts.netloc:
        netloc = f"{REDACTED}@{netloc}"
    # The names of query parameters help to read an error; their values may be credentials.
    query = "&".join(f"{name}={REDACTED}" for name, _ in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _redact_unparsed_url(url: str) -> str:
    """The same masking, by pattern, for text that does not parse as a URL with a host."""
    text = url.strip().split("#", 1)[0]
    text = re.sub(r"^((?:[A-Za-z][A-Za-z0-9+.-]*:)?(?://)?)[^/?#]*@", r"\g<1>" + REDACTED + "@", text)
    return re.sub(r"([?&][^=&]*=)[^&]*", r"\g<1>" + REDACTED, text)


# A setting whose name says secret is masked whatever its value; a value shaped like a SAS credential too.
_SECRET_KEY: Final = re.compile(r"password|secret|token|key|connection", re.IGNORECASE)
_SECRET_VALUE: Final = re.compile(r"SharedAccessKey=|SharedAccessSignature", re.IGNORECASE)
#: Settings whose names match the pattern but hold no secret (where the header sits in a JSON body).
_NOT_SECRET: Final = frozenset({"header_key"})


def redact_value(value: Any, key: str = "") -> Any:
    """One setting's ``value`` (named ``key``) fit for a report; see :func:`redact_settings`."""
    if value is None:
        return None
    if _SECRET_KEY.search(key) and key not in _NOT_SECRET:
        return REDACTED
    if isinstance(value, str):
        return REDACTED if _SECRET_VALUE.search(value) else redact_text(value)
    if isinstance(value, Mapping):
        return {str(k): redact_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(item, key) for item in value]
    return value


def redact_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``settings`` safe to publish.

    Any value whose key contains password / secret / token / key / connection
    (case-insensitive, nested mappings too), and any string containing
    ``SharedAccessKey=`` or ``SharedAccessSignature``, becomes ``"***"``;
    other strings go through :func:`redact_text` (a password in a URL).
    ``None`` stays ``None`` (an unset value reveals nothing).
    """
    return {str(key): redact_value(value, str(key)) for key, value in settings.items()}


def describe_error(exc: BaseException, scrubber: Scrubber, limit: int = 300) -> str:
    """One scrubbed line for ``exc``: its type and the first line of its message."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    line = scrubber(line)
    return line if len(line) <= limit else line[: limit - 3] + "..."


class ScrubbingFilter(logging.Filter):
    """Scrubs the message of every record that passes the logger or handler it is added to.

    For loggers of code that is not ours (an HTTP stack that logs a response
    body, which may echo the request's credentials).
    """

    def __init__(self, scrubber: Scrubber) -> None:
        super().__init__()
        self._scrubber = scrubber

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging module's to report, not ours
            return True
        scrubbed = self._scrubber(message)
        if scrubbed != message:
            record.msg = scrubbed
            record.args = None
        return True


class _ScrubbingFormatter(logging.Formatter):
    """Scrubs the fully formatted record, tracebacks included."""

    def __init__(self, scrubber: Scrubber) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._scrubber = scrubber

    def format(self, record: logging.LogRecord) -> str:
        return self._scrubber(super().format(record))


def install_scrubbed_logging(scrubber: Scrubber, level: int = logging.WARNING) -> None:
    """In a child process: send every log record and uncaught exception to stderr through ``scrubber``.

    A client library logs errors with the exception text, and Python prints
    uncaught exceptions of any thread to stderr directly; both end in the
    child's log file, so both must pass the scrubber.
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
