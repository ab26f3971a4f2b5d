"""One self-contained HTML page per run: verdict, SLO table, key figures, inline SVG charts, settings.

The input is the JSON-ready dict of a run (``RunResult.to_dict()``, or the same
dict loaded back from the JSON result file).  The page is a single file that
opens offline: no script, no external stylesheet, font or image, and a
Content-Security-Policy that forbids fetching anything.  The charts are SVG
drawn in Python from the run's histograms and timeline (:mod:`.html_charts`,
on the primitives of :mod:`.svg`); the other sections are
:mod:`.html_sections`, the stylesheet :mod:`.html_style`, and secrets are
masked by :mod:`pytest_iotperf.secrets`.

Pure: no pytest, no I/O except :func:`write_html`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_iotperf.files import write_text_atomically
from pytest_iotperf.report.html_charts import CHART_NAMES, charts_section
from pytest_iotperf.report.html_sections import (
    disconnects_section,
    figures_section,
    header_section,
    losses_section,
    messages_section,
    page_verdict,
    settings_section,
    slo_section,
    stages_section,
    workers_section,
)
from pytest_iotperf.report.html_style import html_page
from pytest_iotperf.report.result_view import shown_text

# The redaction helpers were first published here; they live in pytest_iotperf.secrets.
from pytest_iotperf.secrets import REDACTED, redact_settings, redact_text

__all__ = ["CHART_NAMES", "REDACTED", "redact_settings", "redact_text", "render_html", "write_html"]


def render_html(result: Mapping[str, Any], *, title: str | None = None) -> str:
    """The run as one self-contained HTML page (returned as text).

    ``result`` is ``RunResult.to_dict()`` or the same dict read back from the
    JSON result file; missing keys and ``None`` / NaN figures show as a dash,
    and a run without data gets "no data" charts instead of an error.
    ``title`` (e.g. the pytest node id) heads the page; by default the run id.
    Every text is HTML-escaped; secrets in settings, warnings and errors are
    masked (see :func:`redact_settings` and :func:`redact_text`).
    """
    run_id = shown_text(result.get("run_id"))
    heading = redact_text(title) if title else (f"iotperf run {run_id}" if run_id else "iotperf run")
    verdict, _ = page_verdict(result)
    body = "".join(
        [
            header_section(result, heading),
            "<main>",
            slo_section(result),
            figures_section(result),
            stages_section(result),
            charts_section(result),
            losses_section(result),
            disconnects_section(result),
            workers_section(result),
            settings_section(result),
            messages_section(result),
            "</main>",
        ]
    )
    return html_page(
        f"{verdict} \u2013 {heading} \u2013 iotperf",
        body,
        "pytest-iotperf report \u00b7 one self-contained file: no script, no network access",
    )


def write_html(result: Mapping[str, Any], path: Path, title: str | None = None) -> None:
    """Render ``result`` and write it to ``path`` atomically (a reader never sees half a page).

    Missing parent directories are created.
    """
    write_text_atomically(Path(path), render_html(result, title=title))
