"""The terminal summary: one table row per perf run, then warnings and errors."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_iotperf.numbers import finite, format_percent
from pytest_iotperf.report.result_view import read_publish_refusals, reason_counts_text

#: The figures every perf test publishes as junit properties and in the summary.
SUMMARY_KEYS = (
    "run_id",
    "devices",
    "sent",
    "received",
    "lost",
    "loss",
    "p50_delay_ms",
    "p95_delay_ms",
    "p99_delay_ms",
    "max_delay_ms",
    "lateness_p99_ms",
    "broker",
    "disconnects",
    "reconnects",
    "reconnect_p99_ms",
    "dropped_offline",
    "resent",
    "puback_p99_ms",
    "sas_renewals",
)


def optional_summary(figures: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The figures published (junit properties) and shown under the table only when there is something to say.

    MQTT 5 PUBACK refusals by reason (as one text), headers read from batched messages and messages the
    ``pytest_iotperf_extract`` hook raised on; a run without them publishes nothing more than before.
    """
    out: list[tuple[str, Any]] = []
    refusals = read_publish_refusals(figures)
    if refusals:
        out.append(("publish_errors_by_reason", reason_counts_text(refusals)))
    for key in ("batched", "extract_errors"):
        count = finite(figures.get(key))
        if count:
            out.append((key, int(count)))
    return out


#: What :func:`summary_lines` says under the table for each optional figure of a row.
_OPTIONAL_LINES = (
    ("publish_errors_by_reason", "publish refused {test}: {value}"),
    ("batched", "batched {test}: {value} header(s) read from messages carrying several"),
    ("extract_errors", "extract errors {test}: {value} message(s) the pytest_iotperf_extract hook raised on"),
)

_COLUMNS: tuple[tuple[str, str], ...] = (
    ("test", "test"),
    ("devices", "devices"),
    ("sent", "sent"),
    ("received", "received"),
    ("lost", "lost"),
    ("loss", "loss"),
    ("p50_delay_ms", "p50 ms"),
    ("p95_delay_ms", "p95 ms"),
    ("p99_delay_ms", "p99 ms"),
    ("max_delay_ms", "max ms"),
    ("lateness_p99_ms", "late p99 ms"),
    ("slos_met", "SLOs met"),
)

#: Shown before "SLOs met" only when a run of the session had reconnects: it says the run rode through an outage.
_RECONNECT_COLUMN = ("reconnects", "reconnects")


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "slos_met":
        met, total = value
        return f"{met}/{total}"
    if key == "loss":
        return format_percent(float(value))  # as the SLO messages and the HTML report show it
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.1f}"
    return str(value)


def summary_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Format rows (each: the test id plus SUMMARY_KEYS, warnings, errors) as a table."""
    columns = list(_COLUMNS)
    if any(row.get("reconnects") for row in rows):
        columns.insert(len(columns) - 1, _RECONNECT_COLUMN)
    table = [[header for _, header in columns]]
    for row in rows:
        if "run_id" not in row and any(key.startswith("capacity") for key in row):
            continue  # a capacity search's own line follows the table: its steps are not runs of the test
        table.append([_cell(key, row.get(key)) for key, _ in columns])
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    lines = []
    for n, line in enumerate(table if len(table) > 1 else []):
        cells = [line[0].ljust(widths[0])] + [
            cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * width for width in widths))
    brokers = sorted({str(row["broker"]) for row in rows if row.get("broker")})
    if brokers:
        lines.append(f"broker: {', '.join(brokers)}")
    for row in rows:
        for key in sorted(key for key in row if key.startswith("capacity") and key.endswith(".summary")):
            lines.append(f"capacity {row['test']}: {row[key]}")
        for key, template in _OPTIONAL_LINES:
            if row.get(key):
                lines.append(template.format(test=row["test"], value=row[key]))
        stages = [key for key in row if key.startswith("stage[") and key.endswith("]")]  # runs in stages only
        for key in sorted(stages, key=lambda name: int(name[6:-1]) if name[6:-1].isdigit() else 0):
            lines.append(f"{key.replace('[', ' ').rstrip(']')} {row['test']}: {row[key]}")
        for warning in row.get("warnings") or []:
            lines.append(f"WARNING {row['test']}: {warning}")
        for error in row.get("errors") or []:
            lines.append(f"ERROR {row['test']}: {error}")
    return lines
