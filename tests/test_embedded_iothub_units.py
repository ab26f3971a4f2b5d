"""Pure parts of the embedded IoT Hub: CONNECT checks, the built-in endpoint's encoding, the fast transfer frame."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pytest_iotperf.embedded.eventhub import frames as F
from pytest_iotperf.embedded.eventhub.codec import Described, Symbol, Timestamp, UInt, decode_value
from pytest_iotperf.embedded.eventhub.hub import EventHub
from pytest_iotperf.embedded.iothub.auth import HubKeys, Refused, admit, check_registry_token
from pytest_iotperf.embedded.iothub.certs import make_ca, make_device_certificates
from pytest_iotperf.embedded.iothub.endpoint import BuiltInEndpoint, auth_method, encode_sections
from pytest_iotperf.embedded.iothub.registry import Registry
from pytest_iotperf.iothub.naming import username_for
from pytest_iotperf.iothub.sas import derive_device_key, make_sas_token

KEYS = HubKeys(host="127.0.0.1")
NOW = time.time()
USER = "127.0.0.1/d1/?api-version=2021-04-12"


def _token(device_id: str, key: str, policy: str | None = None, ttl: int = 60) -> bytes:
    return make_sas_token(f"127.0.0.1/devices/{device_id}", key, int(NOW) + ttl, policy).encode()


def test_admit_accepts_policy_group_and_registered_keys() -> None:
    registry = Registry()
    user = username_for("127.0.0.1", "d1")
    assert admit(KEYS, registry, "d1", user, _token("d1", KEYS.device_policy_key, "device"), None, NOW).method == (
        "policy"
    )
    group = derive_device_key(KEYS.group_key, "d1")
    admission = admit(KEYS, registry, "d1", user, _token("d1", group), None, NOW)
    assert admission.method == "sas" and admission.expires_at == int(NOW) + 60
    registry.create("d1")
    own = registry.devices["d1"].primary_key
    assert admit(KEYS, registry, "d1", user, _token("d1", own), None, NOW).method == "sas"
    assert admit(KEYS, registry, "d1", user, None, "d1", NOW).method == "x509"


@pytest.mark.parametrize(
    ("client_id", "username", "password", "reason"),
    [
        ("d1", None, None, "bad username"),
        ("d1", "127.0.0.1/d2/?api-version=2021-04-12", None, "client id mismatch"),
        ("d1", USER, b"not a token", "malformed token"),
        ("d1", USER, _token("d1", KEYS.registry_key, "registryReadWrite"), "unknown policy"),
        ("d1", USER, _token("d1", KEYS.registry_key), "bad signature"),
        ("", USER, None, "bad client id"),
    ],
)
def test_admit_refusals_name_the_device_and_never_the_key(
    client_id: str, username: str | None, password: bytes | None, reason: str
) -> None:
    with pytest.raises(Refused) as caught:
        admit(KEYS, Registry(), client_id, username, password, None, NOW)
    assert caught.value.reason == reason
    assert caught.value.detail.startswith(f"{client_id or '(no client id)'}:")
    for secret in (KEYS.device_policy_key, KEYS.registry_key, KEYS.group_key):
        assert secret not in caught.value.detail


def test_registry_token_check() -> None:
    good = make_sas_token("127.0.0.1", KEYS.registry_key, int(NOW) + 60, "registryReadWrite")
    assert check_registry_token(KEYS, good, NOW) is None
    assert check_registry_token(KEYS, None, NOW) == "no Authorization header"
    device = make_sas_token("127.0.0.1", KEYS.device_policy_key, int(NOW) + 60, "device")
    assert "policy" in (check_registry_token(KEYS, device, NOW) or "")


def test_endpoint_message_decodes_to_iothub_annotations_and_properties() -> None:
    hub = EventHub("h", 2)
    endpoint = BuiltInEndpoint(hub)
    route = endpoint.route("dev000001", auth_method("sas"))
    sections = encode_sections({"$.ct": "application/json", "$.ce": "utf-8", "$.mid": "m1"}, {"k": "v w"})
    endpoint.append(route, sections, b'{"a":1}', 1_700_000_000_000)
    endpoint.append(route, sections, b"x" * 300, 1_600_000_000_000)  # a clock step back: times never go back
    partition = route.partition
    assert [e.sequence_number for e in partition.events] == [0, 1]
    assert partition.events[1].offset == len(partition.events[0].tail)
    pos, parsed = 0, []
    tail = partition.events[1].tail
    while pos < len(tail):
        value, pos = decode_value(tail, pos)
        parsed.append(value)
    annotations, properties, application, data = (v.value for v in parsed if isinstance(v, Described))
    assert annotations[Symbol("iothub-connection-device-id")] == "dev000001"
    assert annotations[Symbol("iothub-message-source")] == "Telemetry"
    assert annotations[Symbol("iothub-enqueuedtime")] == Timestamp(1_700_000_000_000)
    assert annotations[Symbol("x-opt-enqueued-time")] == Timestamp(1_700_000_000_000)
    assert annotations[Symbol("x-opt-sequence-number")] == 1
    assert annotations[Symbol("x-opt-offset")] == str(partition.events[1].offset)
    assert properties[0] == "m1" and properties[6] == Symbol("application/json") and properties[7] == "utf-8"
    assert application == {"k": "v w"}
    assert data == b"x" * 300


@pytest.mark.parametrize(("handle", "delivery_id"), [(0, 0), (1, 5), (3, 255), (2, 256), (300, 70000)])
def test_fast_transfer_frame_is_byte_identical_to_the_generic_encoder(handle: int, delivery_id: int) -> None:
    tag = delivery_id.to_bytes(8, "big")
    generic = F.encode_frame(7, F.TRANSFER, [UInt(handle), UInt(delivery_id), tag, UInt(0), True, False], b"body")
    assert F.single_transfer_frame(7, handle, delivery_id, tag, b"body") == generic


def test_device_certificates_are_made_fast_and_named_for_templates(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    started = time.monotonic()
    made = make_device_certificates(tmp_path / "devices", ca, [f"dev{n:06d}" for n in range(50)])
    assert time.monotonic() - started < 5
    assert [Path(m.cert_file).name for m in made[:2]] == ["dev000000.pem", "dev000001.pem"]
    assert Path(made[0].key_file).stat().st_mode & 0o077 == 0
