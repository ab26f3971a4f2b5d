"""The pytest side decides who the devices are, and refuses what cannot work before any process starts."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from pytest_iotperf.broker_endpoint import BrokerEndpoint
from pytest_iotperf.config import resolve
from pytest_iotperf.errors import ConfigError
from pytest_iotperf.message_spec import MessageSpec
from pytest_iotperf.run_identity import RunIdentity, plan_identity

KEY = base64.b64encode(b"k" * 32).decode()
HUB = BrokerEndpoint.external("iothub://myhub.azure-devices.net")
IOTHUB_READBACK = {"sink": "eventhub", "bridge": "none"}


def hub_policy(host: str = "myhub.azure-devices.net") -> dict[str, str]:
    return {"IOTPERF_IOTHUB_CONNECTION_STRING": f"HostName={host};SharedAccessKeyName=device;SharedAccessKey={KEY}"}


def plan(
    cli: dict[str, str], environ: dict[str, str] | None = None, broker: BrokerEndpoint | None = None
) -> RunIdentity:
    settings = resolve(cli, {}, {}).for_run({})
    return plan_identity(settings, broker or BrokerEndpoint.external("mqtt://127.0.0.1:1883"), "r1", environ or {})


def test_defaults_name_devices_by_number() -> None:
    identity = plan({"devices": "3"})
    assert identity.spec.device_id_template == "dev{n:06d}"
    assert identity.spec.device_offset == 0 and identity.spec.iothub is None
    assert identity.topic_template == "devices/{device_id}/telemetry"


def test_credentials_file_with_fewer_rows_than_devices_names_file_and_both_counts(tmp_path: Path) -> None:
    path = tmp_path / "creds.csv"
    path.write_text("device_id,username,password\nd1,u1,hunter2-secret\nd2,u2,hunter3-secret\n")
    with pytest.raises(ConfigError) as info:
        plan({"devices": "5", "credentials": str(path)})
    message = str(info.value)
    assert str(path) in message and "2 device row(s)" in message and "5 devices" in message
    assert "hunter" not in message


def test_missing_per_device_certificate_names_device_and_path(tmp_path: Path) -> None:
    (tmp_path / "dev000000.pem").write_text("x")
    (tmp_path / "dev000000.key").write_text("x")
    cert = str(tmp_path / "{device_id}.pem")
    key = str(tmp_path / "{device_id}.key")
    with pytest.raises(ConfigError) as info:
        plan({"devices": "2", "tls_cert": cert, "tls_key": key})
    assert f"dev000001: no certificate {tmp_path / 'dev000001.pem'}" in str(info.value)


def test_iothub_hub_policy_topic_and_property_bag() -> None:
    identity = plan({**IOTHUB_READBACK, "property": "site=plant 1\nline=a+b"}, hub_policy(), HUB)
    assert identity.spec.iothub is not None
    assert (identity.spec.iothub.host, identity.spec.iothub.key_source) == ("myhub.azure-devices.net", "hub_policy")
    assert identity.topic_template == (
        "devices/{device_id}/messages/events/$.ct=application%2Fjson&$.ce=utf-8&site=plant%201&line=a%2Bb"
    )


def test_iothub_topic_claims_no_json_for_a_callables_bytes() -> None:
    settings = resolve({**IOTHUB_READBACK, "property": "site=a"}, {}, {}).for_run({})
    identity = plan_identity(settings, HUB, "r1", hub_policy(), json_body=False)
    assert identity.topic_template == "devices/{device_id}/messages/events/site=a"
    binary = MessageSpec(kind="callable", callable_ref="m:f", header="properties")
    assert not binary.json_body
    assert MessageSpec(kind="callable", callable_ref="m:f").json_body and MessageSpec(header="properties").json_body


def test_iothub_group_key_wins_over_a_connection_string() -> None:
    environ = {"IOTPERF_IOTHUB_GROUP_KEY": KEY}
    assert plan(IOTHUB_READBACK, environ, HUB).spec.iothub.key_source == "group_key"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("cli", "environ", "expected"),
    [
        ({}, {"IOTPERF_IOTHUB_GROUP_KEY": KEY}, "--iot-sink eventhub --iot-bridge none"),
        ({"sink": "eventhub"}, {"IOTPERF_IOTHUB_GROUP_KEY": KEY}, "use --iot-bridge none"),
        (IOTHUB_READBACK, {}, "no key to sign"),
        (
            IOTHUB_READBACK,
            hub_policy("other.azure-devices.net"),
            "is for the hub other.azure-devices.net",
        ),
        (
            IOTHUB_READBACK,
            {"IOTPERF_IOTHUB_CONNECTION_STRING": f"HostName=myhub.azure-devices.net;DeviceId=d1;SharedAccessKey={KEY}"},
            "a device's connection string",
        ),
        ({**IOTHUB_READBACK, "topic": "t/{device_id}"}, {"IOTPERF_IOTHUB_GROUP_KEY": KEY}, "drop --iot-topic"),
    ],
)
def test_iothub_refusals_say_what_to_do_and_never_show_the_key(
    cli: dict[str, str], environ: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        plan(cli, environ, HUB)
    assert expected in str(info.value)
    assert KEY not in str(info.value)


def test_properties_need_an_iothub() -> None:
    with pytest.raises(ConfigError, match="needs --iot-broker iothub"):
        plan({"property": "a=1"})
