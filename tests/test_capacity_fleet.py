"""find_capacity() with a real fleet, broker and sink (pytester, one pytest run for both cases).

1. System-bound: ``capacity_relay.CapacityRelay`` forwards at most 210 msg/s, so with 10 msg/s per
   device the knee is 21 devices.  The escalation 10, 20, 40 (the limit) is ONE run in stages: the
   same run id, holds at stages 0, 2, 4 (a connect stage between two holds), the 10 devices of the
   first stage connected at T0 and the others joining at their stages' ramps, no device
   dropping its connection in between.  Then the bisection probes 30 as its own run (coarse on
   purpose).  The search must find max_devices within its resolution of 21 and say
   ``bound="system"``, and the 40-device stage delivers about 210 msg/s while it is on (the
   relay's capacity); its junit properties, JSON result, HTML page and summary line are checked.
2. Generator-bound: one worker asked for 5,000 msg/s per device from 20 devices (100,000 msg/s)
   cannot keep its schedule: the first stage saturates and the search stops there with
   ``bound="generator"`` and a hint to add workers.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pytest_iotperf.embedded.broker import find_mosquitto

pytestmark = [
    pytest.mark.fleet,
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed (apt-get install mosquitto)"),
]

CAPACITY_PER_S = 210.0
RATE = 10.0
KNEE = CAPACITY_PER_S / RATE  # 21 devices
RESOLUTION = 0.5

CONFTEST = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
import pytest
from capacity_relay import CapacityRelay

@pytest.fixture
def relay(iot_perf):
    endpoint = iot_perf._session.broker_for("embedded:mosquitto")
    with CapacityRelay(endpoint.host, endpoint.port, capacity_per_s={CAPACITY_PER_S}) as running:
        yield running
"""

TESTS = f"""
def test_system_bound(relay, iot_perf):
    capacity = iot_perf.find_capacity(
        slo=["p95_delay_ms < 250"], start=10, limit=40, hold="2s", factor=2.0, resolution={RESOLUTION},
        rate_per_device={RATE}, workers=1, broker="embedded:mosquitto", topic="in/{{device_id}}/t",
        sink_topic="out/+/t", drain="4s",
    )
    print("CAPACITY", capacity, capacity.hint)
    assert relay.errors == []
    assert capacity.bound == "system", capacity.steps_text()
    assert {KNEE} / (1 + {RESOLUTION}) <= capacity.max_devices <= {KNEE}, capacity.steps_text()
    assert capacity.failed_devices > {KNEE}
    assert capacity.limiting_slo.startswith("p95_delay_ms < 250: ")
    assert [s.devices for s in capacity.steps][:3] == [10, 20, 40]
    # The escalation: the stages of one run; the bisection's step a run of its own.
    escalation = [s for s in capacity.steps if s.stage is not None]
    assert [s.devices for s in escalation] == [10, 20, 40], capacity.runs_text()
    assert [s.stage for s in escalation] == [0, 2, 4, 6][:len(escalation)]  # connect stages between the holds
    assert len({{s.run_id for s in escalation}}) == 1
    assert [s.stage for s in capacity.steps[len(escalation):]] == [None] * (len(capacity.steps) - len(escalation))
    assert capacity.runs_text().startswith(f"run {{escalation[0].run_id}}: stages 10, 20, 40"), capacity.runs_text()
    run = next(r for r in iot_perf.capacity_runs if r.run_id == escalation[0].run_id)
    assert [run.stages[s.stage].devices for s in escalation] == [s.devices for s in escalation]
    # Each device connected once (stage 1's before T0, the others at their stages' ramps), none dropped.
    assert run.connected == 40, run
    assert (run.connect_failures, run.disconnects, run.reconnects) == (0, 0, 0), run
    assert (run.stage_joins, run.stage_leaves) == (run.connected - 10, 0), (run.stage_joins, run.connected)
    # Past the knee what the relay delivered while the load was on levels off at its capacity.
    assert 0.75 * {CAPACITY_PER_S} <= capacity.steps[2].delivered_per_s <= 1.15 * {CAPACITY_PER_S}, capacity.steps[2]

def test_generator_bound(iot_perf):
    capacity = iot_perf.find_capacity(
        slo=["p95_delay_ms < 60s"], start=20, limit=40, hold="1s", rate_per_device=5000, workers=1, qos=0,
        broker="embedded:mosquitto", drain="2s",
    )
    print("CAPACITY", capacity, capacity.hint)
    assert capacity.bound == "generator", capacity.steps_text()
    assert capacity.steps[0].generator_saturated and capacity.max_devices == 0
    assert capacity.steps[0].stage == 0 and "lateness" in capacity.steps[0].saturation
    assert "add workers" in capacity.hint.lower()
"""


def test_find_capacity_system_and_generator_bound(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_capacity=TESTS)
    outcome = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-s", "--junitxml=junit.xml", "--iot-report-dir", "out"
    )
    outcome.assert_outcomes(passed=2)
    # junit: the search's properties on its test (no SLO testcases for the steps that failed).
    cases = {c.get("name"): c for c in ET.parse(pytester.path / "junit.xml").iter("testcase")}
    assert set(cases) == {"test_system_bound", "test_generator_bound"}
    found = {p.get("name"): p.get("value", "") for p in cases["test_system_bound"].iter("property")}
    assert found["iotperf.capacity.bound"] == "system"
    assert KNEE / (1 + RESOLUTION) <= int(found["iotperf.capacity.max_devices"]) <= KNEE
    assert found["iotperf.capacity.limiting_slo"].startswith("p95_delay_ms < 250: ")
    assert found["iotperf.capacity.steps"].startswith("10: pass; 20: ")
    assert "; 40: FAIL p95_delay_ms < 250: " in found["iotperf.capacity.steps"]
    generator = {p.get("name"): p.get("value", "") for p in cases["test_generator_bound"].iter("property")}
    assert generator["iotperf.capacity.bound"] == "generator"
    # JSON and HTML beside the runs' reports; the summary line.
    (report,) = (pytester.path / "out").glob("*test_system_bound.capacity.json")
    data = json.loads(report.read_text())
    assert data["bound"] == "system" and len(data["steps"]) == len(found["iotperf.capacity.steps"].split("; "))
    assert all(step["offered_per_s"] == step["devices"] * RATE for step in data["steps"])
    page = report.with_suffix(".html").read_text()
    assert 'data-marker="knee"' in page and 'data-chart="capacity-delay"' in page
    outcome.stdout.fnmatch_lines(["*capacity *test_system_bound: max_devices *bound system*steps in*"])
    outcome.stdout.fnmatch_lines(["*capacity *test_generator_bound: max_devices 0 *bound generator*"])
