"""What IoT Hub's MQTT surface expects of names: the user name, the telemetry topic and its property bag.

See "Communicate with an IoT hub using the MQTT protocol" (Microsoft Learn):
client id = device id; user name ``{host}/{device_id}/?api-version=2021-04-12``;
telemetry to ``devices/{device_id}/messages/events/`` followed by a URL-encoded
property bag (``quote``, never ``quote_plus``: IoT Hub does not read ``+`` as a space).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, quote, unquote

__all__ = [
    "API_VERSION",
    "DEFAULT_SYSTEM_PROPERTIES",
    "ParsedUsername",
    "TelemetryTopic",
    "encode_property_bag",
    "parse_telemetry_topic",
    "parse_username",
    "telemetry_topic",
    "username_for",
]

API_VERSION: Final = "2021-04-12"
#: The system properties every telemetry message carries by default: JSON in UTF-8.
DEFAULT_SYSTEM_PROPERTIES: Final = (("$.ct", "application/json"), ("$.ce", "utf-8"))


def username_for(host: str, device_id: str, api_version: str = API_VERSION) -> str:
    return f"{host}/{device_id}/?api-version={api_version}"


@dataclass(frozen=True)
class ParsedUsername:
    host: str
    device_id: str
    api_version: str
    extra: dict[str, str]  # what else the query holds (Microsoft's SDKs append DeviceClientType=...)


def parse_username(username: str) -> ParsedUsername:
    """Split ``{host}/{device_id}/?api-version=...[&...]``; module ids (``{device}/{module}``) are refused.

    Raises:
        ValueError: the user name does not have that shape or no api-version.
    """
    path, sep, query = username.partition("/?")
    if not sep:
        raise ValueError("the user name is not '{host}/{device_id}/?api-version=...'")
    host, slash, device_id = path.partition("/")
    if not slash or not host or not device_id or "/" in device_id:
        raise ValueError("the user name is not '{host}/{device_id}/?api-version=...'")
    params = dict(parse_qsl(query, keep_blank_values=True))
    api_version = params.pop("api-version", "")
    if not api_version:
        raise ValueError("the user name has no api-version")
    return ParsedUsername(host, device_id, api_version, params)


def encode_property_bag(properties: Sequence[tuple[str, str]]) -> str:
    """``k1=v1&k2=v2`` with every key and value encoded by ``quote`` (system keys keep ``$``: ``$.ct``).

    Byte for byte what Microsoft's device SDK sends, except that it writes ``$.ct`` as ``%24.ct`` (IoT Hub reads both).
    """
    return "&".join(f"{_encode_key(key)}={quote(value, safe='')}" for key, value in properties)


def _encode_key(key: str) -> str:
    return "$." + quote(key[2:], safe="") if key.startswith("$.") else quote(key, safe="")


def telemetry_topic(
    device_id: str,
    properties: Sequence[tuple[str, str]] = (),
    system_properties: Sequence[tuple[str, str]] = DEFAULT_SYSTEM_PROPERTIES,
) -> str:
    """``devices/{device_id}/messages/events/`` + the property bag (system properties first)."""
    return f"devices/{device_id}/messages/events/" + encode_property_bag([*system_properties, *properties])


@dataclass(frozen=True)
class TelemetryTopic:
    device_id: str
    system_properties: Mapping[str, str]  # "$.ct" -> "application/json", ...
    properties: Mapping[str, str]  # user properties


_EVENTS: Final = "/messages/events/"


def parse_telemetry_topic(topic: str) -> TelemetryTopic | None:
    """The device and properties of a telemetry topic, or None when ``topic`` is not one."""
    if not topic.startswith("devices/"):
        return None
    device_id, sep, bag = topic[len("devices/") :].partition(_EVENTS)
    if not sep or not device_id or "/" in device_id:
        if topic.endswith("/messages/events") and topic.count("/") == 3:
            return TelemetryTopic(topic.split("/")[1], {}, {})
        return None
    system: dict[str, str] = {}
    user: dict[str, str] = {}
    for part in bag.split("&") if bag else ():
        name, _, value = part.partition("=")
        key = unquote(name)
        (system if key.startswith("$.") else user)[key] = unquote(value)
    return TelemetryTopic(device_id, system, user)
