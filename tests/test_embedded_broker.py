"""Integration tests of the embedded broker: real mosquitto / amqtt, real paho clients."""

from __future__ import annotations

import importlib.metadata
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from wallclock import StartUp

import pytest_iotperf.embedded.broker as broker_mod
from pytest_iotperf.broker_endpoint import BrokerEndpoint, parse_broker_url, wait_for_mqtt
from pytest_iotperf.connection import Connection
from pytest_iotperf.embedded.broker import EmbeddedBroker, find_mosquitto, mosquitto_version, raise_nofile_limit
from pytest_iotperf.errors import BrokerError
from pytest_iotperf.processes import free_port
from pytest_iotperf.setting_parsers import parse_broker

MOSQUITTO = find_mosquitto()
needs_mosquitto = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto)")
WAIT_S = 5.0
_ROOT = Path(broker_mod.__file__).resolve().parents[2]  # the checkout, importable from a child


def _client(name: str) -> mqtt.Client:
    return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{name}-{uuid.uuid4().hex[:8]}")


def _round_trip(endpoint: BrokerEndpoint) -> None:
    """Subscribe, publish one message, and wait until the subscriber receives it."""
    topic = f"iotperf/test/{uuid.uuid4().hex}"
    subscribed = threading.Event()
    received = threading.Event()
    payloads: list[bytes] = []

    def on_subscribe(*_args: Any) -> None:
        subscribed.set()

    def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        payloads.append(bytes(message.payload))
        received.set()

    sink = _client("sink")
    sink.on_subscribe = on_subscribe
    sink.on_message = on_message
    sink.connect(endpoint.host, endpoint.port)
    sink.loop_start()
    try:
        sink.subscribe(topic, qos=1)
        assert subscribed.wait(WAIT_S), "no SUBACK"
        device = _client("device")
        device.connect(endpoint.host, endpoint.port)
        device.loop_start()
        try:
            device.publish(topic, b"hello", qos=1).wait_for_publish(WAIT_S)
        finally:
            device.disconnect()
            device.loop_stop()
        assert received.wait(WAIT_S), "message not delivered"
        assert payloads == [b"hello"]
    finally:
        sink.disconnect()
        sink.loop_stop()


def _stop_and_check_gone(broker: EmbeddedBroker) -> None:
    assert broker.pid is not None
    process = psutil.Process(broker.pid)
    assert broker.log_path is not None
    tmpdir = broker.log_path.parent
    broker.stop()
    # is_running() is true for a zombie and false for a reused pid: false means reaped.
    assert not process.is_running()
    assert not tmpdir.exists()
    assert not broker.running
    assert broker.pid is None
    broker.stop()  # idempotent


@pytest.fixture
def no_mosquitto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_mod, "find_mosquitto", lambda: None)


