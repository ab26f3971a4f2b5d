"""A fleet against an IoT Hub (the embedded one, reached as iothub://127.0.0.1:PORT like a cloud hub).

Real parts: the Locust fleet signing SAS tokens, the embedded hub checking them over TLS and writing into its
built-in endpoint, the azure-eventhub SDK reading it back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from wallclock import StartUp

from pytest_iotperf.broker_endpoint import BrokerEndpoint
from pytest_iotperf.config import resolve
from pytest_iotperf.embedded.iothub import EmbeddedIotHub, HubOptions
from pytest_iotperf.iothub.connection_string import parse_iothub_connection_string
from pytest_iotperf.iothub.sas import derive_device_key
from pytest_iotperf.pipeline import Outputs, Pipeline, RunOutcome
from pytest_iotperf.readback import EventHubAccess

pytestmark = pytest.mark.fleet

HUB = "fleet"
DEVICES = 12


@pytest.fixture(scope="module")
def hub() -> Iterator[EmbeddedIotHub]:
    with EmbeddedIotHub(HubOptions(hub=HUB)) as embedded:
        # A registry in use: only these ids get in (dev000000 .. dev000011), any other is refused at CONNECT.
        embedded.create_devices(f"dev{n:06d}" for n in range(DEVICES))
        yield embedded


def run(hub: EmbeddedIotHub, report_dir: Path, devices: int = DEVICES, **cli: str) -> RunOutcome:
    settings = resolve(
        {"tls_ca": hub.ca_file, "sink": "eventhub", "bridge": "none", "eventhub": HUB, **cli}, {}, {}
    ).for_run({"devices": devices, "rate_per_device": 2, "duration": "2s", "drain": "10s", "workers": 1})
    built_in = EventHubAccess(
        hub.eventhub_connection_string, "built-in endpoint", partitions=("0", "1", "2", "3"), eventhub_name=HUB
    )
    broker = BrokerEndpoint.external(f"iothub://127.0.0.1:{hub.port}")
    return Pipeline(Outputs(report_dir=report_dir)).run(settings, broker, eventhub=built_in, name="iothub")


def test_group_key_fleet_is_the_registered_devices(
    hub: EmbeddedIotHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IOTPERF_IOTHUB_GROUP_KEY", hub.group_key)
    before = hub.stats()
    outcome = run(hub, tmp_path)
    result = outcome.result
    assert outcome.passed, outcome.failure_message()
    assert result.sent == result.received == result.scheduled > 0 and result.lost == 0
    after = hub.stats()
    # Every device got in under its registered id (an unknown id would have been refused) and the hub
    # wrote exactly what the fleet sent into the built-in endpoint.
    assert after["connects"] - before["connects"] == DEVICES
    assert after["refusals"] == before["refusals"]
    assert after["messages"] - before["messages"] == result.sent
    assert result.puback_p50_ms > 0 and result.puback_p99_ms >= result.puback_p50_ms


def test_wrong_key_fails_fast_naming_device_and_hub_never_the_key(
    hub: EmbeddedIotHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, startup: StartUp
) -> None:
    real = parse_iothub_connection_string(hub.hub_connection_string)
    wrong_key = derive_device_key(real.key, "not the policy key")  # valid base64, the wrong secret
    wrong = f"HostName=127.0.0.1;SharedAccessKeyName=device;SharedAccessKey={wrong_key}"
    monkeypatch.setenv("IOTPERF_IOTHUB_CONNECTION_STRING", wrong)
    started = time.monotonic()
    outcome = run(hub, tmp_path)
    took = time.monotonic() - started
    result = outcome.result
    assert not outcome.passed
    assert result.connect_failures == DEVICES and result.sent == 0
    message = outcome.failure_message()
    assert "dev0000" in message and "Not authorized" in message, message
    assert f"127.0.0.1:{hub.port}" in message, message  # the hub
    # Refused for good: no retries for the connect budget. Sink and fleet start-up, one round of refusals.
    assert took < startup.ceiling_s(startups=8, own_s=3.0), (took, str(startup))
    written = "".join(path.read_text() for path in tmp_path.iterdir())
    for secret in (wrong_key, real.key):
        assert secret not in message and secret not in written and secret not in json.dumps(result.errors)


def test_devices_outside_the_registry_are_refused(
    hub: EmbeddedIotHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IOTPERF_IOTHUB_CONNECTION_STRING", hub.hub_connection_string)
    # The next range (as a second CI job sharing the hub would take): dev000012, dev000013 are not registered.
    outcome = run(hub, tmp_path, devices=2, device_offset=str(DEVICES))
    assert outcome.result.connect_failures == 2 and outcome.result.sent == 0
    assert f"dev{DEVICES:06d}" in outcome.failure_message() or f"dev{DEVICES + 1:06d}" in outcome.failure_message()
