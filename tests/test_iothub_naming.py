"""IoT Hub's MQTT names (user name, telemetry topic, property bag) and connection strings.

User names and topics are checked against what Microsoft's device SDK sends (tests/data/iothub_sas_vectors.json).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_iotperf.iothub.connection_string import parse_iothub_connection_string
from pytest_iotperf.iothub.naming import (
    API_VERSION,
    encode_property_bag,
    parse_telemetry_topic,
    parse_username,
    telemetry_topic,
    username_for,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "iothub_sas_vectors.json").read_text(encoding="utf-8")
)


def test_username_round_trips() -> None:
    username = username_for("hub.azure-devices.net", "dev000007")
    assert username == f"hub.azure-devices.net/dev000007/?api-version={API_VERSION}"
    parsed = parse_username(username)
    assert (parsed.host, parsed.device_id, parsed.api_version, parsed.extra) == (
        "hub.azure-devices.net",
        "dev000007",
        API_VERSION,
        {},
    )


@pytest.mark.parametrize("client", VECTORS["clients"], ids=lambda c: c["device_id"])
def test_the_sdks_username_parses(client: dict[str, Any]) -> None:
    """The SDK sends its own api-version and appends DeviceClientType; the device id is not URL-encoded."""
    parsed = parse_username(client["username"])
    assert (parsed.host, parsed.device_id) == (client["host"], client["device_id"])
    assert parsed.api_version == VECTORS["sdk_api_version"]
    assert parsed.extra["DeviceClientType"].startswith("azure-iot-device-iothub-py/")
    assert client["username"].startswith(username_for(client["host"], client["device_id"], parsed.api_version))


@pytest.mark.parametrize(
    "username",
    [
        "hub/dev/api-version=1",  # no '/?'
        "hub/?api-version=1",  # no device
        "/dev/?api-version=1",  # no host
        "hub/dev/module/?api-version=1",  # a module identity
        "hub/dev/?DeviceClientType=x",  # no api-version
    ],
)
def test_malformed_usernames(username: str) -> None:
    with pytest.raises(ValueError):
        parse_username(username)


def test_property_bag_uses_quote_not_quote_plus() -> None:
    bag = encode_property_bag([("$.ct", "application/json"), ("site name", "plant 7"), ("sum", "a+b"), ("q", "x&y=z")])
    assert bag == "$.ct=application%2Fjson&site%20name=plant%207&sum=a%2Bb&q=x%26y%3Dz"


def test_telemetry_topic_and_its_parse() -> None:
    topic = telemetry_topic("dev000001", [("unit", "°C"), ("note", "a b+c")])
    assert topic == (
        "devices/dev000001/messages/events/$.ct=application%2Fjson&$.ce=utf-8&unit=%C2%B0C&note=a%20b%2Bc"
    )
    parsed = parse_telemetry_topic(topic)
    assert parsed is not None
    assert parsed.device_id == "dev000001"
    assert dict(parsed.system_properties) == {"$.ct": "application/json", "$.ce": "utf-8"}
    assert dict(parsed.properties) == {"unit": "°C", "note": "a b+c"}


def test_topic_without_a_property_bag() -> None:
    assert telemetry_topic("d", system_properties=()) == "devices/d/messages/events/"
    for topic in ("devices/d/messages/events/", "devices/d/messages/events"):
        parsed = parse_telemetry_topic(topic)
        assert parsed is not None and parsed.device_id == "d" and not parsed.properties


@pytest.mark.parametrize("topic", ["sensors/d/x", "devices/d/messages/devicebound/", "devices//messages/events/"])
def test_not_a_telemetry_topic(topic: str) -> None:
    assert parse_telemetry_topic(topic) is None


@pytest.mark.parametrize("vector", VECTORS["telemetry_topics"], ids=lambda v: v["device_id"])
def test_the_sdks_topics(vector: dict[str, Any]) -> None:
    """The SDK encodes '$' as %24 (IoT Hub reads both) and sorts user properties; otherwise the same bytes."""
    system = [(k, vector[f]) for k, f in (("$.ct", "content_type"), ("$.ce", "content_encoding")) if vector[f]]
    props = sorted(vector["properties"].items())
    ours = telemetry_topic(vector["device_id"], props, system)
    assert ours == vector["topic"].replace("%24.", "$.")
    parsed = parse_telemetry_topic(vector["topic"])
    assert parsed is not None and parsed.device_id == vector["device_id"]
    assert dict(parsed.system_properties) == dict(system)
    assert dict(parsed.properties) == vector["properties"]


KEY = "c2VjcmV0LWtleS1TRUNSRVQ="


def test_connection_strings() -> None:
    policy = parse_iothub_connection_string(
        f"HostName=hub.azure-devices.net;SharedAccessKeyName=registryReadWrite;SharedAccessKey={KEY}"
    )
    assert (policy.host, policy.policy, policy.device_id, policy.key) == (
        "hub.azure-devices.net",
        "registryReadWrite",
        None,
        KEY,
    )
    assert KEY not in repr(policy)
    device = parse_iothub_connection_string(f" HostName=127.0.0.1:8443 ; DeviceId=dev1; SharedAccessKey={KEY};")
    assert (device.host, device.device_id, device.policy) == ("127.0.0.1:8443", "dev1", None)
    assert parse_iothub_connection_string(device.to_string()) == device


@pytest.mark.parametrize(
    "text",
    [
        f"HostName=h;SharedAccessKeyName=p;SharedAccessKey{KEY}",  # no '=' in the key part
        f"SharedAccessKeyName=p;SharedAccessKey={KEY}",  # no host
        "HostName=h;SharedAccessKeyName=p",  # no key
        f"HostName=h;SharedAccessKey={KEY}",  # neither policy nor device
        f"HostName=h;={KEY}",
    ],
)
def test_connection_string_errors_never_contain_the_key(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_iothub_connection_string(text, where="$IOTPERF_IOTHUB_CONNECTION_STRING")
    message = str(caught.value)
    assert message.startswith("$IOTPERF_IOTHUB_CONNECTION_STRING")
    assert KEY not in message and "SECRET" not in message
