"""The HTML report's stylesheet, inlined into the page (the Content-Security-Policy allows inline styles only).

A string rather than a ``.css`` package file: rendering needs no resource
lookup.  The class names it styles are written in :mod:`.html_sections` and
:mod:`.html_charts`.
"""

from __future__ import annotations

import html

CSS = """
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
p.summary { margin: 0 0 8px; }
footer { color: var(--muted); font-size: 12px; text-align: center; }
@media print { body { background: #fff; } section, .page-head { break-inside: avoid; } }
"""



def html_page(title: str, body: str, footer: str) -> str:
    """A whole self-contained page: no script, no network (the CSP says so to the browser too).

    ``title`` and ``footer`` are plain text (escaped here); ``body`` is HTML.
    """
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n"
        '<meta name="generator" content="pytest-iotperf">\n'
        f"<title>{html.escape(title)}</title>\n"
        f"<style>{CSS}</style>\n</head>\n"
        f'<body>\n<div class="page">{body}'
        f"<footer>{html.escape(footer)}</footer>"
        "</div>\n</body>\n</html>\n"
    )
