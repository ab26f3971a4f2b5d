"""Abort early: the rule derived from SLOs (pure), and a real run stopped when its loss budget is spent."""

from __future__ import annotations

import json
import time

import pytest
from wallclock import StartUp

from pytest_iotperf.abort import AbortRule, AbortWatch, abort_rule_for, with_outage_budget
from pytest_iotperf.slo import parse_slo


def test_rule_takes_the_tightest_budget_from_the_slos() -> None:
    slos = [parse_slo(s) for s in ("loss < 1%", "lost <= 5", "p95_delay_ms < 100", "connect_failures == 0")]
    rule = abort_rule_for(slos, planned_messages=1000)
    assert rule is not None
    assert rule.max_missing == 5 and rule.missing_slo == "lost <= 5"  # 1% of 1000 would allow 9
    assert rule.max_connect_failures == 0
    assert abort_rule_for([parse_slo("loss < 1%")], 1000) == AbortRule(9, "loss < 1%")  # 10 would not be < 1%
    assert abort_rule_for([parse_slo("p95_delay_ms < 100"), parse_slo("lost > 3")], 1000) is None


def test_watch_tolerates_a_short_excess_and_stops_a_lasting_one() -> None:
    watch = AbortWatch(AbortRule(max_missing=10, missing_slo="lost <= 10", grace_s=5), planned_messages=500)
    assert watch.check({"gaps": 50}, now=100.0) is None  # in flight or reordered, maybe
    assert watch.check({"gaps": 3}, now=102.0) is None  # it came back under: the clock restarts
    assert watch.check({"gaps": 50}, now=103.0) is None
    reason = watch.check({"gaps": 60}, now=108.5)
    assert reason is not None and "60 messages missing" in reason and "lost <= 10" in reason
    connect = AbortWatch(AbortRule(max_connect_failures=0, connect_slo="connect_failures == 0"), 10)
    assert "2 devices failed to connect" in (connect.check({"connect_failed": 2}, now=0.0) or "")


def test_watch_stops_once_more_than_half_the_fleet_is_offline_past_the_outage_budget() -> None:
    rule = with_outage_budget(None, devices=2000, outage_budget_s=60)
    watch = AbortWatch(rule, planned_messages=180_000)
    # A broker restart: everyone offline, but within the budget (or half exactly past it) goes on.
    assert watch.check({"offline": 2000, "offline_over_budget": 0, "offline_longest_s": 59.9}, now=0.0) is None
    assert watch.check({"offline": 2000, "offline_over_budget": 1000, "offline_longest_s": 61.0}, now=1.0) is None
    reason = watch.check({"offline": 2000, "offline_over_budget": 1200, "offline_longest_s": 61.3}, now=2.0)
    assert reason == "1,200 of 2,000 devices offline for more than 60s (longest 61.3s)"
    # Without reconnecting there is no outage budget: the master's "every device lost its connection" applies.
    assert AbortWatch(AbortRule(max_missing=5), 100).check({"offline_over_budget": 2000}, now=0.0) is None


def test_outage_budget_joins_the_slo_budgets() -> None:
    slo_rule = abort_rule_for([parse_slo("lost <= 5")], planned_messages=1000)
    rule = with_outage_budget(slo_rule, devices=10, outage_budget_s=3)
    assert (rule.max_missing, rule.missing_slo, rule.outage_budget_s, rule.devices) == (5, "lost <= 5", 3, 10)
    watch = AbortWatch(rule, 1000)
    reason = watch.check({"offline_over_budget": 6, "offline_longest_s": 4.0, "gaps": 0}, now=0.0)
    assert reason == "6 of 10 devices offline for more than 3s (longest 4.0s)"
    # The loss budget is still spent as before, outage or not.
    assert watch.check({"offline_over_budget": 0, "gaps": 50}, now=10.0) is None
    assert "50 messages missing" in (watch.check({"offline_over_budget": 0, "gaps": 50}, now=15.0) or "")


DROPPING_CONFTEST = '''
import json, threading
import pytest
from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

@pytest.fixture
def lossy_platform(iot_perf):
    """Forwards in/<device> to out/<device>, dropping every other message: the loss budget goes fast."""
    endpoint = iot_perf._session.broker_for("embedded")
    ready = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    def on_connect(c, u, f, rc, p):
        c.subscribe("in/+/t", qos=0)
    def on_subscribe(c, u, mid, rcs, p):
        ready.set()
    def on_message(c, u, msg):
        if json.loads(msg.payload)["seq"] % 2 == 0:
            c.publish(msg.topic.replace("in/", "out/", 1), msg.payload, qos=0)
    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    client.connect(endpoint.host, endpoint.port)
    client.loop_start()
    assert ready.wait(10)
    yield
    client.disconnect()
    client.loop_stop()
'''


@pytest.mark.fleet
@pytest.mark.parametrize("abort", [True, False])
def test_run_stops_early_when_the_loss_budget_is_spent(
    pytester: pytest.Pytester, abort: bool, startup: StartUp
) -> None:
    pytester.makeconftest(DROPPING_CONFTEST)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.perf(slo=["loss < 1%"])
        def test_gate(lossy_platform, iot_perf):
            iot_perf.run(devices=10, rate_per_device=4, duration="40s", drain="2s", workers=1, qos=0,
                         topic="in/{device_id}/t", sink_topic="out/+/t")
        """
    )
    args = ["-p", "no:cacheprovider", "--iot-report-dir", "out"] + (
        [] if abort else ["--iot-duration", "6s", "--iot-no-abort"]
    )
    started = time.monotonic()
    outcome = pytester.runpytest_subprocess(*args)
    elapsed_s = time.monotonic() - started
    outcome.assert_outcomes(failed=1)  # the SLO's own junit testcase is not a pytest outcome
    (report,) = (pytester.path / "out").glob("*.json")
    result = json.loads(report.read_text())
    assert result["lost"] > 0 and result["slos"][0]["passed"] is False
    if abort:
        # 40 s planned; the budget (15 of 1,600) is spent within a second, then 5 s of grace.
        assert elapsed_s < startup.ceiling_s(startups=16, own_s=1 + 5 + 2), startup  # + 2 s drain
        outcome.stdout.fnmatch_lines(["*aborted early:*messages missing*loss < 1%*"])
        assert result["sent"] < 1600
        assert any("aborted early" in e for e in result["errors"])
    else:
        assert result["sent"] == result["scheduled"] == 240
        assert "aborted early" not in outcome.stdout.str()
