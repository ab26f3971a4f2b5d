"""The seed's whole chain on one machine: devices -> Mosquitto -> platform bridge -> Event Hubs -> consumers.

Real parts only: embedded Mosquitto, our Event Hubs-compatible endpoint, the
unmodified azure-eventhub SDK in the bridge and the sink processes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import psutil
import pytest

from pytest_iotperf.broker_endpoint import BrokerEndpoint
from pytest_iotperf.config import resolve
from pytest_iotperf.embedded.broker import EmbeddedBroker, find_mosquitto
from pytest_iotperf.embedded.eventhub import EmbeddedEventHub
from pytest_iotperf.readback import EventHubAccess
from pytest_iotperf.runner import PerfRun

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerEndpoint]:
    with EmbeddedBroker(prefer="mosquitto") as embedded:
        yield embedded.endpoint


@pytest.fixture(scope="module")
def hub() -> Iterator[EventHubAccess]:
    with EmbeddedEventHub(hub="telemetry", partitions=4) as embedded:
        yield EventHubAccess(embedded.connection_string, "embedded hub (test)", partitions=("0", "1", "2", "3"))


@pytest.mark.fleet
def test_full_chain_with_two_consumers_is_exact(broker: BrokerEndpoint, hub: EventHubAccess) -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    settings = resolve({}, {}, {}).for_run(
        {
            "devices": 20,
            "rate_per_device": 2.0,
            "duration": "3s",
            "workers": 1,
            "sink": "eventhub",
            "eventhub_consumers": 2,
            "drain": "10s",
        }
    )
    result = PerfRun(settings, broker, eventhub=hub).execute()
    assert result.sent == result.scheduled == 120
    assert result.received == result.sent and result.lost == 0 and result.duplicates == 0
    assert result.malformed == 0 and result.unexpected == 0
    # Delay is enqueued time - intended time: positive and far below a second on one machine.
    assert 0 < result.p50_delay_ms <= result.p99_delay_ms < 1000
    assert result.eventhub == "embedded hub (test)"
    # Same machine, same clock: reading never precedes enqueueing by more than rounding.
    assert result.eventhub_read_lag_min_ms is not None and result.eventhub_read_lag_min_ms > -2
    assert (
        result.eventhub_read_lag_max_ms is not None
        and result.eventhub_read_lag_max_ms >= result.eventhub_read_lag_min_ms
    )
    assert result.settings["sink"] == "eventhub" and result.sources["sink"] == "test code"
    assert sum(point.received for point in result.timeline) == result.received
    assert {p.pid for p in psutil.Process().children(recursive=True)} - before == set()


@pytest.mark.fleet
def test_plugin_runs_the_chain_and_never_shows_the_key(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.perf(slo=["loss == 0"])
        def test_chain(iot_perf):
            result = iot_perf.run(devices=10, rate_per_device=2, duration="2s", drain="10s", workers=1)
            assert result.received == result.sent > 0
            assert result.eventhub.startswith("embedded Event Hubs endpoint 127.0.0.1:")
        """
    )
    outcome = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--iot-sink", "eventhub", "--iot-report-dir", "out", "--junitxml", "junit.xml"
    )
    outcome.assert_outcomes(passed=1)  # its SLO's testcase lives in the junit XML only
    (report,) = (pytester.path / "out").glob("*.json")
    produced = "\n".join(
        [outcome.stdout.str(), outcome.stderr.str(), report.read_text(), (pytester.path / "junit.xml").read_text()]
    )
    assert json.loads(report.read_text())["loss"] == 0
    for secret_marker in ("SharedAccessKey=", "SharedAccessSignature", "sig="):
        assert secret_marker not in produced


def test_external_hub_without_connection_string_fails_clearly(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_chain(iot_perf):
            iot_perf.run(devices=2, duration="1s")
        """
    )
    outcome = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--iot-sink", "eventhub", "--iot-eventhub", "telemetry-prod"
    )
    outcome.assert_outcomes(failed=1)
    outcome.stdout.fnmatch_lines(["*--iot-eventhub telemetry-prod: set $IOTPERF_EVENTHUB_CONNECTION_STRING*"])
