"""The HTML report of a run: page structure (parsed with html.parser), number formatting, redaction,
escaping, empty data, atomic writing, and a real headless-browser render of the charts.

Result dicts are built the way a run builds them: real DelayHistogram objects and a timeline in a
RunResult, turned into ``to_dict()`` and sent through JSON like the result file.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import struct
import subprocess
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from pytest_iotperf.metrics import DelayHistogram
from pytest_iotperf.report.html import CHART_NAMES, render_html, write_html
from pytest_iotperf.result import RunResult, TimelinePoint
from pytest_iotperf.secrets import REDACTED, redact_settings, redact_text
from pytest_iotperf.slo import parse_slo

# -- a small DOM built with the stdlib parser --------------------------------------------------------

_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass(repr=False)
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)
    parent: Node | None = None

    def __repr__(self) -> str:
        return f"<{self.tag} {self.attrs}>"

    def iter(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.iter()

    def find_all(self, tag: str, **attrs: str) -> list[Node]:
        wanted = {key.rstrip("_").replace("_", "-"): value for key, value in attrs.items()}
        return [
            node
            for node in self.iter()
            if node.tag == tag and all(value in node.attrs.get(key, "").split() for key, value in wanted.items())
        ]

    def find(self, tag: str, **attrs: str) -> Node:
        found = self.find_all(tag, **attrs)
        assert found, f"no <{tag} {attrs}> in <{self.tag}>"
        return found[0]

    def text(self) -> str:
        return "".join(child if isinstance(child, str) else child.text() for child in self.children)

    def ancestor(self, tag: str) -> Node:
        node = self.parent
        while node is not None and node.tag != tag:
            node = node.parent
        assert node is not None, f"<{self.tag}> is not inside a <{tag}>"
        return node


class TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {key: value or "" for key, value in attrs}, parent=self.stack[-1])
        self.stack[-1].children.append(node)
        if tag not in _VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {key: value or "" for key, value in attrs}, parent=self.stack[-1]))

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            return
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>: the page is not well nested"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(page: str) -> Node:
    builder = TreeBuilder()
    builder.feed(page)
    builder.close()
    assert [node.tag for node in builder.stack] == ["#document"], "unclosed elements"
    return builder.root


# -- result dicts ----------------------------------------------------------------------------------


def delay_histogram() -> DelayHistogram:
    """2,000 delays spread over 2..32 ms plus a tail of 10 at 120..129 ms."""
    histogram = DelayHistogram()
    for i in range(1, 2001):
        histogram.record(2000 + (i * 7919) % 30000)
    for i in range(10):
        histogram.record(120_000 + 1000 * i)
    return histogram


def lateness_histogram() -> DelayHistogram:
    histogram = DelayHistogram()
    for i in range(3000):
        histogram.record(5 + (i * 37) % 900)
    return histogram


def make_run(**changes: Any) -> RunResult:
    delay = changes.pop("delay", None) or delay_histogram()
    lateness = changes.pop("lateness", None) or lateness_histogram()

    def ms(histogram: DelayHistogram, q: float) -> float:
        return histogram.percentile(q) / 1000 if histogram.count else math.nan

    timeline = [
        TimelinePoint(
            t_s=float(t), sent=202, received=201 if t else 0, p95_delay_ms=25.0 + t if t else None, connected=20
        )
        for t in range(10)
    ]
    figures: dict[str, Any] = {
        "run_id": "r-7f3a",
        "devices": 20,
        "rate_per_device": 10.0,
        "duration_s": 10.0,
        "sent": 2020,
        "received": delay.count,
        "lost": 2020 - delay.count,
        "duplicates": 3,
        "out_of_order": 1,
        "loss": (2020 - delay.count) / 2020,
        "p50_delay_ms": ms(delay, 50),
        "p90_delay_ms": ms(delay, 90),
        "p95_delay_ms": ms(delay, 95),
        "p99_delay_ms": ms(delay, 99),
        "p999_delay_ms": ms(delay, 99.9),
        "max_delay_ms": (delay.max_us or 0) / 1000 if delay.count else math.nan,
        "mean_delay_ms": delay.mean_us / 1000,
        "throughput_per_s": delay.count / 10.0,
        "lateness_p50_ms": ms(lateness, 50),
        "lateness_p99_ms": ms(lateness, 99),
        "connect_failures": 0,
        "publish_errors": 0,
        "workers": 1,
        "broker": "mosquitto 2.0.11 (embedded)",
        "timeline": timeline,
        "delay_histogram": delay,
        "lateness_histogram": lateness,
        "settings": {"devices": 20, "rate": 10.0, "duration": 10.0, "qos": 1, "report_dir": None},
        "sources": {"devices": "code", "rate": "code", "duration": "cli --iot-duration", "qos": "default"},
        "warnings": [],
        "errors": [],
        "worst_devices": [("dev-0003", 6), ("dev-0011", 4)],
        "missing": {"dev-0003": [(0, 1), (40, 45)], "dev-0011": [(7, 11)]},
        "worker_stats": [{"worker_index": 0, "pid": 4242, "devices": 20, "sent": 2020, "cpu_percent": 12.5}],
    }
    figures.update(changes)
    return RunResult(**figures)


def as_json_dict(run: RunResult, slos: tuple[str, ...] = ()) -> dict[str, Any]:
    """``run.to_dict()`` with SLO verdicts in the session's form, after a trip through JSON."""
    verdicts = []
    for text in slos:
        verdict = parse_slo(text).evaluate(run)
        verdicts.append(
            {
                "slo": verdict.slo.text,
                "metric": verdict.slo.metric,
                "op": verdict.slo.op,
                "threshold": verdict.slo.threshold,
                "unit": verdict.slo.unit,
                "measured": verdict.measured if math.isfinite(verdict.measured) else None,
                "measured_text": verdict.measured_text,
                "passed": verdict.passed,
            }
        )
    run.slos = verdicts
    loaded: dict[str, Any] = json.loads(json.dumps(run.to_dict(), allow_nan=False))
    return loaded


