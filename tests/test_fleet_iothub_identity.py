"""IoT Hub device identities: client id, user name and a fresh SAS token per connect, from each key source.

Tokens are checked against the recorded vectors of Microsoft's ``azure-iot-device``
(``tests/data/iothub_sas_vectors.json``) and against ``pytest_iotperf.iothub.sas``;
no error message may carry a key or a token.
"""

from __future__ import annotations

import functools
import json
import ssl
from pathlib import Path
from typing import Any

import pytest

from pytest_iotperf.connection import Connection
from pytest_iotperf.fleet.credentials import CredentialRow
from pytest_iotperf.fleet.drop_reason import drop_reason
from pytest_iotperf.fleet.identity import IdentityError, provider_for
from pytest_iotperf.fleet.identity_spec import IdentitySpec, IotHubSpec, KeySource
from pytest_iotperf.fleet.iothub_identity import IotHubIdentity
from pytest_iotperf.fleet.naming import DeviceName
from pytest_iotperf.fleet.spec import FleetSpec
from pytest_iotperf.iothub.sas import derive_device_key, parse_sas_token
from pytest_iotperf.secrets import IOTHUB_CONNECTION_STRING_ENV, IOTHUB_GROUP_KEY_ENV

VECTORS: dict[str, Any] = json.loads((Path(__file__).parent / "data" / "iothub_sas_vectors.json").read_text())
HOST = "iotperf-test.azure-devices.net"
KEY = "88JamVNcB20per5saIg/P+iocU8GI7fk7VsvtZqFPLg="
GROUP_KEY = "qhoXznHhzamEX5cJ/zbEm6lWmhmMpsSBMlGNiX8NKFPhuO6EKRGidnvwinVXAg/fgasUsFbS5AbxQ03AV2OjdQ=="
HUB_POLICY = f"HostName={HOST};SharedAccessKeyName=device;SharedAccessKey={KEY}"


def _spec(
    key_source: KeySource,
    *,
    host: str = HOST,
    ttl_s: float = 3600.0,
    tls: bool = False,
    credentials_file: str | None = None,
    offset: int = 0,
) -> FleetSpec:
    return FleetSpec(
        run_id="r1",
        devices=3,
        rate=1.0,
        duration_s=5.0,
        ramp_up_s=1.0,
        connection=Connection(host, 8883, tls=tls),
        identity=IdentitySpec(
            device_offset=offset,
            credentials_file=credentials_file,
            iothub=IotHubSpec(host=host, key_source=key_source, sas_ttl_s=ttl_s),
        ),
    )


def _secrets_absent(message: str) -> None:
    for secret in (KEY, GROUP_KEY, "SharedAccessSignature", "sig="):
        assert secret not in message


@pytest.mark.parametrize("client", VECTORS["clients"], ids=lambda c: c["device_id"])
def test_a_device_keys_identity_matches_the_sdks_client(client: dict[str, Any]) -> None:
    """Same device, key and expiry as the SDK's recorded client: same client id and password, our user name."""
    ttl_s = 3600.0
    rows = [CredentialRow(line=2, device_id=client["device_id"], sas_key=client["key"])]
    provider = IotHubIdentity(
        _spec("device_keys", host=client["host"], ttl_s=ttl_s, credentials_file="creds.csv"),
        {},
        rows,
        clock=lambda: client["expiry"] - ttl_s + 0.4,  # the expiry is whole seconds, rounded down
    )
    identity = provider.identity_for(DeviceName(0, client["device_id"]))
    assert identity.client_id == client["client_id"]
    assert identity.password == client["password"]
    assert identity.expires_at == client["expiry"]
    # The SDK adds its own api-version and a DeviceClientType; ours is the documented form.
    assert identity.username == f"{client['host']}/{client['device_id']}/?api-version=2021-04-12"


def test_a_hub_policy_token_carries_skn_and_is_signed_with_the_policy_key() -> None:
    provider = IotHubIdentity(_spec("hub_policy"), {IOTHUB_CONNECTION_STRING_ENV: HUB_POLICY}, clock=lambda: 1000.0)
    identity = provider.identity_for(DeviceName(3, "dev000003"))
    assert identity.password is not None
    token = parse_sas_token(identity.password)
    assert token.resource_uri == f"{HOST}/devices/dev000003"
    assert token.policy == "device"
    assert token.expiry == 4600
    assert token.signed_with(KEY)
    assert identity.client_id == "dev000003"
    assert identity.username == f"{HOST}/dev000003/?api-version=2021-04-12"
    assert identity.expires_at == 4600.0


