"""Real runs: Locust master + workers + paho devices + sink against real brokers.

Each test checks exact accounting (sent == scheduled, received == sent) and
that the run leaves no child process behind.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator

import pytest
from test_arrival import scheduled_within
from wallclock import StartUp

from pytest_iotperf.broker_endpoint import BrokerEndpoint
from pytest_iotperf.config import resolve
from pytest_iotperf.embedded.broker import EmbeddedBroker, find_mosquitto
from pytest_iotperf.errors import BrokerError
from pytest_iotperf.processes import free_port
from pytest_iotperf.result import RunResult
from pytest_iotperf.runner import PerfRun

pytestmark = pytest.mark.fleet
needs_mosquitto = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")


@pytest.fixture(scope="module")
def mosquitto() -> Iterator[BrokerEndpoint]:
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed")
    with EmbeddedBroker(prefer="mosquitto") as broker:
        yield broker.endpoint


def _run(broker: BrokerEndpoint, **settings: object) -> RunResult:
    run_settings = resolve({}, {}, {}).for_run({"drain": "5s", **settings})
    return PerfRun(run_settings, broker).execute()


def _assert_exact(result: RunResult, devices: int) -> None:
    assert result.devices == devices
    assert result.connected == devices
    assert result.connect_failures == 0
    assert 0 < result.connect_p50_ms <= result.connect_p99_ms  # connect latency is measured, not 0
    assert result.sent == result.scheduled > 0
    assert result.received == result.sent
    assert result.lost == 0 and result.loss == 0.0
    assert result.duplicates == 0
    assert result.drain == "complete"
    assert 0 < result.p50_delay_ms <= result.p95_delay_ms <= result.p99_delay_ms <= result.max_delay_ms
    assert result.complete and not result.errors


@needs_mosquitto
def test_distributed_run_through_mosquitto_is_exact(mosquitto: BrokerEndpoint, no_child_left_behind: None) -> None:
    result = _run(mosquitto, devices=50, rate_per_device=2.0, duration="3s", workers=2, qos=1)
    _assert_exact(result, 50)
    assert result.workers == 2
    assert sorted(w["devices"] for w in result.worker_stats) == [25, 25]
    # 50 devices x 2 msg/s x 3 s, phases spread inside one period
    assert result.sent == 300
    assert result.broker.startswith("mosquitto")
    assert sum(point.sent for point in result.timeline) == result.sent
    assert sum(point.received for point in result.timeline) == result.received
    assert sum(n for buckets in result.per_minute.values() for n in buckets.values()) == result.received
    # The pytest process drove the fleet without importing locust (gevent would patch the stdlib).
    assert "locust" not in sys.modules and "gevent" not in sys.modules


@needs_mosquitto
def test_qos0_run_with_padding_and_custom_topic(mosquitto: BrokerEndpoint, no_child_left_behind: None) -> None:
    result = _run(
        mosquitto,
        devices=10,
        rate_per_device=4.0,
        duration="2s",
        workers=1,
        qos=0,
        payload_bytes=400,
        topic="plant/{run_id}/{device_id}/t",
    )
    _assert_exact(result, 10)
    assert result.sent == 80
    assert result.settings["sink_topic"] == "plant/{run_id}/+/t"


@needs_mosquitto
def test_3000_devices_in_one_worker(mosquitto: BrokerEndpoint, no_child_left_behind: None) -> None:
    # paho's own loops call select(), capped at FD_SETSIZE 1024: the greenlet
    # driver must carry far past it in a single worker process.
    result = _run(mosquitto, devices=3000, rate_per_device=0.5, duration="3s", workers=1, ramp_up="3s", qos=0)
    _assert_exact(result, 3000)
    stats = result.worker_stats[0]
    assert result.workers == 1 and stats["devices"] == 3000 and stats["sent"] == result.sent
    # The generator's own cost is reported: CPU per message, consistent with its CPU share.
    assert 0 < stats["cpu_us_per_message"] < 1e6
    assert stats["cpu_percent"] > 0


def test_run_through_amqtt(no_child_left_behind: None) -> None:
    with EmbeddedBroker(prefer="amqtt") as broker:
        result = _run(broker.endpoint, devices=10, rate_per_device=2.0, duration="2s", workers=1, qos=1)
    _assert_exact(result, 10)
    assert result.broker.startswith("amqtt")


def test_unreachable_broker_fails_fast_naming_the_url(no_child_left_behind: None, startup: StartUp) -> None:
    url = f"mqtt://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(BrokerError) as failure:
        _run(BrokerEndpoint.external(url), devices=5, duration="2s", workers=1)
    elapsed_s = time.monotonic() - started
    assert elapsed_s < startup.ceiling_s(startups=3), startup  # the broker is probed before a fleet starts
    assert url in str(failure.value)


def test_unreachable_broker_fails_the_test_not_the_session(pytester: pytest.Pytester, startup: StartUp) -> None:
    url = f"mqtt://127.0.0.1:{free_port()}"
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.perf
        def test_gate(iot_perf):
            iot_perf.run(devices=5, duration="2s")

        def test_other():
            pass
        """
    )
    started = time.monotonic()
    outcome = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--iot-broker={url}")
    elapsed_s = time.monotonic() - started
    assert elapsed_s < startup.ceiling_s(startups=6), startup  # pytest's own start-up included
    outcome.assert_outcomes(passed=1, failed=1)
    outcome.stdout.fnmatch_lines([f"*cannot reach the MQTT broker {url}*"])


@pytest.mark.skipif(shutil.which("mosquitto") is None and find_mosquitto() is None, reason="mosquitto missing")
def test_example_scaled_by_the_command_line(pytester: pytest.Pytester) -> None:
    """The README's 'Done when' command, shrunk: the CLI overrides the example's device count."""
    from pathlib import Path

    example = Path(__file__).parent.parent / "examples" / "test_ingestion_slo.py"
    pytester.makepyfile(test_example=example.read_text())
    outcome = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "-m",
        "perf",
        "--iot-devices",
        "30",
        "--iot-duration",
        "2s",
        "--iot-report-dir",
        "out",
    )
    outcome.assert_outcomes(passed=1)  # its two SLO testcases live in the junit XML only
    import json

    (report,) = (pytester.path / "out").glob("*.json")
    result = json.loads(report.read_text())
    assert result["devices"] == 30 and result["sources"]["devices"] == "command line"
    assert result["sent"] == 60 and result["loss"] == 0


@needs_mosquitto
def test_poisson_arrivals_are_accounted_exactly(mosquitto: BrokerEndpoint, no_child_left_behind: None) -> None:
    # Every device walks its own seeded exponential gaps; the worker replays the same streams to count
    # what was scheduled, so sent == scheduled holds exactly, and the seed makes the count repeatable.
    result = _run(mosquitto, devices=10, rate_per_device=4.0, duration="1500ms", workers=1, arrival="poisson", seed=3)
    _assert_exact(result, 10)
    expected = sum(scheduled_within("poisson", n, 4.0, 1.5, seed=3) for n in range(10))
    assert result.scheduled == expected and result.settings["arrival"] == "poisson"