SLOS = ("p95_delay_ms < 20", "loss < 1%", "p50_delay_ms <= 2s")


@pytest.fixture(scope="module")
def full_page() -> str:
    return render_html(as_json_dict(make_run(), SLOS), title="tests/test_load.py::test_twenty_devices")


def chart(root: Node, name: str) -> Node:
    found = [svg for svg in root.find_all("svg") if svg.attrs.get("data-chart") == name]
    assert len(found) == 1, f"{len(found)} charts named {name!r}"
    return found[0]


def tick_labels(svg: Node, axis: str) -> list[tuple[float, str]]:
    return [
        (float(node.attrs["x" if axis == "x" else "y"]), node.text())
        for node in svg.find_all("text", class_=axis + "-tick")
    ]


def path_points(d: str) -> list[tuple[float, float]]:
    points = []
    for command in d.replace("M", " M").replace("L", " L").split():
        x, y = command[1:].split(",")
        points.append((float(x), float(y)))
    return points


def visible_text(root: Node) -> str:
    hidden = {"style", "title", "desc"}
    parts: list[str] = []
    for node in root.iter():
        if node.tag in hidden:
            continue
        parts.extend(child for child in node.children if isinstance(child, str))
    return " ".join(parts)


# -- structure ------------------------------------------------------------------------------------


def test_every_chart_is_an_svg_with_a_title_axes_marks_and_a_text_fallback(full_page: str) -> None:
    root = parse(full_page)
    assert CHART_NAMES == (
        "delay-histogram",
        "delay-cdf",
        "sent-received",
        "connected",
        "p95-delay",
        "lateness-histogram",
    )
    assert [svg.attrs.get("data-chart") for svg in root.find_all("svg")] == list(CHART_NAMES)
    for name in CHART_NAMES:
        svg = chart(root, name)
        assert svg.attrs["role"] == "img" and svg.attrs["viewbox"]
        title, desc = svg.find("title"), svg.find("desc")
        assert title.text().strip() and len(desc.text()) > 40, name
        assert svg.attrs["aria-labelledby"].split() == [title.attrs["id"], desc.attrs["id"]]
        assert len(tick_labels(svg, "x")) >= 3 and len(tick_labels(svg, "y")) >= 3, name
        assert all(label for _, label in tick_labels(svg, "x") + tick_labels(svg, "y"))
        if name.endswith("histogram"):
            bars = svg.find_all("rect", class_="bar")
            assert len(bars) > 10, name
            assert all(float(bar.attrs["width"]) > 0 and float(bar.attrs["height"]) > 0 for bar in bars)
        else:
            series = svg.find_all("path", class_="series")
            assert series and all(len(path_points(path.attrs["d"])) >= 5 for path in series), name
        # The fallback: a data table right after the chart, with rows.
        figure = svg.ancestor("figure")
        table = figure.find("details").find("table")
        rows = table.find("tbody").find_all("tr")
        assert len(rows) >= 5 and "no data" not in table.text(), name


def test_delay_histogram_has_a_log_scaled_x_axis_in_ms(full_page: str) -> None:
    svg = chart(parse(full_page), "delay-histogram")
    ticks = [(x, float(label)) for x, label in tick_labels(svg, "x")]
    assert len(ticks) >= 4
    (x0, v0), (x1, v1) = ticks[0], ticks[-1]
    pixels_per_decade = (x1 - x0) / math.log10(v1 / v0)
    for x, value in ticks:  # every tick sits where a log scale puts it
        assert x == pytest.approx(x0 + pixels_per_decade * math.log10(value / v0), abs=0.15)
    # The data (2..129 ms) lies within the labelled range, in ms, not microseconds.
    assert ticks[0][1] <= 2 and ticks[-1][1] >= 100
    assert "ms" in svg.find("text", class_="axis-title").text()
    # The tallest bar holds a plausible share of 2,010 values.
    counts = [
        int(bar.find("title").text().rsplit(": ", 1)[1].replace(",", "")) for bar in svg.find_all("rect", class_="bar")
    ]
    assert sum(counts) == 2010


