"""One self-contained HTML page per run: verdict, SLO table, key figures, inline SVG charts, settings.

The input is the JSON-ready dict of a run (``RunResult.to_dict()``, or the same
dict loaded back from the JSON result file).  The page is a single file that
opens offline: no script, no external stylesheet, font or image, and a
Content-Security-Policy that forbids fetching anything.  The charts are SVG
drawn here, in Python, from the run's histograms and timeline:

1. ``delay-histogram``: end-to-end delays, log-scaled x axis in ms;
2. ``delay-cdf``: the cumulative distribution of the same buckets with the
   p50 / p95 / p99 markers;
3. ``sent-received``: messages sent and received per timeline slot;
4. ``p95-delay``: p95 delay per timeline slot (with the SLO threshold when one is set);
5. ``lateness-histogram``: how late the generator published against its schedule.

Every chart carries a ``<title>``, a ``<desc>`` summary and a data table, so the
figures do not depend on seeing the picture.  Pure: stdlib only (plus the
histogram class of this package); no pytest, no I/O except :func:`write_html`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import html
import itertools
import json
import math
import os
import re
import tempfile
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_iotperf.metrics import DelayHistogram

__all__ = ["CHART_NAMES", "REDACTED", "redact_settings", "redact_text", "render_html", "write_html"]

#: What a redacted value shows instead of itself.
REDACTED = "***"

#: The ``data-chart`` names of the page's charts, in page order.
CHART_NAMES: tuple[str, ...] = ("delay-histogram", "delay-cdf", "sent-received", "p95-delay", "lateness-histogram")

#: Shown for a figure with no value (None, NaN, missing).
_NONE = "\u2013"

_SECRET_KEY = re.compile(r"password|secret|token|key|connection", re.IGNORECASE)
_SECRET_VALUE = re.compile(r"SharedAccessKey=|SharedAccessSignature", re.IGNORECASE)
# Inside free text (warnings, errors, broker): mask the secret part only, keep the message readable.
_SECRET_IN_TEXT = (
    (re.compile(r"(SharedAccessKey\s*=\s*)[^;\s\"']*", re.IGNORECASE), r"\g<1>" + REDACTED),
    (re.compile(r"SharedAccessSignature[^;\"'\n]*", re.IGNORECASE), "SharedAccessSignature " + REDACTED),
    (re.compile(r"(://[^/\s:@]+):[^/\s@]+@"), r"\g<1>:" + REDACTED + "@"),
    (
        re.compile(r"((?:password|passwd|secret|token|api[_-]?key)\s*[=:]\s*)[^;\s,&\"']+", re.IGNORECASE),
        r"\g<1>" + REDACTED,
    ),
)

# -- chart geometry (SVG user units; the SVG scales to its container) ---------------------------

_W = 600.0
_H = 300.0
_X0 = 66.0  # plot left
_X1 = 582.0  # plot right
_Y0 = 46.0  # plot top (the margin above holds marker labels and legends)
_Y1 = 250.0  # plot bottom
_STRIP = 30.0  # width reserved left of a log axis for the values <= 0 ms

_BAR = "#4c78a8"
_LATENESS_BAR = "#3f9a92"
_SENT = "#4c78a8"
_RECEIVED = "#e8710a"
_LINE = "#4c78a8"
_THRESHOLD = "#c0392b"
# (label, colour, dash pattern): a marker is told apart by its label and dash, not by colour alone.
_MARKER_STYLE = {
    "p50": ("#2e7d32", "2 3"),
    "p95": ("#b35c00", "7 3"),
    "p99": ("#b71c1c", "12 3 2 3"),
}


# -- redaction -------------------------------------------------------------------------------------


def redact_text(text: str) -> str:
    """Mask secrets inside free text (``SharedAccessKey=...``, URL passwords, ``token=...``) with ``***``."""
    for pattern, replacement in _SECRET_IN_TEXT:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(key: str, value: Any) -> Any:
    if value is None:
        return None
    if _SECRET_KEY.search(key):
        return REDACTED
    if isinstance(value, str):
        return REDACTED if _SECRET_VALUE.search(value) else redact_text(value)
    if isinstance(value, Mapping):
        return {str(k): _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value(key, item) for item in value]
    return value


def redact_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``settings`` safe to publish.

    Any value whose key contains password / secret / token / key / connection
    (case-insensitive, nested mappings too), and any string containing
    ``SharedAccessKey=`` or ``SharedAccessSignature``, becomes ``"***"``;
    other strings go through :func:`redact_text` (a password in a URL).
    ``None`` stays ``None`` (an unset value reveals nothing).
    """
    return {str(key): _redact_value(str(key), value) for key, value in settings.items()}


# -- number formatting -----------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    """A finite float, or None for None / NaN / inf / bool / anything not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _fmt_count(value: Any) -> str:
    number = _number(value)
    if number is None:
        return _NONE
    return f"{int(number):,}" if number.is_integer() else f"{number:,.1f}"


def _fmt_ms(value: Any) -> str:
    number = _number(value)
    if number is None:
        return _NONE
    size = abs(number)
    if size >= 1000:
        text = f"{number:,.0f}"
    elif size >= 10:
        text = f"{number:.1f}"
    elif size >= 1 or size == 0:
        text = f"{number:.2f}"
    else:
        text = f"{number:.3f}"
    return f"{text} ms"


def _fmt_fraction(value: Any) -> str:
    number = _number(value)
    if number is None:
        return _NONE
    percent = number * 100
    text = f"{percent:.3f}"
    if percent != 0 and float(text) == 0:
        text = f"{percent:.2g}"  # a loss too small for 3 decimals is still not zero
    return f"{text}%"


def _fmt_rate(value: Any) -> str:
    number = _number(value)
    return _NONE if number is None else f"{number:,.1f}/s"


def _fmt_bytes(value: Any) -> str:
    number = _number(value)
    if number is None:
        return _NONE
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(number) >= size:
            return f"{number / size:,.1f} {unit}"
    return f"{number:,.0f} B"


def _fmt_in_unit(value: Any, unit: str) -> str:
    """A value in an SLO unit: ``ms``, ``fraction``, ``per_s`` or ``count``."""
    if unit == "ms":
        return _fmt_ms(value)
    if unit == "fraction":
        return _fmt_fraction(value)
    if unit == "per_s":
        return _fmt_rate(value)
    number = _number(value)
    if number is None:
        return _NONE
    return f"{int(number):,}" if number.is_integer() else f"{number:,g}"


def _fmt_plain(value: Any) -> str:
    """Any JSON value as short text (None: the dash)."""
    if value is None:
        return _NONE
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            return _NONE
        return f"{value:.0f}" if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _fmt_by_key(key: str, value: Any) -> str:
    """Format a figure of a generic table by what its name says it is."""
    if _number(value) is None:
        return _fmt_plain(value)
    if key.endswith("_ms"):
        return _fmt_ms(value)
    if "bytes" in key:
        return _fmt_bytes(value)
    if key.endswith("percent"):
        return f"{float(value):.1f}%"
    if key.endswith("per_s"):
        return _fmt_rate(value)
    return _fmt_count(value)