def test_the_recorded_hub_policy_vector() -> None:
    vector = next(v for v in VECTORS["sas_tokens"] if v["name"].startswith("hub policy key"))
    host, _, device_id = vector["uri"].partition("/devices/")
    policy = f"HostName={host};SharedAccessKeyName=device;SharedAccessKey={vector['key']}"
    environ = {IOTHUB_CONNECTION_STRING_ENV: policy}
    provider = IotHubIdentity(_spec("hub_policy", host=host), environ, clock=lambda: vector["expiry"] - 3600.0)
    assert provider.identity_for(DeviceName(3, device_id)).password == vector["token"]


def test_a_group_key_token_has_no_skn_and_is_signed_with_the_derived_key() -> None:
    provider = IotHubIdentity(_spec("group_key"), {IOTHUB_GROUP_KEY_ENV: GROUP_KEY}, clock=lambda: 1000.0)
    identity = provider.identity_for(DeviceName(0, "dev000000"))
    assert identity.password is not None
    token = parse_sas_token(identity.password)
    assert token.policy is None
    recorded = next(r for r in VECTORS["derived_keys"] if r["device_id"] == "dev000000" and r["group_key"] == GROUP_KEY)
    assert token.signed_with(recorded["device_key"])
    assert token.signed_with(derive_device_key(GROUP_KEY, "dev000000"))
    assert not token.signed_with(GROUP_KEY)


def test_the_recorded_group_derived_vectors() -> None:
    for vector in (v for v in VECTORS["sas_tokens"] if v["name"].startswith("group-derived")):
        host, _, device_id = vector["uri"].partition("/devices/")
        derived = next(r for r in VECTORS["derived_keys"] if r["device_key"] == vector["key"])
        issued_at = float(vector["expiry"]) - 3600.0
        provider = IotHubIdentity(
            _spec("group_key", host=host),
            {IOTHUB_GROUP_KEY_ENV: derived["group_key"]},
            clock=functools.partial(float, issued_at),
        )
        assert provider.identity_for(DeviceName(0, device_id)).password == vector["token"], vector["name"]


def test_every_connect_gets_a_fresh_token_valid_for_the_ttl() -> None:
    now = [1000.0]
    provider = IotHubIdentity(
        _spec("hub_policy", ttl_s=5.0), {IOTHUB_CONNECTION_STRING_ENV: HUB_POLICY}, clock=lambda: now[0]
    )
    device = DeviceName(0, "dev000000")
    first = provider.identity_for(device)
    now[0] = 1004.0
    second = provider.identity_for(device)
    assert (first.expires_at, second.expires_at) == (1005.0, 1009.0)
    assert first.password != second.password


def test_derived_keys_are_cached_per_device() -> None:
    provider = IotHubIdentity(_spec("group_key"), {IOTHUB_GROUP_KEY_ENV: GROUP_KEY}, clock=lambda: 1000.0)
    for device_id in ("a", "b", "a"):
        provider.identity_for(DeviceName(0, device_id))
    assert sorted(provider._device_keys) == ["a", "b"]


def test_device_keys_are_read_by_device_number_from_the_offset() -> None:
    rows = [CredentialRow(line=2, sas_key=KEY), CredentialRow(line=3, sas_key=GROUP_KEY[:44])]
    provider = IotHubIdentity(
        _spec("device_keys", credentials_file="creds.csv", offset=10), {}, rows, clock=lambda: 1000.0
    )
    token = parse_sas_token(provider.identity_for(DeviceName(10, "dev000010")).password or "")
    assert token.signed_with(KEY) and token.policy is None
    with pytest.raises(IdentityError) as raised:
        provider.identity_for(DeviceName(12, "dev000012"))
    assert str(raised.value) == "dev000012: no row 3 in creds.csv (2 rows)"


def test_a_row_without_a_key_is_named() -> None:
    rows = [CredentialRow(line=2, device_id="x")]
    provider = IotHubIdentity(_spec("device_keys", credentials_file="creds.csv"), {}, rows)
    with pytest.raises(IdentityError, match=r"^x: row 1 of creds.csv has no key$"):
        provider.identity_for(DeviceName(0, "x"))


