"""Parsers of setting values: one raw string in, a typed value out, or ``ValueError``.

Pure and free of sources: the message says what was expected and what came;
``config.resolve`` prefixes it with the value's source (``--iot-qos=2 (command
line)``).  Durations are parsed by ``durations.parse_duration`` (pure, shared with the SLO grammar).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

from pytest_iotperf.broker_endpoint import parse_broker_url
from pytest_iotperf.durations import parse_duration
from pytest_iotperf.fleet.naming import DEVICE_FIELDS, DEVICE_ID_FIELDS, check_template
from pytest_iotperf.secrets import EVENTHUB_CONNECTION_STRING_ENV


def parse_positive_int(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"expected a whole number greater than 0, got {text!r}") from None
    if value < 1:
        raise ValueError(f"expected a whole number greater than 0, got {text!r}")
    return value


def parse_non_negative_int(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise ValueError(f"expected a whole number >= 0, got {text!r}")
    return value


def parse_positive_float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"expected a number greater than 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"expected a number greater than 0, got {text!r}")
    return value


def parse_positive_duration(text: str) -> float:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError(f"expected a duration greater than 0, got {text!r}")
    return seconds


def parse_ramp_up(text: str) -> float | None:
    """``auto`` (None) lets the run pick a ramp from the device count."""
    if text.strip().lower() == "auto":
        return None
    return parse_duration(text)


def parse_qos(text: str) -> int:
    if text.strip() not in ("0", "1"):
        raise ValueError(f"expected 0 or 1, got {text!r}")
    return int(text.strip())


def parse_broker(text: str) -> str:
    """``embedded``, ``embedded:mosquitto``, ``embedded:amqtt``, ``embedded:iothub``, or a broker URL.

    URLs: ``mqtt://``, ``mqtts://``, ``ws://`` / ``wss://`` (MQTT over WebSockets, optional path)
    or ``iothub://`` (an Azure IoT Hub).

    A URL is checked by the one broker URL parser (the run parses it again with it).
    """
    value = text.strip()
    if value == "embedded" or value in ("embedded:mosquitto", "embedded:amqtt", "embedded:iothub"):
        return value
    try:
        parse_broker_url(value)
    except ValueError as exc:
        raise ValueError(f"{exc} (or 'embedded')") from None
    return value


def choice(*choices: str) -> Callable[[str], str]:
    """A parser accepting one of ``choices`` (case-insensitive, returned in lower case)."""

    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"expected {' or '.join(repr(c) for c in choices)}, got {text!r}")
        return value

    return parse


def parse_consumer_group(text: str) -> str:
    value = text.strip()
    if not value or len(value) > 50:
        raise ValueError(f"expected a consumer group name such as $Default, got {text!r}")
    return value


def parse_topic_template(text: str) -> str:
    """A publish topic, optionally with ``{device_id}`` and ``{run_id}``, no wildcards.

    Without ``{device_id}`` the whole fleet publishes to one topic (common: the header names the device).
    """
    value = text.strip()
    if not value:
        raise ValueError("expected a publish topic such as devices/{device_id}/telemetry, got an empty value")
    if "#" in value or "+" in value:
        raise ValueError(f"a publish topic cannot contain the wildcards + or #, got {text!r}")
    try:
        value.format(device_id="d", run_id="r")
    except (KeyError, IndexError, ValueError):
        raise ValueError(
            f"the topic may only use the placeholders {{device_id}} and {{run_id}}, got {text!r}"
        ) from None
    return value


def parse_topic_filter(text: str) -> str:
    value = text.strip()
    if not value:
        raise ValueError("expected an MQTT topic filter such as devices/+/telemetry, got an empty value")
    levels = value.split("/")
    for index, level in enumerate(levels):
        if ("#" in level and (level != "#" or index != len(levels) - 1)) or ("+" in level and level != "+"):
            raise ValueError(f"{text!r} is not a valid MQTT topic filter")
    return value


def parse_text(text: str) -> str:
    return text.strip()


def parse_host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 hosts in brackets); port 0 means any free port."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"expected HOST:PORT such as 0.0.0.0:5557, got {text!r}")
    return host.strip("[]"), int(port)


def parse_http_url(text: str) -> str:
    """A server root such as ``http://localhost:8086`` (no path, no credentials)."""
    value = text.strip().rstrip("/")
    if not re.fullmatch(r"https?://[^\s/@]+(:\d{1,5})?", value):
        raise ValueError(f"expected the server root such as http://localhost:8086, got {text!r}")
    return value


