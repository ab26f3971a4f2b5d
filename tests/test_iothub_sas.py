"""SAS tokens checked byte for byte against Microsoft's device SDK.

The vectors (tests/data/iothub_sas_vectors.json) are recorded by tests/tools/record_iothub_vectors.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_iotperf.iothub.sas import (
    SasError,
    derive_device_key,
    device_resource_uri,
    make_sas_token,
    parse_sas_token,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "iothub_sas_vectors.json").read_text(encoding="utf-8")
)
TOKENS: list[dict[str, Any]] = VECTORS["sas_tokens"]
OTHER_KEY = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


@pytest.mark.parametrize("vector", TOKENS, ids=[v["name"] for v in TOKENS])
def test_token_matches_the_sdk_byte_for_byte(vector: dict[str, Any]) -> None:
    assert make_sas_token(vector["uri"], vector["key"], vector["expiry"], vector["policy"]) == vector["token"]


@pytest.mark.parametrize("vector", TOKENS, ids=[v["name"] for v in TOKENS])
def test_parse_round_trips_and_checks_the_signer(vector: dict[str, Any]) -> None:
    token = parse_sas_token(vector["token"])
    assert (token.resource_uri, token.expiry, token.policy) == (vector["uri"], vector["expiry"], vector["policy"])
    assert token.signed_with(vector["key"])
    assert not token.signed_with(OTHER_KEY)
    assert vector["key"] not in repr(token) and token.signature not in repr(token)


def test_the_sdk_clients_password_is_our_device_token() -> None:
    """What IoTHubDeviceClient.create_from_symmetric_key connects with (host + device id, own key, no skn)."""
    for client in VECTORS["clients"]:
        uri = device_resource_uri(client["host"], client["device_id"])
        assert make_sas_token(uri, client["key"], client["expiry"]) == client["password"]
        assert client["client_id"] == client["device_id"]


@pytest.mark.parametrize("row", VECTORS["derived_keys"], ids=lambda row: row["device_id"])
def test_derive_device_key(row: dict[str, str]) -> None:
    assert derive_device_key(row["group_key"], row["device_id"]) == row["device_key"]


def test_group_derived_tokens_match_the_sdk() -> None:
    derived = [v for v in TOKENS if "group_key" in v]
    assert derived
    for vector in derived:
        key = derive_device_key(vector["group_key"], vector["device_id"])
        uri = device_resource_uri("iotperf-test.azure-devices.net", vector["device_id"])
        assert make_sas_token(uri, key, vector["expiry"]) == vector["token"]
        assert not parse_sas_token(vector["token"]).signed_with(vector["group_key"])


def test_fields_in_any_order() -> None:
    vector = next(v for v in TOKENS if v["policy"])
    fields = vector["token"].removeprefix("SharedAccessSignature ").split("&")
    shuffled = "SharedAccessSignature " + "&".join(reversed(fields))
    token = parse_sas_token(shuffled)
    assert token.signed_with(vector["key"]) and token.policy == vector["policy"]


def test_a_changed_expiry_or_resource_breaks_the_signature() -> None:
    vector = TOKENS[0]
    later = vector["token"].replace(f"se={vector['expiry']}", f"se={vector['expiry'] + 1}")
    assert not parse_sas_token(later).signed_with(vector["key"])
    other = vector["token"].replace("dev000000", "dev000009")
    assert not parse_sas_token(other).signed_with(vector["key"])


@pytest.mark.parametrize(
    "text",
    [
        "sr=a&sig=b&se=1",  # no prefix
        "SharedAccessSignature sr=a&se=1",  # no sig
        "SharedAccessSignature sr=a&sig=SECRETSIG&se=soon",  # se not a number
        "SharedAccessSignature sr=a&sig=SECRETSIG&sig=SECRETSIG&se=1",  # repeated
        "SharedAccessSignature sr=a&SECRETSIG&se=1",  # no '='
    ],
)
def test_parse_errors_never_repeat_the_signature(text: str) -> None:
    with pytest.raises(SasError) as caught:
        parse_sas_token(text)
    assert "SECRETSIG" not in str(caught.value)


@pytest.mark.parametrize("bad_key", ["not base64 SECRETKEY!", "SECRETKEY=="])
def test_a_malformed_key_is_named_but_never_shown(bad_key: str) -> None:
    for call in (
        lambda: make_sas_token("h/devices/d", bad_key, 1),
        lambda: derive_device_key(bad_key, "d"),
        lambda: parse_sas_token(TOKENS[0]["token"]).signed_with(bad_key),
    ):
        with pytest.raises(SasError, match="not valid base64") as caught:
            call()
        assert "SECRETKEY" not in str(caught.value)
        assert caught.value.__cause__ is None and caught.value.__suppress_context__
