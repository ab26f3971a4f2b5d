"""Known secret values go through every path, failures included; none appears in anything produced.

Searched: terminal output, junit XML, JSON and HTML reports, and the logs a failed run keeps.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_iotperf.embedded.broker import find_mosquitto
from pytest_iotperf.processes import free_port

pytestmark = [pytest.mark.fleet, pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")]

MQTT_PASSWORD = "mqtt-pw-1f3a9e-secret"
INFLUX_TOKEN = "influx-tok-77c2d0-secret"
SAS_KEY = "c2FzLWtleS04ODFiNGEtc2VjcmV0LXZhbHVlLTAwMDA="
GROUP_KEY = "Z3JvdXAta2V5LTNjOWQxMi1zZWNyZXQtdmFsdWUtMDAwMA=="
HUB_KEY = "aHViLWtleS1lNTBhNzctc2VjcmV0LXZhbHVlLTAwMDAwMA=="
# Per-device secrets from --iot-credentials: each device connects with its own password.
FILE_PASSWORDS = ("file-pw-0-9d1c-secret", "file-pw-1-4b7e-secret", "file-pw-2-a2f0-secret")
FILE_SAS_KEYS = ("ZmlsZS1zYXMtMC1zZWNyZXQtdmFsdWUtMDAwMDAwMDA=", "ZmlsZS1zYXMtMS1zZWNyZXQtdmFsdWUtMDAwMDAwMDA=")


def test_no_secret_in_any_output(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    dead_hub = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("IOTPERF_MQTT_PASSWORD", MQTT_PASSWORD)
    monkeypatch.setenv("IOTPERF_INFLUX_TOKEN", INFLUX_TOKEN)
    monkeypatch.setenv(
        "IOTPERF_EVENTHUB_CONNECTION_STRING",
        f"Endpoint=sb://{dead_hub};SharedAccessKeyName=Root;SharedAccessKey={SAS_KEY};"
        "EntityPath=telemetry;UseDevelopmentEmulator=true",
    )
    monkeypatch.setenv("IOTPERF_IOTHUB_GROUP_KEY", GROUP_KEY)
    monkeypatch.setenv(
        "IOTPERF_IOTHUB_CONNECTION_STRING",
        f"HostName=myhub.azure-devices.net;SharedAccessKeyName=device;SharedAccessKey={HUB_KEY}",
    )
    rows = [f"dev{n:06d},user-{n},{FILE_PASSWORDS[n]},{FILE_SAS_KEYS[n % 2]}" for n in range(3)]
    pytester.path.joinpath("creds.csv").write_text("device_id,username,password,sas_key\n" + "\n".join(rows) + "\n")
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.perf(slo=["loss < 1%", "p50_delay_ms < 0.001"])
        def test_mqtt_run_with_credentials_and_a_failing_export(iot_perf):
            iot_perf.run(devices=3, rate_per_device=2, duration="1s", drain="5s", workers=1)

        @pytest.mark.perf
        def test_unreachable_hub(iot_perf):
            iot_perf.run(devices=3, duration="1s", workers=1, sink="eventhub", eventhub="telemetry", bridge="none")
        """
    )
    outcome = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--iot-username",
        "fleet",
        "--iot-credentials",
        "creds.csv",
        "--iot-report-dir",
        "out",
        "--junitxml",
        "junit.xml",
        "--iot-influx-url",
        f"http://127.0.0.1:{free_port()}",
        "-rA",
    )
    outcome.assert_outcomes(failed=2)  # the SLO violation and the hub failure
    texts = [outcome.stdout.str(), outcome.stderr.str()]
    # Everything the run produced (the credentials file itself is the input, not an output).
    texts += [p.read_text(errors="replace") for p in pytester.path.rglob("*") if p.is_file() and p.name != "creds.csv"]
    kept = {Path(d) for d in re.findall(r"kept in (/\S+?)(?:[;\s]|$)", outcome.stdout.str())}
    texts += [p.read_text(errors="replace") for d in kept if d.is_dir() for p in d.rglob("*") if p.is_file()]
    produced = "\n".join(texts)
    assert "could not read from" in produced or "Event Hub" in produced  # the failure path really ran
    assert "InfluxDB export failed" in produced  # and so did the export failure
    for secret in (MQTT_PASSWORD, INFLUX_TOKEN, SAS_KEY, GROUP_KEY, HUB_KEY, *FILE_PASSWORDS, *FILE_SAS_KEYS):
        assert secret not in produced
