"""Where a sink finds the measurement headers of a message: every one of them, wherever it travels.

A :class:`HeaderFinder` turns one ``MessageView`` into the headers it carries,
one entry per element: a ``Telemetry``, or None for an element that holds
none of ours.  It looks, in this order:

1. the conftest hook ``pytest_iotperf_extract(body, properties)`` when the
   run has one (loaded by :mod:`pytest_iotperf.extract_hook`): its headers,
   unless it returns None ("not mine");
2. the message's properties (MQTT 5 user properties, Event Hubs application
   properties) when they hold a ``run_id``: one header, one property per
   field of ``HEADER_FIELDS``, values as strings or bytes (ints parsed
   strictly: ASCII digits only), keys as strings or bytes;
3. the JSON body: an object's header sits under the header key (a dotted
   path into nested objects) or, when the path is absent, is the object
   itself (the devices' own flat form); an array's elements and JSON lines
   (one object per line) are each such an object.

A header without ``device_id`` takes it from IoT Hub's
``iothub-connection-device-id`` annotation when present (the hub vouches for
the sender).  JSON headers are typed strictly (ints are JSON ints, as the
devices write them); property and hook headers may also carry numbers as
decimal strings (a property is text).

The common message, one JSON object with the flat header or the header under
a one-key path, costs what the body-only decoder before it did: one ``json.loads``,
a dict lookup and a ``Telemetry``.  Pure: no client library, no pytest.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, Protocol

from pytest_iotperf.header import IOTHUB_DEVICE_ID, MessageView, Telemetry
from pytest_iotperf.message_spec import DEFAULT_HEADER_KEY

#: What a finder found in one message: one entry per element, None where an element holds no header of ours.
Found = tuple["Telemetry | None", ...]
#: What the recorder calls per message: a HeaderFinder, or any function of that shape (tests, other seams).
FindHeaders = Callable[[MessageView], Found]

_NOT_OURS: Final[Found] = (None,)
_IOTHUB_DEVICE_ID_TEXT: Final = IOTHUB_DEVICE_ID.decode()
# Longer digit strings are not epoch microseconds, and int() of very long ones costs (or raises past 4300).
_MAX_DIGITS: Final = 24


class Extractor(Protocol):
    """A loaded ``pytest_iotperf_extract`` implementation."""

    #: Where it was defined, for messages: ``pytest_iotperf_extract in /abs/conftest.py``.
    where: str

    def __call__(self, body: bytes, properties: dict[str, Any]) -> Iterable[Any] | None: ...


class ExtractError(Exception):
    """The conftest hook raised, or returned something that is not an iterable of headers."""


class HeaderFinder:
    """Finds every header of a message (see the module docstring for where it looks).

    Args:
        header_path: the run's ``MessageSpec.header_path`` (where a JSON body holds the header).
        extractors: the run's loaded conftest hooks, in pluggy's call order (first non-None wins).
    """

    __slots__ = ("_extractors", "_first_key", "_rest")

    def __init__(self, header_path: Sequence[str] = (DEFAULT_HEADER_KEY,), extractors: Sequence[Extractor] = ()):
        if not header_path or any(not key for key in header_path):
            raise ValueError(f"a header path needs at least one non-empty key, not {list(header_path)!r}")
        self._first_key = header_path[0]
        self._rest = tuple(header_path[1:])
        self._extractors = tuple(extractors)

    @property
    def header_path(self) -> tuple[str, ...]:
        return (self._first_key, *self._rest)

    def __call__(self, message: MessageView) -> Found:
        if self._extractors:
            extracted = self._extract(message)
            if extracted is not None:
                return extracted
        properties = message.properties
        if properties and (properties.get("run_id") is not None or properties.get(b"run_id") is not None):
            return (from_mapping(properties, message.system_properties),)
        body = message.body
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            return self._json_lines(body, message.system_properties) if b"\n" in body else _NOT_OURS
        if type(doc) is dict:
            return (self._from_document(doc, message.system_properties),)
        if type(doc) is list:
            system = message.system_properties
            return tuple(self._from_document(e, system) if type(e) is dict else None for e in doc)
        return _NOT_OURS

    def _from_document(self, doc: dict[str, Any], system: Mapping[Any, Any] | None) -> Telemetry | None:
        """The header of one JSON object: under the header path, else the object itself (the flat form)."""
        header = doc.get(self._first_key)
        if type(header) is dict:
            for key in self._rest:
                inner = header.get(key)
                if type(inner) is not dict:
                    header = doc
                    break
                header = inner
        else:
            header = doc
        try:
            run_id = header["run_id"]
            seq = header["seq"]
            intended_at = header["intended_at"]
            sent_at = header["sent_at"]
        except KeyError:
            return None
        device_id = header.get("device_id")
        if device_id is None:
            device_id = sender(system)
        if (
            type(run_id) is str
            and type(device_id) is str
            and type(seq) is int
            and seq >= 0
            and type(intended_at) is int
            and type(sent_at) is int
        ):
            return Telemetry(run_id, device_id, seq, intended_at, sent_at)
        return None

    def _json_lines(self, body: bytes, system: Mapping[Any, Any] | None) -> Found:
        """One element per non-blank line (a body that is not one JSON value but has several lines)."""
        found: list[Telemetry | None] = []
        for line in body.split(b"\n"):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except (ValueError, RecursionError):
                found.append(None)
                continue
            found.append(self._from_document(doc, system) if type(doc) is dict else None)
        return tuple(found)

    def _extract(self, message: MessageView) -> Found | None:
        """The first hook's headers that is not None; None when every hook said "not mine"."""
        properties = plain_properties(message.properties)
        for extractor in self._extractors:
            try:
                result = extractor(message.body, properties)
                if result is None:
                    continue
                headers = _as_headers(result)
            except Exception as exc:  # the user's code: any failure is an extract error, not a sink crash
                raise ExtractError(f"{extractor.where} raised {type(exc).__name__}: {exc}") from exc
            system = message.system_properties
            return tuple(_from_hook(header, system) for header in headers)
        return None


