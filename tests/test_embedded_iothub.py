"""The embedded IoT Hub's device surface: real TLS, paho devices, the azure-eventhub SDK reading the endpoint."""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from embedded_iothub_helpers import NOT_AUTHORIZED, Device, connect_packet, device_token, policy_token
from eventhub_helpers import collect

from pytest_iotperf.embedded.eventhub.partition_key import partition_for_key
from pytest_iotperf.embedded.iothub import EmbeddedIotHub, HubOptions, make_ca, make_device_certificates
from pytest_iotperf.iothub.naming import telemetry_topic, username_for
from pytest_iotperf.iothub.sas import make_sas_token


@pytest.fixture
def hub() -> Iterator[EmbeddedIotHub]:
    with EmbeddedIotHub(HubOptions(hub="telemetry", partitions=2)) as server:
        yield server


@pytest.fixture(scope="module")
def shared_hub() -> Iterator[EmbeddedIotHub]:
    """One hub for the tests that only get refused (they change nothing but counters)."""
    with EmbeddedIotHub(HubOptions(hub="telemetry", partitions=1)) as server:
        yield server


def _wait(condition: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.fleet  # an Event Hubs SDK client
def test_good_token_message_arrives_through_the_sdk_with_iothub_annotations(hub: EmbeddedIotHub) -> None:
    device_id = "dev000007"
    device = Device(hub, device_id, policy_token(hub, device_id))
    assert device.connect() == 0
    topic = telemetry_topic(device_id, [("colour", "red & blue"), ("n", "7")])
    before = int(time.time() * 1000) - 1000
    assert device.send(topic, b'{"temperature": 21.5}')
    device.close()
    partition = str(partition_for_key(device_id, 2))
    (event,) = collect(hub.eventhub_connection_string, partition, 1, timeout=20)
    system = event.system_properties
    assert system[b"iothub-connection-device-id"] == device_id.encode()
    assert system[b"iothub-message-source"] == b"Telemetry"
    assert system[b"iothub-enqueuedtime"] >= before
    assert system[b"content-type"] == b"application/json" and system[b"content-encoding"] == b"utf-8"
    assert event.content_type == "application/json"
    assert event.properties == {b"colour": b"red & blue", b"n": b"7"}
    assert event.body_as_str() == '{"temperature": 21.5}'
    assert hub.stats()["messages"] == 1


def test_group_key_token_and_qos0_are_accepted(hub: EmbeddedIotHub) -> None:
    device = Device(hub, "dev000001", device_token(hub, "dev000001"))
    assert device.connect() == 0
    device.publish(telemetry_topic("dev000001"), b"{}", qos=0)
    assert _wait(lambda: hub.stats()["messages"] == 1)
    device.close()


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("wrong key", "bad signature"),
        ("expired", "token expired"),
        ("wrong sr", "wrong resource"),
        ("bad username", "bad username"),
        ("wrong host", "wrong host"),
        ("no password", "no credentials"),
    ],
)
def test_bad_credentials_get_connack_5_naming_the_device_not_the_key(
    shared_hub: EmbeddedIotHub, case: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    hub = shared_hub
    device_id = f"dev-{case.replace(' ', '-')}"
    password: str | None = policy_token(hub, device_id)
    username = None
    secret = "c2VjcmV0LWtleS10aGF0LWlzLXdyb25nLTEyMzQ1Njc4"
    if case == "wrong key":
        password = make_sas_token(f"{hub.host}/devices/{device_id}", secret, int(time.time()) + 300, "device")
    elif case == "expired":
        password = policy_token(hub, device_id, ttl=-10)
    elif case == "wrong sr":
        password = policy_token(hub, device_id, uri=f"{hub.host}/devices/someone-else")
    elif case == "bad username":
        username = f"{hub.host}/{device_id}"  # no /?api-version=
    elif case == "wrong host":
        username = f"other.azure-devices.net/{device_id}/?api-version=2021-04-12"
    elif case == "no password":
        password = None
    caplog.set_level(logging.INFO, logger="pytest_iotperf.embedded.iothub")
    device = Device(hub, device_id, password, username=username)
    try:
        assert device.connect() == NOT_AUTHORIZED
    finally:
        device.close()
    stats = hub.stats()
    assert stats["refusals"].get(reason, 0) >= 1
    said = [line for line in stats["recent_refusals"] if line.startswith(f"{device_id}:")]
    assert said, stats["recent_refusals"]
    logged = caplog.text
    assert device_id in logged
    for text in (*said, logged):
        assert secret not in text and hub.keys.device_policy_key not in text
        assert "sig=" not in text and (password is None or password not in text)


def test_sdk_style_username_with_device_client_type_is_accepted(shared_hub: EmbeddedIotHub) -> None:
    hub = shared_hub
    username = f"{hub.host}/dev-sdk/?api-version=2019-10-01&DeviceClientType=azure-iot-device-python%2F2.14.0"
    device = Device(hub, "dev-sdk", policy_token(hub, "dev-sdk"), username=username)
    try:
        assert device.connect() == 0
    finally:
        device.close()


@pytest.mark.parametrize("violation", ["qos 2", "foreign topic"])
def test_qos2_or_another_devices_topic_closes_the_connection(hub: EmbeddedIotHub, violation: str) -> None:
    device = Device(hub, "dev000001", policy_token(hub, "dev000001"))
    assert device.connect() == 0
    if violation == "qos 2":
        device.publish(telemetry_topic("dev000001"), b"{}", qos=2)
    else:
        device.publish(telemetry_topic("dev000002"), b"{}", qos=1)
    assert device.gone.wait(5), "the hub kept the connection"
    device.close()
    disconnects = hub.stats()["disconnects"]
    expected = "QoS 2 publish" if violation == "qos 2" else "publish to another device's topic"
    assert disconnects.get(expected) == 1, disconnects
    assert hub.stats()["messages"] == 0


def test_second_connection_with_the_same_device_id_drops_the_first(hub: EmbeddedIotHub) -> None:
    first = Device(hub, "dev000003", policy_token(hub, "dev000003"))
    second = Device(hub, "dev000003", policy_token(hub, "dev000003"))
    assert first.connect() == 0
    assert second.connect() == 0
    assert first.gone.wait(5)
    assert not second.gone.is_set()
    assert second.send(telemetry_topic("dev000003"), b"{}")
    stats = hub.stats()
    assert stats["disconnects"] == {"another connection with the same device id": 1}
    assert stats["connected"] == 1
    first.close()
    second.close()


def test_connection_closes_when_its_token_expires(hub: EmbeddedIotHub) -> None:
    device = Device(hub, "dev000004", policy_token(hub, "dev000004", ttl=1.5))
    assert device.connect() == 0
    assert not device.gone.wait(0.3)
    assert device.gone.wait(5), "still connected after the token expired"
    device.close()
    assert hub.stats()["disconnects"] == {"SAS token expired": 1}


def test_registered_devices_only_once_the_registry_holds_any(hub: EmbeddedIotHub) -> None:
    hub.create_devices(["dev000010"])
    key = hub.call(lambda: hub.server.registry.devices["dev000010"].primary_key)
    known = Device(hub, "dev000010", device_token(hub, "dev000010", key=key))
    unknown = Device(hub, "dev000011", policy_token(hub, "dev000011"))
    try:
        assert known.connect() == 0
        assert unknown.connect() == NOT_AUTHORIZED
    finally:
        known.close()
        unknown.close()
    assert hub.stats()["refusals"] == {"unknown device": 1}


def test_x509_device_certificate_connects_without_a_token(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca", "device CA")
    certs = {c.device_id: c for c in make_device_certificates(tmp_path / "devices", ca, ["dev000020", "dev000021"])}
    with EmbeddedIotHub(HubOptions(partitions=1, device_ca=ca.cert_file)) as hub:
        own = certs["dev000020"]
        device = Device(hub, "dev000020", None, cert=(own.cert_file, own.key_file))
        other = certs["dev000021"]
        impostor = Device(hub, "dev000020", None, cert=(other.cert_file, other.key_file))
        plain = Device(hub, "dev000022", policy_token(hub, "dev000022"))  # a SAS device on the same port
        try:
            assert device.connect() == 0
            assert device.send(telemetry_topic("dev000020"), b"{}")
            assert plain.connect() == 0
            assert impostor.connect() == NOT_AUTHORIZED
        finally:
            for client in (device, impostor, plain):
                client.close()
        assert hub.stats()["refusals"] == {"certificate mismatch": 1}


def _raw_device(hub: EmbeddedIotHub, device_id: str) -> ssl.SSLSocket:
    """A bare TLS socket that has sent CONNECT (policy token) and read CONNACK 0."""
    context = ssl.create_default_context(cafile=hub.ca_file)
    tls = context.wrap_socket(socket.create_connection(("127.0.0.1", hub.port), timeout=5), server_hostname="127.0.0.1")
    tls.sendall(connect_packet(device_id, username_for(hub.host, device_id), policy_token(hub, device_id)))
    assert _read(tls, 4) == b"\x20\x02\x00\x00"
    return tls


def _read(tls: ssl.SSLSocket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = tls.recv(size - len(data))
        assert chunk, "the hub closed the connection"
        data += chunk
    return data


def test_ping_subscribe_unsubscribe_and_disconnect_on_the_wire(hub: EmbeddedIotHub) -> None:
    tls = _raw_device(hub, "dev000030")
    tls.sendall(b"\xc0\x00")
    assert _read(tls, 2) == b"\xd0\x00"
    own = b"devices/dev000030/messages/devicebound/#"
    other = b"devices/dev000031/messages/devicebound/#"
    body = b"\x00\x05" + len(own).to_bytes(2, "big") + own + b"\x01" + len(other).to_bytes(2, "big") + other + b"\x01"
    tls.sendall(bytes((0x82, len(body))) + body)
    assert _read(tls, 6) == b"\x90\x04\x00\x05\x01\x80"  # own topic granted at QoS 1, another device's refused
    unsubscribe = b"\x00\x06" + len(own).to_bytes(2, "big") + own
    tls.sendall(bytes((0xA2, len(unsubscribe))) + unsubscribe)
    assert _read(tls, 4) == b"\xb0\x02\x00\x06"
    tls.sendall(b"\xe0\x00")
    assert tls.recv(10) == b""
    tls.close()
    assert _wait(lambda: hub.stats()["disconnects"] == {"disconnected by the device": 1})
