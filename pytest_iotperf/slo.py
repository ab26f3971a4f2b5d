"""Service-level objectives: ``"p95_delay_ms < 1000"``, ``"loss < 0.1%"``, checked against a run.

An SLO expression is ``<metric> <op> <number>[<unit>]``, whitespace-tolerant:

- ``<metric>`` names a figure of :class:`~pytest_iotperf.result.RunResult`
  (see :data:`METRICS`), or a percentile by name: ``pNN_delay_ms``,
  ``sent_delay_pNN_ms`` or ``lateness_pNN_ms`` for any ``NN`` in ``(0, 100]``,
  decimals allowed (``p99.9_delay_ms``, ``p99.99_delay_ms``).
- ``<op>`` is one of ``<  <=  >  >=  ==``.
- ``<unit>`` is optional.  A bare number is in the metric's own unit.
  Millisecond metrics also take ``ms`` or ``s`` (``2s`` means 2000 ms);
  the fraction metric ``loss`` also takes ``%`` (``0.1%`` means 0.001).
  Counts, rates and device-seconds (``offline_device_s``) take a bare number only.

A windowed SLO adds ``per <duration>`` (``"p95_delay_ms < 1000 per 1m"``,
``"loss < 0.1% per 30s"``): the run is cut into windows ``[k*w, (k+1)*w)`` of
due time from T0 (a trailing part shorter than ``w`` is a window of its own),
and every window must meet it.  A window's figures are exact merges of its due
slots (``RunResult.window``); only the figures :data:`WINDOW_METRICS` names (and
``pNN_delay_ms``) exist per window.

Pure: stdlib only, no pytest, no client library.  A measurement of NaN means
"no data" and fails every SLO.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, DecimalException
from types import MappingProxyType
from typing import Any

from pytest_iotperf.durations import format_duration, parse_duration, window_label
from pytest_iotperf.errors import ConfigError
from pytest_iotperf.numbers import format_percent

__all__ = [
    "METRICS",
    "OPERATORS",
    "WINDOW_METRICS",
    "Slo",
    "SloSyntaxError",
    "SloVerdict",
    "WindowVerdict",
    "evaluate_all",
    "failure_message",
    "merge_slos",
    "parse_slo",
    "window_bounds",
]

_MS = "ms"
_FRACTION = "fraction"
_COUNT = "count"
_PER_S = "per_s"
_DEVICE_S = "device_s"

#: Every :class:`RunResult` figure an SLO can name, with its unit
#: (``"ms"``, ``"fraction"``, ``"count"``, ``"per_s"`` or ``"device_s"``).  ``duration_s``
#: (a setting, in seconds) and ``t0`` (a timestamp) are deliberately absent.
METRICS: Mapping[str, str] = MappingProxyType(
    {
        "p50_delay_ms": _MS,
        "p90_delay_ms": _MS,
        "p95_delay_ms": _MS,
        "p99_delay_ms": _MS,
        "p999_delay_ms": _MS,
        "max_delay_ms": _MS,
        "mean_delay_ms": _MS,
        "lateness_p50_ms": _MS,
        "lateness_p99_ms": _MS,
        "sent_delay_p50_ms": _MS,
        "sent_delay_p95_ms": _MS,
        "sent_delay_p99_ms": _MS,
        "loss": _FRACTION,
        "throughput_per_s": _PER_S,
        "rate_per_device": _PER_S,
        "sent": _COUNT,
        "received": _COUNT,
        "lost": _COUNT,
        "duplicates": _COUNT,
        "out_of_order": _COUNT,
        "connect_failures": _COUNT,
        "publish_errors": _COUNT,
        "scheduled": _COUNT,
        "connected": _COUNT,
        "connect_p50_ms": _MS,
        "connect_p99_ms": _MS,
        "connect_retries": _COUNT,
        "disconnects": _COUNT,
        "reconnects": _COUNT,
        "reconnect_p50_ms": _MS,
        "reconnect_p99_ms": _MS,
        "reconnect_max_ms": _MS,
        "offline_device_s": _DEVICE_S,
        "dropped_offline": _COUNT,
        "resent": _COUNT,
        "unsent": _COUNT,
        "redispatched_devices": _COUNT,
        "sas_renewals": _COUNT,
        "puback_p50_ms": _MS,
        "puback_p95_ms": _MS,
        "puback_p99_ms": _MS,
        "puback_max_ms": _MS,
        "sink_reconnects": _COUNT,
        "sink_disconnects": _COUNT,
        "clock_offset_ms": _MS,
        "clock_uncertainty_ms": _MS,
        "unexpected": _COUNT,
        "other_runs": _COUNT,
        "malformed": _COUNT,
        "batched": _COUNT,
        "stage_joins": _COUNT,
        "stage_leaves": _COUNT,
        "extract_errors": _COUNT,
        "devices": _COUNT,
        "workers": _COUNT,
    }
)

#: The figures a windowed SLO can name (``pNN_delay_ms`` for any NN too): what every window has.
WINDOW_METRICS: frozenset[str] = frozenset(
    {
        "p50_delay_ms",
        "p90_delay_ms",
        "p95_delay_ms",
        "p99_delay_ms",
        "p999_delay_ms",
        "max_delay_ms",
        "mean_delay_ms",
        "loss",
        "lost",
        "sent",
        "received",
        "throughput_per_s",
        "scheduled",
    }
)

#: A windowed SLO's verdict names at most this many failing windows (the count stays exact).
_WINDOWS_SHOWN = 20

_PER_WINDOW = re.compile(r"^(?P<slo>.*?\S)\s+per\s+(?P<window>\S.*?)\s*$", re.IGNORECASE | re.DOTALL)

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
}

#: The comparison operators an SLO may use.
OPERATORS: tuple[str, ...] = tuple(_COMPARE)

# Which bounds an operator sets; "==" pins both ends.  merge_slos() replaces
# a base SLO with an override on the same metric whose bounds intersect.
_BOUNDS: dict[str, frozenset[str]] = {
    "<": frozenset({"upper"}),
    "<=": frozenset({"upper"}),
    ">": frozenset({"lower"}),
    ">=": frozenset({"lower"}),
    "==": frozenset({"upper", "lower"}),
}

# Percentile names: the attribute that answers them, and how.
_PERCENTILE_FAMILIES: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (re.compile(r"p([0-9]+(?:\.[0-9]+)?)_delay_ms", re.ASCII), "p{}_delay_ms", "percentile"),
    (re.compile(r"sent_delay_p([0-9]+(?:\.[0-9]+)?)_ms", re.ASCII), "sent_delay_p{}_ms", "sent_delay_histogram"),
    (re.compile(r"lateness_p([0-9]+(?:\.[0-9]+)?)_ms", re.ASCII), "lateness_p{}_ms", "lateness_histogram"),
)
_PERCENTILE_HELP = (
    "pNN_delay_ms, sent_delay_pNN_ms or lateness_pNN_ms for any percentile NN in (0, 100] (e.g. p99.9_delay_ms)"
)

_METRIC = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*", re.ASCII)
_OPERATOR = re.compile(r"[<>=!]+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_UNIT = re.compile(r"%|[A-Za-z]+", re.ASCII)

_SHOWN_METRICS = ("p95_delay_ms", "p99_delay_ms", "max_delay_ms", "loss", "throughput_per_s", "lost", "duplicates")
_MAX_QUOTED = 200


class SloSyntaxError(ConfigError):
    """An SLO expression could not be parsed; the message quotes it and says what is allowed.

    ``expression`` is the text as given, ``problem`` the explanation without the quote.
    """

    def __init__(self, expression: str, problem: str) -> None:
        shown = expression if len(expression) <= _MAX_QUOTED else expression[:_MAX_QUOTED] + "..."
        super().__init__(f"invalid SLO {shown!r}: {problem}")
        self.expression = expression
        self.problem = problem

    def __reduce__(self) -> tuple[type[SloSyntaxError], tuple[str, str]]:
        # Keep the error picklable (pytest-xdist ships exceptions between processes).
        return (type(self), (self.expression, self.problem))


@dataclass(frozen=True)
class Slo:
    """One parsed objective, e.g. ``p95_delay_ms < 1000``.

    ``threshold`` is in the metric's own ``unit`` (``"ms"``, ``"fraction"``,
    ``"count"`` or ``"per_s"``): ``loss < 0.1%`` has threshold ``0.001`` and
    ``p99_delay_ms <= 2s`` has threshold ``2000.0``.  ``text`` is the
    expression normalised for display (``"max_delay_ms < 3s"``).
    """

    metric: str
    op: str
    threshold: float
    text: str
    unit: str
    window_s: float | None = None  # "per <duration>": every window of this length must meet it

    def __str__(self) -> str:
        return self.text

    def measure(self, result: object) -> float:
        """The figure this SLO constrains, read from ``result`` (a RunResult or lookalike), in ``unit``.

        Named figures are read as attributes; ``pNN_delay_ms`` calls
        ``result.percentile(NN)``; ``sent_delay_pNN_ms`` / ``lateness_pNN_ms``
        call ``percentile(NN)`` on ``result.sent_delay_histogram`` /
        ``result.lateness_histogram`` and convert microseconds to ms.
        NaN (or ``None``) means no data and is returned as NaN.
        """
        if self.metric in METRICS:
            return _as_float(getattr(result, self.metric))
        found = _percentile_metric(self.metric)
        if found is None:
            raise ValueError(f"SLO {self.text!r} names no known metric; build SLOs with parse_slo()")
        _, q, source = found
        target: Any = result  # a RunResult, or any object with the same attributes
        if source == "percentile":
            return _as_float(target.percentile(q))
        return _as_float(getattr(target, source).percentile(q)) / 1000.0

    def evaluate(self, result: object) -> SloVerdict:
        """Measure ``result`` and compare it with the threshold; no data (NaN) fails.

        A windowed SLO measures ``result.window(start_s, end_s)`` for every window of
        ``result.duration_s``; it passes when all do, and ``measured`` is the worst window's.
        """
        if self.window_s is not None:
            return self._evaluate_windows(result)
        measured = self.measure(result)
        return SloVerdict(slo=self, measured=measured, passed=self._meets(measured))

    def _meets(self, measured: float) -> bool:
        return not math.isnan(measured) and _COMPARE[self.op](measured, self.threshold)

    def _evaluate_windows(self, result: object) -> SloVerdict:
        assert self.window_s is not None
        run: Any = result  # a RunResult, or any object with duration_s and window()
        windows = []
        for start_s, end_s in window_bounds(float(run.duration_s), self.window_s):
            measured = self.measure(run.window(start_s, end_s))
            windows.append(WindowVerdict(start_s, end_s, measured, self._meets(measured)))
        passed = bool(windows) and all(window.passed for window in windows)
        return SloVerdict(slo=self, measured=self._worst(windows), passed=passed, windows=tuple(windows))

    def _worst(self, windows: Sequence[WindowVerdict]) -> float:
        """The worst window's figure (the one furthest on the failing side); NaN with none measured."""
        values = [w.measured for w in windows if not math.isnan(w.measured)]
        if not values:
            return math.nan
        if self.op in (">", ">="):
            return min(values)
        if self.op == "==":
            return max(values, key=lambda value: abs(value - self.threshold))
        return max(values)


