"""Unit tests of pytest_iotperf.metrics: plain functions, seeded random data."""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Callable
from decimal import ROUND_CEILING, Decimal
from typing import cast

import pytest

from pytest_iotperf.metrics import (
    DelayHistogram,
    DeliveryLedger,
    LossAccount,
    account,
)
from pytest_iotperf.result import build_result
from pytest_iotperf.wire_reports import FleetReport, SinkReport

QUANTILES = [0, 0.1, 1, 5, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.99, 100]


def exact_percentile(sorted_values: list[int], q: float) -> int:
    """Reference nearest-rank percentile, computed with decimals independently."""
    if q == 0:
        return sorted_values[0]
    rank = (Decimal(str(q)) * len(sorted_values) / 100).to_integral_value(rounding=ROUND_CEILING)
    return sorted_values[max(1, int(rank)) - 1]


def lognormal_delays(rng: random.Random, n: int) -> list[int]:
    # Median ~20 ms, clipped to 0.05 ms .. 60 s like a real delay spread.
    return [min(60_000_000, max(50, int(rng.lognormvariate(math.log(20_000), 2.0)))) for _ in range(n)]


def skewed_delays(rng: random.Random, n: int) -> list[int]:
    # Clock skew: delays around 0 that go negative about half the time.
    return [int(rng.gauss(0, 30_000)) for _ in range(n)]


def negative_only(rng: random.Random, n: int) -> list[int]:
    return [-int(rng.expovariate(1 / 5_000)) - 1 for _ in range(n)]


def small_uniform(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(-300, 300) for _ in range(n)]


def wide_uniform(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(-(2**40), 2**40) for _ in range(n)]


DISTRIBUTIONS: list[Callable[[random.Random, int], list[int]]] = [
    lognormal_delays,
    skewed_delays,
    negative_only,
    small_uniform,
    wide_uniform,
]


def histogram_of(values: list[int]) -> DelayHistogram:
    histogram = DelayHistogram()
    for value in values:
        histogram.record(value)
    return histogram


# -- DelayHistogram ----------------------------------------------------------


