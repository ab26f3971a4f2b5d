"""The charts section of the HTML report: six inline SVG charts, each with a data table.

1. ``delay-histogram``: end-to-end delays, log-scaled x axis in ms;
2. ``delay-cdf``: the cumulative distribution of the same buckets with the
   p50 / p95 / p99 markers;
3. ``sent-received``: messages sent and received per timeline slot;
4. ``connected``: devices connected at the end of each slot, on the same time axis
   (its own chart next to sent/received rather than a second y axis: an outage
   shows as the same dip in both, and neither scale is squeezed);
5. ``p95-delay``: p95 delay per timeline slot (with the SLO threshold when one is set);
   the three timeline charts shade the windows a windowed SLO failed (``failed-window`` bands);
6. ``lateness-histogram``: how late the generator published against its schedule.

Every chart carries a ``<title>``, a ``<desc>`` summary and a data table, so the
figures do not depend on seeing the picture.  Pure: stdlib only (plus the
histogram class of this package).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_iotperf.metrics import DelayHistogram
from pytest_iotperf.numbers import finite, format_ms
from pytest_iotperf.report.result_view import (
    TimelinePoint,
    read_histogram,
    read_slos,
    read_timeline,
    slo_text,
)
from pytest_iotperf.report.svg import (
    MARKER_STYLE,
    STRIP,
    X0,
    X1,
    Y0,
    Y1,
    Linear,
    LogAxis,
    axes,
    count_domain,
    esc,
    frame,
    legend,
    linear_axis_ticks,
    linear_ticks,
    log_ticks,
    marker_parts,
    no_data_svg,
    px,
    svg_open,
    svg_path,
    tick_text,
)

#: The ``data-chart`` names of the page's charts, in page order.
CHART_NAMES: tuple[str, ...] = (
    "delay-histogram",
    "delay-cdf",
    "sent-received",
    "connected",
    "p95-delay",
    "lateness-histogram",
)

_BAR = "#4c78a8"
_LATENESS_BAR = "#3f9a92"
_SENT = "#4c78a8"
_RECEIVED = "#e8710a"
_CONNECTED = "#7b3fa0"
_FLEET = "#888888"
_LINE = "#4c78a8"
_THRESHOLD = "#c0392b"
_FAILED_WINDOW = "#c0392b"


@dataclass(frozen=True)
class _FailedWindow:
    start_s: float
    end_s: float
    slo: str


def _failed_windows(slos: Sequence[Mapping[str, Any]]) -> list[_FailedWindow]:
    """The windows windowed SLOs failed (due time from T0), from the verdicts' ``windows``."""
    out = []
    for slo in slos:
        windows = slo.get("windows")
        if not isinstance(windows, Sequence):
            continue
        for window in windows:
            if isinstance(window, Mapping) and window.get("passed") is False:
                start, end = finite(window.get("start_s")), finite(window.get("end_s"))
                if start is not None and end is not None:
                    out.append(_FailedWindow(start, end, slo_text(slo)))
    return out


def _window_bands(x: Linear, windows: Sequence[_FailedWindow]) -> list[str]:
    """Shaded bands behind a timeline chart's lines, one per failed window (clipped to the plot)."""
    bands = []
    for window in windows:
        left, right = max(X0, x(window.start_s)), min(X1, x(window.end_s))
        if right <= left:
            continue
        bands.append(
            f'<rect class="failed-window" data-start-s="{window.start_s:g}" data-end-s="{window.end_s:g}" '
            f'x="{px(left)}" y="{px(Y0)}" width="{px(right - left)}" height="{px(Y1 - Y0)}" '
            f'fill="{_FAILED_WINDOW}" fill-opacity="0.12" stroke="none">'
            f"<title>{esc(_clip(window.slo))} failed in [{window.start_s:g}s,{window.end_s:g}s)</title></rect>"
        )
    return bands


def _bands_summary(windows: Sequence[_FailedWindow]) -> str:
    if not windows:
        return ""
    shown = ", ".join(f"[{w.start_s:g}s,{w.end_s:g}s)" for w in windows[:10])
    return f" Shaded: {len(windows)} window(s) a windowed SLO failed ({shown}{', ...' if len(windows) > 10 else ''})."


def charts_section(result: Mapping[str, Any]) -> str:
    delay, delay_problem = read_histogram(result, "delay_histogram")
    lateness, lateness_problem = read_histogram(result, "lateness_histogram")
    points = read_timeline(result)
    slos = read_slos(result)
    failed = _failed_windows(slos)

    def marker(label: str, key: str, hist: DelayHistogram | None, q: float) -> tuple[str, float | None]:
        value = finite(result.get(key))
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
        _sent_received_figure(points, failed),
        _connected_figure(points, finite(result.get("devices")), failed),
        _p95_figure(points, slos, failed),
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