@dataclass(frozen=True)
class WindowVerdict:
    """One window of a windowed SLO: ``[start_s, end_s)`` of due time from T0, its figure, whether it met it."""

    start_s: float
    end_s: float
    measured: float
    passed: bool

    @property
    def label(self) -> str:
        """``[3m,4m)``."""
        return window_label(self.start_s, self.end_s)


@dataclass(frozen=True)
class SloVerdict:
    """The outcome of one SLO on one run: ``measured`` in the SLO's unit (NaN: no data).

    A windowed SLO's verdict has every window's in ``windows`` and the worst window's figure in ``measured``.
    """

    slo: Slo
    measured: float
    passed: bool
    windows: tuple[WindowVerdict, ...] = ()

    @property
    def failed_windows(self) -> list[WindowVerdict]:
        return [window for window in self.windows if not window.passed]

    @property
    def measured_text(self) -> str:
        """The measurement for display: ``"1234.5 ms"``, ``"0.250%"``, ``"3"``, ``"949.5/s"`` or ``"no data"``."""
        return _format_measurement(self.measured, self.slo.unit)

    def windows_text(self) -> str:
        """A windowed verdict: ``2 of 10 windows failed: [3m,4m) 1480 ms, [4m,5m) 1210 ms`` (or all met)."""
        total = len(self.windows)
        failed = self.failed_windows
        if not total:
            return "no window to judge (the run has no duration)"
        if not failed:
            return f"all {total} windows met (worst {_short_measurement(self.measured, self.slo.unit)})"
        shown = ", ".join(f"{w.label} {_short_measurement(w.measured, self.slo.unit)}" for w in failed[:_WINDOWS_SHOWN])
        more = f", and {len(failed) - _WINDOWS_SHOWN} more" if len(failed) > _WINDOWS_SHOWN else ""
        return f"{len(failed)} of {total} windows failed: {shown}{more}"

    def result_text(self) -> str:
        """What a verdict row shows after PASS/FAIL: ``measured 1.8 ms`` or a windowed verdict's windows."""
        if self.slo.window_s is not None:
            return self.windows_text()
        return "no data (nothing measured)" if math.isnan(self.measured) else f"measured {self.measured_text}"

    def describe(self) -> str:
        """One line: ``p95_delay_ms < 1000: measured 1234.5 ms -> FAIL``."""
        verdict = "PASS" if self.passed else "FAIL"
        return f"{self.slo.text}: {self.result_text()} -> {verdict}"


