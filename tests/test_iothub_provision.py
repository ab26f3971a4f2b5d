"""provision / deprovision: the registry client against the embedded IoT Hub's registry, and the command line."""

from __future__ import annotations

import io
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from pytest_iotperf.embedded.iothub import EmbeddedIotHub, HubOptions
from pytest_iotperf.iothub.__main__ import UsageError, device_ids_for, main
from pytest_iotperf.iothub.connection_string import parse_iothub_connection_string
from pytest_iotperf.iothub.progress import ProgressBar
from pytest_iotperf.iothub.registry_client import (
    RegistryClient,
    RegistryError,
    RetryPolicy,
    provision,
    split_host_port,
)

KEY = "c2VjcmV0LXJlZ2lzdHJ5LWtleS1mb3ItdGVzdHM="

# -- pure parts --


def test_device_ids_follow_the_fleets_template() -> None:
    assert device_ids_for("dev{n:06d}", 3, offset=7) == ["dev000007", "dev000008", "dev000009"]
    assert device_ids_for("sensor-{n}", 2) == ["sensor-0", "sensor-1"]


@pytest.mark.parametrize(
    ("template", "count", "offset", "says"),
    [
        ("dev{run_id}-{n}", 1, 0, "{run_id}"),
        ("dev", 2, 0, "must use {n}"),
        ("dev{n}{device_id}", 1, 0, "must use {n}"),
        ("dev{n:06d", 1, 0, "not a valid template"),
        ("dev{n:x.y}", 1, 0, "Invalid format"),
        ("dev {n}", 1, 0, "white space"),
        ("dev/{n}", 1, 0, "'/'"),
        ("d{n:.0e}", 2, 10, "same id"),  # 10 and 11 are both 1e+01
        ("dev{n}", 0, 0, "--count"),
        ("dev{n}", 1, -1, "--offset"),
    ],
)
def test_bad_templates_are_usage_errors(template: str, count: int, offset: int, says: str) -> None:
    with pytest.raises(UsageError) as caught:
        device_ids_for(template, count, offset)
    assert says in str(caught.value)


def test_host_and_port() -> None:
    assert split_host_port("hub.azure-devices.net") == ("hub.azure-devices.net", None)
    assert split_host_port("127.0.0.1:8443") == ("127.0.0.1", 8443)
    assert split_host_port("[::1]:8443") == ("::1", 8443)
    with pytest.raises(ValueError, match="port"):
        split_host_port("127.0.0.1:http")


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    policy = RetryPolicy(first_s=0.5, cap_s=10)
    assert policy.delay_s(0, 3.0) == 3.0
    assert policy.delay_s(0, 3600.0) == 10
    assert 0.25 <= policy.delay_s(0, None) <= 0.5
    assert 5 <= policy.delay_s(10, None) <= 10


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_bar_on_a_terminal_and_in_a_log() -> None:
    clock = _Clock()
    out = io.StringIO()
    bar = ProgressBar("provision", out, tty=True, width=10, clock=clock)
    clock.now = 1.0
    bar(100, 250)
    clock.now = 1.05
    bar(200, 250)  # within 0.1 s of the last redraw: skipped
    clock.now = 2.0
    bar(250, 250)  # the last one is always drawn
    bar.close()
    assert out.getvalue() == (
        "\rprovision [####------] 100/250 devices  100/s\rprovision [##########] 250/250 devices  125/s\n"
    )
    log = io.StringIO()
    clock.now = 0.0
    plain = ProgressBar("deprovision", log, tty=False, plain_every_s=5, clock=clock)
    for done in (0, 100, 200, 250):  # the last at 2 s, the others at once: only the first and the last show
        clock.now = 2.0 if done == 250 else 0.0
        plain(done, 250)
    plain.close()
    assert log.getvalue().splitlines() == ["deprovision:   0/250 devices", "deprovision: 250/250 devices  125/s"]


# -- the command line's configuration errors (no hub needed) --


