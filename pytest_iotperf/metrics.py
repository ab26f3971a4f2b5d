"""Pure statistics for a load run: delay histograms and exact loss accounting.

Nothing here does I/O or imports pytest or a client library, so workers, sinks
and the pytest process can all build, merge and serialise these objects.

- :class:`DelayHistogram`: mergeable log-linear histogram of integer
  microseconds (negative values allowed) with nearest-rank percentiles.
- :class:`DeliveryLedger`: which ``(device_id, seq)`` pairs a sink received,
  stored as per-device intervals so memory grows with gaps, not messages.
- :func:`account`: sent counts + ledger -> :class:`LossAccount`.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction

__all__ = [
    "DelayHistogram",
    "DeliveryLedger",
    "LossAccount",
    "account",
]

# Bucket layout.  |v| < 2**_EXACT_BITS gets one bucket per microsecond; above
# that each power of two [2**k, 2**(k+1)) is cut into 2**_SUB_BITS equal
# buckets.  With shift = v.bit_length() - _EXACT_BITS, v >> shift always has
# _EXACT_BITS bits, so key = (shift << _SUB_BITS) + (v >> shift) is
# monotonic and contiguous with the exact range (for shift <= 0 it is v).
_EXACT_BITS = 8
_SUB_BITS = _EXACT_BITS - 1
_EXACT_LIMIT = 1 << _EXACT_BITS

_HISTOGRAM_FORMAT = "iotperf.delay_histogram/1"
_LEDGER_FORMAT = "iotperf.delivery_ledger/1"


def _magnitude_bounds(magnitude_key: int) -> tuple[int, int]:
    """Half-open ``[low, high)`` of the non-negative integers in a bucket key >= 0."""
    if magnitude_key < _EXACT_LIMIT:
        return magnitude_key, magnitude_key + 1
    shift = (magnitude_key >> _SUB_BITS) - 1
    mantissa = magnitude_key - (shift << _SUB_BITS)
    return mantissa << shift, (mantissa + 1) << shift


def _key_bounds(key: int) -> tuple[int, int]:
    """Half-open ``[lower, upper)`` holding exactly the integers of bucket ``key``.

    Negative keys mirror positive ones: key ``-k`` holds the negatives of the
    integers of key ``k``.
    """
    if key >= 0:
        return _magnitude_bounds(key)
    low, high = _magnitude_bounds(-key)
    return 1 - high, 1 - low


def _representative(key: int) -> float:
    """Midpoint of the integers a bucket holds (the value itself when exact)."""
    lower, upper = _key_bounds(key)
    return (lower + upper - 1) / 2


def _require_int(value: object, what: str) -> int:
    # from_dict reports every malformed input as ValueError (like json does), so
    # a caller loading a report catches one exception type.
    # bool is an int subclass but never a meaningful count or microsecond value.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return value


class DelayHistogram:
    """Mergeable HDR-style histogram of integer microsecond values.

    Values with ``|v| < 256`` are kept exactly; larger magnitudes fall in
    buckets at most 1/128 of their lower bound wide, and a bucket reports the
    midpoint of the integers it holds, so percentiles are within 0.4 % of the
    true value (and exact below 256 us).  Negative values (clock skew) are
    kept in mirror buckets, never clamped.  ``count``, ``min_us``, ``max_us``
    and ``sum_us`` are exact.  Merging is exact: merging histograms of a split
    data set gives the histogram of the whole.

    Not thread-safe; give each thread or process its own and merge.
    """

    __slots__ = ("_count", "_counts", "_max", "_min", "_sum")

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}
        self._count = 0
        self._sum = 0
        # Infinite sentinels keep record() free of an "is this the first value" branch.
        self._min: float = math.inf
        self._max: float = -math.inf

    # -- recording ---------------------------------------------------------

    def record(self, value_us: int, count: int = 1) -> None:
        """Add ``count`` occurrences of ``value_us`` (an ``int``, may be negative).

        Raises ``ValueError`` if ``count < 1`` and ``TypeError`` if
        ``value_us`` is not an integer (convert floats before calling).
        """
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count!r}")
        try:
            # bit_length() ignores the sign, so one shift serves both mirrors.
            shift = value_us.bit_length() - _EXACT_BITS
        except AttributeError:
            raise TypeError(
                f"DelayHistogram.record() needs an int of microseconds, got "
                f"{value_us!r}; convert with int(round(...)) first"
            ) from None
        if shift <= 0:
            key = value_us
        elif value_us > 0:
            key = (shift << _SUB_BITS) + (value_us >> shift)
        else:
            key = -((shift << _SUB_BITS) + (-value_us >> shift))
        counts = self._counts
        counts[key] = counts.get(key, 0) + count
        self._count += count
        self._sum += value_us * count
        self._min = min(self._min, value_us)
        self._max = max(self._max, value_us)

    def merge(self, other: DelayHistogram) -> None:
        """Add every value of ``other`` into this histogram (exact)."""
        if not isinstance(other, DelayHistogram):
            raise TypeError(f"can only merge a DelayHistogram, got {type(other).__name__}")
        counts = self._counts
        # Snapshot first so that h.merge(h) doubles instead of looping on itself.
        for key, n in list(other._counts.items()):
            counts[key] = counts.get(key, 0) + n
        self._count += other._count
        self._sum += other._sum
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)

    def __add__(self, other: object) -> DelayHistogram:
        if not isinstance(other, DelayHistogram):
            return NotImplemented
        result = self.copy()
        result.merge(other)
        return result

    def copy(self) -> DelayHistogram:
        """Return an independent copy."""
        clone = DelayHistogram()
        clone._counts = dict(self._counts)
        clone._count = self._count
        clone._sum = self._sum
        clone._min = self._min
        clone._max = self._max
        return clone

    # -- exact statistics --------------------------------------------------

    @property
    def count(self) -> int:
        """Number of values recorded."""
        return self._count

    @property
    def sum_us(self) -> int:
        """Exact sum of all values, in microseconds."""
        return self._sum

    @property
    def min_us(self) -> int | None:
        """Smallest value recorded, or ``None`` when empty."""
        return int(self._min) if self._count else None

    @property
    def max_us(self) -> int | None:
        """Largest value recorded, or ``None`` when empty."""
        return int(self._max) if self._count else None

    @property
    def mean_us(self) -> float:
        """Exact mean in microseconds; ``math.nan`` when empty."""
        return self._sum / self._count if self._count else math.nan

    # -- percentiles and export --------------------------------------------

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile ``q`` (0..100) in microseconds.

        Returns the representative of the smallest bucket such that at least
        ``ceil(q/100 * count)`` values are in it or below, clamped into
        ``[min_us, max_us]``; ``q == 0`` gives ``min_us`` and ``q == 100``
        gives ``max_us`` exactly.  ``q`` is read as the decimal it prints as
        (``99.9`` means 999/1000).  Returns ``math.nan`` when the histogram is
        empty.  Raises ``ValueError`` for ``q`` outside ``[0, 100]`` or NaN.
        """
        if not 0 <= q <= 100:
            raise ValueError(f"percentile q must be within [0, 100], got {q!r}")
        if not self._count:
            return math.nan
        if q == 0:
            return float(self._min)
        if q == 100:
            return float(self._max)
        # Exact rational arithmetic: q/100*count in floats can land just above
        # an integer (0.07 * 100 == 7.000000000000001) and shift the rank.
        exact = Fraction(str(float(q))) * self._count / 100
        rank = max(1, math.ceil(exact))
        seen = 0
        for key in sorted(self._counts):
            seen += self._counts[key]
            if seen >= rank:
                value = _representative(key)
                return float(min(max(value, self._min), self._max))
        raise AssertionError("bucket counts do not add up to count")  # pragma: no cover

    def buckets(self) -> list[tuple[float, float, int]]:
        """Non-empty buckets as ascending ``(lower_us, upper_us, count)``.

        Each range is half-open, ``lower_us <= v < upper_us``, and holds
        exactly the integer values of the bucket; adjacent buckets share a
        bound, across zero too (``[-1, 0)`` then ``[0, 1)``).
        """
        result: list[tuple[float, float, int]] = []
        for key in sorted(self._counts):
            lower, upper = _key_bounds(key)
            result.append((float(lower), float(upper), self._counts[key]))
        return result

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable form; :meth:`from_dict` restores it exactly.

        ``{"format": "iotperf.delay_histogram/1", "count", "sum_us",
        "min_us", "max_us", "buckets": [[key, count], ...]}`` with buckets
        sorted by their integer key (the bucket index of this module's
        layout, negative for negative values); ``min_us``/``max_us`` are
        ``None`` when empty.
        """
        return {
            "format": _HISTOGRAM_FORMAT,
            "count": self._count,
            "sum_us": self._sum,
            "min_us": self.min_us,
            "max_us": self.max_us,
            "buckets": [[key, self._counts[key]] for key in sorted(self._counts)],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> DelayHistogram:
        """Rebuild a histogram from :meth:`to_dict` output (e.g. after JSON).

        Raises ``ValueError`` if the data is not a consistent histogram of
        this format.
        """
        if data.get("format") != _HISTOGRAM_FORMAT:
            raise ValueError(
                f"not a delay histogram of format {_HISTOGRAM_FORMAT!r} "
                f"(got format {data.get('format')!r}); was it written by another version?"
            )
        count = _require_int(data.get("count"), "histogram count")
        total_sum = _require_int(data.get("sum_us"), "histogram sum_us")
        raw_buckets = data.get("buckets")
        if not isinstance(raw_buckets, list):
            raise ValueError("histogram buckets must be a list of [key, count] pairs")
        counts: dict[int, int] = {}
        for pair in raw_buckets:
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ValueError(f"histogram bucket must be a [key, count] pair, got {pair!r}")
            key = _require_int(pair[0], "histogram bucket key")
            n = _require_int(pair[1], "histogram bucket count")
            if n < 1 or key in counts:
                raise ValueError(f"histogram bucket {pair!r} is empty or repeated")
            counts[key] = n
        if sum(counts.values()) != count:
            raise ValueError(f"histogram buckets hold {sum(counts.values())} values but count says {count}")
        histogram = cls()
        if count:
            low = _require_int(data.get("min_us"), "histogram min_us")
            high = _require_int(data.get("max_us"), "histogram max_us")
            probe = cls()
            probe.record(low)
            probe.record(high)
            keys = sorted(counts)
            if set(probe._counts) - {keys[0], keys[-1]} or low > high:
                raise ValueError(f"histogram min_us={low} / max_us={high} do not fall in its lowest / highest bucket")
            histogram._min = low
            histogram._max = high
        histogram._counts = counts
        histogram._count = count
        histogram._sum = total_sum
        return histogram

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DelayHistogram):
            return NotImplemented
        return (
            self._counts == other._counts
            and self._count == other._count
            and self._sum == other._sum
            and self._min == other._min
            and self._max == other._max
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, so unhashable

    def __repr__(self) -> str:
        if not self._count:
            return "DelayHistogram(count=0)"
        return (
            f"DelayHistogram(count={self._count}, min_us={self.min_us}, "
            f"p50_us={self.percentile(50):g}, p99_us={self.percentile(99):g}, "
            f"max_us={self.max_us})"
        )


class DeliveryLedger:
    """Exact record of which ``(device_id, seq)`` pairs arrived, in bounded memory.

    Per device, received seqs are kept as sorted, disjoint, non-adjacent
    half-open intervals ``[start, end)``, so memory is proportional to the
    number of gaps.  In-order arrival (``seq`` equal to the device's highest
    seq + 1) extends the last interval in place.

    Counters: ``received`` (distinct pairs), ``duplicates`` (arrivals of a pair
    already received), ``out_of_order`` (new pairs whose seq is below the
    device's highest seq received so far).
    """

    __slots__ = ("_duplicates", "_ends", "_out_of_order", "_received", "_starts")

    def __init__(self) -> None:
        # Parallel lists per device: _starts[d][i], _ends[d][i] is interval i.
        self._starts: dict[str, list[int]] = {}
        self._ends: dict[str, list[int]] = {}
        self._received = 0
        self._duplicates = 0
        self._out_of_order = 0

    def record(self, device_id: str, seq: int) -> bool:
        """Note the arrival of ``seq`` (an int >= 0) from ``device_id``.

        Returns ``True`` if the pair is new, ``False`` for a duplicate.
        Raises ``ValueError`` for a negative ``seq``.
        """
        ends = self._ends.get(device_id)
        if ends is not None and ends[-1] == seq:
            ends[-1] = seq + 1
            self._received += 1
            return True
        if seq < 0:
            raise ValueError(
                f"seq must be >= 0, got {seq!r} from device {device_id!r}; check the payload the device publishes"
            )
        if ends is None:
            self._starts[device_id] = [seq]
            self._ends[device_id] = [seq + 1]
            self._received += 1
            return True
        starts = self._starts[device_id]
        # i: last interval starting at or before seq (-1 if none).
        i = bisect_right(starts, seq) - 1
        if i >= 0 and seq < ends[i]:
            self._duplicates += 1
            return False
        if seq < ends[-1]:
            self._out_of_order += 1
        joins_left = i >= 0 and ends[i] == seq
        joins_right = i + 1 < len(starts) and starts[i + 1] == seq + 1
        if joins_left and joins_right:
            ends[i] = ends[i + 1]
            del starts[i + 1]
            del ends[i + 1]
        elif joins_left:
            ends[i] = seq + 1
        elif joins_right:
            starts[i + 1] = seq
        else:
            starts.insert(i + 1, seq)
            ends.insert(i + 1, seq + 1)
        self._received += 1
        return True

    @property
    def received(self) -> int:
        """Number of distinct ``(device_id, seq)`` pairs received."""
        return self._received

    @property
    def duplicates(self) -> int:
        """Number of arrivals of a pair that had already been received."""
        return self._duplicates

    @property
    def out_of_order(self) -> int:
        """Number of new pairs whose seq was below the device's highest seq so far."""
        return self._out_of_order

    def gaps(self) -> int:
        """Seqs missing below each device's highest received seq: in flight, reordered or lost.

        A lower bound of what will end up lost only once it stops shrinking;
        the runner uses it to abort a run whose loss budget is already spent.
        """
        return sum(ends[-1] for ends in self._ends.values()) - self._received

    @property
    def devices(self) -> int:
        """Number of devices with at least one message received."""
        return len(self._ends)

    def device_ids(self) -> list[str]:
        """Sorted ids of the devices with at least one message received."""
        return sorted(self._ends)

    def highest_seq(self, device_id: str) -> int | None:
        """Highest seq received from ``device_id``, or ``None`` if none was."""
        ends = self._ends.get(device_id)
        return ends[-1] - 1 if ends is not None else None

    def received_by_device(self) -> dict[str, int]:
        """Distinct messages received, per device."""
        return {device_id: sum(self._ends[device_id]) - sum(starts) for device_id, starts in self._starts.items()}

    def intervals(self, device_id: str) -> list[tuple[int, int]]:
        """Received seqs of ``device_id`` as sorted half-open ``(start, end)`` ranges."""
        starts = self._starts.get(device_id, [])
        return list(zip(starts, self._ends.get(device_id, []), strict=True))

    def interval_count(self) -> int:
        """Total number of stored intervals (the ledger's memory footprint)."""
        return sum(len(starts) for starts in self._starts.values())

    def missing(self, device_id: str, sent: int) -> list[tuple[int, int]]:
        """Half-open seq ranges within ``[0, sent)`` that ``device_id`` never delivered."""
        if sent < 0:
            raise ValueError(f"sent must be >= 0, got {sent!r} for device {device_id!r}")
        gaps: list[tuple[int, int]] = []
        cursor = 0
        for start, end in self.intervals(device_id):
            if start >= sent:
                break
            if start > cursor:
                gaps.append((cursor, start))
            cursor = end
        if cursor < sent:
            gaps.append((cursor, sent))
        return gaps

    def _received_below(self, device_id: str, limit: int) -> int:
        """Distinct seqs received from ``device_id`` that are ``< limit``."""
        starts = self._starts.get(device_id)
        if not starts:
            return 0
        ends = self._ends[device_id]
        # Intervals [0, n) end at or below limit; interval n may straddle it.
        n = bisect_right(ends, limit)
        total = sum(ends[:n]) - sum(starts[:n])
        if n < len(starts) and starts[n] < limit:
            total += limit - starts[n]
        return total

    def merge(self, other: DeliveryLedger) -> None:
        """Add everything ``other`` received (exact union).

        Pairs present in both count as duplicates; ``duplicates`` and
        ``out_of_order`` of both ledgers add up.
        """
        if not isinstance(other, DeliveryLedger):
            raise TypeError(f"can only merge a DeliveryLedger, got {type(other).__name__}")
        overlap = 0
        received_other = other._received
        duplicates_other = other._duplicates
        out_of_order_other = other._out_of_order
        for device_id, other_starts in list(other._starts.items()):
            other_ends = other._ends[device_id]
            mine = self._starts.get(device_id)
            if mine is None:
                self._starts[device_id] = list(other_starts)
                self._ends[device_id] = list(other_ends)
                continue
            pairs = sorted(
                [
                    *zip(mine, self._ends[device_id], strict=True),
                    *zip(other_starts, other_ends, strict=True),
                ]
            )
            starts: list[int] = []
            ends: list[int] = []
            size_both = 0
            for start, end in pairs:
                size_both += end - start
                if ends and start <= ends[-1]:
                    ends[-1] = max(ends[-1], end)
                else:
                    starts.append(start)
                    ends.append(end)
            overlap += size_both - (sum(ends) - sum(starts))
            self._starts[device_id] = starts
            self._ends[device_id] = ends
        self._received += received_other - overlap
        self._duplicates += duplicates_other + overlap
        self._out_of_order += out_of_order_other

    def copy(self) -> DeliveryLedger:
        """Return an independent copy."""
        clone = DeliveryLedger()
        clone._starts = {d: list(s) for d, s in self._starts.items()}
        clone._ends = {d: list(e) for d, e in self._ends.items()}
        clone._received = self._received
        clone._duplicates = self._duplicates
        clone._out_of_order = self._out_of_order
        return clone

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable form; :meth:`from_dict` restores it exactly.

        ``{"format": "iotperf.delivery_ledger/1", "received", "duplicates",
        "out_of_order", "devices": {device_id: [[start, end], ...]}}`` with
        half-open, sorted, disjoint, non-adjacent seq ranges.
        """
        return {
            "format": _LEDGER_FORMAT,
            "received": self._received,
            "duplicates": self._duplicates,
            "out_of_order": self._out_of_order,
            "devices": {
                device_id: [[s, e] for s, e in self.intervals(device_id)] for device_id in sorted(self._starts)
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> DeliveryLedger:
        """Rebuild a ledger from :meth:`to_dict` output (e.g. after JSON).

        Raises ``ValueError`` if the data is not a consistent ledger of this format.
        """
        if data.get("format") != _LEDGER_FORMAT:
            raise ValueError(
                f"not a delivery ledger of format {_LEDGER_FORMAT!r} "
                f"(got format {data.get('format')!r}); was it written by another version?"
            )
        ledger = cls()
        ledger._received = _require_int(data.get("received"), "ledger received")
        ledger._duplicates = _require_int(data.get("duplicates"), "ledger duplicates")
        ledger._out_of_order = _require_int(data.get("out_of_order"), "ledger out_of_order")
        if min(ledger._received, ledger._duplicates, ledger._out_of_order) < 0:
            raise ValueError("ledger counters must be >= 0")
        devices = data.get("devices")
        if not isinstance(devices, Mapping):
            raise ValueError("ledger devices must map device_id to [[start, end], ...]")
        total = 0
        for device_id, ranges in devices.items():
            if not isinstance(device_id, str) or not isinstance(ranges, list) or not ranges:
                raise ValueError(f"ledger device {device_id!r} must have a non-empty range list")
            starts: list[int] = []
            ends: list[int] = []
            for pair in ranges:
                if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                    raise ValueError(f"ledger range must be a [start, end] pair, got {pair!r}")
                start = _require_int(pair[0], "ledger range start")
                end = _require_int(pair[1], "ledger range end")
                # Canonical form only: adjacent ranges would have been merged on record.
                if start < 0 or end <= start or (ends and start <= ends[-1]):
                    raise ValueError(
                        f"ledger ranges of device {device_id!r} must be sorted, disjoint, "
                        f"non-adjacent and non-negative; got {pair!r} after {ends[-1:]!r}"
                    )
                starts.append(start)
                ends.append(end)
                total += end - start
            ledger._starts[device_id] = starts
            ledger._ends[device_id] = ends
        if total != ledger._received:
            raise ValueError(f"ledger ranges hold {total} seqs but received says {ledger._received}")
        return ledger

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DeliveryLedger):
            return NotImplemented
        return (
            self._starts == other._starts
            and self._ends == other._ends
            and self._received == other._received
            and self._duplicates == other._duplicates
            and self._out_of_order == other._out_of_order
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, so unhashable

    def __repr__(self) -> str:
        return (
            f"DeliveryLedger(devices={self.devices}, received={self._received}, "
            f"duplicates={self._duplicates}, out_of_order={self._out_of_order}, "
            f"intervals={self.interval_count()})"
        )


_WORST_DEVICES = 10


@dataclass(frozen=True)
class LossAccount:
    """Loss of one run: what was sent against what a sink received.

    ``received`` counts distinct pairs with seq below their device's sent
    count; ``unexpected`` counts distinct pairs from unknown devices or with
    seq at or above the sent count (not part of ``received``);
    ``lost = sent - received``; ``loss = lost / sent`` (0.0 when nothing was
    sent).  ``worst_devices`` lists up to 10 ``(device_id, lost)`` with
    ``lost > 0``, most lost first, ties by device id.
    """

    sent: int
    received: int
    lost: int
    duplicates: int
    out_of_order: int
    unexpected: int
    loss: float
    worst_devices: list[tuple[str, int]] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable form (``worst_devices`` as ``[[device_id, lost], ...]``)."""
        return {
            "sent": self.sent,
            "received": self.received,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "unexpected": self.unexpected,
            "loss": self.loss,
            "worst_devices": [[device_id, lost] for device_id, lost in self.worst_devices],
        }


def account(sent_by_device: Mapping[str, int], ledger: DeliveryLedger) -> LossAccount:
    """Compare per-device sent counts (seqs ``0..sent-1``) with what ``ledger`` received.

    Raises ``ValueError`` if a sent count is negative.
    """
    sent_total = 0
    received_total = 0
    lost_by_device: list[tuple[str, int]] = []
    for device_id, sent in sent_by_device.items():
        if sent < 0:
            raise ValueError(f"sent count of device {device_id!r} must be >= 0, got {sent!r}")
        received = ledger._received_below(device_id, sent)
        sent_total += sent
        received_total += received
        if sent > received:
            lost_by_device.append((device_id, sent - received))
    lost_by_device.sort(key=lambda item: (-item[1], item[0]))
    lost = sent_total - received_total
    return LossAccount(
        sent=sent_total,
        received=received_total,
        lost=lost,
        duplicates=ledger.duplicates,
        out_of_order=ledger.out_of_order,
        unexpected=ledger.received - received_total,
        loss=lost / sent_total if sent_total else 0.0,
        worst_devices=lost_by_device[:_WORST_DEVICES],
    )
