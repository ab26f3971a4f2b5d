"""One Connection value serialised into every child's spec, one client factory, one identity provider."""

from __future__ import annotations

import json
import socket

import pytest
from paho.mqtt import client as mqtt

from pytest_iotperf.bridge.spec import BridgeSpec
from pytest_iotperf.broker_endpoint import BrokerEndpoint
from pytest_iotperf.config import resolve
from pytest_iotperf.connection import Connection
from pytest_iotperf.fleet.identity import TemplatedIdentity
from pytest_iotperf.fleet.naming import DeviceName
from pytest_iotperf.fleet.spec import FleetSpec
from pytest_iotperf.mqtt_client import ClientIdentity, make_client, shared_identity
from pytest_iotperf.mqtt_options import MqttClientOptions
from pytest_iotperf.readback import MqttReadback
from pytest_iotperf.runner import PerfRun
from pytest_iotperf.secrets import MQTT_PASSWORD_ENV

PASSWORD = "pw-5e0c-never-in-a-spec"


def _tls_connection() -> Connection:
    return Connection("127.0.0.1", 8883, tls=True, options=MqttClientOptions(username="fleet", insecure=True), qos=0)


def test_connection_round_trips_through_json() -> None:
    connection = _tls_connection()
    assert Connection.from_dict(json.loads(json.dumps(connection.to_dict()))) == connection
    assert connection.address == "127.0.0.1:8883"
    assert Connection("::1", 1883).address == "[::1]:1883"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"protocol_version": "3.1"}, "3.1.1 or 5"),
        ({"transport": "quic"}, "tcp or websockets"),
        ({"ws_path": "mqtt"}, "must start with /"),
        ({"qos": 3}, "qos"),
    ],
)
def test_connection_refuses_what_is_not_supported(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Connection.from_dict({"host": "h", "port": 1, **change})


def test_one_connection_in_every_spec_and_no_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MQTT_PASSWORD_ENV, PASSWORD)
    settings = resolve({"username": "fleet", "qos": "0"}, {}, {}).for_run({"devices": 3})
    run = PerfRun(settings, BrokerEndpoint.external("mqtts://broker.example:8884"))
    expected = Connection(
        "broker.example", 8884, tls=True, options=MqttClientOptions(username="fleet"), qos=0, keepalive_s=60
    )
    assert run.connection == expected
    fleet_json = run.fleet_spec.to_json()
    assert FleetSpec.from_json(fleet_json) == run.fleet_spec
    assert FleetSpec.from_json(fleet_json).connection == expected
    sink_spec = json.dumps(MqttReadback(settings, run.connection, run.run_id, 1).spec)
    assert Connection.from_dict(json.loads(sink_spec)["connection"]) == expected
    for text in (fleet_json, sink_spec):
        assert PASSWORD not in text


def test_bridge_spec_reads_the_connection_or_the_flat_fields() -> None:
    connection = Connection("10.0.0.1", 1884, options=MqttClientOptions(username="u"), qos=0)
    base = {"topic_filter": "devices/+/telemetry", "topic_template": "devices/{device_id}/telemetry"}
    assert BridgeSpec.from_dict({**base, "connection": connection.to_dict()}).connection == connection
    flat = {**base, "host": "10.0.0.1", "port": 1884, "username": "u", "qos": 0}
    assert BridgeSpec.from_dict(flat).connection == connection


def test_factory_applies_credentials_and_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MQTT_PASSWORD_ENV, PASSWORD)
    connection = _tls_connection()
    identity = shared_identity(connection, "probe")
    assert identity.username == "fleet" and identity.password == PASSWORD
    assert PASSWORD not in repr(identity)
    client = make_client(connection, identity)
    assert client._client_id == b"probe" and client._protocol == mqtt.MQTTv311
    assert client._username == b"fleet" and client._password == PASSWORD.encode()
    assert client._ssl and client._tls_insecure
    plain = make_client(Connection("127.0.0.1", 1883), ClientIdentity("plain"))
    assert plain._username is None and not plain._ssl


def test_shared_identity_gives_one_tls_context_per_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MQTT_PASSWORD_ENV, PASSWORD)

    def provider(connection: Connection) -> TemplatedIdentity:
        return TemplatedIdentity(FleetSpec("run1", 2, 1.0, 1.0, 0.0, connection))

    shared = provider(_tls_connection())
    first, second = shared.identity_for(DeviceName(0, "dev000000")), shared.identity_for(DeviceName(1, "dev000001"))
    assert (first.client_id, second.client_id) == ("dev000000", "dev000001")
    assert first.username == "fleet" and first.password == PASSWORD
    assert first.ssl_context is not None and first.ssl_context is second.ssl_context
    assert provider(Connection("127.0.0.1", 1883)).identity_for(DeviceName(0, "d")).ssl_context is None


def test_every_socket_of_the_lean_client_has_nagle_off() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        connection = Connection("127.0.0.1", server.getsockname()[1])
        client = make_client(connection, ClientIdentity("nodelay"))
        client._host, client._port = connection.host, connection.port
        sock = client._create_socket_connection()
        try:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        finally:
            sock.close()
