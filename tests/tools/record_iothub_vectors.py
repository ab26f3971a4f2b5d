"""Record IoT Hub SAS / MQTT-name vectors from Microsoft's own device SDK into tests/data/iothub_sas_vectors.json.

``azure-iot-device`` pins ``paho-mqtt<2`` (the project needs paho 2), so this runs from a separate
environment, never the project's::

    python3 -m venv .venv-msft && .venv-msft/bin/pip install azure-iot-device
    .venv-msft/bin/python tests/tools/record_iothub_vectors.py

What it records, all from the SDK's code paths with the clock pinned:
- ``sas_tokens``: ``RenewableSasToken(uri, SymmetricKeySigningMechanism(key), key_name, ttl)`` (the token
  class every ``IoTHubDeviceClient`` uses) for device ids that need URL-encoding, short / long keys,
  hub policy keys (``skn``), the registry's ``sr=<host>`` token and group-derived device keys.
- ``clients``: what ``IoTHubDeviceClient.create_from_symmetric_key`` hands its MQTT transport: client id,
  user name (the SDK appends ``DeviceClientType`` and uses its own api-version) and password.
- ``telemetry_topics``: ``mqtt_topic_iothub.encode_message_properties_in_topic`` for messages with
  content type / encoding and user properties.
- ``derived_keys``: the SDK has no helper for a DPS group's device key; these follow Microsoft's documented
  formula ``base64(HMAC-SHA256(base64decode(group key), registration id))`` (stdlib here), and the first one
  is Microsoft Learn's own worked example ("How to provision devices using symmetric key enrollment
  groups": group key ``8isrFI1s...``, registration id ``sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6``).

The keys are test keys made from fixed seeds, so a rerun writes the same file (the user agent's platform
fields are pinned too).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
from pathlib import Path
from typing import Any
from unittest import mock

from azure.iot.device import IoTHubDeviceClient, Message, user_agent
from azure.iot.device import constant as sdk_constant
from azure.iot.device.common.auth import sastoken
from azure.iot.device.common.auth.signing_mechanism import SymmetricKeySigningMechanism
from azure.iot.device.common.pipeline import pipeline_stages_mqtt
from azure.iot.device.iothub.pipeline import mqtt_topic_iothub

OUT = Path(__file__).resolve().parent.parent / "data" / "iothub_sas_vectors.json"
HOST = "iotperf-test.azure-devices.net"
NOW = 1_700_000_000.75  # the SDK computes se = int(time.time() + ttl): the fraction checks the truncation


def fixed_key(seed: str, size: int) -> str:
    """A fixed base64 test key of ``size`` bytes (not a secret: it exists only in these vectors)."""
    raw = b""
    while len(raw) < size:
        raw += hashlib.sha256(f"{seed}/{len(raw)}".encode()).digest()
    return base64.b64encode(raw[:size]).decode()


MS_LEARN_GROUP_KEY = "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw=="
MS_LEARN_REGISTRATION_ID = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"
MS_LEARN_DEVICE_KEY = "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="  # as printed in the article


def documented_derivation(group_key: str, registration_id: str) -> str:
    digest = hmac.new(base64.b64decode(group_key), registration_id.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class _FakeTime:
    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


def sdk_token(uri: str, key: str, ttl: int, policy: str | None) -> tuple[str, int]:
    """The SDK's token for ``uri`` with time pinned at NOW; returns (token, expiry)."""
    with mock.patch.object(sastoken, "time", _FakeTime(NOW)):
        token = sastoken.RenewableSasToken(uri, SymmetricKeySigningMechanism(key), key_name=policy, ttl=ttl)
    return str(token), int(token.expiry_time)


def sas_cases() -> list[dict[str, Any]]:
    key16, key32, key64 = fixed_key("device-16", 16), fixed_key("device-32", 32), fixed_key("device-64", 64)
    policy_key = fixed_key("policy-device", 32)
    registry_key = fixed_key("policy-registryReadWrite", 32)
    group_key = fixed_key("dps-group", 64)
    cases: list[tuple[str, str, str, int, str | None]] = [
        ("plain device, own key", f"{HOST}/devices/dev000000", key32, 3600, None),
        ("16-byte key", f"{HOST}/devices/dev000001", key16, 3600, None),
        ("64-byte key, one-day ttl", f"{HOST}/devices/dev000002", key64, 86400, None),
        ("hub policy key (skn=device)", f"{HOST}/devices/dev000003", policy_key, 3600, "device"),
        ("registry token: sr=host, skn=registryReadWrite", HOST, registry_key, 3600, "registryReadWrite"),
        ("embedded hub host", "127.0.0.1/devices/dev000000", key32, 60, "device"),
        ("space in device id", f"{HOST}/devices/my device", key32, 3600, None),
        ("hash in device id", f"{HOST}/devices/dev#7", key32, 3600, None),
        ("slash in device id (module-like path)", f"{HOST}/devices/dev/modules/m1", key32, 3600, None),
        ("plus, percent and equals in device id", f"{HOST}/devices/a+b%20c=d", key32, 3600, None),
        ("IoT Hub's allowed punctuation", f"{HOST}/devices/id-_.:@$'()*!,", key32, 3600, "device"),
        ("unicode device id", f"{HOST}/devices/capteur-\u00e9t\u00e9-\u6e29\u5ea6", key64, 3600, None),
        ("long ttl (year 2100)", f"{HOST}/devices/dev999999", key32, 4_102_444_800 - int(NOW), None),
    ]
    out: list[dict[str, Any]] = []
    for name, uri, key, ttl, policy in cases:
        token, expiry = sdk_token(uri, key, ttl, policy)
        out.append({"name": name, "uri": uri, "key": key, "policy": policy, "expiry": expiry, "token": token})
    for device_id in ("dev000000", "dev000123", "sensor 42"):
        device_key = documented_derivation(group_key, device_id)
        token, expiry = sdk_token(f"{HOST}/devices/{device_id}", device_key, 3600, None)
        out.append(
            {
                "name": f"group-derived key for {device_id!r}",
                "uri": f"{HOST}/devices/{device_id}",
                "key": device_key,
                "group_key": group_key,
                "device_id": device_id,
                "policy": None,
                "expiry": expiry,
                "token": token,
            }
        )
    return out