def test_cdf_ends_at_100_percent_and_marks_p50_p95_p99(full_page: str) -> None:
    root = parse(full_page)
    svg = chart(root, "delay-cdf")
    y_labels = {label: y for y, label in tick_labels(svg, "y")}
    assert set(y_labels) == {"0%", "25%", "50%", "75%", "100%"}
    points = path_points(svg.find("path", class_="series").attrs["d"])
    assert points[-1][1] == pytest.approx(y_labels["100%"], abs=0.1)
    assert all(b[0] >= a[0] - 0.05 for a, b in itertools.pairwise(points))  # delay only grows
    assert all(b[1] <= a[1] + 0.05 for a, b in itertools.pairwise(points))  # share only grows (y down)
    markers = {line.attrs["data-marker"]: float(line.attrs["x1"]) for line in svg.find_all("line", class_="marker")}
    assert list(markers) == ["p50", "p95", "p99"]
    assert markers["p50"] < markers["p95"] < markers["p99"]
    run = make_run()
    labels = [node.text() for node in svg.find_all("text", class_="marker-label")]
    assert labels[1] == f"p95 {run.p95_delay_ms:.1f} ms"
    assert f"p95 {run.p95_delay_ms:.1f} ms" in svg.find("desc").text()


def test_timeline_charts_draw_sent_received_and_p95_per_slot(full_page: str) -> None:
    root = parse(full_page)
    svg = chart(root, "sent-received")
    sent = svg.find("path", class_="sent")
    received = svg.find("path", class_="received")
    assert len(path_points(sent.attrs["d"])) == 10
    assert len(path_points(received.attrs["d"])) == 10
    assert received.attrs.get("stroke-dasharray"), "received differs by dash, not colour alone"
    legend = svg.find("g", class_="legend").text()
    assert "sent" in legend and "received" in legend
    assert {label for _, label in tick_labels(svg, "x")} >= {"0", "2", "4", "6", "8"}

    p95 = chart(root, "p95-delay")
    # Slot 0 has no p95 (nothing received): the line starts at slot 1.
    assert len(path_points(p95.find("path", class_="series").attrs["d"])) == 9
    threshold = p95.find("line", class_="threshold")
    assert "p95_delay_ms < 20" in p95.find("g", class_="legend").text()
    y_by_label = {label: y for y, label in tick_labels(p95, "y")}
    assert float(threshold.attrs["y1"]) == pytest.approx(y_by_label["20"], abs=0.1)


def outage_run() -> RunResult:
    """20 devices lose the broker at t+4.5 s; 18 are back within slot 6, the last 2 in slot 7; one message
    overflowed an offline queue."""
    connected = [20, 20, 20, 20, 0, 0, 18, 20, 20, 20]
    sent = [202, 202, 202, 202, 101, 0, 390, 232, 202, 202]
    return make_run(
        timeline=[
            TimelinePoint(t_s=float(t), sent=sent[t], received=sent[t], p95_delay_ms=25.0, connected=connected[t])
            for t in range(10)
        ],
        disconnects=20,
        disconnect_reasons={"connection reset by peer": 18, "keep-alive timeout": 2},
        reconnects=20,
        reconnect_p50_ms=3185.0,
        reconnect_p99_ms=3340.0,
        reconnect_max_ms=3340.0,
        offline_device_s=63.4,
        dropped_offline=1,
        resent=14,
        unsent=0,
        warnings=["20 device connection(s) dropped during the run, the first at t+4.5s; 20 reconnected"],
    )


def test_an_outage_shows_its_cost_reasons_and_the_connected_devices() -> None:
    page = render_html(as_json_dict(outage_run(), ("reconnect_p99_ms < 10000", "dropped_offline == 0")))
    root = parse(page)
    figures = key_figures(root)
    assert (figures["disconnects"], figures["reconnects"], figures["resent"]) == ("20", "20", "14")
    assert figures["reconnect_p99_ms"] == "3,340 ms" and figures["reconnect_max_ms"] == "3,340 ms"
    assert figures["offline_device_s"] == "63.4 device-s"
    card = next(node for node in root.find_all("div", class_="fig") if node.attrs["data-key"] == "dropped_offline")
    assert "alert" in card.attrs["class"].split()
    # The SLOs on the new figures: measured in their units, the failed one named in the verdict.
    slo_rows = root.find("table", class_="slo-table").find("tbody").find_all("tr")
    rows = [[td.text().strip() for td in tr.find_all("td")] for tr in slo_rows]
    assert rows[0][3:] == ["3340.0 ms", "\u2713 PASS"] and rows[1][3:] == ["1", "\u2717 FAIL"]
    # Disconnects by reason, most frequent first, with the reconnect figures above the table.
    section = root.find("section", id="disconnects")
    assert "20 unexpected disconnect(s), 20 reconnect(s)" in section.text() and "p99 3,340 ms" in section.text()
    reasons = [[td.text() for td in tr.find_all("td")] for tr in section.find("tbody").find_all("tr")]
    assert reasons == [["connection reset by peer", "18"], ["keep-alive timeout", "2"]]
    # Connected devices per slot, on the sent/received chart's time axis, with the fleet size as a reference.
    svg = chart(root, "connected")
    line = path_points(svg.find("path", class_="connected").attrs["d"])
    sent_line = path_points(chart(root, "sent-received").find("path", class_="sent").attrs["d"])
    assert [x for x, _ in line] == [x for x, _ in sent_line]
    y_by_label = {label: y for y, label in tick_labels(svg, "y")}
    assert line[0][1] == pytest.approx(y_by_label["20"], abs=0.1) and line[4][1] == pytest.approx(y_by_label["0"])
    assert float(svg.find("line", class_="fleet-size").attrs["y1"]) == pytest.approx(y_by_label["20"], abs=0.1)
    assert "at least 0 at t=4 s" in svg.find("desc").text() and "3 slot(s)" in svg.find("desc").text()
    table = svg.ancestor("figure").find("table")
    assert [td.text() for td in table.find("tbody").find_all("tr")[6].find_all("td")] == ["6", "18"]


