"""The embedded IoT Hub's registry over HTTPS: bulk create/delete, idempotence, GET, 401 and test throttling."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from embedded_iothub_helpers import NOT_AUTHORIZED, Device, device_token, registry_call

from pytest_iotperf.embedded.iothub import EmbeddedIotHub, HubOptions
from pytest_iotperf.iothub.sas import make_sas_token


@pytest.fixture
def hub() -> Iterator[EmbeddedIotHub]:
    with EmbeddedIotHub(HubOptions(partitions=1)) as server:
        yield server


def _items(ids: list[str], mode: str) -> list[dict[str, object]]:
    return [{"id": i, "importMode": mode, "authentication": {"type": "sas"}} for i in ids]


def test_bulk_create_get_delete_is_idempotent(hub: EmbeddedIotHub) -> None:
    ids = [f"dev{n:06d}" for n in range(3)]
    status, _, body = registry_call(hub, "POST", "/devices", _items(ids, "create"))
    assert status == 200 and body == {"isSuccessful": True, "errors": [], "warnings": []}
    status, _, body = registry_call(hub, "POST", "/devices", _items([*ids, "dev000003"], "create"))
    assert status == 200 and body["isSuccessful"] is False
    assert [(e["deviceId"], e["errorCode"]) for e in body["errors"]] == [(i, "DeviceAlreadyExists") for i in ids]
    status, _, device = registry_call(hub, "GET", "/devices/dev000001")
    assert status == 200 and device["deviceId"] == "dev000001"
    key = device["authentication"]["symmetricKey"]["primaryKey"]
    assert key and device["authentication"]["type"] == "sas"
    # The registered key is the device's: a token signed with it connects.
    client = Device(hub, "dev000001", device_token(hub, "dev000001", key=key))
    try:
        assert client.connect() == 0
    finally:
        client.close()
    status, _, body = registry_call(hub, "POST", "/devices", _items(["dev000001", "dev000099"], "delete"))
    assert status == 200
    assert [(e["deviceId"], e["errorCode"]) for e in body["errors"]] == [("dev000099", "DeviceNotFound")]
    assert registry_call(hub, "GET", "/devices/dev000001")[0] == 404
    assert hub.stats()["registry_devices"] == 3  # dev000000, dev000002, dev000003


def test_more_than_100_devices_in_one_call_is_refused(hub: EmbeddedIotHub) -> None:
    status, _, body = registry_call(hub, "POST", "/devices", _items([f"d{n}" for n in range(101)], "create"))
    assert status == 400 and "TooManyDevices" in body["Message"]
    assert hub.stats()["registry_devices"] == 0


def test_calls_without_a_valid_registry_token_get_401(hub: EmbeddedIotHub) -> None:
    device_policy = hub.hub_connection_string.split("SharedAccessKey=")[1]
    wrong_policy = make_sas_token(hub.host, device_policy, int(time.time()) + 60, "device")
    expired = make_sas_token(hub.host, hub.keys.registry_key, int(time.time()) - 60, "registryReadWrite")
    for token in ("", "Bearer abc", wrong_policy, expired):
        status, _, body = registry_call(hub, "POST", "/devices", _items(["dev000000"], "create"), token=token)
        assert status == 401, token
        assert "IotHubUnauthorizedAccess" in body["Message"]
        assert hub.keys.registry_key not in body["Message"]
    assert hub.stats()["registry_devices"] == 0


def test_throttled_calls_get_429_with_retry_after_then_succeed() -> None:
    with EmbeddedIotHub(HubOptions(partitions=1, throttle_registry=2)) as hub:
        for _ in range(2):
            status, headers, _ = registry_call(hub, "POST", "/devices", _items(["dev000000"], "create"))
            assert status == 429 and headers["Retry-After"] == "1"
        status, _, body = registry_call(hub, "POST", "/devices", _items(["dev000000"], "create"))
        assert status == 200 and body["isSuccessful"]
        assert hub.stats()["registry_throttled"] == 2


def test_unknown_devices_are_refused_once_the_registry_holds_devices(hub: EmbeddedIotHub) -> None:
    assert registry_call(hub, "POST", "/devices", _items(["dev000000"], "create"))[0] == 200
    stranger = Device(hub, "dev000005", device_token(hub, "dev000005"))
    try:
        assert stranger.connect() == NOT_AUTHORIZED
    finally:
        stranger.close()
    # Deleted again: an empty registry accepts any device id (group key).
    assert registry_call(hub, "POST", "/devices", _items(["dev000000"], "delete"))[0] == 200
    again = Device(hub, "dev000005", device_token(hub, "dev000005"))
    try:
        assert again.connect() == 0
    finally:
        again.close()