def derived_keys() -> list[dict[str, str]]:
    assert documented_derivation(MS_LEARN_GROUP_KEY, MS_LEARN_REGISTRATION_ID) == MS_LEARN_DEVICE_KEY
    rows = [
        {
            "source": "Microsoft Learn, 'How to provision devices using symmetric key enrollment groups' (example)",
            "group_key": MS_LEARN_GROUP_KEY,
            "device_id": MS_LEARN_REGISTRATION_ID,
            "device_key": MS_LEARN_DEVICE_KEY,
        }
    ]
    group_key = fixed_key("dps-group", 64)
    for device_id in ("dev000000", "dev000123", "sensor 42", "capteur-\u00e9t\u00e9"):
        rows.append(
            {
                "source": "Microsoft's documented formula (stdlib hmac in this recorder)",
                "group_key": group_key,
                "device_id": device_id,
                "device_key": documented_derivation(group_key, device_id),
            }
        )
    return rows


class _RecordingTransport:
    """Stands in for the SDK's MQTTTransport: keeps what the pipeline would connect with."""

    seen: dict[str, Any] = {}  # noqa: RUF012 (one recording at a time)

    def __init__(self, **kwargs: Any) -> None:
        _RecordingTransport.seen = dict(kwargs)

    def connect(self, password: str | None = None) -> None:
        _RecordingTransport.seen["password"] = password

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def client_cases() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    key = fixed_key("device-32", 32)
    for host, device_id in ((HOST, "dev000000"), (HOST, "my device#1"), ("127.0.0.1", "dev000042")):
        with (
            mock.patch.object(pipeline_stages_mqtt, "MQTTTransport", _RecordingTransport),
            mock.patch.object(sastoken, "time", _FakeTime(NOW)),
            mock.patch.multiple(
                user_agent, python_runtime="3.11.7", os_type="Linux", os_release="#1 SMP", architecture="x86_64"
            ),
        ):
            client = IoTHubDeviceClient.create_from_symmetric_key(key, host, device_id, sastoken_ttl=3600)
            seen = dict(_RecordingTransport.seen)
            token = str(client._mqtt_pipeline._nucleus.pipeline_configuration.sastoken)
            client.shutdown()  # stops the SDK's token-renewal alarm (it would fire at once: the clock is pinned)
        out.append(
            {
                "host": host,
                "device_id": device_id,
                "key": key,
                "expiry": int(NOW + 3600),
                "client_id": seen["client_id"],
                "username": seen["username"],
                "password": token,
            }
        )
    return out


def topic_cases() -> list[dict[str, Any]]:
    cases: list[tuple[str, str | None, str | None, dict[str, str]]] = [
        ("dev000000", "application/json", "utf-8", {}),
        ("dev000001", "application/json", "utf-8", {"site": "plant 7", "sum": "a+b", "q": "x&y=z"}),
        ("dev000002", None, None, {"temp": "21.5", "unit": "\u00b0C", "$weird": "100%"}),
        ("dev-3.x", "text/plain; charset=utf-8", None, {"path": "/a/b?c"}),
    ]
    out: list[dict[str, Any]] = []
    for device_id, content_type, content_encoding, properties in cases:
        message = Message("{}", content_encoding=content_encoding, content_type=content_type)
        message.custom_properties.update(properties)
        base = mqtt_topic_iothub.get_telemetry_topic_for_publish(device_id=device_id, module_id=None)
        out.append(
            {
                "device_id": device_id,
                "content_type": content_type,
                "content_encoding": content_encoding,
                "properties": properties,
                "topic": mqtt_topic_iothub.encode_message_properties_in_topic(message, base),
            }
        )
    return out


def main() -> int:
    vectors = {
        "generator": f"azure-iot-device {sdk_constant.VERSION}",
        "recorded_with": "tests/tools/record_iothub_vectors.py (run with .venv-msft/bin/python)",
        "sdk_api_version": sdk_constant.IOTHUB_API_VERSION,
        "sas_tokens": sas_cases(),
        "derived_keys": derived_keys(),
        "clients": client_cases(),
        "telemetry_topics": topic_cases(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(vectors, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(vectors['sas_tokens'])} tokens)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