def parse_slo(text: str) -> Slo:
    """Parse ``"<metric> <op> <number>[<unit>] [per <duration>]"`` into an :class:`Slo`.

    Raises :class:`SloSyntaxError` (a ``ConfigError``) for anything else,
    with a message that quotes ``text`` and says what is allowed.
    """
    windowed = _PER_WINDOW.match(text)
    if windowed is None:
        return _parse_whole_run(text, text)
    slo = _parse_whole_run(windowed.group("slo"), text)
    window_s = _window_seconds(text, windowed.group("window"))
    percentile = _percentile_metric(slo.metric)
    if slo.metric not in WINDOW_METRICS and (percentile is None or percentile[2] != "percentile"):
        allowed = ", ".join(sorted(WINDOW_METRICS))
        raise SloSyntaxError(
            text, f"{slo.metric} has no figure per window; a windowed SLO takes one of {allowed}, or pNN_delay_ms"
        )
    return Slo(
        metric=slo.metric,
        op=slo.op,
        threshold=slo.threshold,
        text=f"{slo.text} per {format_duration(window_s)}",
        unit=slo.unit,
        window_s=window_s,
    )


def window_bounds(duration_s: float, window_s: float) -> list[tuple[float, float]]:
    """The windows ``[k*w, (k+1)*w)`` over ``[0, duration_s)``; a trailing part shorter than ``w`` is one too."""
    duration_us, window_us = round(duration_s * 1_000_000), round(window_s * 1_000_000)
    if window_us <= 0:
        return []
    return [
        (start_us / 1_000_000, min(start_us + window_us, duration_us) / 1_000_000)
        for start_us in range(0, duration_us, window_us)
    ]


