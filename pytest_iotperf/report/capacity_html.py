"""The HTML capacity page of a search: what it found, why it stopped, and its steps against offered load.

Two inline SVG charts on the report's primitives (:mod:`.svg`), each with a
data table: ``capacity-delay`` (delay p50 / p95 / p99 of every step against
the load offered, log-scaled delay axis, the delay SLO thresholds) and
``capacity-throughput`` (what each step delivered while its load was on
against what it offered, with the "delivered = offered" line: past the knee
it levels off).  Both mark the knee (the largest step that met
every SLO) with a vertical line; a step that broke an SLO is drawn as a
cross, one whose generator saturated as a hollow circle.

The input is ``CapacityResult.to_dict()`` (or the same dict read back from
``<test>.capacity.json``).  Pure except :func:`write_capacity_html`; the page
is one offline file like the run pages (no script, no external resource).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_iotperf.files import write_text_atomically
from pytest_iotperf.numbers import NO_VALUE, finite, format_fraction, format_ms
from pytest_iotperf.report.html_charts import data_table
from pytest_iotperf.report.html_style import html_page
from pytest_iotperf.report.svg import (
    MARKER_STYLE,
    X0,
    X1,
    Y0,
    Y1,
    Linear,
    axes,
    count_domain,
    esc,
    frame,
    legend,
    linear_axis_ticks,
    linear_ticks,
    log_ticks,
    no_data_svg,
    px,
    svg_open,
    svg_path,
    tick_text,
)
from pytest_iotperf.secrets import redact_text

#: The ``data-chart`` names of the capacity page's charts.
CAPACITY_CHART_NAMES = ("capacity-delay", "capacity-throughput")

_KNEE = "#1b7f3b"
_FAILED = "#b3261e"
_THROUGHPUT = "#4c78a8"
_OFFERED = "#888888"
_THRESHOLD = "#c0392b"
_DELAYS = (("p50", "p50_delay_ms"), ("p95", "p95_delay_ms"), ("p99", "p99_delay_ms"))


def render_capacity_html(capacity: Mapping[str, Any], *, title: str | None = None) -> str:
    """The search as one self-contained HTML page (returned as text)."""
    heading = redact_text(title) if title else "iotperf capacity search"
    steps = sorted(_steps(capacity), key=lambda step: _number(step.get("devices")) or 0.0)
    knee = _knee(capacity, steps)
    body = "".join(
        [
            _head(capacity, heading),
            "<main>",
            '<section id="capacity-charts"><h2>Steps against offered load</h2><div class="charts">',
            _delay_figure(steps, knee, _delay_thresholds(capacity)),
            _throughput_figure(steps, knee),
            "</div></section>",
            _steps_section(capacity),
            "</main>",
        ]
    )
    return html_page(
        f"capacity {_count(capacity.get('max_devices'))} devices \u2013 {heading} \u2013 iotperf",
        body,
        "pytest-iotperf capacity report \u00b7 one self-contained file: no script, no network access",
    )


def write_capacity_html(capacity: Mapping[str, Any], path: Path, title: str | None = None) -> None:
    """Render ``capacity`` and write it to ``path`` atomically."""
    write_text_atomically(Path(path), render_capacity_html(capacity, title=title))


# -- sections --------------------------------------------------------------------------------------


def _head(capacity: Mapping[str, Any], heading: str) -> str:
    bound = str(capacity.get("bound", ""))
    plan = capacity.get("plan") if isinstance(capacity.get("plan"), Mapping) else {}
    assert isinstance(plan, Mapping)
    meta = [
        ("max devices", _count(capacity.get("max_devices"))),
        ("max throughput", _rate(capacity.get("max_throughput_per_s"))),
        ("bound", bound or NO_VALUE),
        ("limiting SLO", str(capacity.get("limiting_slo") or NO_VALUE)),
        ("search time", f"{_number(capacity.get('search_s')) or 0:.1f} s"),
        ("steps", str(len(_steps(capacity)))),
        ("start / limit", f"{_count(plan.get('start'))} / {_count(plan.get('limit'))}"),
        ("factor", f"{_number(plan.get('factor')) or 0:g}"),
        ("resolution", format_fraction(plan.get("resolution"))),
        ("hold", f"{_number(plan.get('hold_s')) or 0:g} s"),
        ("rate per device", _rate(plan.get("rate_per_device"))),
        ("SLOs", "; ".join(str(s) for s in plan.get("slos", [])) or NO_VALUE),
    ]
    css = "pass" if bound == "system" else "fail"
    word = {"system": "KNEE FOUND", "generator": "GENERATOR-BOUND", "limit": "LIMIT REACHED"}.get(bound, bound)
    meta_html = "".join(f"<div><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>" for k, v in meta)
    comparisons = "".join(f"<li>{esc(c)}</li>" for c in capacity.get("comparisons", []) or [])
    return (
        '<header class="page-head"><p class="kicker">pytest-iotperf capacity search</p>'
        f"<h1>{esc(heading)}</h1><dl class=\"meta\">{meta_html}</dl>"
        f'<div class="verdict {css}" id="verdict" role="status" data-bound="{esc(bound)}">'
        f'<span class="verdict-word">{esc(word)}</span><ul class="reasons"><li>{esc(capacity.get("hint", ""))}</li>'
        f"{comparisons}</ul></div></header>"
    )


def _steps_section(capacity: Mapping[str, Any]) -> str:
    headers = ["#", "devices", "run", "offered/s", "delivered/s", "received/s", "p50", "p95", "p99", "loss",
               "lateness p99", "verdict"]  # fmt: skip
    rows = [
        [
            str(n),
            _count(step.get("devices")),
            _where(step),
            _rate(step.get("offered_per_s")),
            _rate(step.get("delivered_per_s")),
            _rate(step.get("throughput_per_s")),
            format_ms(step.get("p50_delay_ms")),
            format_ms(step.get("p95_delay_ms")),
            format_ms(step.get("p99_delay_ms")),
            format_fraction(step.get("loss")),
            format_ms(step.get("lateness_p99_ms")),
            str(step.get("verdict", "")),
        ]
        for n, step in enumerate(_steps(capacity), start=1)
    ]
    table = data_table("Every step, in the order the search ran it", headers, rows, text_columns=(0, 2, 11))
    runs = str(capacity.get("runs") or "")
    note = (
        f'<p class="runs" data-runs="{esc(runs)}">The escalation ran as the stages of one run (the devices already '
        "connected stayed connected), each stage judged on its own figures; each bisection step was a run of its "
        f"own. {esc(runs)}</p>"
        if runs
        else ""
    )
    return f'<section id="steps"><h2>Steps</h2>{note}{table}</section>'


def _where(step: Mapping[str, Any]) -> str:
    """``stage 2 of run 1a2b (cut short: ...)`` / ``own run 3c4d``; older results without it: blank."""
    where = str(step.get("where") or "")
    cut = step.get("cut_short")
    return f"{where} (cut short: {cut})" if cut else where


# -- charts ----------------------------------------------------------------------------------------


def _delay_figure(steps: Sequence[Mapping[str, Any]], knee: Mapping[str, Any] | None, thresholds: list[float]) -> str:
    name = "capacity-delay"
    title = "Delay p50 / p95 / p99 against offered load"
    values = [v for step in steps for _, key in _DELAYS if (v := _number(step.get(key))) is not None and v > 0]
    if not values:
        return _figure(name, title, no_data_svg(name, title, "no step received a message"))
    x, x_ticks = _offered_axis(steps)
    lo = min(values + [t for t in thresholds if t > 0])
    hi = max(values + [t for t in thresholds if t > 0])
    lo, hi = 10 ** math.floor(math.log10(lo)), 10 ** math.ceil(math.log10(hi))
    if hi <= lo:
        hi = lo * 10

    def y(ms: float) -> float:
        return Y1 - (math.log10(ms) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * (Y1 - Y0)

    y_ticks = [(y(t), tick_text(t)) for t in log_ticks(lo, hi)]
    parts = [frame(), *axes(x_ticks, y_ticks, "offered load (msg/s)", "delay (ms, log scale)")]
    for threshold in thresholds:
        if lo <= threshold <= hi:
            ty = y(threshold)
            parts.append(
                f'<line class="threshold" x1="{px(X0)}" x2="{px(X1)}" y1="{px(ty)}" y2="{px(ty)}" '
                f'stroke="{_THRESHOLD}" stroke-width="1.2" stroke-dasharray="8 4"/>'
            )
    legend_items = []
    for label, key in _DELAYS:
        colour, dash = MARKER_STYLE[label]
        points = [(x(off), y(v)) for step in steps if (off := _offered(step)) is not None
                  and (v := _number(step.get(key))) is not None and v > 0]  # fmt: skip
        parts.append(
            f'<path class="series {label}" data-series="{label}" d="{svg_path(points)}" fill="none" '
            f'stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}"/>'
        )
        for step in steps:
            off, v = _offered(step), _number(step.get(key))
            if off is not None and v is not None and v > 0:
                parts.append(_point(x(off), y(v), step, colour))
        legend_items.append((label, colour, dash))
    parts.extend(_knee_marker(x, knee))
    parts.extend(legend(legend_items))
    desc = f"Delay percentiles of {len(steps)} steps against the load offered. " + _knee_text(knee)
    svg = svg_open(name, title, desc) + "".join(parts) + "</svg>"
    return _figure(name, title, svg)


def _throughput_figure(steps: Sequence[Mapping[str, Any]], knee: Mapping[str, Any] | None) -> str:
    name = "capacity-throughput"
    title = "Throughput delivered against offered load"
    offered = [o for step in steps if (o := _offered(step)) is not None]
    if not offered:
        return _figure(name, title, no_data_svg(name, title, "the search ran no step"))
    x, x_ticks = _offered_axis(steps)
    received = [r for step in steps if (r := _delivered(step)) is not None]
    top = count_domain(max(offered + received))
    y = Linear(0.0, top, Y1, Y0)
    y_ticks = linear_axis_ticks(y, linear_ticks(0.0, top))
    parts = [frame(), *axes(x_ticks, y_ticks, "offered load (msg/s)", "delivered (msg/s)")]
    ideal = svg_path([(x(x.lo), y(x.lo)), (x(x.hi), y(min(x.hi, top)))])
    parts.append(
        f'<path class="offered" d="{ideal}" fill="none" stroke="{_OFFERED}" stroke-width="1.2" '
        'stroke-dasharray="4 4"/>'
    )
    points = [(x(off), y(r)) for step in steps if (off := _offered(step)) is not None
              and (r := _delivered(step)) is not None]  # fmt: skip
    parts.append(
        f'<path class="series throughput" data-series="throughput" d="{svg_path(points)}" fill="none" '
        f'stroke="{_THROUGHPUT}" stroke-width="2.2"/>'
    )
    for step in steps:
        off, r = _offered(step), _delivered(step)
        if off is not None and r is not None:
            parts.append(_point(x(off), y(r), step, _THROUGHPUT))
    parts.extend(_knee_marker(x, knee))
    parts.extend(legend([("delivered", _THROUGHPUT, ""), ("= offered", _OFFERED, "4 4")]))
    desc = f"Messages per second {len(steps)} steps delivered while their load was on, against the load offered. "
    desc += _knee_text(knee)
    svg = svg_open(name, title, desc) + "".join(parts) + "</svg>"
    return _figure(name, title, svg)


def _figure(name: str, heading: str, svg: str) -> str:
    return f'<figure class="chart" id="chart-{name}"><figcaption>{esc(heading)}</figcaption>{svg}</figure>'


def _offered_axis(steps: Sequence[Mapping[str, Any]]) -> tuple[Linear, list[tuple[float, str]]]:
    offered = [o for step in steps if (o := _offered(step)) is not None]
    top = count_domain(max(offered, default=1.0))
    x = Linear(0.0, top, X0 + 4, X1 - 4)
    return x, linear_axis_ticks(x, linear_ticks(0.0, top))


def _point(cx: float, cy: float, step: Mapping[str, Any], colour: str) -> str:
    """A step's dot: filled when it passed, a cross when it broke an SLO, hollow when the generator saturated."""
    devices = _count(step.get("devices"))
    tip = f"<title>{esc(devices)} devices: {esc(step.get('verdict', ''))}</title>"
    if step.get("generator_saturated"):
        return (
            f'<circle class="step saturated" cx="{px(cx)}" cy="{px(cy)}" r="4" fill="#fff" stroke="{colour}" '
            f'stroke-width="1.5">{tip}</circle>'
        )
    if not step.get("passed"):
        left, right, top, bottom = px(cx - 4), px(cx + 4), px(cy - 4), px(cy + 4)
        d = f"M{left},{top} L{right},{bottom} M{left},{bottom} L{right},{top}"
        return f'<path class="step failed" d="{d}" stroke="{_FAILED}" stroke-width="2">{tip}</path>'
    return f'<circle class="step passed" cx="{px(cx)}" cy="{px(cy)}" r="3" fill="{colour}">{tip}</circle>'


