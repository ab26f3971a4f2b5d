"""Who a run's devices are, decided on the pytest side before anything starts.

Turns the settings and the broker into the fleet's
:class:`~pytest_iotperf.fleet.identity_spec.IdentitySpec` (pure data, no
secret), picks where an IoT Hub's keys come from, and refuses what cannot
work before a single process starts: a credentials file with fewer rows than
devices, a per-device certificate that is not there, an IoT Hub run read back
over MQTT or through the bridge, a hub connection string for another hub.
Every message names where the value came from and never a secret.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from pytest_iotperf.broker_endpoint import BrokerEndpoint
from pytest_iotperf.config import RunSettings
from pytest_iotperf.errors import ConfigError
from pytest_iotperf.fleet.credentials import CredentialRow, CredentialsError, load_credentials
from pytest_iotperf.fleet.identity import check_device_files
from pytest_iotperf.fleet.identity_spec import IdentitySpec, IotHubSpec, KeySource
from pytest_iotperf.iothub.connection_string import parse_iothub_connection_string
from pytest_iotperf.iothub.naming import DEFAULT_SYSTEM_PROPERTIES, telemetry_topic
from pytest_iotperf.secrets import IOTHUB_CONNECTION_STRING_ENV, IOTHUB_GROUP_KEY_ENV

__all__ = ["RunIdentity", "plan_identity"]


class RunIdentity:
    """The identity part of a run: the spec the fleet gets and the telemetry topic template."""

    def __init__(self, spec: IdentitySpec, topic_template: str) -> None:
        self.spec = spec
        self.topic_template = topic_template


def plan_identity(
    settings: RunSettings,
    broker: BrokerEndpoint,
    run_id: str,
    environ: Mapping[str, str] = os.environ,
    *,
    json_body: bool = True,
) -> RunIdentity:
    """The run's identity spec and topic, or a ConfigError saying what cannot work.

    ``json_body`` False (a payload callable's bytes with the header in properties): IoT Hub's topic
    carries no ``$.ct=application/json`` / ``$.ce=utf-8``, which would misdescribe a binary body.

    Raises:
        ConfigError: naming the setting (and its source) or the file, never a secret.
    """
    rows = _credentials(settings)
    per_device_files = settings.per_device_tls
    iothub = _iothub_spec(settings, broker, rows, {**environ, **broker.fleet_env}) if broker.iothub else None
    spec = IdentitySpec(
        device_id_template=settings.device_id_template,
        device_offset=settings.device_offset,
        client_id_template=settings.client_id_template,
        username_template=settings.username,
        credentials_file=str(settings.credentials) if settings.credentials else None,
        cert_template=settings.tls_cert if per_device_files else None,
        key_template=settings.tls_key if per_device_files else None,
        iothub=iothub,
    )
    problems = check_device_files(spec, settings.devices, run_id, rows)
    if problems:
        raise ConfigError(
            "client certificate files are missing (--iot-tls-cert / --iot-tls-key or the credentials file): "
            + "; ".join(problems)
        )
    topic = settings.topic_template
    if iothub is not None:
        # IoT Hub takes telemetry on one topic per device, the property bag after it.
        system = DEFAULT_SYSTEM_PROPERTIES if json_body else ()
        topic = telemetry_topic("{device_id}", settings.properties, system)
    elif settings.properties:
        raise ConfigError(
            "--iot-property sets IoT Hub message properties: it needs --iot-broker iothub://... or embedded:iothub"
        )
    return RunIdentity(spec, topic)


def _credentials(settings: RunSettings) -> Sequence[CredentialRow]:
    path = settings.credentials
    if path is None:
        return ()
    try:
        rows = load_credentials(path)
    except CredentialsError as exc:
        raise ConfigError(f"--iot-credentials ({settings.source('credentials')}): {exc}") from None
    if len(rows) < settings.devices:
        raise ConfigError(
            f"--iot-credentials {path} ({settings.source('credentials')}) has {len(rows)} device row(s) "
            f"for {settings.devices} devices ({settings.source('devices')}): one row per device is needed"
        )
    return rows


def _iothub_spec(
    settings: RunSettings, broker: BrokerEndpoint, rows: Sequence[CredentialRow], environ: Mapping[str, str]
) -> IotHubSpec:
    where = f"--iot-broker {broker.url} ({settings.source('broker')})"
    if settings.sink != "eventhub":
        raise ConfigError(
            f"{where}: IoT Hub does not let a client subscribe to device telemetry; read it back from its "
            "built-in Event Hubs-compatible endpoint: --iot-sink eventhub --iot-bridge none"
        )
    if settings.bridge != "none":
        raise ConfigError(
            f"{where}: IoT Hub forwards telemetry to its built-in endpoint itself; use --iot-bridge none "
            f"(got --iot-bridge {settings.bridge}, {settings.source('bridge')})"
        )
    if settings.source("topic") != "default":
        raise ConfigError(
            f"{where}: IoT Hub takes telemetry on devices/{{device_id}}/messages/events/ only; drop --iot-topic "
            f"({settings.source('topic')}) and use --iot-property for message properties"
        )
    key_source: KeySource
    if rows and all(row.sas_key for row in rows[: settings.devices]):
        key_source = "device_keys"
    elif environ.get(IOTHUB_GROUP_KEY_ENV, "").strip() and not broker.fleet_env:
        key_source = "group_key"
    elif environ.get(IOTHUB_CONNECTION_STRING_ENV, "").strip():
        key_source = "hub_policy"
        try:
            name = IOTHUB_CONNECTION_STRING_ENV
            parsed = parse_iothub_connection_string(environ[name], f"${name}")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if parsed.policy is None:
            raise ConfigError(
                f"${IOTHUB_CONNECTION_STRING_ENV} is a device's connection string (DeviceId=...); the fleet needs "
                "a hub policy with DeviceConnect (SharedAccessKeyName=device), a group key or per-device keys"
            )
        hub_host = parsed.host.rpartition(":")[0] if ":" in parsed.host else parsed.host
        if hub_host.lower() != broker.host.lower():
            raise ConfigError(
                f"${IOTHUB_CONNECTION_STRING_ENV} is for the hub {parsed.host}, but {where} is {broker.host}"
            )
    elif rows and any(row.sas_key for row in rows):
        missing = sum(1 for row in rows[: settings.devices] if not row.sas_key)
        raise ConfigError(f"--iot-credentials {settings.credentials}: {missing} device row(s) have no key")
    else:
        raise ConfigError(
            f"{where}: no key to sign the devices' SAS tokens: set ${IOTHUB_CONNECTION_STRING_ENV} (a policy "
            f"with DeviceConnect), ${IOTHUB_GROUP_KEY_ENV} (a DPS enrollment group key), or give each device a "
            "key column in --iot-credentials"
        )
    return IotHubSpec(host=broker.host, key_source=key_source, sas_ttl_s=settings.sas_ttl_s)