def _window_seconds(text: str, window: str) -> float:
    try:
        seconds = parse_duration(window)
    except ValueError as exc:
        raise SloSyntaxError(text, f"after 'per': {exc}") from None
    if not seconds > 0:
        raise SloSyntaxError(text, f"after 'per': the window must be longer than 0, got {window!r}")
    return seconds


def _parse_whole_run(text: str, quoted: str) -> Slo:
    """``<metric> <op> <number>[<unit>]`` of ``text``; errors quote ``quoted`` (the whole expression)."""
    try:
        return _parse_expression(text)
    except SloSyntaxError as exc:
        if text == quoted:
            raise
        raise SloSyntaxError(quoted, exc.problem) from None


def _parse_expression(text: str) -> Slo:
    pos = _skip_ws(text, 0)
    if pos == len(text):
        raise SloSyntaxError(
            text, "the expression is empty; write '<metric> <op> <number>', e.g. 'p95_delay_ms < 1000'"
        )

    match = _METRIC.match(text, pos)
    if match is None:
        raise SloSyntaxError(
            text,
            f"expected a metric name at {_found(text, pos)}; write '<metric> <op> <number>', "
            "e.g. 'p95_delay_ms < 1000'",
        )
    metric, unit = _resolve_metric(text, match.group())
    pos = _skip_ws(text, match.end())

    match = _OPERATOR.match(text, pos)
    allowed_ops = " ".join(OPERATORS)
    if match is None:
        raise SloSyntaxError(
            text, f"expected a comparison operator ({allowed_ops}) after {_clip(metric)}, found {_found(text, pos)}"
        )
    op = match.group()
    if op not in _COMPARE:
        hint = " (write '==' for equality)" if op == "=" else ""
        raise SloSyntaxError(text, f"{_clip(op)} is not a comparison operator{hint}; use one of {allowed_ops}")
    pos = _skip_ws(text, match.end())

    match = _NUMBER.match(text, pos)
    if match is None:
        raise SloSyntaxError(
            text,
            f"missing number after {_clip(op)}: expected a threshold like 1000, 0.5 or 2s, found {_found(text, pos)}",
        )
    number = match.group()
    pos = _skip_ws(text, match.end())

    unit_word = ""
    match = _UNIT.match(text, pos)
    if match is not None:
        unit_word = match.group().lower()
        pos = _skip_ws(text, match.end())
    if pos != len(text):
        raise SloSyntaxError(
            text,
            f"unexpected {_found(text, pos)} after the threshold; write exactly one '<metric> <op> <number>[unit]'",
        )

    threshold = _threshold(text, metric, unit, number, unit_word)
    return Slo(metric=metric, op=op, threshold=threshold, text=f"{metric} {op} {number}{unit_word}", unit=unit)