def data_table(
    caption: str, headers: Sequence[str], rows: Iterable[Sequence[str]], *, text_columns: Container[int] = (0,)
) -> str:
    """A data table; the cells outside ``text_columns`` are figures (right-aligned)."""
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in headers)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{esc(cell)}</td>' if i not in text_columns else f"<td>{esc(cell)}</td>"
            for i, cell in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    if not body:
        body.append(f'<tr><td colspan="{len(headers)}">no data</td></tr>')
    return (
        f'<table class="data"><caption>{esc(caption)}</caption><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _figure(name: str, heading: str, svg: str, table: str, note: str = "") -> str:
    note_html = f'<p class="chart-note">{esc(note)}</p>' if note else ""
    return (
        f'<figure class="chart" id="chart-{name}"><figcaption>{esc(heading)}</figcaption>{svg}{note_html}'
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


def _log_axis(binned: _Binned, extra: Iterable[float | None] = ()) -> LogAxis:
    """A log axis covering every bin (and the marker values), at least a factor 2 wide."""
    values = [binned.edges[0], binned.edges[-1], *(v for v in extra if v is not None and v > 0)]
    lo, hi = min(values), max(values)
    span = math.log10(hi / lo)
    pad = max(span * 0.04, (math.log10(2) - span) / 2, 0.0)
    return LogAxis(lo=lo / 10**pad, hi=hi * 10**pad, strip=binned.non_positive > 0)


def _log_x_ticks(axis: LogAxis) -> list[tuple[float, str]]:
    ticks = [(axis(value), tick_text(value)) for value in log_ticks(axis.lo, axis.hi)]
    if axis.strip:
        ticks.insert(0, (axis.strip_center, "\u22640"))
    return ticks


def _strip_separator(axis: LogAxis) -> str:
    x = axis.left - 3
    return (
        f'<line class="strip-sep" x1="{px(x)}" x2="{px(x)}" y1="{px(Y0)}" y2="{px(Y1)}" stroke="#999" '
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
        return _figure(name, heading, no_data_svg(name, title, reason), data_table(title, ["range (ms)", "count"], []))
    binned = _bin(hist)
    axis = _log_axis(binned, (value for _, value in markers)) if binned.counts else LogAxis(0.1, 10.0, True)
    top = count_domain(max([*binned.counts, binned.non_positive]))
    y = Linear(0.0, top, Y1, Y0)
    y_ticks = linear_axis_ticks(y, linear_ticks(0.0, top))
    parts = [frame(), *axes(_log_x_ticks(axis), y_ticks, f"{quantity} (ms, log scale)", "messages per bin")]
    parts.append(f'<g class="bars" fill="{colour}">')
    rows: list[list[str]] = []
    cumulative = 0
    if binned.non_positive:
        height = max(Y1 - y(binned.non_positive), 1.0)
        parts.append(
            f'<rect class="bar" x="{px(X0 + 4)}" y="{px(Y1 - height)}" width="{px(STRIP - 8)}" '
            f'height="{px(height)}"><title>{binned.non_positive:,} values \u2264 0 ms</title></rect>'
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
        height = max(Y1 - y(count), 1.0)  # a lone outlier still shows
        span_text = f"{tick_text(_round_sig(lo_ms))}\u2013{tick_text(_round_sig(hi_ms))} ms"
        parts.append(
            f'<rect class="bar" x="{px(x_left + gap / 2)}" y="{px(Y1 - height)}" '
            f'width="{px(max(x_right - x_left - gap, 0.8))}" height="{px(height)}">'
            f"<title>{esc(span_text)}: {count:,}</title></rect>"
        )
        cumulative += count
        rows.append([span_text, f"{count:,}", f"{100 * cumulative / binned.total:.2f}%"])
        if count > tallest[0]:
            tallest = (count, lo_ms, hi_ms)
    parts.append("</g>")
    if axis.strip:
        parts.append(_strip_separator(axis))
    parts.extend(marker_parts(axis, markers))
    summary = (
        f"Histogram of {binned.total:,} {quantity} values from {format_ms(binned.min_ms)} to {format_ms(binned.max_ms)}"
        f" on a log-scaled x axis."
    )
    if tallest[0]:
        summary += (
            f" The tallest bin is {format_ms(_round_sig(tallest[1]))} to {format_ms(_round_sig(tallest[2]))} "
            f"with {tallest[0]:,} values."
        )
    marker_text = ", ".join(f"{label} {format_ms(value)}" for label, value in markers if value is not None)
    if marker_text:
        summary += f" Percentiles: {marker_text}."
    note = ""
    if binned.non_positive:
        note = f"{binned.non_positive:,} value(s) \u2264 0 ms (clock skew) are drawn left of the dashed line."
        summary += " " + note
    svg = svg_open(name, title, summary) + "".join(parts) + "</svg>"
    table = data_table(title, ["range (ms)", "count", "cumulative"], rows)
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
            no_data_svg(name, title, reason),
            data_table(title, ["delay \u2264 (ms)", "share of messages"], []),
        )
    binned = _bin(hist)
    positive, non_positive = _split(hist)
    if positive:
        lo = min(positive[0][0], binned.edges[0])
        hi = max(positive[-1][1], binned.edges[-1])
        axis = _log_axis(_Binned([lo, hi], [], non_positive, hist.count, 0, 0), (value for _, value in markers))
    else:
        axis = LogAxis(0.1, 10.0, True)
    y = Linear(0.0, 1.0, Y1, Y0)
    y_ticks = [(y(q), f"{q:.0%}") for q in (0.0, 0.25, 0.5, 0.75, 1.0)]
    parts = [frame(), *axes(_log_x_ticks(axis), y_ticks, "delay (ms, log scale)", "messages delivered within")]
    total = hist.count
    cumulative = non_positive
    points: list[tuple[float, float]] = []
    if axis.strip:
        points += [(X0, y(0.0)), (X0 + 2, y(cumulative / total)), (axis.left, y(cumulative / total))]
    else:
        points.append((axis.left, y(0.0)))
    rows: list[list[str]] = []
    if non_positive:
        rows.append(["\u2264 0", f"{100 * non_positive / total:.2f}%"])
    for lower, upper, count in positive:
        points.append((axis(lower), y(cumulative / total)))
        cumulative += count
        points.append((axis(upper), y(cumulative / total)))
    points.append((X1, y(1.0)))
    # The table at the display bins' edges (a few dozen rows, not thousands of buckets).
    running = non_positive
    for i, count in enumerate(binned.counts):
        running += count
        if count:
            rows.append([tick_text(_round_sig(binned.edges[i + 1])), f"{100 * running / total:.2f}%"])
    path = svg_path(points)
    parts.append(f'<path class="series cdf" d="{path}" fill="none" stroke="{_LINE}" stroke-width="2"/>')
    if axis.strip:
        parts.append(_strip_separator(axis))
    parts.extend(marker_parts(axis, markers))
    for label, value in markers:
        if value is None or value <= 0 or not axis.lo <= value <= axis.hi:
            continue
        q = float(label[1:]) / 100 if label[1:].replace(".", "", 1).isdigit() else None
        if q is not None:
            colour, _ = MARKER_STYLE.get(label, ("#444", ""))
            parts.append(f'<circle cx="{px(axis(value))}" cy="{px(y(q))}" r="3.5" fill="{colour}"/>')
    marker_text = ", ".join(f"{label} {format_ms(value)}" for label, value in markers if value is not None)
    summary = (
        f"Share of the {total:,} received messages delivered within a given delay, from "
        f"{format_ms((hist.min_us or 0) / 1000)} to {format_ms((hist.max_us or 0) / 1000)}."
    )
    if marker_text:
        summary += f" Percentiles: {marker_text}."
    svg = svg_open(name, title, summary) + "".join(parts) + "</svg>"
    return _figure(name, heading, svg, data_table(title, ["delay \u2264 (ms)", "share of messages"], rows))



# -- the timeline charts ---------------------------------------------------------------------------


def _slot_s(points: Sequence[TimelinePoint]) -> float:
    steps = [b.t_s - a.t_s for a, b in itertools.pairwise(points) if b.t_s > a.t_s]
    return min(steps) if steps else 1.0


def _time_axis(points: Sequence[TimelinePoint]) -> tuple[Linear, list[tuple[float, str]]]:
    lo, hi = points[0].t_s, points[-1].t_s
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    x = Linear(lo, hi, X0 + 4, X1 - 4)
    return x, linear_axis_ticks(x, linear_ticks(lo, hi, 8))


def _slot_label(points: Sequence[TimelinePoint]) -> str:
    slot = _slot_s(points)
    return "per second" if slot == 1 else f"per {slot:g} s slot"


def _sent_received_figure(points: Sequence[TimelinePoint], failed: Sequence[_FailedWindow] = ()) -> str:
    name = "sent-received"
    heading = "Messages sent and received over time"
    title = "Messages sent and received per timeline slot"
    headers = ["t (s)", "sent", "received"]
    if not points:
        reason = "the run has no timeline"
        return _figure(name, heading, no_data_svg(name, title, reason), data_table(title, headers, []))
    x, x_ticks = _time_axis(points)
    top = count_domain(max(max(p.sent, p.received) for p in points))
    y = Linear(0.0, top, Y1, Y0)
    y_ticks = linear_axis_ticks(y, linear_ticks(0.0, top))
    per = _slot_label(points)
    parts = [frame(), *_window_bands(x, failed), *axes(x_ticks, y_ticks, "time since T0 (s)", f"messages {per}")]
    sent_path = svg_path([(x(p.t_s), y(p.sent)) for p in points])
    received_path = svg_path([(x(p.t_s), y(p.received)) for p in points])
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
            parts.append(f'<circle cx="{px(x(p.t_s))}" cy="{px(y(p.sent))}" r="2.5" fill="{_SENT}"/>')
            parts.append(
                f'<rect x="{px(x(p.t_s) - 2.5)}" y="{px(y(p.received) - 2.5)}" width="5" height="5" '
                f'fill="{_RECEIVED}"/>'
            )
    parts.extend(legend([("sent (solid)", _SENT, ""), ("received (dashed)", _RECEIVED, "6 3")]))
    sent_total = sum(p.sent for p in points)
    received_total = sum(p.received for p in points)
    peak_sent = max(points, key=lambda p: p.sent)
    peak_received = max(points, key=lambda p: p.received)
    summary = (
        f"{len(points)} slots from t={points[0].t_s:g} s to t={points[-1].t_s:g} s: {sent_total:,} sent and "
        f"{received_total:,} received in total; peak {peak_sent.sent:,} sent {per} at t={peak_sent.t_s:g} s, "
        f"peak {peak_received.received:,} received at t={peak_received.t_s:g} s."
    ) + _bands_summary(failed)
    svg = svg_open(name, title, summary) + "".join(parts) + "</svg>"
    rows = [[f"{p.t_s:g}", f"{p.sent:,}", f"{p.received:,}"] for p in points]
    return _figure(name, heading, svg, data_table(title, headers, rows))


def _connected_figure(
    points: Sequence[TimelinePoint], devices: float | None, failed: Sequence[_FailedWindow] = ()
) -> str:
    name = "connected"
    heading = "Devices connected over time"
    title = "Devices connected at the end of each timeline slot"
    headers = ["t (s)", "connected"]
    known = [p for p in points if p.connected is not None]
    if not known:
        reason = "the fleet reported no connected devices per slot" if points else "the run has no timeline"
        return _figure(name, heading, no_data_svg(name, title, reason), data_table(title, headers, []))
    x, x_ticks = _time_axis(points)  # the sent/received chart's axis: an outage lines up in both
    fleet = int(devices) if devices is not None and devices > 0 else None
    highest = max(p.connected or 0 for p in known)
    top = count_domain(max(highest, fleet or 0))
    y = Linear(0.0, top, Y1, Y0)
    y_ticks = linear_axis_ticks(y, linear_ticks(0.0, top))
    parts = [frame(), *_window_bands(x, failed), *axes(x_ticks, y_ticks, "time since T0 (s)", "devices connected")]
    legend_items = [("connected", _CONNECTED, "")]
    if fleet is not None:
        fy = y(fleet)
        parts.append(
            f'<line class="fleet-size" x1="{px(X0)}" x2="{px(X1)}" y1="{px(fy)}" y2="{px(fy)}" '
            f'stroke="{_FLEET}" stroke-width="1.2" stroke-dasharray="4 4"/>'
        )
        legend_items.append((f"fleet ({fleet:,})", _FLEET, "4 4"))
    parts.extend(
        _gapped_line(
            [(x(p.t_s), y(p.connected)) if p.connected is not None else None for p in points],
            'class="series connected" data-series="connected"',
            _CONNECTED,
            dots=len(known) <= 40,
        )
    )
    parts.extend(legend(legend_items))
    lowest = min(known, key=lambda p: p.connected or 0)
    summary = (
        f"Devices connected at the end of each of {len(known)} slots"
        + (f" (a fleet of {fleet:,})" if fleet is not None else "")
        + f": at most {highest:,}, at least {lowest.connected:,} at t={lowest.t_s:g} s."
    )
    short = [p for p in known if (p.connected or 0) < (fleet or highest)]
    if short:
        summary += f" {len(short)} slot(s) ended with devices offline, the first at t={short[0].t_s:g} s."
    summary += _bands_summary(failed)
    svg = svg_open(name, title, summary) + "".join(parts) + "</svg>"
    rows = [[f"{p.t_s:g}", "\u2013" if p.connected is None else f"{p.connected:,}"] for p in points]
    return _figure(name, heading, svg, data_table(title, headers, rows))


def _gapped_line(
    positions: Sequence[tuple[float, float] | None], attributes: str, color: str, *, dots: bool
) -> list[str]:
    """A line through ``positions`` that breaks where one is None (a slot without data).

    Each point gets a dot when ``dots`` (few points), and a lone point between two gaps always
    does: a path of one point draws nothing.
    """
    segments: list[list[tuple[float, float]]] = [[]]
    for position in positions:
        if position is None:
            if segments[-1]:
                segments.append([])
            continue
        segments[-1].append(position)
    path = " ".join(svg_path(segment) for segment in segments if segment)
    out = [
        f'<path {attributes} d="{path}" fill="none" stroke="{color}" stroke-width="2.2" stroke-linejoin="round"/>'
    ]
    for segment in segments:
        if len(segment) == 1 or dots:
            out.extend(f'<circle cx="{px(cx)}" cy="{px(cy)}" r="2.5" fill="{color}"/>' for cx, cy in segment)
    return out


def _p95_threshold(slos: Sequence[Mapping[str, Any]]) -> tuple[float, str] | None:
    for slo in slos:
        if slo.get("metric") == "p95_delay_ms":
            threshold = finite(slo.get("threshold"))
            if threshold is not None:
                return threshold, slo_text(slo)
    return None


def _p95_figure(
    points: Sequence[TimelinePoint], slos: Sequence[Mapping[str, Any]], failed: Sequence[_FailedWindow] = ()
) -> str:
    name = "p95-delay"
    heading = "p95 delay over time"
    title = "p95 end-to-end delay per timeline slot (ms)"
    headers = ["t (s)", "p95 delay (ms)"]
    known = [p for p in points if p.p95_ms is not None]
    if not known:
        reason = "no message was received" if points else "the run has no timeline"
        return _figure(name, heading, no_data_svg(name, title, reason), data_table(title, headers, []))
    x, x_ticks = _time_axis(points)
    peak = max(p.p95_ms for p in known if p.p95_ms is not None)
    threshold = _p95_threshold(slos)
    shown_threshold = threshold if threshold is not None and 0 <= threshold[0] <= 1.5 * max(peak, 1e-9) else None
    top = count_domain(max(peak, shown_threshold[0] if shown_threshold else 0.0))
    y = Linear(0.0, top, Y1, Y0)
    y_ticks = linear_axis_ticks(y, linear_ticks(0.0, top))
    parts = [frame(), *_window_bands(x, failed), *axes(x_ticks, y_ticks, "time since T0 (s)", "p95 delay (ms)")]
    parts.extend(
        _gapped_line(
            [(x(p.t_s), y(p.p95_ms)) if p.p95_ms is not None else None for p in points],
            'class="series p95"',
            _LINE,
            dots=len(known) <= 40,
        )
    )
    legend_items = [("p95 per slot", _LINE, "")]
    if shown_threshold is not None:
        ty = y(shown_threshold[0])
        parts.append(
            f'<line class="threshold" x1="{px(X0)}" x2="{px(X1)}" y1="{px(ty)}" y2="{px(ty)}" '
            f'stroke="{_THRESHOLD}" stroke-width="1.5" stroke-dasharray="8 4"/>'
        )
        legend_items.append((f"SLO {_clip(shown_threshold[1])}", _THRESHOLD, "8 4"))
    elif threshold is not None:
        parts.append(
            f'<text x="{px(X0 + 6)}" y="18" font-size="11" fill="{_THRESHOLD}">'
            f"SLO {esc(_clip(threshold[1]))}: threshold above the chart</text>"
        )
    parts.extend(legend(legend_items))
    worst = max(known, key=lambda p: p.p95_ms or 0.0)
    summary = (
        f"p95 delay of the messages received in each of {len(points)} slots; highest {format_ms(worst.p95_ms)} at "
        f"t={worst.t_s:g} s, lowest {format_ms(min(p.p95_ms for p in known if p.p95_ms is not None))}."
    )
    if threshold is not None:
        summary += f" SLO: {threshold[1]}."
    summary += _bands_summary(failed)
    svg = svg_open(name, title, summary) + "".join(parts) + "</svg>"
    rows = [[f"{p.t_s:g}", format_ms(p.p95_ms).removesuffix(" ms")] for p in points]
    return _figure(name, heading, svg, data_table(title, headers, rows))



def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"