@pytest.mark.parametrize(
    ("source", "environ", "expected"),
    [
        ("hub_policy", {}, f"dev000001: ${IOTHUB_CONNECTION_STRING_ENV} is not set in this worker's environment"),
        (
            "group_key",
            {IOTHUB_GROUP_KEY_ENV: " "},
            f"dev000001: ${IOTHUB_GROUP_KEY_ENV} is not set in this worker's environment",
        ),
        (
            "hub_policy",
            {IOTHUB_CONNECTION_STRING_ENV: HUB_POLICY.replace(HOST, "other-hub.azure-devices.net")},
            f"dev000001: ${IOTHUB_CONNECTION_STRING_ENV} is for the hub other-hub.azure-devices.net, "
            f"but the devices connect to {HOST}",
        ),
        (
            "hub_policy",
            {IOTHUB_CONNECTION_STRING_ENV: f"HostName={HOST};DeviceId=d;SharedAccessKey={KEY}"},
            f"dev000001: ${IOTHUB_CONNECTION_STRING_ENV} is a device's connection string, not a hub policy's "
            "(SharedAccessKeyName)",
        ),
        ("hub_policy", {IOTHUB_CONNECTION_STRING_ENV: f"SharedAccessKey={KEY}"}, None),
        ("hub_policy", {IOTHUB_CONNECTION_STRING_ENV: HUB_POLICY.replace(KEY, "not base64!")}, None),
        ("group_key", {IOTHUB_GROUP_KEY_ENV: "not base64!"}, None),
    ],
)
def test_an_unusable_key_fails_each_connect_naming_the_device_and_variable_never_the_key(
    source: KeySource, environ: dict[str, str], expected: str | None
) -> None:
    provider = IotHubIdentity(_spec(source), environ)  # never raises here: a worker must not crash on it
    with pytest.raises(IdentityError) as raised:
        provider.identity_for(DeviceName(1, "dev000001"))
    message = str(raised.value)
    if expected is not None:
        assert message == expected
    assert message.startswith("dev000001: ")
    assert "IOTPERF_IOTHUB_" in message
    _secrets_absent(message)
    assert "not base64!" not in message


def test_a_port_in_the_connection_strings_host_is_not_a_different_hub() -> None:
    environ = {IOTHUB_CONNECTION_STRING_ENV: HUB_POLICY.replace(HOST, "127.0.0.1:8883")}
    provider = IotHubIdentity(_spec("hub_policy", host="127.0.0.1"), environ, clock=lambda: 1000.0)
    assert provider.identity_for(DeviceName(0, "d")).username == "127.0.0.1/d/?api-version=2021-04-12"


def test_one_tls_context_for_every_device() -> None:
    provider = IotHubIdentity(_spec("hub_policy", tls=True), {IOTHUB_CONNECTION_STRING_ENV: HUB_POLICY})
    contexts = {id(provider.identity_for(DeviceName(n, f"d{n}")).ssl_context) for n in range(3)}
    assert len(contexts) == 1
    context = provider.identity_for(DeviceName(0, "d0")).ssl_context
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED


def test_identities_keep_keys_and_tokens_out_of_repr() -> None:
    provider = IotHubIdentity(_spec("hub_policy"), {IOTHUB_CONNECTION_STRING_ENV: HUB_POLICY})
    _secrets_absent(repr(provider.identity_for(DeviceName(0, "d"))))
    _secrets_absent(repr(provider.__dict__.get("hub")))


def test_provider_for_picks_iothub_identities() -> None:
    provider = provider_for(_spec("hub_policy"), {IOTHUB_CONNECTION_STRING_ENV: HUB_POLICY})
    assert isinstance(provider, IotHubIdentity)


# -- why a connection dropped --------------------------------------------------------------------------------------


CLOSED = "connection closed by the broker"
RESET = "ConnectionResetError: Connection reset by peer"


@pytest.mark.parametrize(
    ("lost", "paho", "expires_at", "now", "expected"),
    [
        # IoT Hub closes the connection when the token expires (401003): put down to the expiry.
        (CLOSED, "Unspecified error", 1000.0, 1000.2, f"{CLOSED} at token expiry"),
        (CLOSED, "Unspecified error", 1000.0, 999.5, f"{CLOSED} at token expiry"),
        # A throttled hub closes connections long before expiry: just a close.
        (CLOSED, "Unspecified error", 1000.0, 900.0, CLOSED),
        (RESET, "Unspecified error", None, 5.0, RESET),
        (None, "Unspecified error", None, 5.0, "connection lost"),
        (None, "Keep alive timeout", 1000.0, 1001.0, "Keep alive timeout at token expiry"),
    ],
)
def test_drop_reasons_say_when_the_token_had_expired(
    lost: str | None, paho: str, expires_at: float | None, now: float, expected: str
) -> None:
    assert drop_reason(lost, paho, expires_at, now) == expected