@pytest.mark.parametrize(
    ("environ", "says"),
    [
        ({}, "$IOTPERF_IOTHUB_CONNECTION_STRING is not set"),
        ({"IOTPERF_IOTHUB_CONNECTION_STRING": f"HostName=h;SharedAccessKey={KEY}"}, "neither"),
        ({"IOTPERF_IOTHUB_CONNECTION_STRING": f"HostName=h;DeviceId=d;SharedAccessKey={KEY}"}, "device's connection"),
        ({"IOTPERF_IOTHUB_CONNECTION_STRING": f"SharedAccessKeyName=p;SharedAccessKey={KEY}"}, "no HostName"),
        ({"IOTPERF_IOTHUB_CONNECTION_STRING": f"HostName=h:x;SharedAccessKeyName=p;SharedAccessKey={KEY}"}, "port"),
    ],
)
def test_configuration_errors_exit_2_without_the_key(
    environ: dict[str, str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["provision", "--count", "1"], environ) == 2
    out, err = capsys.readouterr()
    assert says in err and KEY not in out + err


# -- against the embedded IoT Hub's registry (real HTTPS, real SAS checks) --


@pytest.fixture(scope="module")
def hub() -> Iterator[EmbeddedIotHub]:
    with EmbeddedIotHub(HubOptions(hub="provision")) as running:
        yield running


def _registry(hub: EmbeddedIotHub) -> tuple[str, str, str]:
    """(HostName, policy, key) from the hub's registry connection string: used as it is, port included."""
    parsed = parse_iothub_connection_string(hub.registry_connection_string)
    assert parsed.policy is not None
    assert parsed.host == f"127.0.0.1:{hub.registry_port}"
    return parsed.host, parsed.policy, parsed.key


def test_provision_is_idempotent_and_deprovision_undoes_it(hub: EmbeddedIotHub) -> None:
    host, policy, key = _registry(hub)
    context = ssl.create_default_context(cafile=hub.ca_file)
    ids = device_ids_for("dev{n:06d}", 250)
    seen: list[tuple[int, int]] = []
    created = provision(host, policy, key, ids, "create", context, lambda done, total: seen.append((done, total)))
    assert (created.ok, created.changed, created.unchanged, created.calls) == (True, 250, 0, 3)
    assert seen == [(0, 250), (100, 250), (200, 250), (250, 250)]
    again = provision(host, policy, key, ids, "create", context)
    assert (again.ok, again.changed, again.unchanged) == (True, 0, 250)
    assert hub.stats()["registry_devices"] == 250
    with RegistryClient(host, policy, key, context) as client:
        device = client.get_device("dev000123")
        assert device is not None and device["deviceId"] == "dev000123"
        assert client.get_device("dev000250") is None
    gone = provision(host, policy, key, ids[:120], "delete", context)
    assert (gone.ok, gone.changed, gone.unchanged) == (True, 120, 0)
    rest = provision(host, policy, key, ids, "delete", context)
    assert (rest.ok, rest.changed, rest.unchanged) == (True, 130, 120)
    assert hub.stats()["registry_devices"] == 0


def test_a_wrong_key_is_refused_without_showing_a_key(hub: EmbeddedIotHub) -> None:
    host, policy, key = _registry(hub)
    wrong = hub.keys.device_policy_key  # a real key of the hub, just not the registry policy's
    with pytest.raises(RegistryError) as caught:
        provision(host, policy, wrong, ["dev-x"], "create", ssl.create_default_context(cafile=hub.ca_file))
    message = str(caught.value)
    assert caught.value.status == 401 and "registryReadWrite" in message and "401" in message
    assert wrong not in message and key not in message and "sig=" not in message


def test_an_untrusted_hub_is_not_retried(hub: EmbeddedIotHub) -> None:
    host, policy, key = _registry(hub)
    started = time.monotonic()
    with pytest.raises(RegistryError, match="cannot reach"):
        provision(host, policy, key, ["dev-x"], "create", ssl.create_default_context())  # system CAs only
    assert time.monotonic() - started < 5


def test_throttling_is_retried_after_retry_after() -> None:
    with EmbeddedIotHub(HubOptions(hub="throttled", throttle_registry=1, registry_retry_after_s=1)) as hub:
        host, policy, key = _registry(hub)
        result = provision(host, policy, key, ["a", "b"], "create", ssl.create_default_context(cafile=hub.ca_file))
        assert (result.ok, result.changed, result.retries) == (True, 2, 1)
        assert result.elapsed_s >= 0.9  # waited for Retry-After: 1
        assert hub.stats()["registry_throttled"] == 1


def test_command_line(hub: EmbeddedIotHub) -> None:
    """The module run as a command: provision in a subprocess, then deprovision in process."""
    host, policy, key = _registry(hub)
    environ = {
        **os.environ,
        "IOTPERF_IOTHUB_CONNECTION_STRING": f"HostName={host};SharedAccessKeyName={policy};SharedAccessKey={key}",
    }
    args = ["--count", "120", "--offset", "5000", "--device-id", "cli{n:05d}", "--ca-file", hub.ca_file]
    done = subprocess.run(
        [sys.executable, "-m", "pytest_iotperf.iothub", "provision", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "120 devices: 120 created, 0 already there, 0 failed" in done.stdout
    assert "provision: 120/120 devices" in done.stderr  # not a terminal: plain progress lines
    assert key not in done.stdout + done.stderr
    assert hub.stats()["registry_devices"] == 120
    assert main(["deprovision", *args], environ) == 0
    assert hub.stats()["registry_devices"] == 0
