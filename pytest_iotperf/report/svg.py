"""SVG primitives of the HTML report's charts: geometry, scales and ticks, axes, markers, legends, paths.

Every chart is drawn in the same ``W`` x ``H`` user-unit box (the SVG scales
to its container) with the plot area ``X0..X1`` x ``Y0..Y1``; the margin
above the plot holds marker labels and legends.  Pure: stdlib only.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pytest_iotperf.numbers import format_ms

# -- chart geometry (SVG user units; the SVG scales to its container) ---------------------------

W = 600.0
H = 300.0
X0 = 66.0  # plot left
X1 = 582.0  # plot right
Y0 = 46.0  # plot top (the margin above holds marker labels and legends)
Y1 = 250.0  # plot bottom
STRIP = 30.0  # width reserved left of a log axis for the values <= 0 ms

# (label, colour, dash pattern): a marker is told apart by its label and dash, not by colour alone.
MARKER_STYLE = {
    "p50": ("#2e7d32", "2 3"),
    "p95": ("#b35c00", "7 3"),
    "p99": ("#b71c1c", "12 3 2 3"),
}


# -- text in SVG ----------------------------------------------------------------------------------


def tick_text(value: float) -> str:
    """An axis tick label: ``0.3``, ``1,500``, ``20k``, ``1.5M``."""
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


def esc(value: Any) -> str:
    """``value`` as text safe in SVG/HTML content and attribute values."""
    return html.escape(str(value), quote=True)


def px(value: float) -> str:
    """A coordinate for SVG."""
    return f"{value:.1f}"


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


def linear_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    step = _nice_step(hi - lo, target)
    first = math.ceil(lo / step - 1e-9)
    ticks = []
    n = first
    while n * step <= hi + step * 1e-9:
        ticks.append(round(n * step, 12))
        n += 1
    return ticks


def count_domain(top: float) -> float:
    """Upper end of a count / ms axis starting at 0: the next nice tick at or above ``top``."""
    if top <= 0:
        return 1.0
    step = _nice_step(top)
    return math.ceil(top / step - 1e-9) * step


def log_ticks(lo: float, hi: float) -> list[float]:
    """Tick values for a log axis over ``[lo, hi]`` (both > 0): 1-2-5 or 1..9 per decade, else linear."""
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    for mantissas in ((1.0,), (1.0, 2.0, 5.0), tuple(float(m) for m in range(1, 10))):
        ticks = [m * 10.0**k for k in range(first, last + 1) for m in mantissas if lo <= m * 10.0**k <= hi * (1 + 1e-9)]
        if 3 <= len(ticks) <= 12 or (len(ticks) > 12 and mantissas == (1.0,)):
            return ticks if len(ticks) <= 12 else ticks[:: math.ceil(len(ticks) / 10)]
    return [tick for tick in linear_ticks(lo, hi, 4) if tick > 0]


def linear_axis_ticks(scale: Linear, values: Sequence[float]) -> list[tuple[float, str]]:
    """(pixel, label) per tick; one style per axis: all in k (or M) once the largest tick needs it."""
    top = max((abs(v) for v in values), default=0.0)
    for limit, divisor, suffix in ((1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if top >= limit:
            return [(scale(v), "0" if v == 0 else f"{float(f'{v / divisor:.10g}'):g}{suffix}") for v in values]
    return [(scale(v), tick_text(v)) for v in values]


@dataclass(frozen=True)
class Linear:
    lo: float
    hi: float
    a: float  # pixel of lo
    b: float  # pixel of hi

    def __call__(self, value: float) -> float:
        if self.hi == self.lo:
            return (self.a + self.b) / 2
        return self.a + (value - self.lo) / (self.hi - self.lo) * (self.b - self.a)


@dataclass(frozen=True)
class LogAxis:
    """A log-scaled x axis in ms, with an optional strip on the left for the values <= 0 ms."""

    lo: float
    hi: float
    strip: bool

    @property
    def left(self) -> float:
        return X0 + STRIP + 6 if self.strip else X0

    def __call__(self, ms: float) -> float:
        span = math.log10(self.hi) - math.log10(self.lo)
        return self.left + (math.log10(ms) - math.log10(self.lo)) / span * (X1 - self.left)

    @property
    def strip_center(self) -> float:
        return X0 + STRIP / 2

# -- SVG pieces ------------------------------------------------------------------------------------


def svg_open(name: str, title: str, desc: str) -> str:
    """The ``<svg>`` start tag of chart ``name`` with its accessible title and description."""
    return (
        f'<svg class="chart-svg" data-chart="{esc(name)}" viewBox="0 0 {W:g} {H:g}" '
        f'xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby="{name}-title {name}-desc" '
        f'preserveAspectRatio="xMidYMid meet">'
        f'<title id="{name}-title">{esc(title)}</title><desc id="{name}-desc">{esc(desc)}</desc>'
    )


def frame() -> str:
    """The plot area's background."""
    return (
        f'<rect class="plot-bg" x="{px(X0)}" y="{px(Y0)}" width="{px(X1 - X0)}" height="{px(Y1 - Y0)}" '
        'fill="#fbfbfd" stroke="none"/>'
    )


