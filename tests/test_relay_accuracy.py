"""End to end against a known system under test: does the plugin measure what the relay did?

A relay (``tests/relay.py``) sits between the fleet's publish topic and the
sink topic: it adds a fixed delay and drops a deterministic set of
``(device_id, seq)``.  It keeps its own record of what it saw, dropped and
forwarded, independently of the plugin, and the run's result must match that
record exactly (loss) or within a tolerance (delay).

Two runs share one mosquitto: the relay adding 50 ms, and a baseline with
the same drops but no added delay.  The sink never gets every message sent,
so each run ends with its drain timing out (kept short).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from relay import MqttRelay, RelayStats
from relay_base import drop_by_rules

from pytest_iotperf.broker_endpoint import BrokerEndpoint
from pytest_iotperf.config import resolve
from pytest_iotperf.embedded.broker import EmbeddedBroker, find_mosquitto
from pytest_iotperf.result import RunResult
from pytest_iotperf.runner import PerfRun, RunFailed

pytestmark = [
    pytest.mark.fleet,
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed (apt-get install mosquitto)"),
]

DEVICES = 20
RATE_PER_DEVICE = 5.0
DURATION = "3s"
DRAIN = "3s"  # every run waits all of it: messages are missing
RELAY_DELAY_MS = 50.0
P50_SLACK_MS = 20.0  # p50 within [50, 50 + this]
DIFF_TOLERANCE_MS = 15.0  # p50(relay 50 ms) - p50(relay 0 ms) within 50 +- this

PUBLISH_TOPIC = "in/{device_id}/telemetry"
RELAY_INPUT = "in/+/telemetry"
RELAY_OUTPUT = "out/{device_id}/telemetry"
SINK_TOPIC = "out/+/telemetry"

#: Devices (by the number their id ends with) that lose messages, and which:
#: seq % modulus == residue.  With 15 messages a device (seq 0..14) they lose
#: 2, 5, 3 and 4 messages, the first one (seq 0) and the last one (seq 14)
#: included, so the per-device counts are distinct and ordered.
DROP_RULES: dict[int, tuple[int, int]] = {1: (10, 3), 6: (3, 0), 11: (5, 4), 16: (4, 1)}
should_drop = drop_by_rules(DROP_RULES)


@dataclass(frozen=True)
class Outcome:
    """One run through the relay: the plugin's result and the relay's own record."""

    result: RunResult
    relay: RelayStats
    failure: str | None  # RunFailed's message, when execute() raised it
    relay_idle: bool  # the relay had published (and got PUBACKs for) everything before it stopped
    relay_threads_left: list[str]
    elapsed_s: float


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerEndpoint]:
    # The context manager stops mosquitto on the way out, whatever the tests did.
    with EmbeddedBroker(prefer="mosquitto") as embedded:
        yield embedded.endpoint


def _run_through_relay(endpoint: BrokerEndpoint, delay_ms: float) -> Outcome:
    settings = resolve({}, {}, {}).for_run(
        {
            "devices": DEVICES,
            "rate_per_device": RATE_PER_DEVICE,
            "duration": DURATION,
            "workers": 1,
            "qos": 1,
            "topic": PUBLISH_TOPIC,
            "sink_topic": SINK_TOPIC,
            "drain": DRAIN,
        }
    )
    run = PerfRun(settings, endpoint)
    relay = MqttRelay(
        endpoint.host,
        endpoint.port,
        input_filter=RELAY_INPUT,
        output_template=RELAY_OUTPUT,
        delay_s=delay_ms / 1000.0,
        drop=should_drop,
        run_id=run.run_id,
        qos=1,
    )
    started = time.monotonic()
    failure: str | None = None
    # The relay is stopped (threads joined, client disconnected) when this block
    # exits, on failure too; the sink and fleet processes are PerfRun's to stop.
    with relay:
        try:
            result = run.execute()
        except RunFailed as exc:
            result, failure = exc.result, str(exc)
        relay_idle = relay.wait_idle(5.0)
    elapsed_s = time.monotonic() - started
    return Outcome(
        result=result,
        relay=relay.stats(),
        failure=failure,
        relay_idle=relay_idle,
        relay_threads_left=[t.name for t in relay.alive_threads()],
        elapsed_s=elapsed_s,
    )


@pytest.fixture(scope="module")
def delayed(broker: BrokerEndpoint) -> Outcome:
    return _run_through_relay(broker, RELAY_DELAY_MS)


@pytest.fixture(scope="module")
def baseline(broker: BrokerEndpoint) -> Outcome:
    return _run_through_relay(broker, 0.0)


def _expected_worst_devices(relay: RelayStats) -> list[tuple[str, int]]:
    """The result's documented order: most lost first, ties by device id, at most 10."""
    counts = Counter(device_id for device_id, _seq in relay.dropped)
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:10]


def _context(outcome: Outcome) -> str:
    """Appended to assertion messages: a RunFailed would explain a wrong figure."""
    failure = f"; execute() raised RunFailed: {outcome.failure}" if outcome.failure else ""
    return f"{outcome.result!r}; relay: {len(outcome.relay.seen)} seen, {len(outcome.relay.dropped)} dropped{failure}"