def test_a_run_without_disconnects_has_no_outage_cards_and_no_disconnects_section(full_page: str) -> None:
    root = parse(full_page)
    assert "reconnects" not in key_figures(root) and not root.find_all("section", id="disconnects")
    assert "at least 20" in chart(root, "connected").find("desc").text()


def test_a_result_from_before_reconnects_says_the_fleet_did_not_report_connected_devices() -> None:
    result = as_json_dict(make_run())
    for point in result["timeline"]:
        del point["connected"]
    svg = chart(parse(render_html(result)), "connected")
    assert "reported no connected devices" in svg.find("desc").text()


def test_lateness_histogram_counts_every_value(full_page: str) -> None:
    svg = chart(parse(full_page), "lateness-histogram")
    counts = [
        int(bar.find("title").text().rsplit(": ", 1)[1].replace(",", "")) for bar in svg.find_all("rect", class_="bar")
    ]
    assert sum(counts) == 3000
    assert [line.attrs["data-marker"] for line in svg.find_all("line", class_="marker")] == ["p50", "p99"]


# -- SLOs and verdict ------------------------------------------------------------------------------


def test_slo_table_has_one_row_per_slo_with_its_verdict_in_words(full_page: str) -> None:
    root = parse(full_page)
    table = root.find("table", class_="slo-table")
    rows = table.find("tbody").find_all("tr")
    cells = [[td.text().strip() for td in row.find_all("td")] for row in rows]
    p95, p50 = (verdict["measured_text"] for verdict in as_json_dict(make_run(), SLOS)["slos"][::2])
    assert p95.endswith(" ms") and p50.endswith(" ms")  # the slo module's own text, shown as is
    assert cells == [
        ["p95_delay_ms < 20", "p95_delay_ms", "< 20.0 ms", p95, "\u2717 FAIL"],
        ["loss < 1%", "loss", "< 1.000%", "0.495%", "\u2713 PASS"],
        ["p50_delay_ms <= 2s", "p50_delay_ms", "<= 2,000 ms", p50, "\u2713 PASS"],
    ]
    assert [row.attrs["class"] for row in rows] == ["fail", "pass", "pass"]
    assert "2 of 3" in table.find("caption").text()


def test_header_verdict_fails_and_lists_only_the_failed_slos(full_page: str) -> None:
    root = parse(full_page)
    verdict = root.find("div", id="verdict")
    assert verdict.attrs["data-verdict"] == "FAIL" and "fail" in verdict.attrs["class"].split()
    reasons = [li.text() for li in verdict.find_all("li")]
    p95 = as_json_dict(make_run(), SLOS)["slos"][0]["measured_text"]
    assert reasons == [f"SLO p95_delay_ms < 20 failed: measured {p95}"]
    header = root.find("header").text()
    assert "r-7f3a" in header and "mosquitto 2.0.11 (embedded)" in header
    assert root.find("h1").text() == "tests/test_load.py::test_twenty_devices"
    assert root.find("title").text().startswith("FAIL")


def test_header_verdict_passes_when_every_slo_passes() -> None:
    root = parse(render_html(as_json_dict(make_run(), ("loss < 1%", "p99_delay_ms < 1s"))))
    verdict = root.find("div", id="verdict")
    assert verdict.attrs["data-verdict"] == "PASS"
    assert "\u2713 PASS" in verdict.text() and "all 2 SLO(s) met" in verdict.text()
    assert root.find("h1").text() == "iotperf run r-7f3a"  # no title: the run id


def test_run_errors_fail_the_verdict_and_are_listed() -> None:
    result = as_json_dict(make_run(errors=["sink process died (exit code 1)"], complete=False), ("loss < 1%",))
    root = parse(render_html(result))
    verdict = root.find("div", id="verdict")
    assert verdict.attrs["data-verdict"] == "FAIL"
    assert "1 run error(s)" in verdict.text()
    assert root.find("section", id="errors").find("li").text() == "sink process died (exit code 1)"
    assert root.find_all("div", id="incomplete")


def test_saturated_generator_is_flagged_in_the_header() -> None:
    warning = "generator saturated: fleet lateness p99 80.0 ms > 50 ms"
    result = as_json_dict(make_run(generator_saturated=True, lateness_p99_ms=80.0, warnings=[warning]))
    root = parse(render_html(result))
    banner = root.find("div", id="saturated")
    assert "Generator saturated" in banner.text() and "80.0 ms" in banner.text()
    assert banner.ancestor("header")
    assert root.find("section", id="warnings").find("li").text() == warning
    assert not parse(render_html(as_json_dict(make_run()))).find_all("div", id="saturated")