def _knee_marker(x: Linear, knee: Mapping[str, Any] | None) -> list[str]:
    offered = _offered(knee) if knee is not None else None
    if knee is None or offered is None:
        return []
    kx = x(offered)
    label = f"knee: {_count(knee.get('devices'))} devices"
    half = 3.3 * len(label)
    label_x = min(max(kx, X0 + half), X1 - half)
    return [
        f'<line class="knee" data-marker="knee" x1="{px(kx)}" x2="{px(kx)}" y1="{px(Y0 - 8)}" y2="{px(Y1)}" '
        f'stroke="{_KNEE}" stroke-width="1.8" stroke-dasharray="6 3"/>',
        f'<text class="knee-label" x="{px(label_x)}" y="{px(Y0 - 12)}" text-anchor="middle" font-size="11" '
        f'fill="{_KNEE}">{esc(label)}</text>',
    ]


def _knee_text(knee: Mapping[str, Any] | None) -> str:
    if knee is None:
        return "No step met every SLO with a generator that kept up."
    return f"The knee: {_count(knee.get('devices'))} devices at {_rate(knee.get('offered_per_s'))} offered."


# -- reading the dict --------------------------------------------------------------------------------


def _steps(capacity: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    steps = capacity.get("steps")
    return [step for step in steps if isinstance(step, Mapping)] if isinstance(steps, list) else []


def _knee(capacity: Mapping[str, Any], steps: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The step at ``max_devices`` that met every SLO with a generator that kept up."""
    wanted = capacity.get("max_devices")
    found = [s for s in steps if s.get("passed") and not s.get("generator_saturated") and s.get("devices") == wanted]
    return found[-1] if found else None


def _delay_thresholds(capacity: Mapping[str, Any]) -> list[float]:
    """The thresholds of the search's p50/p95/p99 delay SLOs, in ms (drawn as lines on the delay chart)."""
    out = []
    for step in _steps(capacity)[:1]:
        for verdict in step.get("verdicts", []) or []:
            if isinstance(verdict, Mapping) and verdict.get("metric") in {key for _, key in _DELAYS}:
                text = str(verdict.get("slo", ""))
                threshold = _threshold_ms(text)
                if threshold is not None:
                    out.append(threshold)
    return out


def _threshold_ms(text: str) -> float | None:
    """The threshold of ``p95_delay_ms < 500`` / ``< 2s`` in ms (None for anything else, e.g. a window SLO)."""
    parts = text.split()
    if len(parts) != 3:
        return None
    number = parts[2]
    scale = 1000.0 if number.endswith("s") and not number.endswith("ms") else 1.0
    try:
        return float(number.removesuffix("ms").removesuffix("s")) * scale
    except ValueError:
        return None


def _offered(step: Mapping[str, Any]) -> float | None:
    return _number(step.get("offered_per_s"))


def _delivered(step: Mapping[str, Any]) -> float | None:
    """What the step sustained while its load was on; its whole-run throughput when the timeline had no whole slot."""
    delivered = _number(step.get("delivered_per_s"))
    return delivered if delivered is not None else _number(step.get("throughput_per_s"))


def _number(value: Any) -> float | None:
    return finite(value)


def _count(value: Any) -> str:
    number = finite(value)
    return NO_VALUE if number is None else f"{int(number):,}"


def _rate(value: Any) -> str:
    number = finite(value)
    return NO_VALUE if number is None else f"{number:,.1f}/s"
