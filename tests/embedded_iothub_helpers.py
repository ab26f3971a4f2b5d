"""Helpers for the embedded IoT Hub tests: a paho device that connects as IoT Hub wants, tokens, HTTPS calls.

A uniquely named module in tests/ (imported by bare name, like eventhub_helpers).
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from pytest_iotperf.embedded.iothub import EmbeddedIotHub
from pytest_iotperf.iothub.connection_string import parse_iothub_connection_string
from pytest_iotperf.iothub.naming import API_VERSION, username_for
from pytest_iotperf.iothub.sas import derive_device_key, device_resource_uri, make_sas_token

NOT_AUTHORIZED = 135  # paho's reason code for MQTT 3.1.1 CONNACK 5


def policy_token(hub: EmbeddedIotHub, device_id: str, ttl: float = 300, uri: str | None = None) -> str:
    """A token signed with the hub's ``device`` policy key (carries skn)."""
    parsed = parse_iothub_connection_string(hub.hub_connection_string)
    resource = uri if uri is not None else device_resource_uri(parsed.host, device_id)
    return make_sas_token(resource, parsed.key, int(time.time() + ttl), parsed.policy)


def device_token(hub: EmbeddedIotHub, device_id: str, key: str | None = None, ttl: float = 300) -> str:
    """A token without skn, signed with ``key`` (default: the group-derived device key)."""
    key = key or derive_device_key(hub.group_key, device_id)
    return make_sas_token(device_resource_uri(hub.host, device_id), key, int(time.time() + ttl))


def connect_packet(client_id: str, username: str, password: str, keepalive: int = 60) -> bytes:
    """An MQTT 3.1.1 CONNECT with clean session, user name and password (for bare-socket tests)."""

    def field(text: str) -> bytes:
        data = text.encode()
        return len(data).to_bytes(2, "big") + data

    body = field("MQTT") + bytes((4, 0xC2)) + keepalive.to_bytes(2, "big")
    body += field(client_id) + field(username) + field(password)
    length = bytearray()
    size = len(body)
    while True:
        byte, size = size & 0x7F, size >> 7
        length.append(byte | 0x80 if size else byte)
        if not size:
            return b"\x10" + bytes(length) + body


class Device:
    """A paho MQTT 3.1.1 client over TLS to the hub; records its CONNACK and its disconnect."""

    def __init__(
        self,
        hub: EmbeddedIotHub,
        device_id: str,
        password: str | None,
        *,
        username: str | None = None,
        client_id: str | None = None,
        cert: tuple[str, str] | None = None,
    ) -> None:
        # No reconnect: a connection the hub closes stays closed (and loop_stop returns at once).
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or device_id,
            protocol=mqtt.MQTTv311,
            reconnect_on_failure=False,
        )
        self.client.username_pw_set(username or username_for(hub.host, device_id), password)
        certfile, keyfile = cert if cert else (None, None)
        self.client.tls_set(ca_certs=hub.ca_file, certfile=certfile, keyfile=keyfile)
        self.connack = threading.Event()
        self.gone = threading.Event()
        self.reason: int | None = None
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self._hub = hub

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.reason = int(reason.value)
        self.connack.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, _reason: Any, _p: Any) -> None:
        self.gone.set()

    def connect(self, timeout: float = 10) -> int:
        """Connect and return the CONNACK reason (0 accepted, 135 not authorized)."""
        self.client.connect("127.0.0.1", self._hub.port, keepalive=30)
        self.client.loop_start()
        assert self.connack.wait(timeout), "no CONNACK"
        assert self.reason is not None
        return self.reason

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=qos)

    def send(self, topic: str, payload: bytes, timeout: float = 5) -> bool:
        """Publish at QoS 1; whether the PUBACK came within ``timeout``."""
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout)
        return info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def registry_call(
    hub: EmbeddedIotHub,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = None,
) -> tuple[int, dict[str, str], Any]:
    """One HTTPS call to the registry; returns (status, headers, JSON body or None)."""
    if token is None:
        parsed = parse_iothub_connection_string(hub.registry_connection_string)
        host = parsed.host.partition(":")[0]  # signed for the host; the HostName carries the registry's port
        token = make_sas_token(host, parsed.key, int(time.time() + 300), parsed.policy)
    context = ssl.create_default_context(cafile=hub.ca_file)
    connection = http.client.HTTPSConnection("127.0.0.1", hub.registry_port, context=context, timeout=10)
    separator = "&" if "?" in path else "?"
    headers = {"Authorization": token, "Content-Type": "application/json"}
    data = None if body is None else json.dumps(body).encode()
    try:
        connection.request(method, f"{path}{separator}api-version={API_VERSION}", body=data, headers=headers)
        response = connection.getresponse()
        raw = response.read()
        return response.status, dict(response.getheaders()), json.loads(raw) if raw else None
    finally:
        connection.close()