# -- figures -----------------------------------------------------------------------------------------


def key_figures(root: Node) -> dict[str, str]:
    return {div.attrs["data-key"]: div.find("dd").text() for div in root.find("dl", class_="figures").find_all("div")}


def test_key_figures_are_formatted_for_reading() -> None:
    result = as_json_dict(make_run())
    result.update(
        sent=1234567,
        received=1234000,
        lost=567,
        loss=0.0025,
        p50_delay_ms=0.4567,
        p95_delay_ms=30.456,
        p99_delay_ms=4.5,
        p999_delay_ms=1234.6,
        max_delay_ms=None,
        throughput_per_s=20566.666,
        lateness_p99_ms=1.25,
    )
    figures = key_figures(parse(render_html(result)))
    assert figures["sent"] == "1,234,567"
    assert figures["received"] == "1,234,000"
    assert figures["lost"] == "567"
    assert figures["loss"] == "0.250%"
    assert figures["duplicates"] == "3"
    assert figures["p50_delay_ms"] == "0.457 ms"
    assert figures["p95_delay_ms"] == "30.5 ms"
    assert figures["p99_delay_ms"] == "4.50 ms"
    assert figures["p999_delay_ms"] == "1,235 ms"
    assert figures["max_delay_ms"] == "\u2013"
    assert figures["throughput_per_s"] == "20,566.7/s"
    assert figures["lateness_p99_ms"] == "1.25 ms"
    assert list(figures)[:6] == ["sent", "received", "lost", "loss", "duplicates", "throughput_per_s"]


def test_a_tiny_loss_is_not_shown_as_zero() -> None:
    result = as_json_dict(make_run())
    result.update(loss=0.000004)
    assert key_figures(parse(render_html(result)))["loss"] == "0.0004%"


def test_settings_table_lists_values_with_their_sources(full_page: str) -> None:
    rows = parse(full_page).find("table", id="settings-table").find("tbody").find_all("tr")
    table = {row.attrs["data-setting"]: [cell.text() for cell in row.find_all("td")] for row in rows}
    assert table["devices"] == ["20", "code"]
    assert table["duration"] == ["10", "cli --iot-duration"]
    assert table["report_dir"] == ["\u2013", "\u2013"]


def head_meta(root: Node) -> dict[str, str]:
    return {div.find("dt").text(): div.find("dd").text() for div in root.find("dl", class_="meta").find_all("div")}


def more_figures(root: Node) -> dict[str, str]:
    rows = root.find("section", id="figures").find("tbody").find_all("tr")
    return {cells[0].text(): cells[1].text() for cells in (row.find_all("td") for row in rows)}


def test_what_ran_shows_in_the_head_only_where_it_is_not_the_default(full_page: str) -> None:
    defaults = {"payload_file": None, "header": "body", "header_key": "_iotperf", "mqtt_version": "3.1.1",
                "topic_alias": False, "transport": "tcp", "ws_path": None}  # fmt: skip
    plain = parse(render_html(as_json_dict(make_run(settings=defaults))))
    assert list(head_meta(plain)) == list(head_meta(parse(full_page))) == [
        "run id", "broker", "devices", "rate per device", "duration", "workers"
    ]  # fmt: skip
    settings = {**defaults, "payload_file": "tests/data/reading.json", "header": "properties", "mqtt_version": "5",
                "topic_alias": True, "transport": "websockets", "ws_path": "/mqtt", "seed": 1234}  # fmt: skip
    meta = head_meta(parse(render_html(as_json_dict(make_run(settings=settings)))))
    assert list(meta)[-4:] == ["payload", "header", "MQTT", "seed"]
    assert meta["payload"] == "tests/data/reading.json" and meta["header"] == "in MQTT 5 user properties"
    assert meta["MQTT"] == "5 with topic alias over WebSockets (/mqtt)" and meta["seed"] == "1234"
    enveloped = {**defaults, "header_key": "meta.trace", "transport": "websockets", "seed": 0}
    meta = head_meta(parse(render_html(as_json_dict(make_run(settings=enveloped)))))
    assert meta["header"] == "in the body under meta.trace"
    assert (meta["MQTT"], meta["seed"]) == ("3.1.1 over WebSockets", "0")
    assert "payload" not in meta


def test_publish_refusals_batched_and_extract_errors_show_only_when_there_are_some(full_page: str) -> None:
    root = parse(full_page)
    assert not root.find_all("p", id="publish-refused")
    assert not any("batched" in label or "extract" in label for label in more_figures(root))
    run = make_run(publish_errors=15, publish_errors_by_reason={"0x97 quota exceeded": 3, "0x87 not authorized": 12})
    run.batched, run.extract_errors = 1234, 2
    root = parse(render_html(as_json_dict(run)))
    line = root.find("p", id="publish-refused").text()
    assert line == "publish refused: 0x87 not authorized x12, 0x97 quota exceeded x3"
    figures = more_figures(root)
    assert figures["headers read from batched messages (JSON arrays, JSON lines)"] == "1,234"
    assert figures["messages the pytest_iotperf_extract hook raised on (not accounted)"] == "2"
    # A result file from before issue 15 (no such keys) renders as before.
    older = as_json_dict(make_run())
    for key in ("batched", "extract_errors", "publish_errors_by_reason"):
        del older[key]
    assert render_html(older) == render_html(as_json_dict(make_run()))


