"""Windowed SLOs end to end (issue 16): a relay slows only the messages due in a known interval.

A 6 s run of 10 devices x 10/s through ``delay_relay.DelayRelay``, which holds
the messages due in [2.9 s, 3.1 s) after T0 for 300 ms (10 % of each of the two
windows it overlaps, 3 % of the run).  ``p95_delay_ms < 200 per 1s`` must fail
exactly the windows [2s,3s) and [3s,4s); the whole-run ``p95_delay_ms < 100``
passes: the bad moment hides in the run's p95, not in its windows.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from delay_relay import DelayRelay

from pytest_iotperf.broker_endpoint import BrokerEndpoint
from pytest_iotperf.config import resolve
from pytest_iotperf.embedded.broker import EmbeddedBroker, find_mosquitto
from pytest_iotperf.pipeline import Pipeline
from pytest_iotperf.slo import window_bounds

pytestmark = [
    pytest.mark.fleet,
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed (apt-get install mosquitto)"),
]

SLOW_FROM_S, SLOW_UNTIL_S, SLOW_S = 2.9, 3.1, 0.3
WINDOWED = "p95_delay_ms < 200 per 1s"
WHOLE_RUN = "p95_delay_ms < 100"


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerEndpoint]:
    with EmbeddedBroker(prefer="mosquitto") as embedded:
        yield embedded.endpoint


def test_windowed_slo_fails_exactly_the_windows_overlapping_the_slow_interval(broker: BrokerEndpoint) -> None:
    settings = resolve({}, {}, {}).for_run(
        {
            "devices": 10,
            "rate_per_device": 10.0,
            "duration": "6s",
            "workers": 1,
            "qos": 1,
            "topic": "in/{device_id}/telemetry",
            "sink_topic": "out/+/telemetry",
            "drain": "5s",
        }
    )
    relay = DelayRelay(
        broker.host, broker.port, input_filter="in/+/telemetry", output_template="out/{device_id}/telemetry",
        delay_s=0.0, qos=1,
    )  # fmt: skip
    with relay, Pipeline().start(settings, broker, slos=[WINDOWED, WHOLE_RUN]) as run:
        run.wait_until(0.0)  # T0 is known (the relay slows by due time from it)
        relay.slow_during(float(run.progress()["t0"]), SLOW_FROM_S, SLOW_UNTIL_S, SLOW_S)
    outcome = run.outcome
    result = outcome.result
    windowed, whole_run = outcome.verdicts[:2]
    assert [w.label for w in windowed.failed_windows] == ["[2s,3s)", "[3s,4s)"], windowed.describe()
    assert len(windowed.windows) == 6 and windowed.describe().startswith(f"{WINDOWED}: 2 of 6 windows failed: [2s,3s) ")
    assert whole_run.passed, whole_run.describe()
    assert f"  {WINDOWED}: 2 of 6 windows failed: [2s,3s)" in outcome.failure_message()
    # The windows tile the run: what arrived, by due time, adds up to what the run received.
    assert result.lost == 0 and result.unexpected == 0, result
    windows = [result.window(start, end) for start, end in window_bounds(result.duration_s, 1.0)]
    assert sum(w.received for w in windows) == result.received == result.stages[0].received
    assert all(w.received for w in windows)
    verdict = next(slo for slo in result.slos if slo["slo"] == WINDOWED)
    assert [w["passed"] for w in verdict["windows"]] == [True, True, False, False, True, True]