def merge_slos(base: Sequence[Slo], overrides: Sequence[Slo]) -> list[Slo]:
    """Apply ``overrides`` (e.g. from the command line) to ``base`` (e.g. from a marker).

    An override replaces every SLO on the same metric that bounds it from the
    same side: ``<`` / ``<=`` are upper bounds, ``>`` / ``>=`` lower bounds and
    ``==`` both; so ``p95_delay_ms < 800`` replaces ``p95_delay_ms <= 1000``
    but not ``p95_delay_ms > 5``.  The override takes the place of the first
    SLO it replaces; an override that replaces nothing is appended.
    Overrides apply in order, so a later override replaces an earlier one.
    Neither input is modified.
    """
    merged = list(base)
    for override in overrides:
        sides = _BOUNDS[override.op]
        hits = [
            i
            for i, slo in enumerate(merged)
            if slo.metric == override.metric and slo.window_s == override.window_s and sides & _BOUNDS[slo.op]
        ]
        if not hits:
            merged.append(override)
            continue
        merged[hits[0]] = override
        for i in reversed(hits[1:]):
            del merged[i]
    return merged


def evaluate_all(slos: Sequence[Slo], result: object) -> list[SloVerdict]:
    """Evaluate every SLO on ``result``, in order."""
    return [slo.evaluate(result) for slo in slos]


def failure_message(verdicts: Sequence[SloVerdict], sample_size: int) -> str:
    """Summarise the verdicts, listing every violated SLO with its threshold and measurement.

    ``sample_size`` is the number of messages the figures rest on; e.g.::

        2 of 4 SLOs violated (n=12,000 messages):
          p95_delay_ms < 1000: measured 1234.5 ms
          loss < 0.1%: measured 0.250%

    With nothing violated the message says so in one line.
    """
    total = len(verdicts)
    failed = [v for v in verdicts if not v.passed]
    sample = f"n={sample_size:,} message{'' if sample_size == 1 else 's'}"
    noun = "SLO" if total == 1 else "SLOs"
    if not failed:
        return f"all {total} {noun} met ({sample})" if total else f"no SLOs to check ({sample})"
    lines = [f"{len(failed)} of {total} {noun} violated ({sample}):"]
    lines.extend(f"  {verdict.slo.text}: {verdict.result_text()}" for verdict in failed)
    return "\n".join(lines)