def test_lost_messages_by_device_show_the_missing_seqs(full_page: str) -> None:
    rows = parse(full_page).find("section", id="losses").find("tbody").find_all("tr")
    assert [[td.text() for td in row.find_all("td")] for row in rows] == [
        ["dev-0003", "6", "0, 40\u201344"],
        ["dev-0011", "4", "7\u201310"],
    ]


# -- safety ------------------------------------------------------------------------------------------


def test_secrets_are_redacted_wherever_they_appear() -> None:
    connection = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=c2VjcmV0LWtleQ=="
    settings = {
        "devices": 20,
        "password": "hunter2-pass",
        "MQTT_Password": "hunter3-pass",
        "api_token": "tok-123456",
        "client_secret": "shh-secret-1",
        "eventhub_connection": "Endpoint=sb://plain-but-named/",
        "storage_key": "k3y-value",
        "eventhub": connection,
        "sas": "SharedAccessSignature sr=ns&sig=abcdefSIG&se=1700000000",
        "nested": {"inner_token": "tok-nested-99", "safe": "visible-value"},
        "username": "alice",
        "broker": "mqtt://alice:pw-in-setting@broker.example:1883",
    }
    run = make_run(
        settings=settings,
        sources={"devices": "code", "eventhub": "env IOTPERF_EVENTHUB"},
        errors=[f"could not open {connection}"],
        warnings=["broker at mqtt://alice:pw-in-url@broker.example:1883 is slow"],
        broker="mqtt://alice:pw-in-url@broker.example:1883",
    )
    page = render_html(as_json_dict(run))
    for secret in (
        "hunter2-pass",
        "hunter3-pass",
        "tok-123456",
        "shh-secret-1",
        "plain-but-named",
        "k3y-value",
        "c2VjcmV0LWtleQ",
        "abcdefSIG",
        "tok-nested-99",
        "pw-in-url",
        "pw-in-setting",
    ):
        assert secret not in page, secret
    rows = parse(page).find("table", id="settings-table").find("tbody").find_all("tr")
    values = {row.attrs["data-setting"]: row.find_all("td")[0].text() for row in rows}
    for key in ("password", "MQTT_Password", "api_token", "client_secret", "eventhub_connection", "storage_key"):
        assert values[key] == REDACTED, key
    assert values["eventhub"] == REDACTED and values["sas"] == REDACTED
    assert json.loads(values["nested"]) == {"inner_token": REDACTED, "safe": "visible-value"}
    assert values["devices"] == "20" and values["username"] == "alice"
    assert values["broker"] == f"mqtt://alice:{REDACTED}@broker.example:1883"
    # Free text keeps its meaning, only the secret part goes.
    error = parse(page).find("section", id="errors").find("li").text()
    assert error.startswith("could not open Endpoint=sb://ns.servicebus.windows.net/") and REDACTED in error


def test_redaction_helpers() -> None:
    assert redact_settings({"Token": None, "KEY": 5, "rate": 2.0, "x": ["a", "SharedAccessKey=zz"]}) == {
        "Token": None,
        "KEY": REDACTED,
        "rate": 2.0,
        "x": ["a", REDACTED],
    }
    assert redact_text("a;SharedAccessKey=abc;b") == f"a;SharedAccessKey={REDACTED};b"
    assert redact_text("password=hunter2 rest") == f"password={REDACTED} rest"
    assert redact_text("nothing to hide") == "nothing to hide"


def test_hostile_text_is_escaped_everywhere() -> None:
    hostile = "<script>alert('x')</script>"
    run = make_run(
        run_id='r"><img src=x onerror=alert(1)>',
        warnings=[f"warn {hostile}"],
        errors=["<b>bold</b> & co"],
        broker=f"broker {hostile}",
        settings={"topic": hostile, "<i>key-like</i>": 1},
        sources={"topic": hostile},
    )
    result = as_json_dict(run, ("loss < 1%",))
    result["slos"][0]["slo"] = f"loss < 1% {hostile}"
    page = render_html(result, title=f"tests/test_x.py::test_a[{hostile}]")
    root = parse(page)
    assert not root.find_all("script") and not root.find_all("img") and not root.find_all("b")
    assert all("onerror" not in node.attrs for node in root.iter())
    assert root.find("h1").text() == f"tests/test_x.py::test_a[{hostile}]"
    assert root.find("section", id="warnings").find("li").text() == f"warn {hostile}"
    assert root.find("section", id="errors").find("li").text() == "<b>bold</b> & co"
    assert hostile in root.find("table", class_="slo-table").text()
    assert "&lt;script&gt;" in page and "<script" not in page