@pytest.fixture
def listening_socket() -> Iterator[socket.socket]:
    """A TCP socket listening on 127.0.0.1 that never speaks MQTT."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


# -- brokers ---------------------------------------------------------------


@needs_mosquitto
def test_mosquitto_round_trip_and_stop(tmp_path: Path) -> None:
    assert MOSQUITTO is not None
    version = mosquitto_version(MOSQUITTO)
    assert version is not None
    broker = EmbeddedBroker(prefer="mosquitto", workdir=tmp_path)
    try:
        endpoint = broker.start()
        assert broker.log_path is not None and broker.log_path.parent.parent == tmp_path
        assert endpoint.kind == "mosquitto"
        assert endpoint.host == "127.0.0.1"
        assert not endpoint.tls
        assert endpoint.description == f"mosquitto {version} (embedded)"
        assert endpoint.url == f"mqtt://127.0.0.1:{endpoint.port}"
        assert broker.endpoint == endpoint
        assert broker.running
        assert broker.warnings == []
        with pytest.raises(RuntimeError, match="already started"):
            broker.start()
        # What the run checks the fleet against: the broker inherits our (raised) open-files limit.
        assert endpoint.open_files == raise_nofile_limit()
        _round_trip(endpoint)
    finally:
        _stop_and_check_gone(broker)


@needs_mosquitto
@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_restart_comes_back_on_the_same_port(kill: bool) -> None:
    with EmbeddedBroker(prefer="mosquitto") as broker:
        before = broker.endpoint
        old = psutil.Process(broker.pid)
        assert broker.log_path is not None
        log_path = broker.log_path
        started = time.monotonic()
        after = broker.restart(down_s=0.3, kill=kill)
        assert time.monotonic() - started >= 0.3
        assert after == before == broker.endpoint and broker.running
        assert not old.is_running() and broker.pid != old.pid
        _round_trip(after)
        # The stopped process's log is kept next to the new one.
        assert "running" in log_path.with_name(log_path.name + ".1").read_text()
        assert broker.log_path == log_path and "running" in log_path.read_text()
        broker.restart()
        assert log_path.with_name(log_path.name + ".2").exists()
        _round_trip(broker.endpoint)


def test_restart_needs_a_started_broker() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        EmbeddedBroker().restart()


def test_amqtt_fallback_round_trip_and_stop(no_mosquitto: None) -> None:
    broker = EmbeddedBroker()  # auto, and mosquitto "missing"
    try:
        endpoint = broker.start()
        assert endpoint.kind == "amqtt"
        version = importlib.metadata.version("amqtt")
        assert endpoint.description == f"amqtt {version} (embedded)"
        assert any("mosquitto not found" in w and "distorts" in w for w in broker.warnings)
        _round_trip(endpoint)
    finally:
        _stop_and_check_gone(broker)


@needs_mosquitto
def test_mosquitto_slow_sink_loses_nothing() -> None:
    """A sink that stops reading must not lose QoS 0 messages (the default config does)."""
    count, size = 3000, 4000  # ~12 MB: more than the loopback socket buffers hold
    with EmbeddedBroker(prefer="mosquitto") as broker:
        endpoint = broker.endpoint
        received = 0

        def on_message(*_args: Any) -> None:
            nonlocal received
            received += 1

        sink = _client("slow-sink")
        sink.on_message = on_message
        suback = threading.Event()
        sink.on_subscribe = lambda *_args: suback.set()
        sink.connect(endpoint.host, endpoint.port)
        sink.subscribe("fleet/#", qos=0)
        deadline = time.monotonic() + WAIT_S
        while not suback.is_set() and time.monotonic() < deadline:
            sink.loop(timeout=0.05)
        assert suback.is_set()

        device = _client("device")
        device.connect(endpoint.host, endpoint.port)
        device.loop_start()
        payload = b"x" * size
        for _ in range(count):
            device.publish("fleet/d1", payload, qos=0)
        # A QoS 1 round trip after the burst: the broker has routed all of it.
        device.publish("other", b"", qos=1).wait_for_publish(WAIT_S)
        device.disconnect()
        device.loop_stop()

        deadline = time.monotonic() + WAIT_S
        while received < count and time.monotonic() < deadline:
            sink.loop(timeout=0.05)
        sink.disconnect()
        assert received == count
        assert "dropped" not in broker.log_tail(200)


@needs_mosquitto
def test_auto_falls_back_to_amqtt_when_mosquitto_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(broker_mod, "mosquitto_config", lambda *_a, **_kw: "no_such_option 1\n")
    with EmbeddedBroker(workdir=tmp_path) as broker:
        assert broker.endpoint.kind == "amqtt"
        (warning,) = broker.warnings
        assert warning.startswith("Embedded broker mosquitto") and "using amqtt instead" in warning
    (kept,) = tmp_path.iterdir()  # the failed mosquitto's directory; amqtt's is gone
    assert (kept / "mosquitto.conf").exists()


@pytest.mark.parametrize("kind", ["mosquitto", "amqtt"])
def test_port_race_retries_on_a_new_port(
    kind: str, monkeypatch: pytest.MonkeyPatch, listening_socket: socket.socket
) -> None:
    if kind == "mosquitto" and MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    taken = listening_socket.getsockname()[1]
    picks = iter([taken])
    monkeypatch.setattr(broker_mod, "free_port", lambda host: next(picks, None) or free_port(host))
    with EmbeddedBroker(prefer=kind) as broker:
        assert broker.endpoint.port != taken
        wait_for_mqtt(Connection(broker.endpoint.host, broker.endpoint.port), timeout=WAIT_S)


@needs_mosquitto
def test_gives_up_when_every_port_is_taken(monkeypatch: pytest.MonkeyPatch, listening_socket: socket.socket) -> None:
    taken = listening_socket.getsockname()[1]
    monkeypatch.setattr(broker_mod, "free_port", lambda host: taken)
    broker = EmbeddedBroker(prefer="mosquitto")
    with pytest.raises(BrokerError, match="free ports picked was taken"):
        broker.start()
    assert broker.pid is None


@needs_mosquitto
def test_failed_start_reports_command_exit_code_and_log(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real_config = broker_mod.mosquitto_config

    def broken_config(*args: Any, **kwargs: Any) -> str:
        return real_config(*args, **kwargs) + "no_such_option 1\n"

    monkeypatch.setattr(broker_mod, "mosquitto_config", broken_config)
    broker = EmbeddedBroker(prefer="mosquitto", workdir=tmp_path)
    with pytest.raises(BrokerError) as info:
        broker.start()
    message = str(info.value)
    assert "exited before accepting connections" in message
    (kept,) = tmp_path.iterdir()  # kept for a rerun by hand, and named in the message
    assert f"kept in {kept};" in message
    assert (kept / "mosquitto.conf").exists()
    assert f"command: {MOSQUITTO} -c " in message
    assert "exit code: " in message and "exit code: none" not in message
    assert "no_such_option" in message  # from the broker's own log
    assert broker.pid is None
    assert broker.log_path is None


@needs_mosquitto
def test_start_timeout_kills_the_broker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, startup: StartUp) -> None:
    def never_ready(connection: Connection, timeout: float) -> None:
        raise BrokerError(f"probe of {connection.address} failed on purpose")

    monkeypatch.setattr(broker_mod, "wait_for_mqtt", never_ready)
    started = time.monotonic()
    broker = EmbeddedBroker(prefer="mosquitto", workdir=tmp_path)
    with pytest.raises(BrokerError) as info:
        broker.start(timeout=0.3)
    elapsed_s = time.monotonic() - started
    assert elapsed_s < startup.ceiling_s(startups=2, own_s=0.3), startup  # the timeout, then one broker killed
    message = str(info.value)
    assert "did not accept an MQTT connection within 0.3s" in message
    assert "failed on purpose" in message
    assert "still running, killed" in message
    assert broker.pid is None


def test_context_manager_stops_broker_when_body_raises() -> None:
    broker = EmbeddedBroker()
    with pytest.raises(RuntimeError, match="boom"), broker:
        assert broker.pid is not None
        process = psutil.Process(broker.pid)
        raise RuntimeError("boom")
    assert not process.is_running()
    assert not broker.running


def test_missing_brokers_say_how_to_install(no_mosquitto: None, monkeypatch: pytest.MonkeyPatch) -> None:
    broker = EmbeddedBroker(prefer="mosquitto")
    with pytest.raises(BrokerError, match="apt-get install mosquitto"):
        broker.start()
    monkeypatch.setattr(broker_mod, "amqtt_version", lambda: None)
    with pytest.raises(BrokerError, match="pip install amqtt"):
        EmbeddedBroker(prefer="amqtt").start()
    with pytest.raises(BrokerError) as info:
        EmbeddedBroker().start()
    assert "apt-get install mosquitto" in str(info.value)
    assert "pip install amqtt" in str(info.value)


def test_endpoint_requires_a_started_broker() -> None:
    broker = EmbeddedBroker()
    with pytest.raises(RuntimeError, match="not started"):
        _ = broker.endpoint
    broker.stop()  # stopping a never-started broker is fine


def test_invalid_preference() -> None:
    with pytest.raises(ValueError, match="'hivemq'"):
        EmbeddedBroker(prefer="hivemq")


# -- wait_for_mqtt ---------------------------------------------------------


def test_wait_for_mqtt_closed_port_names_the_address() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        started = time.monotonic()
        with pytest.raises(BrokerError, match=f"127.0.0.1:{port}.*refused"):
            wait_for_mqtt(Connection("127.0.0.1", port), timeout=2.0)
        assert time.monotonic() - started < 2.0


def test_wait_for_mqtt_silent_server_times_out(listening_socket: socket.socket) -> None:
    port = listening_socket.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(BrokerError, match=f"127.0.0.1:{port}.*no CONNACK within 0.5s"):
        wait_for_mqtt(Connection("127.0.0.1", port), timeout=0.5)
    assert time.monotonic() - started < 1.5


# -- helpers ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://broker.example:1884", ("mqtt", "broker.example", 1884)),
        ("mqtt://broker.example", ("mqtt", "broker.example", 1883)),
        ("mqtts://broker.example", ("mqtts", "broker.example", 8883)),
        ("mqtts://10.0.0.5:9000/", ("mqtts", "10.0.0.5", 9000)),
        ("MQTT://Broker.Example:1883", ("mqtt", "broker.example", 1883)),
        ("mqtt://[::1]:1883", ("mqtt", "::1", 1883)),
        (" mqtt://127.0.0.1:1883 ", ("mqtt", "127.0.0.1", 1883)),
    ],
)
def test_parse_broker_url_accepts(url: str, expected: tuple[str, str, int]) -> None:
    assert parse_broker_url(url) == expected


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("embedded", "no scheme"),
        ("broker.example:1883", "scheme 'broker.example'"),
        ("http://broker.example", "scheme 'http'"),
        ("tcp://broker.example:1883", "scheme 'tcp'"),
        ("mqtt://", "no host"),
        ("mqtt://:1883", "no host"),
        ("mqtt://broker.example:port", "Port could not be cast"),
        ("mqtt://broker.example:70000", "out of range"),
        ("mqtt://broker.example:0", "port 0"),
        ("mqtt://broker.example/telemetry", "path"),
        ("mqtt://broker.example?x=1", "query"),
        ("", "no scheme"),
    ],
)
def test_parse_broker_url_rejects(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match="invalid broker URL") as info:
        parse_broker_url(url)
    assert reason in str(info.value)
    assert "mqtt://host[:port]" in str(info.value) or "port 0" in reason


@pytest.mark.parametrize(
    "url",
    [
        "http://broker.example",
        "mqtt://",
        "mqtt://broker.example:70000",
        "mqtt://broker.example:0",
        "mqtt://broker.example?x=1",
        "mqtt://user:s3cret@broker.example",
        "mqtt://broker example",
        "mqtt://broker\texample",
    ],
)
def test_the_broker_setting_is_checked_by_the_same_parser(url: str) -> None:
    with pytest.raises(ValueError, match="invalid broker URL") as info:
        parse_broker(url)
    assert "s3cret" not in str(info.value) and "'embedded'" in str(info.value)
    with pytest.raises(ValueError, match="invalid broker URL"):
        parse_broker_url(url)


def test_the_broker_setting_accepts_what_the_run_accepts() -> None:
    for value in ("embedded", "embedded:mosquitto", "embedded:amqtt"):
        assert parse_broker(value) == value
    for url in ("mqtt://[::1]:1883", "mqtts://broker.example/", " mqtt://127.0.0.1 "):
        assert parse_broker(url) == url.strip()
        BrokerEndpoint.external(parse_broker(url))


def test_parse_broker_url_never_echoes_credentials() -> None:
    with pytest.raises(ValueError, match="credentials") as info:
        parse_broker_url("mqtt://user:s3cret@broker.example:1883")
    assert "s3cret" not in str(info.value)
    assert "***@broker.example" in str(info.value)


def test_endpoint_url_and_external() -> None:
    endpoint = BrokerEndpoint.external("mqtts://broker.example")
    assert endpoint == BrokerEndpoint(
        host="broker.example",
        port=8883,
        tls=True,
        kind="external",
        description="mqtts://broker.example:8883 (external)",
    )
    assert endpoint.url == "mqtts://broker.example:8883"
    v6 = BrokerEndpoint(host="::1", port=1883, tls=False, kind="external", description="")
    assert v6.url == "mqtt://[::1]:1883"


def test_mosquitto_config_is_unbounded_and_logs_to_file(tmp_path: Path) -> None:
    log = tmp_path / "broker.log"
    config = broker_mod.mosquitto_config(41234, log).splitlines()
    for line in (
        "listener 41234 127.0.0.1",
        "allow_anonymous true",
        "persistence false",
        "max_connections -1",
        "set_tcp_nodelay true",
        "max_inflight_messages 0",
        "max_queued_messages 0",
        "max_queued_bytes 0",
        f"log_dest file {log}",
    ):
        assert line in config
    assert "user root" not in config
    assert "user root" in broker_mod.mosquitto_config(1, log, run_as_root=True)


@needs_mosquitto
def test_mosquitto_version_parses_help() -> None:
    assert MOSQUITTO is not None
    version = mosquitto_version(MOSQUITTO)
    assert version is not None
    assert version[0].isdigit() and "." in version
    assert mosquitto_version("/nonexistent/mosquitto") is None


def test_raise_nofile_limit_reaches_the_hard_limit() -> None:
    import resource

    before_soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new_soft = raise_nofile_limit()
    assert new_soft == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert new_soft >= before_soft or new_soft == resource.RLIM_INFINITY
    if hard != resource.RLIM_INFINITY:
        assert new_soft == hard


def test_broker_dropped_without_stop_is_stopped_at_exit() -> None:
    code = (
        "from pytest_iotperf.embedded.broker import EmbeddedBroker\n"
        "broker = EmbeddedBroker(); broker.start(); print(broker.pid, broker.log_path.parent); del broker\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=_ROOT, timeout=30, check=True
    )
    pid, tmpdir = done.stdout.split()
    assert not psutil.pid_exists(int(pid)) or psutil.Process(int(pid)).status() == psutil.STATUS_ZOMBIE
    assert not Path(tmpdir).exists()


def test_module_does_not_import_pytest_locust_or_gevent() -> None:
    code = (
        "import sys, pytest_iotperf.embedded.broker; "
        "print(sorted(m for m in ('pytest', 'locust', 'gevent') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=_ROOT,
        timeout=30,
        check=True,
    )
    assert done.stdout.strip() == "[]"
