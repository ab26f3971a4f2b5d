"""Export a run to InfluxDB 2 (v2 write API) for the Grafana dashboard in ``grafana_dashboard.json``.

Usage::

    target = InfluxTarget(url="http://localhost:8086", org="perf", bucket="iotperf", token=token)
    report = export_run(target, result.to_dict(), test_id=item.nodeid, per_minute=per_minute_from_report(sink))
    if report.error:
        print(f"export failed: {report.error}")  # the run's outcome stands; the token is never in the text

:func:`export_run` never raises for a failed export (server down, wrong URL,
token refused, timeout): it returns :class:`ExportReport` with ``error`` set,
so an unreachable dashboard cannot change a test's verdict.  Pass
``raise_on_error=True`` to get :class:`InfluxExportError` instead.

Series layout
-------------
Every point carries the tags ``run_id`` and ``test`` (the pytest node id) plus
the caller's ``extra_tags``.  Timestamps have millisecond precision.

``iotperf_delay`` (one point per minute and delay bucket), tag ``delay_ms``, field ``count`` (int)
    The delay distribution as counts: ``count`` messages of the run whose
    delay, floored to a whole millisecond, is ``delay_ms`` (an integer string,
    negative under clock skew), in the minute starting at the timestamp.  With
    ``per_minute`` (the Event Hubs sink's aggregate: enqueue minute ->
    {delay ms floor: count}) the rows are exactly that.  Without it the rows
    come from the run's merged :class:`~pytest_iotperf.metrics.DelayHistogram`,
    all at the run's ``t0`` (one "minute" = the whole run): each histogram
    bucket's count goes to the floor, in ms, of the value the histogram itself
    reports for that bucket (its midpoint, clamped into [min, max]), so a
    percentile from the rows is exactly ``floor(RunResult percentile)`` for
    0 < q < 1.
``iotperf_run`` (one point per run, at ``t0``), tags ``broker``, ``sink``
    Fields ``sent``, ``received``, ``lost``, ``duplicates``, ``devices``,
    ``devices_connected``, ``slo_passed``, ``slo_failed`` (ints) and ``loss``
    (fraction), ``p50_delay_ms``, ``p95_delay_ms``, ``p99_delay_ms``,
    ``p999_delay_ms``, ``max_delay_ms``, ``lateness_p99_ms``,
    ``throughput_per_s``, ``rate_per_device``, ``duration_s`` (floats).  A
    figure the run could not measure (NaN, ``None``) is left out.
``iotperf_timeline`` (one point per timeline slot, at ``t0 + t_s``)
    Fields ``sent``, ``received``, ``devices_connected`` (ints) and
    ``p95_delay_ms`` (float, left out for a slot with nothing received).

Why these buckets: a percentile over *any* time range must be computable from
the stored rows alone, so rows hold counts per fixed delay bucket (summable
across minutes and runs), never pre-computed percentiles (which cannot be
combined).  Whole milliseconds are what the Event Hubs sink already
aggregates, bound the series count per run by the number of distinct delay
milliseconds, and make a dashboard percentile at most 1 ms below the exact one.

Why no uuid tag (the seed added one so rows would not overwrite each other):
a random tag makes every export a new set of series, so exporting a run twice
doubles every count and each export adds series forever.  Here the series key
is (measurement, run_id, test, extra tags, delay_ms) and the timestamp is the
minute, so each row is a unique point and a re-export overwrites it with the
same value: exporting is idempotent, and the write may be retried safely.
Field types never change between runs (counts are ints, figures are floats),
because InfluxDB rejects a write whose field type differs from the stored one.

Percentile definition (the dashboard's Flux and :func:`percentile_from_rows`)
-----------------------------------------------------------------------------
Nearest rank, as ``RunResult``: over the rows in a window, sum the counts per
``delay_ms``; ``total`` is the sum of all counts; ``rank = ceil(q * total)``
(at least 1), with ``q`` read to 5 decimals in integer arithmetic so ``0.9 *
total`` cannot land a float ulp above an integer; the percentile is the
smallest ``delay_ms`` whose cumulative count (ascending delay) is ``>= rank``.
At the boundary (cumulative count exactly ``q * total``) that bucket is the
answer; the seed's ``cumulative < total`` with ``last()`` picked the bucket
before it.  The Flux of the dashboard's "delay percentiles" panel::

    rows = from(bucket: "${bucket}")
        |> range(start: v.timeRangeStart, stop: v.timeRangeStop)
        |> filter(fn: (r) => r._measurement == "iotperf_delay" and r._field == "count" and r.run_id == "${run_id}")
        |> window(every: v.windowPeriod)
        |> group(columns: ["_start", "_stop", "delay_ms"])
        |> sum()
        |> group(columns: ["_start", "_stop"])
        |> map(fn: (r) => ({_start: r._start, _stop: r._stop, delay: int(v: r.delay_ms), _value: r._value}))

    // Nearest rank of quantile q (0..1, read to 5 decimals) among total values: ceil(q * total), at least 1.
    nearestRank = (total, q) => {
        scaled = int(v: q * 100000.0 + 0.5)
        rank = (total * scaled + 99999) / 100000
        return if rank < 1 then 1 else rank
    }

    // Per window: the smallest delay_ms whose cumulative count reaches the nearest rank.
    delayPercentile = (q, name) => {
        totals = rows |> sum()
        cumulative = rows |> sort(columns: ["delay"]) |> cumulativeSum(columns: ["_value"])
        return join(tables: {c: cumulative, t: totals}, on: ["_start", "_stop"])
            |> filter(fn: (r) => r._value_c >= nearestRank(total: r._value_t, q: q))
            |> min(column: "delay")
            |> map(fn: (r) => ({r with _time: r._start, _field: name, _value: float(v: r.delay)}))
            |> group(columns: ["_field"])
            |> keep(columns: ["_time", "_field", "_value"])
    }

    union(tables: [delayPercentile(q: 0.5, name: "p50"), delayPercentile(q: 0.95, name: "p95"),
                   delayPercentile(q: 0.99, name: "p99")])
        |> sort(columns: ["_time"])

The "over the selected range" panel is the same query without ``window()``:
one window, the dashboard's time range.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, cast
from urllib.parse import urlsplit

from pytest_iotperf.errors import IotPerfError
from pytest_iotperf.metrics import DelayHistogram
from pytest_iotperf.result import RunResult
from pytest_iotperf.secrets import REDACTED, Scrubber, ScrubbingFilter, redact_url

__all__ = [
    "MEASUREMENT_DELAY",
    "MEASUREMENT_RUN",
    "MEASUREMENT_TIMELINE",
    "ExportReport",
    "InfluxExportError",
    "InfluxTarget",
    "SeriesPoint",
    "build_points",
    "export_run",
    "histogram_rows",
    "nearest_rank",
    "per_minute_from_report",
    "percentile_from_rows",
]

MEASUREMENT_DELAY: Final = "iotperf_delay"
MEASUREMENT_RUN: Final = "iotperf_run"
MEASUREMENT_TIMELINE: Final = "iotperf_timeline"

#: Tags the exporter sets itself; ``extra_tags`` may not replace them.
RESERVED_TAGS: Final = frozenset({"run_id", "test", "delay_ms", "broker", "sink"})

# q is read to this many parts (5 decimals) so the rank is exact integer arithmetic, in Python and in Flux.
_Q_SCALE: Final = 100_000
# InfluxDB's advice for one write request; a typical run is one or two requests.
_CHUNK_POINTS: Final = 5000
# Retries of one request: few, so a dead server fails fast; safe because the write is idempotent.
_RETRIES: Final = 2
_BACKOFF_S: Final = 0.1
_MESSAGE_MAX: Final = 600
# Loggers the synchronous write path logs to (a logger's filters only see records created on it, not its
# children's): the root logger (influxdb-client calls logging.debug), urllib3's and influxdb-client's.
_LIBRARY_LOGGERS: Final = (
    "",
    "urllib3.connection",
    "urllib3.connectionpool",
    "urllib3.poolmanager",
    "urllib3.response",
    "urllib3.util.retry",
    "influxdb_client.client.exceptions",
    "influxdb_client.client.http",
    "influxdb_client.client.influxdb_client",
    "influxdb_client.client.write_api",
)

_RUN_INT_FIELDS: Final = ("sent", "received", "lost", "duplicates", "devices")
_RUN_FLOAT_FIELDS: Final = (
    "loss",
    "p50_delay_ms",
    "p95_delay_ms",
    "p99_delay_ms",
    "p999_delay_ms",
    "max_delay_ms",
    "lateness_p99_ms",
    "throughput_per_s",
    "rate_per_device",
    "duration_s",
)

logger = logging.getLogger(__name__)
_monotonic = time.monotonic  # the export's clock (a test replaces it to run past the time budget)


class InfluxExportError(IotPerfError):
    """The export to InfluxDB failed (only raised with ``raise_on_error=True``); the message holds no token."""


@dataclass(frozen=True, repr=False)
class InfluxTarget:
    """Where to write: the server root URL (``http://host:8086``), organisation, bucket and API token.

    The token never appears in ``repr()``/``str()``, nor in any message of this module.
    """

    url: str
    org: str
    bucket: str
    token: str

    @property
    def description(self) -> str:
        """``http://host:8086 (org 'o', bucket 'b')``: for messages (no credentials)."""
        return f"{redact_url(self.url)} (org {self.org!r}, bucket {self.bucket!r})"

    def __repr__(self) -> str:
        shown = f"url={redact_url(self.url)!r}, org={self.org!r}, bucket={self.bucket!r}, token={REDACTED!r}"
        return f"InfluxTarget({shown})"


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_run` did: points written, and the error text (``None`` on success, never a token)."""

    points_written: int
    error: str | None
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every point was written."""
        return self.error is None


@dataclass(frozen=True)
class SeriesPoint:
    """One point to write: measurement, tags, fields and its timestamp in epoch milliseconds."""

    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, int | float]
    time_ms: int

    def to_record(self) -> dict[str, Any]:
        """The dictionary form influxdb-client's ``WriteApi.write`` accepts."""
        return {
            "measurement": self.measurement,
            "tags": dict(self.tags),
            "fields": dict(self.fields),
            "time": self.time_ms,
        }


# -- percentiles from rows ----------------------------------------------------


def nearest_rank(total: int, q: float) -> int:
    """``ceil(q * total)``, at least 1, with ``q`` (0..1) read to 5 decimals: the dashboard's ``nearestRank``."""
    # int() truncates like Flux's int(v: float); both then divide integers, so no float can shift the rank.
    scaled = int(q * _Q_SCALE + 0.5)
    return max(1, (total * scaled + _Q_SCALE - 1) // _Q_SCALE)


def percentile_from_rows(rows: Iterable[tuple[int, int]], q: float) -> float:
    """Nearest-rank quantile ``q`` (0..1) of ``(delay_ms, count)`` rows, exactly as the dashboard's Flux computes it.

    Counts of equal ``delay_ms`` are summed (rows of several minutes); the
    result is the smallest ``delay_ms`` whose cumulative count reaches
    :func:`nearest_rank`.  With ms-floor rows it is the floor of the exact
    nearest-rank delay.  ``math.nan`` when the rows hold no count.

    Raises ``ValueError`` for ``q`` outside [0, 1] or a negative count.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile q must be within [0, 1], got {q!r}")
    counts: dict[int, int] = {}
    for delay_ms, count in rows:
        if count < 0:
            raise ValueError(f"row count must be >= 0, got {count!r} for delay_ms {delay_ms!r}")
        counts[int(delay_ms)] = counts.get(int(delay_ms), 0) + int(count)
    total = sum(counts.values())
    if not total:
        return math.nan
    rank = nearest_rank(total, q)
    cumulative = 0
    for delay_ms in sorted(counts):
        cumulative += counts[delay_ms]
        if cumulative >= rank:
            return float(delay_ms)
    raise AssertionError("cumulative count never reached the rank")  # pragma: no cover


def histogram_rows(histogram: DelayHistogram) -> dict[int, int]:
    """``{delay_ms: count}`` of a microsecond histogram, each bucket at the ms floor of the value it reports.

    A bucket reports its midpoint clamped into [min, max] (as
    ``DelayHistogram.percentile`` does); that map is monotonic, so
    ``percentile_from_rows(rows, q) == floor(histogram.percentile(100 * q) / 1000)``
    for 0 < q < 1.  Buckets wider than 1 ms (delays above 128 ms) are not
    split: their values are not known more finely than that.
    """
    rows: dict[int, int] = {}
    low, high = histogram.min_us, histogram.max_us
    if low is None or high is None:
        return rows
    for lower_us, upper_us, count in histogram.buckets():
        representative = min(max((lower_us + upper_us - 1) / 2, low), high)
        delay_ms = math.floor(representative / 1000)
        rows[delay_ms] = rows.get(delay_ms, 0) + count
    return rows


def per_minute_from_report(sink_report: Mapping[str, Any]) -> dict[int, dict[int, int]] | None:
    """The sink report's ``per_minute`` (JSON: string keys) as ints; ``None`` when the report has none."""
    raw = sink_report.get("per_minute")
    if not isinstance(raw, Mapping):
        return None
    return {int(minute): {int(ms): int(n) for ms, n in buckets.items()} for minute, buckets in raw.items()}


# -- points -------------------------------------------------------------------


def build_points(
    result: Mapping[str, Any] | RunResult,
    *,
    test_id: str,
    per_minute: Mapping[int, Mapping[int, int]] | None = None,
    extra_tags: Mapping[str, str] | None = None,
    now_s: float | None = None,
) -> list[SeriesPoint]:
    """Every point :func:`export_run` writes for ``result`` (``RunResult.to_dict()`` form), in a stable order.

    Pure and deterministic: the same inputs give the same points (re-export
    overwrites).  Only a result without ``t0`` falls back to ``now_s``
    (default: the current time), and is then not idempotent.

    Raises ``ValueError`` for a result without ``run_id``, a reserved or
    malformed extra tag, or malformed rows.
    """
    data: Mapping[str, Any] = result.to_dict() if isinstance(result, RunResult) else result
    run_id = str(data.get("run_id") or "")
    if not run_id:
        raise ValueError("the result has no run_id: its points could not be told from other runs'")
    tags = {"run_id": run_id, "test": test_id, **_checked_extra_tags(extra_tags or {})}
    tags = {key: value for key, value in tags.items() if value}  # line protocol has no empty tag values
    t0 = data.get("t0")
    anchor_s = float(t0) if t0 is not None else (time.time() if now_s is None else now_s)
    anchor_ms = round(anchor_s * 1000)

    points: list[SeriesPoint] = []
    for time_ms, delay_ms, count in _delay_rows(data, per_minute, anchor_ms):
        points.append(SeriesPoint(MEASUREMENT_DELAY, {**tags, "delay_ms": str(delay_ms)}, {"count": count}, time_ms))

    run_tags = dict(tags)
    settings = data.get("settings") or {}
    for tag, value in (("broker", data.get("broker")), ("sink", settings.get("sink"))):
        if value:
            run_tags[tag] = str(value)
    run_fields = _run_fields(data)
    if run_fields:
        points.append(SeriesPoint(MEASUREMENT_RUN, run_tags, run_fields, anchor_ms))

    connected = data.get("connected")
    for slot in data.get("timeline") or []:
        fields: dict[str, int | float] = {"sent": int(slot["sent"]), "received": int(slot["received"])}
        if slot.get("p95_delay_ms") is not None:
            fields["p95_delay_ms"] = float(slot["p95_delay_ms"])
        if connected is not None:
            fields["devices_connected"] = int(connected)
        points.append(SeriesPoint(MEASUREMENT_TIMELINE, tags, fields, anchor_ms + round(float(slot["t_s"]) * 1000)))
    return points


def _checked_extra_tags(extra_tags: Mapping[str, str]) -> dict[str, str]:
    checked: dict[str, str] = {}
    for key, value in extra_tags.items():
        if not isinstance(key, str) or not key or key.startswith("_") or key == "time":
            # InfluxDB reserves _measurement, _field, _time... and rejects the whole write.
            raise ValueError(f"extra tag name {key!r} is not allowed (empty, 'time' or starting with '_')")
        if key in RESERVED_TAGS:
            raise ValueError(f"extra tag {key!r} would replace a tag the exporter sets; choose another name")
        checked[key] = str(value)
    return checked


def _delay_rows(
    data: Mapping[str, Any], per_minute: Mapping[int, Mapping[int, int]] | None, anchor_ms: int
) -> list[tuple[int, int, int]]:
    """``(timestamp ms, delay_ms, count)`` sorted, zero counts dropped."""
    rows: list[tuple[int, int, int]] = []
    if per_minute is not None:
        for minute, buckets in per_minute.items():
            for delay_ms, count in buckets.items():
                rows.append((int(minute) * 1000, int(delay_ms), int(count)))
    else:
        raw = data.get("delay_histogram")
        if isinstance(raw, DelayHistogram):
            histogram = raw
        elif isinstance(raw, Mapping):
            histogram = DelayHistogram.from_dict(raw)
        else:
            histogram = DelayHistogram()
        rows = [(anchor_ms, delay_ms, count) for delay_ms, count in histogram_rows(histogram).items()]
    if any(count < 0 for _, _, count in rows):
        raise ValueError("per_minute holds a negative count")
    return sorted(row for row in rows if row[2])


def _run_fields(data: Mapping[str, Any]) -> dict[str, int | float]:
    fields: dict[str, int | float] = {}
    for name in _RUN_INT_FIELDS:
        if data.get(name) is not None:
            fields[name] = int(data[name])
    if data.get("connected") is not None:
        fields["devices_connected"] = int(data["connected"])
    for name in _RUN_FLOAT_FIELDS:
        value = data.get(name)
        if value is not None and math.isfinite(float(value)):
            fields[name] = float(value)
    slos = data.get("slos") or []
    if slos:
        passed = sum(1 for verdict in slos if verdict.get("passed"))
        fields["slo_passed"] = passed
        fields["slo_failed"] = len(slos) - passed
    return fields


# -- writing ------------------------------------------------------------------


def export_run(
    target: InfluxTarget,
    result: Mapping[str, Any] | RunResult,
    *,
    test_id: str,
    per_minute: Mapping[int, Mapping[int, int]] | None = None,
    extra_tags: Mapping[str, str] | None = None,
    timeout_s: float = 10.0,
    raise_on_error: bool = False,
) -> ExportReport:
    """Write the run's points (see the module docstring) to ``target``; idempotent, so safe to repeat.

    Each request gets ``timeout_s`` to be answered (connecting: a third of
    it, retried twice); no new request starts after ``timeout_s``, so a
    dead or hung server costs at most about twice ``timeout_s``.  A failure
    is returned as ``ExportReport.error`` (raised as
    :class:`InfluxExportError` with ``raise_on_error``), never with the token.
    """
    started = _monotonic()
    written = 0
    if not _valid_url(target.url):
        reason = f"cannot write to InfluxDB at {target.description}: the URL must look like http://host:8086"
        return _failed(target, reason, written, started, raise_on_error)
    try:
        if not 0 < timeout_s <= 60:  # an export must never hold a test session for long
            raise ValueError(f"timeout_s must be within (0, 60] seconds, got {timeout_s!r}")
        points = build_points(result, test_id=test_id, per_minute=per_minute, extra_tags=extra_tags)
    except (ValueError, TypeError, KeyError) as exc:
        return _failed(target, f"the run cannot be exported: {exc}", written, started, raise_on_error)
    try:
        written = _write(target, points, timeout_s, started)
    except _PartialWrite as partial:
        written = partial.written
        return _failed(target, _describe(partial.cause, target, timeout_s), written, started, raise_on_error)
    elapsed = _monotonic() - started
    logger.debug("exported %d points of run %s to %s in %.3f s", written, _run_id(result), target.description, elapsed)
    return ExportReport(points_written=written, error=None, elapsed_s=elapsed)


class _PartialWrite(Exception):
    """Internal: a write failed after ``written`` points had been accepted."""

    def __init__(self, cause: BaseException, written: int) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.written = written


class _Overdue(Exception):
    """Internal: the export's time budget ran out between two requests."""


def _write(target: InfluxTarget, points: Sequence[SeriesPoint], timeout_s: float, started: float) -> int:
    """Write in chunks, synchronously (each chunk is confirmed before the next); returns the points written."""
    # Imported here: the plugin imports this module in every session, most of which never export.
    from influxdb_client.client.influxdb_client import InfluxDBClient
    from influxdb_client.client.write_api import SYNCHRONOUS
    from influxdb_client.domain.write_precision import WritePrecision
    from urllib3.util.retry import Retry

    connect_s = timeout_s / (_RETRIES + 1)
    retries = Retry(
        total=_RETRIES,
        connect=_RETRIES,
        read=0,  # a read timeout already took timeout_s: do not wait it again
        status=_RETRIES,
        other=0,
        redirect=0,
        status_forcelist=(429, 502, 503, 504),
        allowed_methods=None,  # POST too: rewriting the same points overwrites them with the same values
        backoff_factor=_BACKOFF_S,
        respect_retry_after_header=False,  # a server's Retry-After could exceed our time budget
        raise_on_status=False,  # after the last retry, hand back the response: its status makes a clearer message
    )
    written = 0
    with _scrubbed_library_logs(target.token):
        try:
            client = InfluxDBClient(
                url=target.url,
                token=target.token,
                org=target.org,
                timeout=(round(connect_s * 1000), round(timeout_s * 1000)),
                retries=retries,
                debug=False,  # debug logs the request headers, i.e. the token
            )
        except Exception as exc:  # a URL the client cannot take
            raise _PartialWrite(exc, 0) from None
        try:
            write_api = client.write_api(write_options=SYNCHRONOUS)
            for start in range(0, len(points), _CHUNK_POINTS):
                if _monotonic() - started > timeout_s:
                    raise _Overdue(
                        f"the export did not finish within {timeout_s:g} s; {written} of {len(points)} points written"
                    )
                chunk = points[start : start + _CHUNK_POINTS]
                write_api.write(
                    bucket=target.bucket,
                    org=target.org,
                    record=[point.to_record() for point in chunk],
                    # The client's constants are plain strings while its signature names the class.
                    write_precision=cast(WritePrecision, WritePrecision.MS),
                )
                written += len(chunk)
        except Exception as exc:
            raise _PartialWrite(exc, written) from None
        finally:
            client.close()  # type: ignore[no-untyped-call]  # influxdb-client leaves close() unannotated
    return written


@contextmanager
def _scrubbed_library_logs(token: str) -> Iterator[None]:
    """While the block runs, the token is scrubbed from every record the HTTP stack logs.

    influxdb-client logs an unparsable error body at DEBUG on the root logger:
    a server or proxy that echoes the request headers would put the token there.
    """
    scrubbing = ScrubbingFilter(Scrubber([token]))
    loggers = [logging.getLogger(name) for name in _LIBRARY_LOGGERS]
    for library_logger in loggers:
        library_logger.addFilter(scrubbing)
    try:
        yield
    finally:
        for library_logger in loggers:
            library_logger.removeFilter(scrubbing)


def _valid_url(url: str) -> bool:
    """``http(s)://host[:port][/path]``: what the client can send to (a path is allowed, for proxies)."""
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018  # raises ValueError for a port that is not a number
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and " " not in url.strip()


def _failed(target: InfluxTarget, reason: str, written: int, started: float, raise_on_error: bool) -> ExportReport:
    message = _scrub(reason, target.token)
    if raise_on_error:
        raise InfluxExportError(message)
    logger.warning("InfluxDB export failed: %s", message)
    return ExportReport(points_written=written, error=message, elapsed_s=_monotonic() - started)


def _describe(exc: BaseException, target: InfluxTarget, timeout_s: float) -> str:
    """A sentence saying what failed and what to check; the caller scrubs the token from it."""
    from influxdb_client.rest import ApiException
    from urllib3.exceptions import (
        ConnectTimeoutError,
        MaxRetryError,
        NewConnectionError,
        ProtocolError,
        ReadTimeoutError,
        SSLError,
    )

    where = f"cannot write to InfluxDB at {target.description}"
    cause: BaseException = exc
    if isinstance(cause, MaxRetryError) and cause.reason is not None:
        cause = cause.reason
    if isinstance(cause, _Overdue):
        return f"{where}: {cause}"
    if isinstance(cause, ApiException):
        return f"{where}: {_describe_status(cause, target)}"
    # NewConnectionError subclasses ConnectTimeoutError (urllib3 history): test it first.
    if isinstance(cause, NewConnectionError):
        # Drop urllib3's "HTTPConnection(host=..., port=...): " prefix: the URL is already in the message.
        detail = re.sub(r"^\w*Connection\(.*?\): (Failed to establish a new connection: )?", "", str(cause))
        return f"{where}: cannot connect ({detail}); is InfluxDB running there?"
    if isinstance(cause, ConnectTimeoutError):
        return f"{where}: no connection within {timeout_s / (_RETRIES + 1):.3g} s; is the server reachable?"
    if isinstance(cause, ReadTimeoutError | TimeoutError):
        return f"{where}: no answer within {timeout_s:g} s"
    if isinstance(cause, ProtocolError | SSLError):
        return f"{where}: {type(cause).__name__}: {cause}; is the URL an InfluxDB server, with the right http/https?"
    return f"{where}: {type(cause).__name__}: {cause}"


def _describe_status(exc: Any, target: InfluxTarget) -> str:
    status = int(exc.status or 0)
    message = exc.message
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    message = " ".join(str(message or exc.reason or "").split())[:300]
    if status in (401, 403):
        return (
            f"HTTP {status} ({message}): the server refused the token; check that it is valid "
            f"and may write to bucket {target.bucket!r} of org {target.org!r}"
        )
    if status == 404 or (status == 400 and "path" in message.lower()):
        return (
            f"HTTP {status} ({message}): check that the URL is the server's root without a path "
            f"(e.g. http://localhost:8086) and that org {target.org!r} and bucket {target.bucket!r} exist"
        )
    if status == 413:
        return f"HTTP 413 ({message}): the server refused a request of {_CHUNK_POINTS} points as too large"
    return f"HTTP {status} ({message})"


def _scrub(text: str, token: str) -> str:
    """Remove the token (and anything shaped like a credential) from a message, and bound its length."""
    text = Scrubber([token])(text)
    return text if len(text) <= _MESSAGE_MAX else text[: _MESSAGE_MAX - 3] + "..."


def _run_id(result: Mapping[str, Any] | RunResult) -> str:
    return result.run_id if isinstance(result, RunResult) else str(result.get("run_id", ""))