def test_page_is_self_contained() -> None:
    page = render_html(as_json_dict(make_run(), SLOS))
    root = parse(page)
    for tag in ("script", "link", "img", "iframe", "object", "embed", "image", "use"):
        assert not root.find_all(tag), tag
    for node in root.iter():
        for name, value in node.attrs.items():
            assert name not in ("src", "href") and "url(" not in value, (node.tag, name)
            if name != "xmlns":
                assert "http:" not in value and "https:" not in value, (node.tag, name)
    assert "@import" not in page and "url(" not in page
    csp = [meta for meta in root.find_all("meta") if meta.attrs.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0].attrs["content"]


# -- empty and odd data ------------------------------------------------------------------------------


def empty_run() -> RunResult:
    nan = math.nan
    return make_run(
        delay=DelayHistogram(),
        lateness=DelayHistogram(),
        sent=0,
        received=0,
        lost=0,
        duplicates=0,
        loss=0.0,
        p50_delay_ms=nan,
        p90_delay_ms=nan,
        p95_delay_ms=nan,
        p99_delay_ms=nan,
        p999_delay_ms=nan,
        max_delay_ms=nan,
        mean_delay_ms=nan,
        throughput_per_s=0.0,
        lateness_p50_ms=nan,
        lateness_p99_ms=nan,
        timeline=[],
        worst_devices=[],
        missing={},
        worker_stats=[],
        errors=["could not connect to the broker (x20)"],
        complete=False,
    )


def test_a_run_without_data_renders_no_data_charts_and_dashes() -> None:
    result = as_json_dict(empty_run(), ("p95_delay_ms < 1000",))
    page = render_html(result)
    root = parse(page)
    for name in CHART_NAMES:
        svg = chart(root, name)
        assert "no data" in svg.find("text", class_="no-data").text(), name
        assert svg.find("desc").text().startswith("No data"), name
        assert not svg.find_all("rect", class_="bar") and not svg.find_all("path", class_="series")
    figures = key_figures(root)
    assert figures["sent"] == "0" and figures["loss"] == "0.000%"
    for key in ("p50_delay_ms", "p95_delay_ms", "p99_delay_ms", "p999_delay_ms", "max_delay_ms", "lateness_p99_ms"):
        assert figures[key] == "\u2013", key
    row = root.find("table", class_="slo-table").find("tbody").find("tr")
    assert [td.text().strip() for td in row.find_all("td")][3:] == ["no data", "\u2717 FAIL"]
    text = visible_text(root)
    assert "nan" not in text.lower().split() and "None" not in text
    assert root.find("div", id="verdict").attrs["data-verdict"] == "FAIL"


def test_a_result_with_missing_or_broken_parts_still_renders() -> None:
    root = parse(render_html({}))
    assert len(root.find_all("svg")) == len(CHART_NAMES)
    assert root.find("div", id="verdict").attrs["data-verdict"] == "PASS"  # no SLO failed, no error reported
    broken = as_json_dict(make_run())
    broken["delay_histogram"] = {"format": "something/else", "count": 1}
    broken["timeline"] = [{"t_s": None}, "junk", {"t_s": 1, "sent": 5, "received": 5, "p95_delay_ms": float("nan")}]
    broken["slos"] = ["junk", {"metric": "loss", "op": "<", "threshold": 0.01, "unit": "fraction", "passed": True}]
    root = parse(render_html(broken))
    assert "could not be read" in chart(root, "delay-histogram").find("desc").text()
    assert "no data" in chart(root, "p95-delay").text()
    assert chart(root, "sent-received").find("path", class_="sent")
    assert root.find("table", class_="slo-table").find("code").text() == "loss < 0.01"


def test_values_at_or_below_zero_ms_get_their_own_bar() -> None:
    delay = delay_histogram()
    delay.record(-350, 4)  # clock skew
    delay.record(0)
    root = parse(render_html(as_json_dict(make_run(delay=delay))))
    svg = chart(root, "delay-histogram")
    assert tick_labels(svg, "x")[0][1] == "\u22640"
    first_bar = svg.find_all("rect", class_="bar")[0]
    assert first_bar.find("title").text() == "5 values \u2264 0 ms"
    assert "5 value(s) \u2264 0 ms" in svg.find("desc").text()
    cdf = chart(root, "delay-cdf")
    assert tick_labels(cdf, "x")[0][1] == "\u22640"


def test_a_single_value_and_a_single_slot_still_draw() -> None:
    delay = DelayHistogram()
    delay.record(5000, 7)
    run = make_run(delay=delay, timeline=[TimelinePoint(t_s=0.0, sent=7, received=7, p95_delay_ms=5.0)])
    root = parse(render_html(as_json_dict(run)))
    bars = chart(root, "delay-histogram").find_all("rect", class_="bar")
    assert len(bars) == 1 and float(bars[0].attrs["width"]) > 0
    assert len(tick_labels(chart(root, "delay-histogram"), "x")) >= 3
    assert chart(root, "p95-delay").find_all("circle")  # one point shows as a dot


def test_an_axis_keeps_one_number_style() -> None:
    delay = DelayHistogram()
    delay.record(5000, 12_000)
    delay.record(9000, 3)
    svg = chart(parse(render_html(as_json_dict(make_run(delay=delay)))), "delay-histogram")
    assert [label for _, label in tick_labels(svg, "y")] == ["0", "2.5k", "5k", "7.5k", "10k", "12.5k"]


