"""The issue-15 settings: payload forms from test code, header placement, MQTT version and transport checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_iotperf.broker_endpoint import BrokerEndpoint
from pytest_iotperf.config import RunSettings, resolve
from pytest_iotperf.connection import Connection
from pytest_iotperf.errors import ConfigError
from pytest_iotperf.iothub.naming import parse_telemetry_topic, telemetry_topic
from pytest_iotperf.iothub.property_framer import PropertyBagFramer
from pytest_iotperf.mqtt_wire import next_packet
from pytest_iotperf.run_message import check_protocol

MOSQUITTO = BrokerEndpoint("127.0.0.1", 1883, False, "mosquitto", "mosquitto (embedded)")
AMQTT = BrokerEndpoint("127.0.0.1", 1883, False, "amqtt", "amqtt (embedded)")
IOTHUB = BrokerEndpoint("127.0.0.1", 8883, True, "iothub-embedded", "IoT Hub (embedded)")


def settings(cli: dict[str, str] | None = None, **code: object) -> RunSettings:
    return resolve(cli or {}, {}, {}).for_run(code)


def test_defaults_are_todays_wire() -> None:
    run = settings()
    assert (run.header, run.header_key, run.mqtt_version, run.transport) == ("body", "_iotperf", "3.1.1", "tcp")
    assert run.payload is None and run.seed is None and not run.topic_alias
    connection = Connection.for_run(run, MOSQUITTO)
    assert (connection.protocol_version, connection.transport, connection.ws_path) == ("3.1.1", "tcp", "/mqtt")


def test_connection_takes_version_transport_and_the_ws_path() -> None:
    external = BrokerEndpoint.external("mqtt://broker.example:9001")
    run = settings({"mqtt_version": "5", "transport": "websockets"})
    connection = Connection.for_run(run, external)
    assert (connection.protocol_version, connection.transport, connection.ws_path) == ("5", "websockets", "/mqtt")
    assert connection.port == 9001
    assert Connection.from_dict(connection.to_dict()) == connection
    assert Connection.for_run(settings(transport="websockets", ws_path="/ws"), external).ws_path == "/ws"
    hub = Connection.for_run(settings(transport="websockets"), BrokerEndpoint.external("iothub://h.azure-devices.net"))
    assert (hub.port, hub.ws_path) == (443, "/$iothub/websocket")
    # An embedded broker asked for websockets without its listener: refused, not silently tcp.
    with pytest.raises(ValueError, match="without a websockets listener"):
        Connection.for_run(settings(transport="websockets"), MOSQUITTO)


def reading(device: object, seq: int) -> dict[str, int]:
    return {"seq": seq}


def test_payload_from_test_code_keeps_the_object_and_describes_it() -> None:
    template = {"temperature": 21}
    assert settings(payload=template).payload is template
    assert settings(payload=reading).payload is reading
    by_name = settings(payload="tests.test_message_settings:reading")
    assert by_name.payload == "tests.test_message_settings:reading"
    assert settings(payload=reading).describe()["payload_file"] == f"{reading.__module__}:reading"
    assert settings(payload=template).describe()["payload_file"] == "dict template (test code)"


def test_payload_of_a_wrong_type_or_a_missing_file_names_the_test_code() -> None:
    with pytest.raises(ConfigError, match=r"iot_perf.run\(payload=42\) \(test code\): expected a dict template"):
        settings(payload=42)
    with pytest.raises(ConfigError, match=r"payload='nothing.json'.*readable file"):
        settings(payload="nothing.json")


def test_topic_without_device_id_is_one_topic_for_the_fleet() -> None:
    assert settings(topic="plant/telemetry").topic_template == "plant/telemetry"
    with pytest.raises(ConfigError, match="wildcards"):
        settings(topic="plant/+/telemetry")


@pytest.mark.parametrize("key", ["", "meta.", ".x", "a..b"])
def test_bad_header_key_is_refused(key: str) -> None:
    with pytest.raises(ConfigError, match=r"header_key"):
        settings(header_key=key)


@pytest.mark.parametrize(
    ("cli", "broker", "message"),
    [
        ({"header": "properties"}, MOSQUITTO, "MQTT 3.1.1 has no message properties"),
        ({"topic_alias": "true"}, MOSQUITTO, "topic aliases are MQTT 5"),
        ({"mqtt_version": "5"}, IOTHUB, "speaks MQTT 3.1.1"),
        ({"mqtt_version": "5"}, AMQTT, "amqtt broker speaks MQTT 3.1.1"),
        ({"transport": "websockets"}, IOTHUB, "no WebSocket listener"),
    ],
)
def test_protocol_combinations_that_cannot_work_are_refused(
    cli: dict[str, str], broker: BrokerEndpoint, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        check_protocol(settings(cli), broker)
    assert "(command line)" in str(caught.value)


def test_header_in_properties_works_with_v5_and_with_iothub() -> None:
    check_protocol(settings({"header": "properties", "mqtt_version": "5", "topic_alias": "true"}), MOSQUITTO)
    check_protocol(settings({"header": "properties"}), IOTHUB)


def test_iothub_header_rides_in_the_property_bag_of_each_topic() -> None:
    framer = PropertyBagFramer(telemetry_topic("dev 1", [("site", "a&b")]), 1)
    packet = framer.frame(b'{"t":1}', 7, [("run_id", "r1"), ("device_id", "dev 1"), ("seq", "3")])
    found = next_packet(packet, 0)
    assert found is not None
    command, start, end = found
    assert command == 0x32
    length = int.from_bytes(packet[start : start + 2], "big")
    topic = packet[start + 2 : start + 2 + length].decode()
    assert packet[start + 2 + length : start + 4 + length] == (7).to_bytes(2, "big")
    assert packet[start + 4 + length : end] == b'{"t":1}'
    parsed = parse_telemetry_topic(topic)
    assert parsed is not None
    assert parsed.device_id == "dev 1"
    assert dict(parsed.properties) == {"site": "a&b", "run_id": "r1", "device_id": "dev 1", "seq": "3"}
    assert framer.frame(b"x", 0 + 1) == PropertyBagFramer(framer.topic(None), 1).frame(b"x", 1)


def test_a_bad_payload_file_stops_the_session_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "t.json"
    bad.write_text('{"reading": {"temperature": {"$unifrom": [15, 30]}}}')
    with pytest.raises(ConfigError) as caught:
        resolve({"payload_file": str(bad)}, {}, {})
    message = str(caught.value)
    assert message.startswith(f"--iot-payload-file={bad} (command line): ")
    assert 'payload field "reading.temperature"' in message and "did you mean $uniform" in message
    good = tmp_path / "ok.json"
    good.write_text('{"t": {"$uniform": [15, 30]}}')
    assert resolve({}, {"IOTPERF_PAYLOAD_FILE": str(good)}, {}).payload == good