#: The finder of a run with the default header key and no hook.
find_headers: Final = HeaderFinder()


def _as_headers(result: Any) -> tuple[Any, ...]:
    if isinstance(result, Telemetry | Mapping):  # one header instead of an iterable of them: take it as one
        return (result,)
    if isinstance(result, str | bytes | bytearray) or not isinstance(result, Iterable):
        raise TypeError(f"returned {type(result).__name__}, not an iterable of headers (or None)")
    return tuple(result)


def _from_hook(header: Any, system: Mapping[Any, Any] | None) -> Telemetry | None:
    if isinstance(header, Telemetry):
        return header
    if isinstance(header, Mapping):
        return from_mapping(header, system)
    return None


def from_mapping(fields: Mapping[Any, Any], system: Mapping[Any, Any] | None = None) -> Telemetry | None:
    """A header from a mapping named by ``HEADER_FIELDS`` (str or bytes keys; str, bytes or int values).

    Properties and hook results: numbers may be decimal strings (ASCII digits only, nothing else).
    """
    run_id = _text(_field(fields, "run_id", b"run_id"))
    device_id = _text(_field(fields, "device_id", b"device_id"))
    if device_id is None:
        device_id = sender(system)
    seq = _count(_field(fields, "seq", b"seq"))
    intended_at = _count(_field(fields, "intended_at", b"intended_at"))
    sent_at = _count(_field(fields, "sent_at", b"sent_at"))
    if run_id is None or device_id is None or seq is None or intended_at is None or sent_at is None:
        return None
    return Telemetry(run_id, device_id, seq, intended_at, sent_at)


def sender(system: Mapping[Any, Any] | None) -> str | None:
    """The device IoT Hub's built-in endpoint says sent the message (``iothub-connection-device-id``), if any."""
    if not system:
        return None
    value = system.get(IOTHUB_DEVICE_ID)
    if value is None:
        value = system.get(_IOTHUB_DEVICE_ID_TEXT)
    return _text(value)


def plain_properties(properties: Mapping[Any, Any] | None) -> dict[str, Any]:
    """Properties as the hook sees them: str keys, bytes values decoded (UTF-8), other values as they are."""
    if not properties:
        return {}
    plain: dict[str, Any] = {}
    for key, value in properties.items():
        name = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
        plain[name] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return plain


def _field(fields: Mapping[Any, Any], name: str, raw_name: bytes) -> Any:
    value = fields.get(name)
    return fields.get(raw_name) if value is None else value


def _text(value: Any) -> str | None:
    if type(value) is str:
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


def _count(value: Any) -> int | None:
    """A non-negative int: an int, or a string of ASCII digits ("7", not "+7", " 7", "7.0" or non-ASCII digits)."""
    if type(value) is int:
        return value if value >= 0 else None
    if isinstance(value, bytes):
        value = _text(value)
    if type(value) is str and 0 < len(value) <= _MAX_DIGITS and value.isascii() and value.isdigit():
        return int(value)
    return None