# -- writing ------------------------------------------------------------------------------------------


def test_write_html_replaces_the_file_atomically(tmp_path: Path) -> None:
    path = tmp_path / "reports" / "run.html"
    write_html(as_json_dict(make_run()), path, title="first")
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    write_html(as_json_dict(make_run()), path, title="second \u00e9")
    assert parse(path.read_text(encoding="utf-8")).find("h1").text() == "second \u00e9"
    assert [p.name for p in path.parent.iterdir()] == ["run.html"]  # no temporary file left


# -- a real browser --------------------------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
BROWSER_TIMEOUT_S = 60


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - the id was reused by someone else's group
        return False
    return True


def _end_group(pgid: int, grace_s: float) -> None:
    """Let the browser's helper processes exit, then kill whatever of its process group is left."""
    deadline = time.monotonic() + grace_s
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _group_alive(pgid):
        os.killpg(pgid, signal.SIGKILL)


def run_chromium(tmp_path: Path, *args: str) -> bytes:
    """Run headless Chromium in its own process group; stdout. Killed (group and all) after 60 s."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
    }
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-breakpad",
        f"--user-data-dir={tmp_path / 'profile'}",
        *args,
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=BROWSER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"chromium did not finish within {BROWSER_TIMEOUT_S} s: {' '.join(command)}")
    finally:
        _end_group(process.pid, grace_s=1.0)
    assert process.returncode == 0, stderr.decode(errors="replace")[-2000:]
    return stdout


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB bytes) of an 8-bit RGB or RGBA PNG, with the stdlib only."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, []
    width = height = bpp = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour_type in (2, 6) and interlace == 0, (depth, colour_type, interlace)
            bpp = 3 if colour_type == 2 else 4
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    assert len(raw) == height * (stride + 1)
    low7 = int.from_bytes(b"\x7f" * stride, "big")
    high1 = int.from_bytes(b"\x80" * stride, "big")
    rows: list[bytes] = []
    previous = bytes(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind_byte, line = raw[start], raw[start + 1 : start + 1 + stride]
        if kind_byte == 0:
            current = bytes(line)
        elif kind_byte == 2:  # up: bytewise add without carries, on big ints
            a, b = int.from_bytes(line, "big"), int.from_bytes(previous, "big")
            current = (((a & low7) + (b & low7)) ^ ((a ^ b) & high1)).to_bytes(stride, "big")
        else:
            row = bytearray(line)
            for i in range(stride):
                left = row[i - bpp] if i >= bpp else 0
                up = previous[i]
                if kind_byte == 1:
                    row[i] = (row[i] + left) & 255
                elif kind_byte == 3:
                    row[i] = (row[i] + ((left + up) >> 1)) & 255
                else:  # paeth
                    corner = previous[i - bpp] if i >= bpp else 0
                    p = left + up - corner
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                    row[i] = (row[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
            current = bytes(row)
        rows.append(current)
        previous = current
    if bpp == 4:
        rows = [b"".join(row[i : i + 3] for i in range(0, len(row), 4)) for row in rows]
    return width, height, rows


def near(colour: bytes, target: str, tolerance: int = 8) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(colour, bytes.fromhex(target), strict=True))


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium")
def test_chromium_renders_the_charts(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    write_html(as_json_dict(make_run(), SLOS), page, title="tests/test_load.py::test_twenty_devices")

    screenshot = tmp_path / "report.png"
    # One browser run: the DOM after rendering on stdout, and a screenshot of the top 2,400 px.
    dom = run_chromium(
        tmp_path, "--dump-dom", f"--screenshot={screenshot}", "--window-size=1200,2400", page.as_uri()
    ).decode("utf-8")
    root = parse(dom)
    assert [svg.attrs.get("data-chart") for svg in root.find_all("svg")] == list(CHART_NAMES)
    for name in CHART_NAMES:
        svg = chart(root, name)
        assert svg.find_all("rect", class_="bar") or svg.find_all("path", class_="series"), name
        assert svg.find("title").text() and svg.find("desc").text()

    data = screenshot.read_bytes()
    assert len(data) > 20_000
    width, height, rows = decode_png(data)
    assert (width, height) == (1200, 2400)
    sample = Counter(row[i : i + 3] for row in rows[::3] for i in range(0, len(row), 9))
    assert len(sample) > 200, "the screenshot is (nearly) one colour"
    white, share = sample.most_common(1)[0][0], sample.most_common(1)[0][1] / sum(sample.values())
    assert share < 0.9, f"{share:.0%} of the screenshot is {white.hex()}"
    # The charts' own colours are on screen: delay bars and CDF (blue), received line (orange), lateness bars (teal).
    for colour, what in (
        ("4c78a8", "delay bars"),
        ("e8710a", "received line"),
        ("7b3fa0", "connected line"),
        ("3f9a92", "lateness bars"),
    ):
        assert sum(n for pixel, n in sample.items() if near(pixel, colour)) > 10, what
    # The FAIL verdict box (its red) is rendered too.
    assert sum(n for pixel, n in sample.items() if near(pixel, "b3261e", 12)) > 20