# -- helpers -----------------------------------------------------------------


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _clip(value: str, limit: int = 40) -> str:
    """``repr`` of ``value``, cut short so that one silly token cannot flood a message."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def _found(text: str, pos: int) -> str:
    """What stands at ``pos``, for an error message."""
    if pos >= len(text):
        return "the end of the expression"
    return _clip(text[pos:].strip())


def _canonical_percentile(raw: str) -> str:
    """``"099.90"`` -> ``"99.9"``, ``"50.0"`` -> ``"50"``: one spelling per percentile."""
    whole, _, frac = raw.partition(".")
    whole = whole.lstrip("0") or "0"
    frac = frac.rstrip("0")
    return f"{whole}.{frac}" if frac else whole


def _percentile_metric(name: str) -> tuple[str, float, str] | None:
    """``(canonical name, q, source)`` for a percentile-by-name metric, else None.

    ``q`` may be outside (0, 100]: the caller checks it so it can say so.
    """
    for pattern, template, source in _PERCENTILE_FAMILIES:
        match = pattern.fullmatch(name)
        if match is not None:
            digits = _canonical_percentile(match.group(1))
            return template.format(digits), float(digits), source
    return None


def _resolve_metric(text: str, name: str) -> tuple[str, str]:
    """Canonical metric name and its unit, or SloSyntaxError."""
    if name in METRICS:
        return name, METRICS[name]
    for pattern, template, _ in _PERCENTILE_FAMILIES:
        match = pattern.fullmatch(name)
        if match is None:
            continue
        digits = _canonical_percentile(match.group(1))
        if not 0 < float(digits) <= 100:
            hint = ""
            if "." not in digits and len(digits) > 2:
                hint = f"; did you mean {_clip(template.format(digits[:2] + '.' + digits[2:]))}?"
            raise SloSyntaxError(
                text,
                f"percentile {_clip(digits)[1:-1]} in {_clip(name)} is outside (0, 100]{hint} "
                "(a percentile takes a decimal point: p99.9_delay_ms is the 99.9th)",
            )
        canonical = template.format(digits)
        return canonical, METRICS.get(canonical, _MS)
    suggestion = difflib.get_close_matches(name.lower(), list(METRICS), n=1)
    hint = f"did you mean {suggestion[0]!r}? " if suggestion else ""
    raise SloSyntaxError(
        text,
        f"unknown metric {_clip(name)}; {hint}known metrics include {', '.join(_SHOWN_METRICS)} "
        f"(slo.METRICS lists all {len(METRICS)}), and {_PERCENTILE_HELP}",
    )


def _threshold(text: str, metric: str, unit: str, number: str, unit_word: str) -> float:
    """The threshold in the metric's unit, or SloSyntaxError if the unit does not fit."""
    try:
        value = Decimal(number)
        if not math.isfinite(float(value)):
            raise SloSyntaxError(text, f"threshold {_clip(number)[1:-1]} is too large to be a number")
        if unit_word == "":
            return float(value)
        if unit == _MS and unit_word in ("ms", "s"):
            return float(value * 1000) if unit_word == "s" else float(value)
        if unit == _FRACTION and unit_word == "%":
            return float(value / 100)
    except DecimalException as exc:  # pragma: no cover - the regex only lets decimals through
        raise SloSyntaxError(text, f"threshold {_clip(number)} is not a number") from exc
    shown = _clip(unit_word)
    if unit == _MS:
        allowed = "it is in milliseconds; write a bare number of ms, or add 'ms' or 's' (e.g. 500ms, 2s)"
    elif unit == _FRACTION:
        allowed = "it is a fraction (0..1); write a bare fraction (0.001) or a percentage (0.1%)"
    elif unit == _COUNT:
        allowed = "it is a count; write a bare number"
        if unit_word == "%":
            allowed += " (for the share of messages lost use loss, e.g. 'loss < 0.1%')"
    elif unit == _DEVICE_S:
        allowed = "it is in device-seconds (devices offline x seconds); write a bare number"
    else:
        allowed = "it is a rate per second; write a bare number"
    raise SloSyntaxError(text, f"unit {shown} is not allowed for {metric}: {allowed}")


def _as_float(value: object) -> float:
    if value is None:
        return math.nan
    if isinstance(value, (int, float)):
        return float(value)
    raise TypeError(f"expected a number, got {type(value).__name__} {value!r}")


def _decimal_text(value: float) -> str:
    """Up to 3 decimals (microseconds for a ms figure), trailing zeros dropped, at least one decimal."""
    text = f"{value:.3f}"
    if "." in text:
        text = text.rstrip("0")
        if text.endswith("."):
            text += "0"
    return "0.0" if text == "-0.0" else text


def _short_measurement(value: float, unit: str) -> str:
    """A window's figure: ``1480 ms``, ``12.5 ms``, ``0.250%``, ``949.5/s``, ``3`` or ``no data``."""
    if math.isnan(value):
        return "no data"
    if unit in (_MS, _PER_S):
        number = f"{value:.1f}".removesuffix(".0")
        return f"{number} ms" if unit == _MS else f"{number}/s"
    return _format_measurement(value, unit)


def _format_measurement(value: float, unit: str) -> str:
    if math.isnan(value):
        return "no data"
    if unit == _MS:
        return f"{_decimal_text(value)} ms"
    if unit == _FRACTION:
        return format_percent(value)
    if unit == _PER_S:
        return f"{_decimal_text(value)}/s"
    if unit == _DEVICE_S:
        return f"{_decimal_text(value)} device-s"
    return str(int(value)) if value.is_integer() else _decimal_text(value)