def _check_relay(outcome: Outcome) -> None:
    """The relay did exactly what it was told, so it is a trustworthy reference."""
    relay = outcome.relay
    assert relay.errors == (), relay.errors
    assert outcome.relay_idle, f"the relay had not finished forwarding when it stopped: {relay.pending} pending"
    assert outcome.relay_threads_left == [], "the relay left threads behind"
    assert relay.discarded == 0 and relay.pending == 0
    assert relay.malformed == 0 and relay.other_runs == 0 and relay.duplicates == 0
    # Every device's seqs arrived as 0..n-1 without a gap (the fleet numbers
    # its successful publishes that way), so what the relay saw is what was sent.
    seen = relay.seen_by_device()
    assert len(seen) == DEVICES, sorted(seen)
    for device_id, seqs in seen.items():
        assert seqs == list(range(len(seqs))), f"the relay saw a gap from {device_id}: {seqs}"
    # It dropped exactly what the rule says and forwarded the rest; every
    # forward was acknowledged by the broker.
    assert relay.dropped == {pair for pair in relay.seen if should_drop(*pair)}
    assert relay.forwarded == relay.seen - relay.dropped
    assert relay.publishes == relay.acked == len(relay.forwarded)
    # Drops spread over several devices, few enough that worst_devices (top
    # 10) lists every one of them.
    dropping = relay.dropped_by_device()
    assert 2 <= len(dropping) <= 10, f"the drop rules hit {sorted(dropping)}; device ids: {sorted(seen)}"


def _check_loss(outcome: Outcome) -> None:
    """Asserted on the result whether or not execute() raised RunFailed (then on its partial result)."""
    _check_relay(outcome)
    result, relay, context = outcome.result, outcome.relay, _context(outcome)
    assert result.sent == len(relay.seen), context
    assert result.lost == len(relay.dropped), context
    assert result.received == len(relay.forwarded), context
    assert result.sent == result.lost + result.received, context
    assert result.loss == pytest.approx(len(relay.dropped) / len(relay.seen)), context
    assert (result.unexpected, result.duplicates, result.out_of_order) == (0, 0, 0), context
    assert (result.other_runs, result.malformed) == (0, 0), context
    # Per device and per message: the result names exactly the pairs the relay dropped.
    assert result.worst_devices == _expected_worst_devices(relay), context
    reported_missing = {
        (device_id, seq)
        for device_id, spans in result.missing.items()
        for start, end in spans
        for seq in range(start, end)
    }
    assert reported_missing == set(relay.dropped), context


def test_run_completes_despite_missing_messages(delayed: Outcome) -> None:
    """Messages the system under test never delivers are loss, not a broken run."""
    result = delayed.result
    assert delayed.failure is None, f"execute() raised RunFailed: {delayed.failure}"
    assert result.errors == [] and result.complete, result.errors
    assert result.connected == DEVICES and result.connect_failures == 0, _context(delayed)
    assert result.publish_errors == 0 and result.workers == 1, _context(delayed)
    # The sink waits for every message sent, so it waits out its whole drain time.
    assert result.drain == "timeout"
    assert f"drain time ended with {len(delayed.relay.dropped)} message(s) still missing" in result.warnings
    assert delayed.relay_threads_left == []


def test_loss_matches_relay_drops(delayed: Outcome) -> None:
    _check_loss(delayed)


def test_delay_includes_relay_delay(delayed: Outcome) -> None:
    _check_relay(delayed)
    result, context = delayed.result, _context(delayed)
    assert not result.generator_saturated, f"load generator saturated: {result.warnings}"
    assert result.delay_histogram.count == result.received, context
    assert result.delay_histogram.min_us is not None, context
    # No message can arrive sooner than 50 ms after it was due: the relay holds
    # each one 50 ms from the moment it received it.
    min_delay_ms = result.delay_histogram.min_us / 1000.0
    assert min_delay_ms >= RELAY_DELAY_MS, (
        f"min delay {min_delay_ms:.3f} ms, but the relay held every message "
        f">= {delayed.relay.added_delay_min_s * 1000:.3f} ms; {context}"
    )
    assert RELAY_DELAY_MS <= result.p50_delay_ms <= RELAY_DELAY_MS + P50_SLACK_MS, context


def test_delay_difference_matches_relay_delay(delayed: Outcome, baseline: Outcome) -> None:
    _check_loss(baseline)  # same drops: the same exact accounting without the delay
    _check_relay(delayed)
    for outcome in (delayed, baseline):
        assert not outcome.result.generator_saturated, f"load generator saturated: {outcome.result.warnings}"
    difference_ms = delayed.result.p50_delay_ms - baseline.result.p50_delay_ms
    assert difference_ms == pytest.approx(RELAY_DELAY_MS, abs=DIFF_TOLERANCE_MS), (
        f"p50 {delayed.result.p50_delay_ms:.2f} ms with the relay adding 50 ms, "
        f"{baseline.result.p50_delay_ms:.2f} ms with it adding nothing"
    )