def _tick_text(value: float) -> str:
    if value == 0:
        return "0"
    value = float(f"{value:.10g}")  # 0.30000000000000004 -> 0.3
    size = abs(value)
    if size >= 1e6:
        return f"{value / 1e6:g}M"
    if size >= 1e4:
        return f"{value / 1e3:g}k"
    if size >= 1000 and value.is_integer():
        return f"{value:,.0f}"
    return f"{value:g}"


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _f(value: float) -> str:
    """A coordinate for SVG."""
    return f"{value:.1f}"


# -- reading the result ----------------------------------------------------------------------------


def _text(value: Any) -> str:
    return "" if value is None else redact_text(str(value))


def _list_of_text(value: Any) -> list[str]:
    if isinstance(value, str):
        return [redact_text(value)]
    if isinstance(value, Iterable):
        return [redact_text(str(item)) for item in value]
    return []


def _histogram(result: Mapping[str, Any], key: str) -> tuple[DelayHistogram | None, str | None]:
    """The histogram stored under ``key``, or None and why not."""
    raw = result.get(key)
    if isinstance(raw, DelayHistogram):
        return raw, None
    if not isinstance(raw, Mapping):
        return None, "no histogram in the result"
    try:
        return DelayHistogram.from_dict(raw), None
    except (ValueError, TypeError) as exc:
        return None, f"the histogram could not be read ({exc})"


@dataclass(frozen=True)
class _Point:
    t_s: float
    sent: int
    received: int
    p95_ms: float | None


def _timeline(result: Mapping[str, Any]) -> list[_Point]:
    raw = result.get("timeline")
    if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes)):
        return []
    points = []
    for item in raw:
        if not isinstance(item, Mapping):
            continue
        t_s = _number(item.get("t_s"))
        if t_s is None:
            continue
        points.append(
            _Point(
                t_s=t_s,
                sent=int(_number(item.get("sent")) or 0),
                received=int(_number(item.get("received")) or 0),
                p95_ms=_number(item.get("p95_delay_ms")),
            )
        )
    points.sort(key=lambda point: point.t_s)
    return points


def _slos(result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    raw = result.get("slos")
    if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes)):
        return []
    return [item for item in raw if isinstance(item, Mapping)]


def _slo_text(slo: Mapping[str, Any]) -> str:
    text = slo.get("slo")
    if text:
        return str(text)
    return f"{slo.get('metric', '?')} {slo.get('op', '?')} {_fmt_plain(slo.get('threshold'))}"


def _measured_text(slo: Mapping[str, Any]) -> str:
    text = slo.get("measured_text")
    if text:
        return str(text)
    measured = slo.get("measured")
    return "no data" if _number(measured) is None else _fmt_in_unit(measured, str(slo.get("unit", "")))


# -- scales and ticks ------------------------------------------------------------------------------


def _nice_step(span: float, target: int = 5) -> float:
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / target
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for mantissa in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= mantissa * magnitude * (1 + 1e-9):
            return mantissa * magnitude
    return 10 * magnitude  # pragma: no cover - the loop always returns


def _linear_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    step = _nice_step(hi - lo, target)
    first = math.ceil(lo / step - 1e-9)
    ticks = []
    n = first
    while n * step <= hi + step * 1e-9:
        ticks.append(round(n * step, 12))
        n += 1
    return ticks


