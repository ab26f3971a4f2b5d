"""Settings: parsing, precedence and error messages (pure, no pytest plugin machinery)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_plugin_surface import OPTIONS

from pytest_iotperf.config import (
    CLI,
    CODE,
    DEFAULT,
    ENV,
    INI,
    SETTINGS,
    resolve,
    topic_filter_for,
)
from pytest_iotperf.durations import format_duration, parse_duration
from pytest_iotperf.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("2m", 120), ("1m30s", 90), ("500ms", 0.5), ("1.5h", 5400), ("45", 45), (" 10 s ", 10)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5 parsecs", "abc", "-3s", "10s garbage", "s", "1m x", "nan", "inf"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_duration_round_trips() -> None:
    for seconds in (0.25, 1, 30, 60, 90, 3600):
        assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


def test_names_follow_one_scheme() -> None:
    # The published option names (the surface test checks them in --help, in order); --iot-slo is not a Setting.
    assert {s.cli for s in SETTINGS} == set(OPTIONS) - {"--iot-slo"}
    devices = next(s for s in SETTINGS if s.name == "devices")
    assert (devices.ini, devices.env) == ("iot_devices", "IOTPERF_DEVICES")


def test_precedence_cli_env_code_ini_default() -> None:
    ini = {
        "devices": ("4", "pytest.ini"),
        "rate": ("0.5", "pytest.ini"),
        "duration": ("7s", "pytest.ini"),
        "qos": ("0", "pytest.ini"),
    }
    env = {"IOTPERF_RATE": "3", "IOTPERF_DEVICES": "6"}
    session = resolve({"devices": "9"}, env, ini)
    run = session.for_run({"devices": 2, "rate_per_device": 2.0, "duration": "3s"})
    assert run.devices == 9 and run.source("devices") == CLI
    assert run.rate == 3.0 and run.source("rate") == ENV
    assert run.duration_s == 3.0 and run.source("duration") == CODE
    assert run["qos"] == 0 and run.source("qos") == INI
    assert run["payload_bytes"] == 0 and run.source("payload_bytes") == DEFAULT


@pytest.mark.parametrize(
    ("cli", "env", "ini", "expected"),
    [
        ({"devices": "-3"}, {}, {}, ["--iot-devices=-3", "command line"]),
        ({"rate": "abc"}, {}, {}, ["--iot-rate=abc", "command line"]),
        ({}, {}, {"duration": ("5 parsecs", "pytest.ini")}, ["iot_duration = 5 parsecs", "pytest.ini"]),
        ({}, {"IOTPERF_QOS": "2"}, {}, ["IOTPERF_QOS", "environment", "0 or 1"]),
        ({"broker": "http://x"}, {}, {}, ["--iot-broker=http://x", "mqtt://"]),
        ({"topic": "a/+"}, {}, {}, ["--iot-topic=a/+", "wildcards"]),
        ({"sink_topic": "a/#/b"}, {}, {}, ["topic filter"]),
        ({"sink": "kafka"}, {}, {}, ["mqtt", "eventhub"]),
    ],
)
def test_bad_values_name_value_and_source(
    cli: dict[str, str], env: dict[str, str], ini: dict[str, tuple[str, str]], expected: list[str]
) -> None:
    with pytest.raises(ConfigError) as failure:
        resolve(cli, env, ini)
    for fragment in expected:
        assert fragment in str(failure.value)


def test_bad_test_code_value_names_the_call() -> None:
    with pytest.raises(ConfigError, match=r"iot_perf.run\(devices=-1\) \(test code\)"):
        resolve({}, {}, {}).for_run({"devices": -1})
    with pytest.raises(ConfigError, match=r"unknown keyword.*devcies"):
        resolve({}, {}, {}).for_run({"devcies": 3})


def test_test_code_cannot_override_cli() -> None:
    run = resolve({"devices": "12"}, {}, {}).for_run({"devices": 3})
    assert run.devices == 12 and run.source("devices") == CLI


def test_derived_defaults() -> None:
    run = resolve({}, {}, {}).for_run({"devices": 5000})
    assert run.ramp_up_s == 10.0  # 1 s per 500 devices
    assert run.workers >= 1
    assert run.sink_topic == "devices/+/telemetry"
    assert topic_filter_for("t/{run_id}/{device_id}", "r1") == "t/r1/+"


def test_bad_test_code_value_fails_even_when_the_cli_overrides_it() -> None:
    with pytest.raises(ConfigError, match="test code"):
        resolve({"devices": "12"}, {}, {}).for_run({"devices": -1})


def test_typed_properties_give_the_parsed_values(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not read here")
    cli = {
        "broker": "mqtts://broker.example:8883",
        "username": " alice ",
        "qos": "0",
        "payload_bytes": "256",
        "topic": "plant/{run_id}/{device_id}",
        "sink": "EventHub",
        "drain": "1m30s",
        "eventhub": "telemetry",
        "consumer_group": "perf",
        "eventhub_consumers": "3",
        "eventhub_transport": "websocket",
        "bridge": "none",
        "master_bind": "[::]:5557",
        "clock_correction": "true",
        "tls_ca": str(ca),
        "tls_insecure": "yes",
        "influx_url": "http://localhost:8086/",
        "influx_org": "org",
        "influx_bucket": "bucket",
        "report_dir": str(tmp_path / "reports"),
    }
    run = resolve(cli, {}, {}).for_run({})
    assert (run.broker, run.username, run.qos, run.payload_bytes) == ("mqtts://broker.example:8883", "alice", 0, 256)
    assert (run.topic_template, run.sink, run.drain_s) == ("plant/{run_id}/{device_id}", "eventhub", 90.0)
    assert (run.eventhub, run.consumer_group, run.eventhub_consumers) == ("telemetry", "perf", 3)
    assert (run.eventhub_transport, run.bridge, run.master_bind) == ("websocket", "none", ("::", 5557))
    assert run.clock_correction is True and run.tls_insecure is True
    assert (run.tls_ca, run.tls_cert, run.tls_key) == (ca, None, None)
    assert (run.influx_url, run.influx_org, run.influx_bucket) == ("http://localhost:8086", "org", "bucket")
    assert run.report_dir == tmp_path / "reports"
    assert run.sink_topic == "plant/{run_id}/+"


def test_typed_properties_of_the_defaults() -> None:
    session = resolve({}, {}, {})
    assert (session.broker, session.username, session.qos, session.sink) == ("embedded", None, 1, "mqtt")
    assert (session.drain_s, session.master_bind, session.clock_correction) == (10.0, ("127.0.0.1", 0), False)
    assert (session.influx_url, session.report_dir, session.tls_ca) == (None, None, None)


@pytest.mark.parametrize("where", ["cli", "env", "code"])
def test_a_refused_broker_url_never_repeats_its_password(where: str) -> None:
    url = "mqtts://fleet:s3cr3t-pw@broker.example:8883"
    with pytest.raises(ConfigError) as refused:
        if where == "code":
            resolve({}, {}, {}).for_run({"broker": url})
        else:
            resolve({"broker": url} if where == "cli" else {}, {"IOTPERF_BROKER": url} if where == "env" else {}, {})
    assert "s3cr3t-pw" not in str(refused.value) and "broker.example" in str(refused.value)