@pytest.mark.parametrize("make_values", DISTRIBUTIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("seed", [1, 2])
def test_percentiles_match_exact_nearest_rank(
    make_values: Callable[[random.Random, int], list[int]], seed: int
) -> None:
    rng = random.Random(seed)
    values = make_values(rng, 5_000)
    histogram = histogram_of(values)
    ordered = sorted(values)
    for q in QUANTILES:
        exact = exact_percentile(ordered, q)
        estimate = histogram.percentile(q)
        if abs(exact) < 256:
            assert estimate == exact, (q, exact, estimate)
        else:
            assert abs(estimate - exact) <= 0.01 * abs(exact), (q, exact, estimate)
        assert ordered[0] <= estimate <= ordered[-1]


def test_every_value_lands_in_a_tight_bucket() -> None:
    rng = random.Random(7)
    probes = list(range(-1100, 1100))
    for bits in range(8, 45):
        for offset in (-1, 0, 1):
            probes.extend([(1 << bits) + offset, -(1 << bits) - offset])
    probes.extend(rng.randrange(-(10**12), 10**12) for _ in range(2_000))
    for value in probes:
        histogram = DelayHistogram()
        histogram.record(value)
        # Far neighbours on both sides, so clamping to [min, max] cannot help.
        histogram.record(value - 10**15)
        histogram.record(value + 10**15)
        _, (lower, upper, count), _ = histogram.buckets()
        assert count == 1
        assert lower <= value < upper
        if abs(value) < 256:
            assert upper - lower == 1
            assert histogram.percentile(50) == value
        else:
            assert (upper - lower) / min(abs(lower), abs(upper - 1)) <= 1 / 128
            assert abs(histogram.percentile(50) - value) <= abs(value) / 256


def test_buckets_are_ascending_contiguous_and_cover_every_value() -> None:
    values = list(range(-70_000, 70_000, 7))
    histogram = histogram_of(values)
    buckets = histogram.buckets()
    assert sum(count for _, _, count in buckets) == len(values)
    for (_, upper, _), (lower, _, _) in itertools.pairwise(buckets):
        assert upper <= lower
    dense = histogram_of(list(range(-5_000, 5_000)))
    dense_buckets = dense.buckets()
    assert dense_buckets[0][0] <= -5_000 < dense_buckets[0][1]
    assert dense_buckets[-1][0] <= 4_999 < dense_buckets[-1][1]
    for (_, upper, _), (lower, _, _) in itertools.pairwise(dense_buckets):
        assert upper == lower
    # |v| < 256 is one bucket per microsecond; past that at most 128 per power of two.
    assert sum(1 for low, up, _ in dense_buckets if up - low == 1) == 511
    assert len(dense_buckets) < 511 + 2 * 128 * 5


def test_exact_count_min_max_sum_mean() -> None:
    rng = random.Random(3)
    values = skewed_delays(rng, 3_000)
    histogram = histogram_of(values)
    assert histogram.count == len(values)
    assert histogram.min_us == min(values)
    assert histogram.max_us == max(values)
    assert histogram.sum_us == sum(values)
    assert histogram.mean_us == sum(values) / len(values)
    assert histogram.percentile(0) == min(values)
    assert histogram.percentile(100) == max(values)


def test_extremes_are_exact_even_in_wide_buckets() -> None:
    histogram = histogram_of([1_000_003, 1_000_001, 59_999_999])
    assert histogram.percentile(0) == 1_000_001
    assert histogram.percentile(100) == 59_999_999
    # The bucket midpoint would be below the only value in it: clamped to min.
    single = histogram_of([257])
    assert single.percentile(50) == 257


def test_record_with_count_equals_repeated_records() -> None:
    bulk = DelayHistogram()
    bulk.record(12_345, count=5)
    bulk.record(-7, count=2)
    repeated = histogram_of([12_345] * 5 + [-7] * 2)
    assert bulk == repeated
    assert bulk.to_dict() == repeated.to_dict()


def test_record_rejects_bad_input() -> None:
    histogram = DelayHistogram()
    with pytest.raises(ValueError, match="count"):
        histogram.record(5, count=0)
    with pytest.raises(TypeError, match="int"):
        histogram.record(5.0)  # type: ignore[arg-type]
    assert histogram.count == 0


def test_empty_histogram() -> None:
    histogram = DelayHistogram()
    assert math.isnan(histogram.percentile(50))
    assert math.isnan(histogram.mean_us)
    assert histogram.min_us is None
    assert histogram.max_us is None
    assert histogram.buckets() == []
    assert DelayHistogram.from_dict(json.loads(json.dumps(histogram.to_dict()))) == (histogram)
    assert "count=0" in repr(histogram)


@pytest.mark.parametrize("q", [-0.001, 100.001, -5, 1000, math.nan, math.inf])
def test_percentile_rejects_q_outside_range(q: float) -> None:
    histogram = histogram_of([1, 2, 3])
    with pytest.raises(ValueError, match="within"):
        histogram.percentile(q)


def test_percentile_rank_is_not_fooled_by_float_rounding() -> None:
    # 0.07 * 100 == 7.000000000000001 in floats; the 7th value is the answer.
    histogram = histogram_of(list(range(1, 101)))
    assert histogram.percentile(7) == 7
    assert histogram.percentile(99.9) == 100
    assert histogram.percentile(50) == 50
    assert histogram.percentile(50.5) == 51


def test_merge_of_split_data_equals_histogram_of_all() -> None:
    rng = random.Random(11)
    values = lognormal_delays(rng, 4_000) + skewed_delays(rng, 4_000)
    whole = histogram_of(values)
    parts = [DelayHistogram() for _ in range(4)]
    for value in values:
        rng.choice(parts).record(value)
    parts.append(DelayHistogram())  # an empty partition must not disturb min/max
    merged = DelayHistogram()
    for part in parts:
        merged.merge(part)
    assert merged == whole
    assert merged.to_dict() == whole.to_dict()
    for q in QUANTILES:
        assert merged.percentile(q) == whole.percentile(q)
    summed = parts[0] + parts[1] + parts[2] + parts[3] + parts[4]
    assert summed == whole
    assert parts[0].count < whole.count  # + did not modify its operands


def test_copy_is_independent_and_self_merge_doubles() -> None:
    histogram = histogram_of([5, 500, 5_000])
    clone = histogram.copy()
    clone.record(50_000)
    assert histogram.count == 3
    assert clone.count == 4
    histogram.merge(histogram)
    assert histogram == histogram_of([5, 500, 5_000] * 2)


def test_histogram_round_trip_through_json() -> None:
    rng = random.Random(5)
    histogram = histogram_of(skewed_delays(rng, 2_000) + wide_uniform(rng, 200))
    encoded = json.dumps(histogram.to_dict())
    restored = DelayHistogram.from_dict(json.loads(encoded))
    assert restored == histogram
    assert restored.to_dict() == histogram.to_dict()
    for q in QUANTILES:
        assert restored.percentile(q) == histogram.percentile(q)


def test_histogram_from_dict_rejects_inconsistent_data() -> None:
    good = histogram_of([1, 300, 70_000]).to_dict()
    with pytest.raises(ValueError, match="count"):
        DelayHistogram.from_dict({**good, "count": 4})
    with pytest.raises(ValueError, match="format"):
        DelayHistogram.from_dict({**good, "format": "something/else"})
    with pytest.raises(ValueError, match="min_us"):
        DelayHistogram.from_dict({**good, "min_us": 2})
    with pytest.raises(ValueError, match="integer"):
        DelayHistogram.from_dict({**good, "sum_us": "70301"})


def test_repr_is_short() -> None:
    text = repr(histogram_of([1_000, 2_000, 3_000]))
    assert text.startswith("DelayHistogram(count=3")
    assert len(text) < 120


# -- DeliveryLedger ----------------------------------------------------------


def test_in_order_arrivals_grow_one_interval() -> None:
    ledger = DeliveryLedger()
    assert all(ledger.record("d1", seq) for seq in range(10))
    assert ledger.intervals("d1") == [(0, 10)]
    assert ledger.received == 10
    assert ledger.duplicates == 0
    assert ledger.out_of_order == 0
    assert ledger.highest_seq("d1") == 9
    assert ledger.highest_seq("nobody") is None
    assert ledger.devices == 1


def test_duplicates_are_counted_not_received() -> None:
    ledger = DeliveryLedger()
    for seq in (0, 1, 2, 5, 6):
        ledger.record("d1", seq)
    assert ledger.record("d1", 2) is False
    assert ledger.record("d1", 0) is False
    assert ledger.record("d1", 5) is False
    assert ledger.received == 5
    assert ledger.duplicates == 3
    assert ledger.out_of_order == 0


def test_out_of_order_fills_gaps_and_merges_intervals() -> None:
    ledger = DeliveryLedger()
    for seq in (0, 1, 2, 5, 6):
        ledger.record("d1", seq)
    assert ledger.intervals("d1") == [(0, 3), (5, 7)]
    assert ledger.record("d1", 3) is True
    assert ledger.intervals("d1") == [(0, 4), (5, 7)]
    assert ledger.record("d1", 4) is True
    assert ledger.intervals("d1") == [(0, 7)]
    assert ledger.out_of_order == 2
    assert ledger.record("d1", 20) is True  # a jump ahead is not out of order
    assert ledger.record("d1", 18) is True  # isolated gap filler
    assert ledger.record("d1", 19) is True  # joins both neighbours
    assert ledger.record("d1", 10) is True
    assert ledger.record("d1", 9) is True  # joins the right neighbour only
    assert ledger.intervals("d1") == [(0, 7), (9, 11), (18, 21)]
    assert ledger.out_of_order == 6
    assert ledger.received == 12
    assert ledger.highest_seq("d1") == 20


def test_first_arrival_late_in_sequence_then_earlier_is_out_of_order() -> None:
    ledger = DeliveryLedger()
    ledger.record("d1", 5)
    ledger.record("d1", 0)
    assert ledger.out_of_order == 1
    assert ledger.intervals("d1") == [(0, 1), (5, 6)]


def test_devices_are_independent() -> None:
    ledger = DeliveryLedger()
    for seq in range(3):
        ledger.record("a", seq)
        ledger.record("b", seq)
    ledger.record("b", 7)
    assert ledger.received_by_device() == {"a": 3, "b": 4}
    assert ledger.devices == 2
    assert ledger.device_ids() == ["a", "b"]


def test_negative_seq_is_rejected() -> None:
    ledger = DeliveryLedger()
    with pytest.raises(ValueError, match="seq"):
        ledger.record("new", -1)
    ledger.record("d1", 0)
    with pytest.raises(ValueError, match="seq"):
        ledger.record("d1", -3)
    assert ledger.received == 1
    assert ledger.devices == 1


def test_missing_ranges() -> None:
    ledger = DeliveryLedger()
    for seq in (0, 1, 2, 5, 6, 12):
        ledger.record("d1", seq)
    assert ledger.missing("d1", 10) == [(3, 5), (7, 10)]
    assert ledger.missing("d1", 13) == [(3, 5), (7, 12)]
    assert ledger.missing("d1", 6) == [(3, 5)]
    assert ledger.missing("d1", 3) == []
    assert ledger.missing("d1", 0) == []
    assert ledger.missing("unknown", 4) == [(0, 4)]
    with pytest.raises(ValueError, match="sent"):
        ledger.missing("d1", -1)
    late_start = DeliveryLedger()
    late_start.record("d2", 3)
    assert late_start.missing("d2", 5) == [(0, 3), (4, 5)]


def test_memory_stays_proportional_to_gaps() -> None:
    ledger = DeliveryLedger()
    lost = {1_000, 50_000, 99_998}
    for seq in range(100_000):
        if seq not in lost:
            ledger.record("d1", seq)
    assert ledger.interval_count() == 4
    assert ledger.received == 100_000 - 3
    assert ledger.missing("d1", 100_000) == [(s, s + 1) for s in sorted(lost)]


def _random_traffic(rng: random.Random) -> list[tuple[str, int]]:
    """Arrivals of several devices with loss, local reordering and repeats."""
    arrivals: list[tuple[str, int]] = []
    for device in range(8):
        device_id = f"dev-{device:02d}"
        seqs = [s for s in range(rng.randrange(50, 400)) if rng.random() > 0.05]
        for i in range(len(seqs) - 1):
            if rng.random() < 0.1:
                seqs[i], seqs[i + 1] = seqs[i + 1], seqs[i]
        seqs += rng.sample(seqs, k=len(seqs) // 20)
        arrivals.extend((device_id, seq) for seq in seqs)
    return arrivals


def test_merge_equals_single_ledger_fed_everything() -> None:
    rng = random.Random(21)
    arrivals = _random_traffic(rng)
    part_a: list[tuple[str, int]] = []
    part_b: list[tuple[str, int]] = []
    for arrival in arrivals:
        where = rng.random()
        if where < 0.45:
            part_a.append(arrival)
        elif where < 0.9:
            part_b.append(arrival)
        else:  # both sinks saw it
            part_a.append(arrival)
            part_b.append(arrival)
    ledger_a, ledger_b, single = DeliveryLedger(), DeliveryLedger(), DeliveryLedger()
    for device_id, seq in part_a:
        ledger_a.record(device_id, seq)
    for device_id, seq in part_b:
        ledger_b.record(device_id, seq)
    for device_id, seq in part_a + part_b:
        single.record(device_id, seq)
    overlap = len(set(part_a) & set(part_b))
    assert overlap > 0

    merged = ledger_a.copy()
    merged.merge(ledger_b)
    assert merged.received == single.received == len(set(arrivals))
    assert merged.duplicates == single.duplicates
    assert merged.duplicates == ledger_a.duplicates + ledger_b.duplicates + overlap
    assert merged.out_of_order == ledger_a.out_of_order + ledger_b.out_of_order
    assert merged.received_by_device() == single.received_by_device()
    for device_id in single.device_ids():
        assert merged.intervals(device_id) == single.intervals(device_id)
        assert merged.highest_seq(device_id) == single.highest_seq(device_id)
    # Merging the other way round gives the same union.
    reverse = ledger_b.copy()
    reverse.merge(ledger_a)
    assert reverse.to_dict()["devices"] == merged.to_dict()["devices"]
    assert reverse.duplicates == merged.duplicates


def test_merge_into_empty_and_with_itself() -> None:
    source = DeliveryLedger()
    for seq in (0, 1, 4):
        source.record("d1", seq)
    source.record("d1", 1)
    empty = DeliveryLedger()
    empty.merge(source)
    assert empty == source
    source.record("d1", 2)  # the merged copy must not share lists
    assert empty.intervals("d1") == [(0, 2), (4, 5)]
    empty.merge(empty)
    assert empty.received == 3
    assert empty.duplicates == 1 + 1 + 3


def test_ledger_round_trip_through_json() -> None:
    rng = random.Random(8)
    ledger = DeliveryLedger()
    for device_id, seq in _random_traffic(rng):
        ledger.record(device_id, seq)
    restored = DeliveryLedger.from_dict(json.loads(json.dumps(ledger.to_dict())))
    assert restored == ledger
    assert restored.to_dict() == ledger.to_dict()
    # A restored ledger keeps working like the original.
    for device_id in ledger.device_ids():
        next_seq = (ledger.highest_seq(device_id) or 0) + 1
        assert restored.record(device_id, next_seq) is ledger.record(device_id, next_seq)
    assert restored == ledger


def test_ledger_from_dict_rejects_inconsistent_data() -> None:
    ledger = DeliveryLedger()
    for seq in (0, 1, 5):
        ledger.record("d1", seq)
    good = ledger.to_dict()
    with pytest.raises(ValueError, match="received"):
        DeliveryLedger.from_dict({**good, "received": 4})
    with pytest.raises(ValueError, match="sorted"):
        DeliveryLedger.from_dict({**good, "devices": {"d1": [[5, 6], [0, 2]]}})
    with pytest.raises(ValueError, match="sorted"):
        DeliveryLedger.from_dict({**good, "devices": {"d1": [[0, 2], [2, 3]]}})
    with pytest.raises(ValueError, match="format"):
        DeliveryLedger.from_dict({**good, "format": None})


# -- account -----------------------------------------------------------------


def test_account_lost_unexpected_and_worst_devices() -> None:
    ledger = DeliveryLedger()
    for seq in range(10):
        if seq not in (2, 3):
            ledger.record("a", seq)
    ledger.record("a", 12)  # beyond what "a" sent
    for seq in range(5):
        ledger.record("b", seq)
    ledger.record("b", 4)  # duplicate
    ledger.record("zz", 0)  # a device nobody sent from
    ledger.record("zz", 1)
    sent = {"a": 10, "b": 5, "c": 3}

    result = account(sent, ledger)

    assert result == LossAccount(
        sent=18,
        received=13,
        lost=5,
        duplicates=1,
        out_of_order=0,
        unexpected=3,
        loss=5 / 18,
        worst_devices=[("c", 3), ("a", 2)],
    )
    assert result.received + result.unexpected == ledger.received
    encoded = json.loads(json.dumps(result.to_dict()))
    assert encoded["worst_devices"] == [["c", 3], ["a", 2]]
    assert encoded["lost"] == 5


def test_account_worst_devices_capped_and_ordered() -> None:
    ledger = DeliveryLedger()
    sent: dict[str, int] = {}
    for device in range(15):
        device_id = f"d{device:02d}"
        sent[device_id] = 20
        for seq in range(20 - device % 7):  # lose the tail: 0..6 messages
            ledger.record(device_id, seq)
    result = account(sent, ledger)
    assert len(result.worst_devices) == 10
    losses = [lost for _, lost in result.worst_devices]
    assert losses == sorted(losses, reverse=True)
    assert result.worst_devices[:3] == [("d06", 6), ("d13", 6), ("d05", 5)]
    assert result.lost == sum(device % 7 for device in range(15))


def test_account_with_nothing_sent() -> None:
    empty = account({}, DeliveryLedger())
    assert empty.sent == empty.received == empty.lost == 0
    assert empty.loss == 0.0
    assert empty.worst_devices == []
    ledger = DeliveryLedger()
    ledger.record("a", 0)
    result = account({"a": 0}, ledger)
    assert result.lost == 0
    assert result.unexpected == 1
    assert result.loss == 0.0


def test_account_rejects_negative_sent() -> None:
    with pytest.raises(ValueError, match="sent"):
        account({"a": -1}, DeliveryLedger())


def test_account_counts_straddling_intervals() -> None:
    ledger = DeliveryLedger()
    for seq in [*range(4), *range(6, 15)]:
        ledger.record("a", seq)
    result = account({"a": 10}, ledger)
    assert result.received == 4 + 4
    assert result.lost == 2
    assert result.unexpected == 5
    exact_end = account({"a": 4}, ledger)
    assert (exact_end.received, exact_end.lost) == (4, 0)


def test_ledger_gaps_count_missing_seqs_below_each_devices_highest() -> None:
    ledger = DeliveryLedger()
    for seq in (0, 1, 4, 5):
        ledger.record("a", seq)
    ledger.record("b", 0)
    assert ledger.gaps() == 2  # a: 2 and 3 missing below 5; b: none
    ledger.record("a", 3)
    assert ledger.gaps() == 1
    ledger.record("a", 3)  # a duplicate changes nothing
    assert ledger.gaps() == 1


# -- the result of a run with an outage (result.build_result) -----------------------------------------


def _reconnect_latency(*values_ms: int) -> dict[str, object]:
    histogram = DelayHistogram()
    for value in values_ms:
        histogram.record(value * 1000)
    return histogram.to_dict()


def _outage_reports(t0: float) -> tuple[FleetReport, SinkReport]:
    """Two devices, 10 messages each due; both lost the broker at t+4.5 s, one overflowed its offline queue."""
    fleet = cast(
        FleetReport,
        {
            "run_id": "r",
            "devices": 2,
            "connected_at_go": 2,
            "scheduled": 20,
            "sent": 19,
            "sent_by_device": {"a": 10, "b": 9},
            "disconnects": 2,
            "reconnects": 2,
            "dropped_offline": 1,
            "resent": 3,
            "disconnect_reasons": {"connection reset by peer": 2},
            "reconnect_latency": _reconnect_latency(3100, 3300),
            "offline_device_s": 6.4,
            "sent_timeline": {str(int(t0) + s): 2 for s in range(10)},
            "connected_timeline": {str(int(t0) + s): 0 if s == 4 else 2 for s in range(10)},
            "reconnect_timeline": {str(int(t0) * 10 + 76): 1, str(int(t0) * 10 + 78): 1},
            "first_drop_at": t0 + 4.5,
            "t0": t0,
        },
    )
    ledger = DeliveryLedger()
    for seq in range(10):
        ledger.record("a", seq)
    for seq in range(9):
        ledger.record("b", seq)
    ledger.record("b", 8)  # a resent message that arrived twice
    sink = cast(SinkReport, {"run_id": "r", "ledger": ledger.to_dict(), "reconnects": 1, "disconnects": 1})
    return fleet, sink


def test_build_result_reports_what_an_outage_cost() -> None:
    t0 = 1_700_000_000.0
    fleet, sink = _outage_reports(t0)
    result = build_result(
        settings={"devices": 2, "rate": 1.0, "duration": 10.0}, sources={}, broker="b", fleet=fleet, sink=sink
    )
    assert (result.sent, result.received, result.lost, result.duplicates) == (19, 19, 0, 1)
    assert (result.disconnects, result.reconnects, result.resent, result.dropped_offline) == (2, 2, 3, 1)
    assert result.disconnect_reasons == {"connection reset by peer": 2}
    assert result.unsent == 0  # 20 scheduled = 19 sent + 1 dropped offline
    assert result.reconnect_p50_ms == pytest.approx(3100, rel=0.01)
    assert result.reconnect_p99_ms == pytest.approx(3300, rel=0.01) and result.reconnect_max_ms == 3300.0
    assert result.offline_device_s == 6.4
    assert (result.sink_reconnects, result.sink_disconnects) == (1, 1)
    assert [point.connected for point in result.timeline] == [2, 2, 2, 2, 0, 2, 2, 2, 2, 2]
    assert result.timeline[4].to_dict()["connected"] == 0
    assert result.reconnect_timeline == {"7.600": 1, "7.800": 1}
    assert any("2 reconnected (disconnect to CONNACK p99" in warning for warning in result.warnings)
    assert any("1 message(s) fell due while their device was offline" in warning for warning in result.warnings)
    figures = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert figures["reconnect_p99_ms"] == result.reconnect_p99_ms and figures["unsent"] == 0


def test_build_result_without_reconnects_has_no_reconnect_times_and_counts_unsent() -> None:
    fleet, _ = _outage_reports(1_700_000_000.0)
    for key in ("reconnect_latency", "reconnect_timeline", "connected_timeline", "disconnect_reasons"):
        del fleet[key]  # type: ignore[misc]
    fleet["reconnects"] = 0
    fleet["dropped_offline"] = 0
    result = build_result(settings={}, sources={}, broker="b", fleet=fleet, sink=None)
    assert math.isnan(result.reconnect_p50_ms) and math.isnan(result.reconnect_max_ms)
    assert result.to_dict()["reconnect_p99_ms"] is None
    assert result.unsent == 1 and result.disconnect_reasons == {} and result.reconnect_timeline == {}
    assert all(point.connected is None for point in result.timeline)
    assert (result.sink_reconnects, result.sink_disconnects) == (0, 0)
    # Nothing disconnected: no device waited for a reconnect, so an upper bound on the reconnect time holds.
    fleet["disconnects"] = 0
    calm = build_result(settings={}, sources={}, broker="b", fleet=fleet, sink=None)
    assert (calm.reconnect_p50_ms, calm.reconnect_p99_ms, calm.reconnect_max_ms) == (0.0, 0.0, 0.0)


def test_issue_15_counters_reach_the_result_and_survive_the_json_file() -> None:
    fleet, sink = _outage_reports(1_700_000_000.0)
    fleet["publish_errors_by_reason"] = {"0x87 not authorized": 12}
    sink["batched"], sink["extract_errors"] = 40, 2
    result = build_result(settings={"seed": 7}, sources={}, broker="b", fleet=fleet, sink=sink)
    assert (result.batched, result.extract_errors) == (40, 2)
    figures = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert (figures["batched"], figures["extract_errors"]) == (40, 2)
    assert figures["publish_errors_by_reason"] == {"0x87 not authorized": 12} and figures["settings"]["seed"] == 7
    # A sink report from before the counters (and no sink at all): zero, not an error.
    for key in ("batched", "extract_errors"):
        del sink[key]  # type: ignore[misc]
    older = build_result(settings={}, sources={}, broker="b", fleet=fleet, sink=sink)
    assert (older.batched, older.extract_errors) == (0, 0)
    assert build_result(settings={}, sources={}, broker="b", fleet=None, sink=None).batched == 0