def _count_domain(top: float) -> float:
    """Upper end of a count / ms axis starting at 0: the next nice tick at or above ``top``."""
    if top <= 0:
        return 1.0
    step = _nice_step(top)
    return math.ceil(top / step - 1e-9) * step


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Tick values for a log axis over ``[lo, hi]`` (both > 0): 1-2-5 or 1..9 per decade, else linear."""
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    for mantissas in ((1.0,), (1.0, 2.0, 5.0), tuple(float(m) for m in range(1, 10))):
        ticks = [m * 10.0**k for k in range(first, last + 1) for m in mantissas if lo <= m * 10.0**k <= hi * (1 + 1e-9)]
        if 3 <= len(ticks) <= 12 or (len(ticks) > 12 and mantissas == (1.0,)):
            return ticks if len(ticks) <= 12 else ticks[:: math.ceil(len(ticks) / 10)]
    return [tick for tick in _linear_ticks(lo, hi, 4) if tick > 0]


def _linear_axis_ticks(scale: _Linear, values: Sequence[float]) -> list[tuple[float, str]]:
    """(pixel, label) per tick; one style per axis: all in k (or M) once the largest tick needs it."""
    top = max((abs(v) for v in values), default=0.0)
    for limit, divisor, suffix in ((1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if top >= limit:
            return [(scale(v), "0" if v == 0 else f"{float(f'{v / divisor:.10g}'):g}{suffix}") for v in values]
    return [(scale(v), _tick_text(v)) for v in values]


@dataclass(frozen=True)
class _Linear:
    lo: float
    hi: float
    a: float  # pixel of lo
    b: float  # pixel of hi

    def __call__(self, value: float) -> float:
        if self.hi == self.lo:
            return (self.a + self.b) / 2
        return self.a + (value - self.lo) / (self.hi - self.lo) * (self.b - self.a)


@dataclass(frozen=True)
class _LogAxis:
    """A log-scaled x axis in ms, with an optional strip on the left for the values <= 0 ms."""

    lo: float
    hi: float
    strip: bool

    @property
    def left(self) -> float:
        return _X0 + _STRIP + 6 if self.strip else _X0

    def __call__(self, ms: float) -> float:
        span = math.log10(self.hi) - math.log10(self.lo)
        return self.left + (math.log10(ms) - math.log10(self.lo)) / span * (_X1 - self.left)

    @property
    def strip_center(self) -> float:
        return _X0 + _STRIP / 2


# -- SVG pieces ------------------------------------------------------------------------------------


def _svg_open(name: str, title: str, desc: str) -> str:
    return (
        f'<svg class="chart-svg" data-chart="{_esc(name)}" viewBox="0 0 {_W:g} {_H:g}" '
        f'xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby="{name}-title {name}-desc" '
        f'preserveAspectRatio="xMidYMid meet">'
        f'<title id="{name}-title">{_esc(title)}</title><desc id="{name}-desc">{_esc(desc)}</desc>'
    )


def _frame() -> str:
    return (
        f'<rect class="plot-bg" x="{_f(_X0)}" y="{_f(_Y0)}" width="{_f(_X1 - _X0)}" height="{_f(_Y1 - _Y0)}" '
        'fill="#fbfbfd" stroke="none"/>'
    )


def _axes(
    x_ticks: Sequence[tuple[float, str]],
    y_ticks: Sequence[tuple[float, str]],
    x_label: str,
    y_label: str,
) -> list[str]:
    """Grid lines, axis lines, tick marks, tick labels and axis titles."""
    parts = ['<g class="axes" font-size="11" fill="#333">']
    for y, label in y_ticks:
        parts.append(f'<line class="grid" x1="{_f(_X0)}" x2="{_f(_X1)}" y1="{_f(y)}" y2="{_f(y)}" stroke="#e3e3ea"/>')
        parts.append(
            f'<text class="tick y-tick" x="{_f(_X0 - 6)}" y="{_f(y)}" text-anchor="end" dominant-baseline="middle">'
            f"{_esc(label)}</text>"
        )
    for x, label in x_ticks:
        parts.append(f'<line class="grid" x1="{_f(x)}" x2="{_f(x)}" y1="{_f(_Y0)}" y2="{_f(_Y1)}" stroke="#eeeef3"/>')
        parts.append(f'<line x1="{_f(x)}" x2="{_f(x)}" y1="{_f(_Y1)}" y2="{_f(_Y1 + 4)}" stroke="#555"/>')
        parts.append(
            f'<text class="tick x-tick" x="{_f(x)}" y="{_f(_Y1 + 16)}" text-anchor="middle">{_esc(label)}</text>'
        )
    parts.append(f'<path class="axis-line" d="M{_f(_X0)},{_f(_Y0)} V{_f(_Y1)} H{_f(_X1)}" fill="none" stroke="#555"/>')
    parts.append(
        f'<text class="axis-title" x="{_f((_X0 + _X1) / 2)}" y="{_f(_Y1 + 36)}" text-anchor="middle" '
        f'font-size="12">{_esc(x_label)}</text>'
    )
    mid = (_Y0 + _Y1) / 2
    parts.append(
        f'<text class="axis-title" x="14" y="{_f(mid)}" text-anchor="middle" font-size="12" '
        f'transform="rotate(-90 14 {_f(mid)})">{_esc(y_label)}</text>'
    )
    parts.append("</g>")
    return parts


def _no_data_svg(name: str, title: str, reason: str) -> str:
    desc = f"No data: {reason}."
    return (
        _svg_open(name, title, desc)
        + _frame()
        + f'<path class="axis-line" d="M{_f(_X0)},{_f(_Y0)} V{_f(_Y1)} H{_f(_X1)}" fill="none" stroke="#999"/>'
        + f'<text class="no-data" x="{_f((_X0 + _X1) / 2)}" y="{_f((_Y0 + _Y1) / 2)}" text-anchor="middle" '
        f'font-size="18" fill="#666">no data</text>'
        + f'<text x="{_f((_X0 + _X1) / 2)}" y="{_f((_Y0 + _Y1) / 2 + 22)}" text-anchor="middle" '
        f'font-size="11" fill="#777">{_esc(reason)}</text>' + "</svg>"
    )


def _marker_parts(axis: _LogAxis, markers: Sequence[tuple[str, float | None]]) -> list[str]:
    """Vertical dashed lines at percentile values, each labelled in its own row of the top margin."""
    parts = ['<g class="markers" font-size="11">']
    for row, (label, value) in enumerate(markers):
        if value is None:
            continue
        if value > 0:
            if not axis.lo <= value <= axis.hi:
                continue
            x = axis(value)
        elif axis.strip:
            x = axis.strip_center
        else:
            continue
        colour, dash = _MARKER_STYLE.get(label, ("#444", "4 3"))
        text = f"{label} {_fmt_ms(value)}"
        half = 3.3 * len(text)
        label_x = min(max(x, _X0 + half), _X1 - half)
        y = 13 + 12 * row
        parts.append(
            f'<line class="marker" data-marker="{_esc(label)}" x1="{_f(x)}" x2="{_f(x)}" y1="{_f(y + 3)}" '
            f'y2="{_f(_Y1)}" stroke="{colour}" stroke-width="1.5" stroke-dasharray="{dash}"/>'
        )
        parts.append(
            f'<text class="marker-label" x="{_f(label_x)}" y="{_f(y)}" text-anchor="middle" fill="{colour}" '
            'stroke="#fff" stroke-width="3" stroke-linejoin="round" paint-order="stroke">'
            f"{_esc(text)}</text>"
        )
    parts.append("</g>")
    return parts


def _legend(items: Sequence[tuple[str, str, str]]) -> list[str]:
    """A legend in the top margin, right-aligned: (label, colour, dash) per series."""
    parts = ['<g class="legend" font-size="11" fill="#333">']
    x = _X1
    for label, colour, dash in reversed(items):
        width = 6.2 * len(label)
        x -= width
        parts.append(f'<text x="{_f(x)}" y="18">{_esc(label)}</text>')
        x -= 30
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<line x1="{_f(x)}" x2="{_f(x + 24)}" y1="14" y2="14" stroke="{colour}" stroke-width="2.5"{dash_attr}/>'
        )
        x -= 16
    parts.append("</g>")
    return parts


def _table(
    caption: str, headers: Sequence[str], rows: Iterable[Sequence[str]], *, text_columns: Container[int] = (0,)
) -> str:
    """A data table; the cells outside ``text_columns`` are figures (right-aligned)."""
    head = "".join(f'<th scope="col">{_esc(h)}</th>' for h in headers)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{_esc(cell)}</td>' if i not in text_columns else f"<td>{_esc(cell)}</td>"
            for i, cell in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    if not body:
        body.append(f'<tr><td colspan="{len(headers)}">no data</td></tr>')
    return (
        f'<table class="data"><caption>{_esc(caption)}</caption><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _figure(name: str, heading: str, svg: str, table: str, note: str = "") -> str:
    note_html = f'<p class="chart-note">{_esc(note)}</p>' if note else ""
    return (
        f'<figure class="chart" id="chart-{name}"><figcaption>{_esc(heading)}</figcaption>{svg}{note_html}'
        f"<details><summary>Data table</summary>{table}</details></figure>"
    )


# -- the histogram charts --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Binned:
    """Buckets of a histogram regrouped into bins equal on a log scale (ms), plus the values <= 0."""

    edges: list[float]  # ms, len(counts) + 1
    counts: list[int]
    non_positive: int
    total: int
    min_ms: float
    max_ms: float


def _split(hist: DelayHistogram) -> tuple[list[tuple[float, float, int]], int]:
    """Buckets holding values >= 1 us as (lower_ms, upper_ms, count), and the count of values <= 0."""
    positive = []
    non_positive = 0
    for lower, upper, count in hist.buckets():
        if lower >= 1:
            positive.append((lower / 1000.0, upper / 1000.0, count))
        else:
            non_positive += count
    return positive, non_positive


def _bin(hist: DelayHistogram) -> _Binned:
    """Whole buckets into log-equal bins by the value they stand for (the midpoint of their integers)."""
    positive, non_positive = _split(hist)
    min_ms = (hist.min_us or 0) / 1000.0
    max_ms = (hist.max_us or 0) / 1000.0
    if not positive:
        return _Binned([], [], non_positive, hist.count, min_ms, max_ms)
    reps = [(lower + (upper - lower - 0.001) / 2, count) for lower, upper, count in positive]
    low = math.log10(reps[0][0])
    high = math.log10(reps[-1][0])
    decades = high - low
    if decades <= 0:
        n, step = 1, 0.02
    else:
        n = min(max(math.ceil(decades * 20), 24), 80)
        step = decades / (n - 1)
    start = low - step / 2
    edges = [10 ** (start + i * step) for i in range(n + 1)]
    counts = [0] * n
    for rep, count in reps:
        index = min(max(int((math.log10(rep) - start) / step), 0), n - 1)
        counts[index] += count
    return _Binned(edges, counts, non_positive, hist.count, min_ms, max_ms)


def _log_axis(binned: _Binned, extra: Iterable[float | None] = ()) -> _LogAxis:
    """A log axis covering every bin (and the marker values), at least a factor 2 wide."""
    values = [binned.edges[0], binned.edges[-1], *(v for v in extra if v is not None and v > 0)]
    lo, hi = min(values), max(values)
    span = math.log10(hi / lo)
    pad = max(span * 0.04, (math.log10(2) - span) / 2, 0.0)
    return _LogAxis(lo=lo / 10**pad, hi=hi * 10**pad, strip=binned.non_positive > 0)


def _log_x_ticks(axis: _LogAxis) -> list[tuple[float, str]]:
    ticks = [(axis(value), _tick_text(value)) for value in _log_ticks(axis.lo, axis.hi)]
    if axis.strip:
        ticks.insert(0, (axis.strip_center, "\u22640"))
    return ticks


def _strip_separator(axis: _LogAxis) -> str:
    x = axis.left - 3
    return (
        f'<line class="strip-sep" x1="{_f(x)}" x2="{_f(x)}" y1="{_f(_Y0)}" y2="{_f(_Y1)}" stroke="#999" '
        'stroke-dasharray="3 3"/>'
    )


def _histogram_figure(
    name: str,
    heading: str,
    quantity: str,
    hist: DelayHistogram | None,
    problem: str | None,
    markers: Sequence[tuple[str, float | None]],
    colour: str,
    empty_reason: str,
) -> str:
    title = f"{heading} (log-scaled x axis, ms)"
    if hist is None or hist.count == 0:
        reason = problem or empty_reason
        return _figure(name, heading, _no_data_svg(name, title, reason), _table(title, ["range (ms)", "count"], []))
    binned = _bin(hist)
    axis = _log_axis(binned, (value for _, value in markers)) if binned.counts else _LogAxis(0.1, 10.0, True)
    top = _count_domain(max([*binned.counts, binned.non_positive]))
    y = _Linear(0.0, top, _Y1, _Y0)
    y_ticks = _linear_axis_ticks(y, _linear_ticks(0.0, top))
    parts = [_frame(), *_axes(_log_x_ticks(axis), y_ticks, f"{quantity} (ms, log scale)", "messages per bin")]
    parts.append(f'<g class="bars" fill="{colour}">')
    rows: list[list[str]] = []
    cumulative = 0
    if binned.non_positive:
        height = max(_Y1 - y(binned.non_positive), 1.0)
        parts.append(
            f'<rect class="bar" x="{_f(_X0 + 4)}" y="{_f(_Y1 - height)}" width="{_f(_STRIP - 8)}" '
            f'height="{_f(height)}"><title>{binned.non_positive:,} values \u2264 0 ms</title></rect>'
        )
        cumulative += binned.non_positive
        rows.append(["\u2264 0", f"{binned.non_positive:,}", f"{100 * cumulative / binned.total:.2f}%"])
    tallest = (0, 0.0, 0.0)
    for i, count in enumerate(binned.counts):
        if not count:
            continue
        lo_ms, hi_ms = binned.edges[i], binned.edges[i + 1]
        x_left, x_right = axis(lo_ms), axis(hi_ms)
        gap = min(1.0, (x_right - x_left) * 0.15)
        height = max(_Y1 - y(count), 1.0)  # a lone outlier still shows
        span_text = f"{_tick_text(_round_sig(lo_ms))}\u2013{_tick_text(_round_sig(hi_ms))} ms"
        parts.append(
            f'<rect class="bar" x="{_f(x_left + gap / 2)}" y="{_f(_Y1 - height)}" '
            f'width="{_f(max(x_right - x_left - gap, 0.8))}" height="{_f(height)}">'
            f"<title>{_esc(span_text)}: {count:,}</title></rect>"
        )
        cumulative += count
        rows.append([span_text, f"{count:,}", f"{100 * cumulative / binned.total:.2f}%"])
        if count > tallest[0]:
            tallest = (count, lo_ms, hi_ms)
    parts.append("</g>")
    if axis.strip:
        parts.append(_strip_separator(axis))
    parts.extend(_marker_parts(axis, markers))
    summary = (
        f"Histogram of {binned.total:,} {quantity} values from {_fmt_ms(binned.min_ms)} to {_fmt_ms(binned.max_ms)}"
        f" on a log-scaled x axis."
    )
    if tallest[0]:
        summary += (
            f" The tallest bin is {_fmt_ms(_round_sig(tallest[1]))} to {_fmt_ms(_round_sig(tallest[2]))} "
            f"with {tallest[0]:,} values."
        )
    marker_text = ", ".join(f"{label} {_fmt_ms(value)}" for label, value in markers if value is not None)
    if marker_text:
        summary += f" Percentiles: {marker_text}."
    note = ""
    if binned.non_positive:
        note = f"{binned.non_positive:,} value(s) \u2264 0 ms (clock skew) are drawn left of the dashed line."
        summary += " " + note
    svg = _svg_open(name, title, summary) + "".join(parts) + "</svg>"
    table = _table(title, ["range (ms)", "count", "cumulative"], rows)
    return _figure(name, heading, svg, table, note)


def _round_sig(value: float, digits: int = 3) -> float:
    return float(f"{value:.{digits}g}")


def _cdf_figure(hist: DelayHistogram | None, problem: str | None, markers: Sequence[tuple[str, float | None]]) -> str:
    name = "delay-cdf"
    heading = "Delay distribution (CDF)"
    title = "Cumulative distribution of the end-to-end delay (log-scaled x axis, ms)"
    if hist is None or hist.count == 0:
        reason = problem or "no message was received"
        return _figure(
            name,
            heading,
            _no_data_svg(name, title, reason),
            _table(title, ["delay \u2264 (ms)", "share of messages"], []),
        )
    binned = _bin(hist)
    positive, non_positive = _split(hist)
    if positive:
        lo = min(positive[0][0], binned.edges[0])
        hi = max(positive[-1][1], binned.edges[-1])
        axis = _log_axis(_Binned([lo, hi], [], non_positive, hist.count, 0, 0), (value for _, value in markers))
    else:
        axis = _LogAxis(0.1, 10.0, True)
    y = _Linear(0.0, 1.0, _Y1, _Y0)
    y_ticks = [(y(q), f"{q:.0%}") for q in (0.0, 0.25, 0.5, 0.75, 1.0)]
    parts = [_frame(), *_axes(_log_x_ticks(axis), y_ticks, "delay (ms, log scale)", "messages delivered within")]
    total = hist.count
    cumulative = non_positive
    points: list[tuple[float, float]] = []
    if axis.strip:
        points += [(_X0, y(0.0)), (_X0 + 2, y(cumulative / total)), (axis.left, y(cumulative / total))]
    else:
        points.append((axis.left, y(0.0)))
    rows: list[list[str]] = []
    if non_positive:
        rows.append(["\u2264 0", f"{100 * non_positive / total:.2f}%"])
    for lower, upper, count in positive:
        points.append((axis(lower), y(cumulative / total)))
        cumulative += count
        points.append((axis(upper), y(cumulative / total)))
    points.append((_X1, y(1.0)))
    # The table at the display bins' edges (a few dozen rows, not thousands of buckets).
    running = non_positive
    for i, count in enumerate(binned.counts):
        running += count
        if count:
            rows.append([_tick_text(_round_sig(binned.edges[i + 1])), f"{100 * running / total:.2f}%"])
    path = _path(points)
    parts.append(f'<path class="series cdf" d="{path}" fill="none" stroke="{_LINE}" stroke-width="2"/>')
    if axis.strip:
        parts.append(_strip_separator(axis))
    parts.extend(_marker_parts(axis, markers))
    for label, value in markers:
        if value is None or value <= 0 or not axis.lo <= value <= axis.hi:
            continue
        q = float(label[1:]) / 100 if label[1:].replace(".", "", 1).isdigit() else None
        if q is not None:
            colour, _ = _MARKER_STYLE.get(label, ("#444", ""))
            parts.append(f'<circle cx="{_f(axis(value))}" cy="{_f(y(q))}" r="3.5" fill="{colour}"/>')
    marker_text = ", ".join(f"{label} {_fmt_ms(value)}" for label, value in markers if value is not None)
    summary = (
        f"Share of the {total:,} received messages delivered within a given delay, from "
        f"{_fmt_ms((hist.min_us or 0) / 1000)} to {_fmt_ms((hist.max_us or 0) / 1000)}."
    )
    if marker_text:
        summary += f" Percentiles: {marker_text}."
    svg = _svg_open(name, title, summary) + "".join(parts) + "</svg>"
    return _figure(name, heading, svg, _table(title, ["delay \u2264 (ms)", "share of messages"], rows))


def _path(points: Sequence[tuple[float, float]]) -> str:
    """An SVG path through ``points``, dropping consecutive points that round to the same pixel tenth."""
    out: list[str] = []
    last = ""
    for x, y in points:
        here = f"{_f(x)},{_f(y)}"
        if here != last:
            out.append(("M" if not out else "L") + here)
            last = here
    return " ".join(out)


# -- the timeline charts ---------------------------------------------------------------------------


def _slot_s(points: Sequence[_Point]) -> float:
    steps = [b.t_s - a.t_s for a, b in itertools.pairwise(points) if b.t_s > a.t_s]
    return min(steps) if steps else 1.0


def _time_axis(points: Sequence[_Point]) -> tuple[_Linear, list[tuple[float, str]]]:
    lo, hi = points[0].t_s, points[-1].t_s
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    x = _Linear(lo, hi, _X0 + 4, _X1 - 4)
    return x, _linear_axis_ticks(x, _linear_ticks(lo, hi, 8))


def _slot_label(points: Sequence[_Point]) -> str:
    slot = _slot_s(points)
    return "per second" if slot == 1 else f"per {slot:g} s slot"


def _sent_received_figure(points: Sequence[_Point]) -> str:
    name = "sent-received"
    heading = "Messages sent and received over time"
    title = "Messages sent and received per timeline slot"
    headers = ["t (s)", "sent", "received"]
    if not points:
        reason = "the run has no timeline"
        return _figure(name, heading, _no_data_svg(name, title, reason), _table(title, headers, []))
    x, x_ticks = _time_axis(points)
    top = _count_domain(max(max(p.sent, p.received) for p in points))
    y = _Linear(0.0, top, _Y1, _Y0)
    y_ticks = _linear_axis_ticks(y, _linear_ticks(0.0, top))
    per = _slot_label(points)
    parts = [_frame(), *_axes(x_ticks, y_ticks, "time since T0 (s)", f"messages {per}")]
    sent_path = _path([(x(p.t_s), y(p.sent)) for p in points])
    received_path = _path([(x(p.t_s), y(p.received)) for p in points])
    parts.append(
        f'<path class="series sent" data-series="sent" d="{sent_path}" fill="none" stroke="{_SENT}" '
        'stroke-width="2.2" stroke-linejoin="round"/>'
    )
    parts.append(
        f'<path class="series received" data-series="received" d="{received_path}" fill="none" '
        f'stroke="{_RECEIVED}" stroke-width="2.2" stroke-dasharray="6 3" stroke-linejoin="round"/>'
    )
    if len(points) <= 40:
        for p in points:
            parts.append(f'<circle cx="{_f(x(p.t_s))}" cy="{_f(y(p.sent))}" r="2.5" fill="{_SENT}"/>')
            parts.append(
                f'<rect x="{_f(x(p.t_s) - 2.5)}" y="{_f(y(p.received) - 2.5)}" width="5" height="5" '
                f'fill="{_RECEIVED}"/>'
            )
    parts.extend(_legend([("sent (solid)", _SENT, ""), ("received (dashed)", _RECEIVED, "6 3")]))
    sent_total = sum(p.sent for p in points)
    received_total = sum(p.received for p in points)
    peak_sent = max(points, key=lambda p: p.sent)
    peak_received = max(points, key=lambda p: p.received)
    summary = (
        f"{len(points)} slots from t={points[0].t_s:g} s to t={points[-1].t_s:g} s: {sent_total:,} sent and "
        f"{received_total:,} received in total; peak {peak_sent.sent:,} sent {per} at t={peak_sent.t_s:g} s, "
        f"peak {peak_received.received:,} received at t={peak_received.t_s:g} s."
    )
    svg = _svg_open(name, title, summary) + "".join(parts) + "</svg>"
    rows = [[f"{p.t_s:g}", f"{p.sent:,}", f"{p.received:,}"] for p in points]
    return _figure(name, heading, svg, _table(title, headers, rows))


def _p95_threshold(slos: Sequence[Mapping[str, Any]]) -> tuple[float, str] | None:
    for slo in slos:
        if slo.get("metric") == "p95_delay_ms":
            threshold = _number(slo.get("threshold"))
            if threshold is not None:
                return threshold, _slo_text(slo)
    return None


def _p95_figure(points: Sequence[_Point], slos: Sequence[Mapping[str, Any]]) -> str:
    name = "p95-delay"
    heading = "p95 delay over time"
    title = "p95 end-to-end delay per timeline slot (ms)"
    headers = ["t (s)", "p95 delay (ms)"]
    known = [p for p in points if p.p95_ms is not None]
    if not known:
        reason = "no message was received" if points else "the run has no timeline"
        return _figure(name, heading, _no_data_svg(name, title, reason), _table(title, headers, []))
    x, x_ticks = _time_axis(points)
    peak = max(p.p95_ms for p in known if p.p95_ms is not None)
    threshold = _p95_threshold(slos)
    shown_threshold = threshold if threshold is not None and 0 <= threshold[0] <= 1.5 * max(peak, 1e-9) else None
    top = _count_domain(max(peak, shown_threshold[0] if shown_threshold else 0.0))
    y = _Linear(0.0, top, _Y1, _Y0)
    y_ticks = _linear_axis_ticks(y, _linear_ticks(0.0, top))
    parts = [_frame(), *_axes(x_ticks, y_ticks, "time since T0 (s)", "p95 delay (ms)")]
    segments: list[list[tuple[float, float]]] = [[]]
    for p in points:
        if p.p95_ms is None:
            if segments[-1]:
                segments.append([])
            continue
        segments[-1].append((x(p.t_s), y(p.p95_ms)))
    path = " ".join(_path(segment) for segment in segments if segment)
    parts.append(
        f'<path class="series p95" d="{path}" fill="none" stroke="{_LINE}" stroke-width="2.2" stroke-linejoin="round"/>'
    )
    for segment in segments:
        if len(segment) == 1 or len(known) <= 40:
            parts.extend(f'<circle cx="{_f(cx)}" cy="{_f(cy)}" r="2.5" fill="{_LINE}"/>' for cx, cy in segment)
    legend = [("p95 per slot", _LINE, "")]
    if shown_threshold is not None:
        ty = y(shown_threshold[0])
        parts.append(
            f'<line class="threshold" x1="{_f(_X0)}" x2="{_f(_X1)}" y1="{_f(ty)}" y2="{_f(ty)}" '
            f'stroke="{_THRESHOLD}" stroke-width="1.5" stroke-dasharray="8 4"/>'
        )
        legend.append((f"SLO {_clip(shown_threshold[1])}", _THRESHOLD, "8 4"))
    elif threshold is not None:
        parts.append(
            f'<text x="{_f(_X0 + 6)}" y="18" font-size="11" fill="{_THRESHOLD}">'
            f"SLO {_esc(_clip(threshold[1]))}: threshold above the chart</text>"
        )
    parts.extend(_legend(legend))
    worst = max(known, key=lambda p: p.p95_ms or 0.0)
    summary = (
        f"p95 delay of the messages received in each of {len(points)} slots; highest {_fmt_ms(worst.p95_ms)} at "
        f"t={worst.t_s:g} s, lowest {_fmt_ms(min(p.p95_ms for p in known if p.p95_ms is not None))}."
    )
    if threshold is not None:
        summary += f" SLO: {threshold[1]}."
    svg = _svg_open(name, title, summary) + "".join(parts) + "</svg>"
    rows = [[f"{p.t_s:g}", _fmt_ms(p.p95_ms).removesuffix(" ms")] for p in points]
    return _figure(name, heading, svg, _table(title, headers, rows))


# -- page sections ---------------------------------------------------------------------------------


def _verdict(result: Mapping[str, Any]) -> tuple[str, list[str]]:
    slos = _slos(result)
    failed = [slo for slo in slos if not slo.get("passed")]
    errors = _list_of_text(result.get("errors"))
    reasons = [f"SLO {_slo_text(slo)} failed: {_failure_detail(slo)}" for slo in failed]
    if errors:
        reasons.append(f"{len(errors)} run error(s): see Errors below")
    if reasons:
        return "FAIL", reasons
    if not slos:
        return "PASS", ["no SLOs were set; the run completed without errors"]
    return "PASS", [f"all {len(slos)} SLO(s) met"]


def _failure_detail(slo: Mapping[str, Any]) -> str:
    text = _measured_text(slo)
    return "no data (nothing measured)" if text == "no data" else f"measured {text}"


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _header(result: Mapping[str, Any], title: str) -> str:
    verdict, reasons = _verdict(result)
    css = "pass" if verdict == "PASS" else "fail"
    mark = "\u2713" if verdict == "PASS" else "\u2717"
    meta: list[tuple[str, str]] = [("run id", _text(result.get("run_id")) or _NONE)]
    meta.append(("broker", _text(result.get("broker")) or _NONE))
    if result.get("eventhub"):
        meta.append(("Event Hub", _text(result.get("eventhub"))))
    meta.append(("devices", _fmt_count(result.get("devices"))))
    meta.append(("rate per device", _fmt_rate(result.get("rate_per_device"))))
    duration = _number(result.get("duration_s"))
    meta.append(("duration", _NONE if duration is None else f"{duration:g} s"))
    if result.get("workers") is not None:
        meta.append(("workers", _fmt_count(result.get("workers"))))
    t0 = _number(result.get("t0"))
    if t0 is not None:
        try:
            start = _dt.datetime.fromtimestamp(t0, tz=_dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        except (OverflowError, OSError, ValueError):
            start = f"{t0:g}"
        meta.append(("T0", start))
    meta_html = "".join(f"<div><dt>{_esc(k)}</dt><dd>{_esc(v)}</dd></div>" for k, v in meta)
    reason_html = "".join(f"<li>{_esc(reason)}</li>" for reason in reasons)
    parts = [
        '<header class="page-head">',
        f'<p class="kicker">pytest-iotperf load test report</p><h1>{_esc(title)}</h1>',
        f'<dl class="meta">{meta_html}</dl>',
        f'<div class="verdict {css}" id="verdict" role="status" data-verdict="{verdict}">'
        f'<span class="verdict-word">{mark} {verdict}</span><ul class="reasons">{reason_html}</ul></div>',
    ]
    if result.get("generator_saturated"):
        parts.append(
            '<div class="banner warn" id="saturated" role="alert"><strong>\u26a0 Generator saturated:</strong> '
            f"fleet lateness p99 {_esc(_fmt_ms(result.get('lateness_p99_ms')))}. The load generator could not keep "
            "its schedule, so the delays describe the generator as much as the system under test "
            "(add workers or lower the rate).</div>"
        )
    if result.get("complete") is False:
        parts.append(
            '<div class="banner bad" id="incomplete" role="alert"><strong>Incomplete run:</strong> a report is '
            "missing or the run reported errors; the figures may not cover every message.</div>"
        )
    parts.append("</header>")
    return "".join(parts)


def _slo_section(result: Mapping[str, Any]) -> str:
    slos = _slos(result)
    head = '<section id="slos"><h2>Service-level objectives</h2>'
    if not slos:
        return head + '<p class="empty">No SLOs were set for this run.</p></section>'
    rows = []
    for slo in slos:
        passed = bool(slo.get("passed"))
        css = "pass" if passed else "fail"
        verdict = "\u2713 PASS" if passed else "\u2717 FAIL"
        threshold = f"{_esc(slo.get('op', ''))} {_esc(_fmt_in_unit(slo.get('threshold'), str(slo.get('unit', ''))))}"
        rows.append(
            f'<tr class="{css}" data-passed="{str(passed).lower()}"><td><code>{_esc(_slo_text(slo))}</code></td>'
            f'<td><code>{_esc(slo.get("metric", _NONE))}</code></td><td class="num">{threshold}</td>'
            f'<td class="num">{_esc(_measured_text(slo))}</td>'
            f'<td><span class="badge {css}">{verdict}</span></td></tr>'
        )
    met = sum(1 for slo in slos if slo.get("passed"))
    return (
        head + f'<table class="slo-table" id="slo-table"><caption>{met} of {len(slos)} SLO(s) met</caption>'
        '<thead><tr><th scope="col">SLO</th><th scope="col">metric</th><th scope="col">threshold</th>'
        '<th scope="col">measured</th><th scope="col">verdict</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


_KEY_FIGURES: tuple[tuple[str, str, str], ...] = (
    ("sent", "Sent", "count"),
    ("received", "Received", "count"),
    ("lost", "Lost", "count"),
    ("loss", "Loss", "fraction"),
    ("duplicates", "Duplicates", "count"),
    ("throughput_per_s", "Throughput", "per_s"),
    ("p50_delay_ms", "p50 delay", "ms"),
    ("p95_delay_ms", "p95 delay", "ms"),
    ("p99_delay_ms", "p99 delay", "ms"),
    ("p999_delay_ms", "p99.9 delay", "ms"),
    ("max_delay_ms", "Max delay", "ms"),
    ("mean_delay_ms", "Mean delay", "ms"),
    ("lateness_p50_ms", "Lateness p50", "ms"),
    ("lateness_p99_ms", "Lateness p99", "ms"),
)

_MORE_FIGURES: tuple[tuple[str, str, str], ...] = (
    ("p90_delay_ms", "p90 delay", "ms"),
    ("sent_delay_p50_ms", "delay from actual send, p50", "ms"),
    ("sent_delay_p95_ms", "delay from actual send, p95", "ms"),
    ("sent_delay_p99_ms", "delay from actual send, p99", "ms"),
    ("out_of_order", "out of order", "count"),
    ("unexpected", "unexpected (unknown device or seq)", "count"),
    ("other_runs", "messages of other runs", "count"),
    ("malformed", "malformed payloads", "count"),
    ("scheduled", "messages scheduled", "count"),
    ("connected", "devices connected at go", "count"),
    ("connect_failures", "connect failures", "count"),
    ("connect_retries", "connect retries", "count"),
    ("connect_p50_ms", "connect time p50", "ms"),
    ("connect_p99_ms", "connect time p99", "ms"),
    ("publish_errors", "publish errors", "count"),
    ("workers", "worker processes reported", "count"),
    ("drain", "drain", "text"),
    ("complete", "complete", "text"),
)


def _figures_section(result: Mapping[str, Any]) -> str:
    cards = []
    for key, label, unit in _KEY_FIGURES:
        value = result.get(key)
        text = _fmt_in_unit(value, unit)
        alert = key in ("lost", "loss", "duplicates") and (_number(value) or 0) > 0
        css = "fig alert" if alert else "fig"
        cards.append(f'<div class="{css}" data-key="{key}"><dt>{_esc(label)}</dt><dd>{_esc(text)}</dd></div>')
    rows = []
    for key, label, unit in _MORE_FIGURES:
        if key not in result:
            continue
        value = result.get(key)
        text = _fmt_plain(value) if unit == "text" else _fmt_in_unit(value, unit)
        rows.append([label, text])
    more = _table("More figures", ["figure", "value"], rows) if rows else ""
    return (
        '<section id="figures"><h2>Key figures</h2>'
        f'<dl class="figures">{"".join(cards)}</dl>'
        f"<details><summary>More figures</summary>{more}</details></section>"
    )


def _charts_section(result: Mapping[str, Any]) -> str:
    delay, delay_problem = _histogram(result, "delay_histogram")
    lateness, lateness_problem = _histogram(result, "lateness_histogram")
    points = _timeline(result)
    slos = _slos(result)

    def marker(label: str, key: str, hist: DelayHistogram | None, q: float) -> tuple[str, float | None]:
        value = _number(result.get(key))
        if value is None and hist is not None and hist.count:
            value = hist.percentile(q) / 1000.0
        return label, value

    delay_markers = [
        marker("p50", "p50_delay_ms", delay, 50),
        marker("p95", "p95_delay_ms", delay, 95),
        marker("p99", "p99_delay_ms", delay, 99),
    ]
    lateness_markers = [
        marker("p50", "lateness_p50_ms", lateness, 50),
        marker("p99", "lateness_p99_ms", lateness, 99),
    ]
    figures = [
        _histogram_figure(
            "delay-histogram",
            "End-to-end delay histogram",
            "delay",
            delay,
            delay_problem,
            delay_markers,
            _BAR,
            "no message was received",
        ),
        _cdf_figure(delay, delay_problem, delay_markers),
        _sent_received_figure(points),
        _p95_figure(points, slos),
        _histogram_figure(
            "lateness-histogram",
            "Generator lateness histogram",
            "lateness",
            lateness,
            lateness_problem,
            lateness_markers,
            _LATENESS_BAR,
            "no message was sent",
        ),
    ]
    return f'<section id="charts"><h2>Charts</h2><div class="charts">{"".join(figures)}</div></section>'


def _losses_section(result: Mapping[str, Any]) -> str:
    worst = result.get("worst_devices")
    if not isinstance(worst, Sequence) or isinstance(worst, (str, bytes)) or not worst:
        return ""
    missing = result.get("missing") if isinstance(result.get("missing"), Mapping) else {}
    assert isinstance(missing, Mapping)
    rows = []
    for item in worst:
        if not isinstance(item, Sequence) or isinstance(item, (str, bytes)) or len(item) != 2:
            continue
        device, lost = str(item[0]), item[1]
        spans = missing.get(device) or []
        texts = []
        for span in list(spans)[:6]:
            if isinstance(span, Sequence) and len(span) == 2:
                start, end = int(span[0]), int(span[1])
                texts.append(str(start) if end - start == 1 else f"{start}\u2013{end - 1}")
        if len(spans) > 6:
            texts.append(f"\u2026 (+{len(spans) - 6} more ranges)")
        rows.append([device, _fmt_count(lost), ", ".join(texts) or _NONE])
    table = _table("Devices with the most lost messages", ["device", "lost", "missing seqs"], rows, text_columns=(0, 2))
    return f'<section id="losses"><h2>Lost messages by device</h2>{table}</section>'


def _workers_section(result: Mapping[str, Any]) -> str:
    stats = result.get("worker_stats")
    if not isinstance(stats, Sequence) or isinstance(stats, (str, bytes)) or not stats:
        return ""
    workers = [redact_settings(item) for item in stats if isinstance(item, Mapping)]
    keys: list[str] = []
    for worker in workers:
        keys.extend(key for key in worker if key not in keys)
    rows = [[_fmt_by_key(key, worker.get(key)) for key in keys] for worker in workers]
    table = _table("Load generator worker processes", [key.replace("_", " ") for key in keys], rows, text_columns=())
    return (
        f'<section id="workers"><details><summary>Worker processes ({len(workers)})</summary>{table}</details>'
        "</section>"
    )


def _settings_section(result: Mapping[str, Any]) -> str:
    raw = result.get("settings")
    settings = redact_settings(raw) if isinstance(raw, Mapping) else {}
    raw_sources = result.get("sources")
    sources = raw_sources if isinstance(raw_sources, Mapping) else {}
    head = '<section id="settings"><h2>Run settings</h2>'
    if not settings:
        return head + '<p class="empty">No settings were recorded.</p></section>'
    rows = []
    for key, value in settings.items():
        source = sources.get(key)
        source_text = _NONE if source is None else redact_text(str(source))
        if isinstance(source, str) and _SECRET_VALUE.search(source):
            source_text = REDACTED
        rows.append(
            f'<tr data-setting="{_esc(key)}"><th scope="row"><code>{_esc(key)}</code></th>'
            f"<td><code>{_esc(_fmt_plain(value))}</code></td><td>{_esc(source_text)}</td></tr>"
        )
    return (
        head + '<table class="settings" id="settings-table"><caption>Every setting and where its value came from'
        '</caption><thead><tr><th scope="col">setting</th><th scope="col">value</th><th scope="col">source</th>'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table></section>"
    )


def _messages_section(result: Mapping[str, Any]) -> str:
    warnings = _list_of_text(result.get("warnings"))
    errors = _list_of_text(result.get("errors"))
    out = ['<section id="warnings"><h2>Warnings</h2>']
    if warnings:
        out.append('<ul class="messages warn">')
        out.extend(f"<li>{_esc(w)}</li>" for w in warnings)
        out.append("</ul>")
    else:
        out.append('<p class="empty">No warnings.</p>')
    out.append('</section><section id="errors"><h2>Errors</h2>')
    if errors:
        out.append('<ul class="messages bad">')
        out.extend(f"<li>{_esc(e)}</li>" for e in errors)
        out.append("</ul>")
    else:
        out.append('<p class="empty">No errors.</p>')
    out.append("</section>")
    return "".join(out)


_CSS = """
:root { color-scheme: light; --pass: #1b7f3b; --pass-bg: #e6f4ea; --fail: #b3261e; --fail-bg: #fce8e6;
  --warn: #8a5a00; --warn-bg: #fff4d6; --muted: #5f6368; --line: #dadce0; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  color: #202124; background: #f6f7f9; }
.page { max-width: 1200px; margin: 0 auto; padding: 16px 20px 32px; }
h1 { font-size: 22px; margin: 2px 0 10px; word-break: break-word; }
h2 { font-size: 17px; margin: 0 0 10px; }
section, .page-head { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 14px 18px;
  margin: 0 0 14px; }
.kicker { margin: 0; color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .06em; }
dl.meta { display: flex; flex-wrap: wrap; gap: 4px 22px; margin: 0 0 12px; }
dl.meta div { display: flex; gap: 6px; }
dl.meta dt { color: var(--muted); }
dl.meta dd { margin: 0; font-weight: 600; word-break: break-all; }
.verdict { display: flex; align-items: center; gap: 18px; border-radius: 6px; padding: 10px 16px;
  border: 2px solid; }
.verdict.pass { background: var(--pass-bg); border-color: var(--pass); color: var(--pass); }
.verdict.fail { background: var(--fail-bg); border-color: var(--fail); color: var(--fail); }
.verdict-word { font-size: 26px; font-weight: 800; letter-spacing: .04em; white-space: nowrap; }
.verdict ul { margin: 0; padding-left: 18px; color: #202124; }
.banner { margin-top: 10px; border-radius: 6px; padding: 8px 14px; border: 1px solid; }
.banner.warn { background: var(--warn-bg); border-color: #e0a800; color: var(--warn); }
.banner.bad { background: var(--fail-bg); border-color: var(--fail); color: var(--fail); }
table { border-collapse: collapse; width: 100%; }
caption { text-align: left; color: var(--muted); padding: 0 0 6px; }
th, td { text-align: left; padding: 5px 10px; border-bottom: 1px solid #ececf0; vertical-align: top; }
thead th { background: #f1f3f4; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code { font: 13px/1.3 ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; word-break: break-all; }
tr.fail td { background: #fff7f6; }
.badge { display: inline-block; font-weight: 700; border-radius: 4px; padding: 1px 8px; white-space: nowrap; }
.badge.pass { color: var(--pass); background: var(--pass-bg); border: 1px solid var(--pass); }
.badge.fail { color: var(--fail); background: var(--fail-bg); border: 1px solid var(--fail); }
dl.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 10px; margin: 0 0 8px; }
.fig { border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; background: #fcfcfd; }
.fig dt { color: var(--muted); font-size: 12px; }
.fig dd { margin: 2px 0 0; font-size: 20px; font-weight: 700; font-variant-numeric: tabular-nums; }
.fig.alert { border-color: #e0a800; background: var(--warn-bg); }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(460px, 100%), 1fr)); gap: 14px; }
figure.chart { margin: 0; border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px; background: #fff;
  min-width: 0; }
figcaption { font-weight: 600; margin-bottom: 4px; }
svg.chart-svg { display: block; width: 100%; height: auto; font-family: inherit; }
.chart-note { color: var(--muted); font-size: 12px; margin: 4px 0; }
details { margin-top: 6px; }
summary { cursor: pointer; color: #1a5fb4; }
details table { font-size: 12px; margin-top: 6px; }
ul.messages { margin: 0; padding-left: 20px; }
ul.messages li { margin: 3px 0; word-break: break-word; }
ul.messages.warn li { color: var(--warn); }
ul.messages.bad li { color: var(--fail); }
p.empty { color: var(--muted); margin: 0; }
footer { color: var(--muted); font-size: 12px; text-align: center; }
@media print { body { background: #fff; } section, .page-head { break-inside: avoid; } }
"""


def render_html(result: Mapping[str, Any], *, title: str | None = None) -> str:
    """The run as one self-contained HTML page (returned as text).

    ``result`` is ``RunResult.to_dict()`` or the same dict read back from the
    JSON result file; missing keys and ``None`` / NaN figures show as a dash,
    and a run without data gets "no data" charts instead of an error.
    ``title`` (e.g. the pytest node id) heads the page; by default the run id.
    Every text is HTML-escaped; secrets in settings, warnings and errors are
    masked (see :func:`redact_settings` and :func:`redact_text`).
    """
    run_id = _text(result.get("run_id"))
    heading = redact_text(title) if title else (f"iotperf run {run_id}" if run_id else "iotperf run")
    verdict, _ = _verdict(result)
    body = "".join(
        [
            _header(result, heading),
            "<main>",
            _slo_section(result),
            _figures_section(result),
            _charts_section(result),
            _losses_section(result),
            _workers_section(result),
            _settings_section(result),
            _messages_section(result),
            "</main>",
        ]
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n"
        '<meta name="generator" content="pytest-iotperf">\n'
        f"<title>{_esc(verdict)} \u2013 {_esc(heading)} \u2013 iotperf</title>\n"
        f"<style>{_CSS}</style>\n</head>\n"
        f'<body>\n<div class="page">{body}'
        "<footer>pytest-iotperf report \u00b7 one self-contained file: no script, no network access</footer>"
        "</div>\n</body>\n</html>\n"
    )


def write_html(result: Mapping[str, Any], path: Path, title: str | None = None) -> None:
    """Render ``result`` and write it to ``path`` atomically (a reader never sees half a page).

    The page goes to a temporary file in the same directory, then replaces
    ``path`` with ``os.replace``; missing parent directories are created.
    """
    text = render_html(result, title=title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