def parse_file(text: str) -> Path:
    """A path to an existing file (``~`` expanded)."""
    path = Path(text.strip()).expanduser()
    if not text.strip() or not path.is_file():
        raise ValueError(f"expected a readable file, got {text!r}")
    return path


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def parse_directory(text: str) -> Path:
    """A directory path (it need not exist yet)."""
    if not text.strip():
        raise ValueError("expected a directory path, got an empty value")
    return Path(text.strip())


def parse_eventhub(text: str) -> str:
    value = text.strip()
    if value == "embedded":
        return value
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,255}", value):
        raise ValueError(
            f"expected 'embedded' or an Event Hub name (the connection string comes from "
            f"${EVENTHUB_CONNECTION_STRING_ENV}), got {text!r}"
        )
    return value


def _check_template(text: str, allowed: frozenset[str], what: str) -> str:
    """``text`` stripped, if it is a template of ``allowed`` fields only (the fleet's own rule, ``fleet.naming``)."""
    value = text.strip()
    if not value:
        raise ValueError(f"expected a {what} template, got an empty value")
    problem = check_template(value, allowed, f"the {what} template")
    if problem is not None:
        raise ValueError(problem)
    return value


def parse_device_id_template(text: str) -> str:
    """A device id template with ``{n}`` (a format spec allowed: ``dev{n:06d}``) and optionally ``{run_id}``."""
    value = _check_template(text, DEVICE_ID_FIELDS, "device id")
    if value.format(n=1, run_id="r") == value.format(n=2, run_id="r"):
        raise ValueError(f"the device id template must contain {{n}} (every device needs its own id), got {text!r}")
    if any(char in value for char in "/+#") or any(char.isspace() for char in value):
        raise ValueError(f"a device id cannot contain '/', '+', '#' or white space, got {text!r}")
    return value


def parse_identity_template(text: str) -> str:
    """A client id or user name: text with ``{n}``, ``{device_id}`` and ``{run_id}`` filled in per device."""
    return _check_template(text, DEVICE_FIELDS, "client id / user name")


def parse_file_or_template(text: str) -> str:
    """A path to an existing file, or a per-device path template (``certs/{device_id}.pem``).

    A template's files are checked per device before the run starts (``fleet.identity``).
    """
    value = text.strip()
    if "{" in value:
        return str(Path(_check_template(value, DEVICE_FIELDS, "file")).expanduser())
    return str(parse_file(value))


def parse_properties(text: str) -> tuple[tuple[str, str], ...]:
    """``KEY=VALUE`` pairs, one per line or separated by ``;`` (IoT Hub user properties of every message)."""
    pairs: list[tuple[str, str]] = []
    for part in (p.strip() for p in re.split(r"[;\n]", text)):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected KEY=VALUE, got {part!r}")
        if key.strip().startswith("$"):
            raise ValueError(f"{key.strip()!r}: keys starting with '$' are IoT Hub system properties")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


def parse_header_key(text: str) -> str:
    """Where the header sits in a JSON body: a key, or a dotted path into nested objects (``meta.trace``)."""
    value = text.strip()
    if not value or any(not part.strip() or part != part.strip() for part in value.split(".")):
        raise ValueError(f"expected a key or a dotted path such as _iotperf or meta.trace, got {text!r}")
    return value


def parse_ws_path(text: str) -> str:
    """The HTTP path of the WebSocket upgrade, e.g. /mqtt."""
    value = text.strip()
    if not value.startswith("/") or any(c.isspace() for c in value):
        raise ValueError(f"expected a path starting with / such as /mqtt, got {text!r}")
    return value


def parse_payload_file(text: str) -> Path:
    """A JSON payload template file, read and compiled now: a bad one stops the session naming the field."""
    path = parse_file(text)
    from pytest_iotperf.payloads import compile_template, payload_file  # only when a template is given

    compile_template(payload_file(path), where="")  # PayloadError is a ValueError
    return path