def axes(
    x_ticks: Sequence[tuple[float, str]],
    y_ticks: Sequence[tuple[float, str]],
    x_label: str,
    y_label: str,
) -> list[str]:
    """Grid lines, axis lines, tick marks, tick labels and axis titles."""
    parts = ['<g class="axes" font-size="11" fill="#333">']
    for y, label in y_ticks:
        parts.append(f'<line class="grid" x1="{px(X0)}" x2="{px(X1)}" y1="{px(y)}" y2="{px(y)}" stroke="#e3e3ea"/>')
        parts.append(
            f'<text class="tick y-tick" x="{px(X0 - 6)}" y="{px(y)}" text-anchor="end" dominant-baseline="middle">'
            f"{esc(label)}</text>"
        )
    for x, label in x_ticks:
        parts.append(f'<line class="grid" x1="{px(x)}" x2="{px(x)}" y1="{px(Y0)}" y2="{px(Y1)}" stroke="#eeeef3"/>')
        parts.append(f'<line x1="{px(x)}" x2="{px(x)}" y1="{px(Y1)}" y2="{px(Y1 + 4)}" stroke="#555"/>')
        parts.append(
            f'<text class="tick x-tick" x="{px(x)}" y="{px(Y1 + 16)}" text-anchor="middle">{esc(label)}</text>'
        )
    parts.append(f'<path class="axis-line" d="M{px(X0)},{px(Y0)} V{px(Y1)} H{px(X1)}" fill="none" stroke="#555"/>')
    parts.append(
        f'<text class="axis-title" x="{px((X0 + X1) / 2)}" y="{px(Y1 + 36)}" text-anchor="middle" '
        f'font-size="12">{esc(x_label)}</text>'
    )
    mid = (Y0 + Y1) / 2
    parts.append(
        f'<text class="axis-title" x="14" y="{px(mid)}" text-anchor="middle" font-size="12" '
        f'transform="rotate(-90 14 {px(mid)})">{esc(y_label)}</text>'
    )
    parts.append("</g>")
    return parts


def no_data_svg(name: str, title: str, reason: str) -> str:
    """A whole chart that says "no data" and why."""
    desc = f"No data: {reason}."
    return (
        svg_open(name, title, desc)
        + frame()
        + f'<path class="axis-line" d="M{px(X0)},{px(Y0)} V{px(Y1)} H{px(X1)}" fill="none" stroke="#999"/>'
        + f'<text class="no-data" x="{px((X0 + X1) / 2)}" y="{px((Y0 + Y1) / 2)}" text-anchor="middle" '
        f'font-size="18" fill="#666">no data</text>'
        + f'<text x="{px((X0 + X1) / 2)}" y="{px((Y0 + Y1) / 2 + 22)}" text-anchor="middle" '
        f'font-size="11" fill="#777">{esc(reason)}</text>' + "</svg>"
    )


def marker_parts(axis: LogAxis, markers: Sequence[tuple[str, float | None]]) -> list[str]:
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
        colour, dash = MARKER_STYLE.get(label, ("#444", "4 3"))
        text = f"{label} {format_ms(value)}"
        half = 3.3 * len(text)
        label_x = min(max(x, X0 + half), X1 - half)
        y = 13 + 12 * row
        parts.append(
            f'<line class="marker" data-marker="{esc(label)}" x1="{px(x)}" x2="{px(x)}" y1="{px(y + 3)}" '
            f'y2="{px(Y1)}" stroke="{colour}" stroke-width="1.5" stroke-dasharray="{dash}"/>'
        )
        parts.append(
            f'<text class="marker-label" x="{px(label_x)}" y="{px(y)}" text-anchor="middle" fill="{colour}" '
            'stroke="#fff" stroke-width="3" stroke-linejoin="round" paint-order="stroke">'
            f"{esc(text)}</text>"
        )
    parts.append("</g>")
    return parts


def legend(items: Sequence[tuple[str, str, str]]) -> list[str]:
    """A legend in the top margin, right-aligned: (label, colour, dash) per series."""
    parts = ['<g class="legend" font-size="11" fill="#333">']
    x = X1
    for label, colour, dash in reversed(items):
        width = 6.2 * len(label)
        x -= width
        parts.append(f'<text x="{px(x)}" y="18">{esc(label)}</text>')
        x -= 30
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<line x1="{px(x)}" x2="{px(x + 24)}" y1="14" y2="14" stroke="{colour}" stroke-width="2.5"{dash_attr}/>'
        )
        x -= 16
    parts.append("</g>")
    return parts


def svg_path(points: Sequence[tuple[float, float]]) -> str:
    """An SVG path through ``points``, dropping consecutive points that round to the same pixel tenth."""
    out: list[str] = []
    last = ""
    for x, y in points:
        here = f"{px(x)},{px(y)}"
        if here != last:
            out.append(("M" if not out else "L") + here)
            last = here
    return " ".join(out)

