"""The sections of the HTML report page: header with the verdict, SLO table, key figures, lost messages,
disconnects by reason, worker processes, settings, warnings and errors (the charts section is :mod:`.html_charts`).

Each section is a function of the run's result dict returning an HTML fragment;
every text is escaped and every setting, warning and error has its secrets masked.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_iotperf.numbers import (
    NO_VALUE,
    finite,
    format_by_key,
    format_count,
    format_in_unit,
    format_ms,
    format_percent,
    format_plain,
    format_rate,
)
from pytest_iotperf.report.html_charts import data_table
from pytest_iotperf.report.result_view import (
    measured_text,
    read_disconnect_reasons,
    read_message_setup,
    read_publish_refusals,
    read_slos,
    reason_counts_text,
    shown_text,
    shown_texts,
    slo_text,
)
from pytest_iotperf.report.svg import esc
from pytest_iotperf.secrets import redact_settings, redact_value


def page_verdict(result: Mapping[str, Any]) -> tuple[str, list[str]]:
    """PASS or FAIL for the whole run, and the reasons shown under it."""
    slos = read_slos(result)
    failed = [slo for slo in slos if not slo.get("passed")]
    errors = shown_texts(result.get("errors"))
    reasons = [f"SLO {slo_text(slo)} failed: {_failure_detail(slo)}" for slo in failed]
    if errors:
        reasons.append(f"{len(errors)} run error(s): see Errors below")
    if reasons:
        return "FAIL", reasons
    if not slos:
        return "PASS", ["no SLOs were set; the run completed without errors"]
    return "PASS", [f"all {len(slos)} SLO(s) met"]


def _failure_detail(slo: Mapping[str, Any]) -> str:
    if slo.get("verdict_text"):  # a windowed SLO: "2 of 10 windows failed: [3m,4m) 1480 ms, ..."
        return str(slo["verdict_text"])
    text = measured_text(slo)
    return "no data (nothing measured)" if text == "no data" else f"measured {text}"



def header_section(result: Mapping[str, Any], title: str) -> str:
    """The page head: title, run facts, the verdict, and banners for a saturated generator or an incomplete run."""
    verdict, reasons = page_verdict(result)
    css = "pass" if verdict == "PASS" else "fail"
    mark = "\u2713" if verdict == "PASS" else "\u2717"
    meta: list[tuple[str, str]] = [("run id", shown_text(result.get("run_id")) or NO_VALUE)]
    meta.append(("broker", shown_text(result.get("broker")) or NO_VALUE))
    if result.get("eventhub"):
        meta.append(("Event Hub", shown_text(result.get("eventhub"))))
    meta.append(("devices", format_count(result.get("devices"))))
    meta.append(("rate per device", format_rate(result.get("rate_per_device"))))
    duration = finite(result.get("duration_s"))
    meta.append(("duration", NO_VALUE if duration is None else f"{duration:g} s"))
    if result.get("workers") is not None:
        meta.append(("workers", format_count(result.get("workers"))))
    meta.extend(read_message_setup(result))  # payload, header, MQTT, seed: only what is not the default
    t0 = finite(result.get("t0"))
    if t0 is not None:
        try:
            start = _dt.datetime.fromtimestamp(t0, tz=_dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        except (OverflowError, OSError, ValueError):
            start = f"{t0:g}"
        meta.append(("T0", start))
    meta_html = "".join(f"<div><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>" for k, v in meta)
    reason_html = "".join(f"<li>{esc(reason)}</li>" for reason in reasons)
    parts = [
        '<header class="page-head">',
        f'<p class="kicker">pytest-iotperf load test report</p><h1>{esc(title)}</h1>',
        f'<dl class="meta">{meta_html}</dl>',
        f'<div class="verdict {css}" id="verdict" role="status" data-verdict="{verdict}">'
        f'<span class="verdict-word">{mark} {verdict}</span><ul class="reasons">{reason_html}</ul></div>',
    ]
    if result.get("generator_saturated"):
        parts.append(
            '<div class="banner warn" id="saturated" role="alert"><strong>\u26a0 Generator saturated:</strong> '
            f"fleet lateness p99 {esc(format_ms(result.get('lateness_p99_ms')))}. The load generator could not keep "
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


def slo_section(result: Mapping[str, Any]) -> str:
    """One table row per SLO: expression, metric, threshold, measured value, verdict."""
    slos = read_slos(result)
    head = '<section id="slos"><h2>Service-level objectives</h2>'
    if not slos:
        return head + '<p class="empty">No SLOs were set for this run.</p></section>'
    rows = []
    for slo in slos:
        passed = bool(slo.get("passed"))
        css = "pass" if passed else "fail"
        verdict = "\u2713 PASS" if passed else "\u2717 FAIL"
        threshold = f"{esc(slo.get('op', ''))} {esc(format_in_unit(slo.get('threshold'), str(slo.get('unit', ''))))}"
        rows.append(
            f'<tr class="{css}" data-passed="{str(passed).lower()}"><td><code>{esc(slo_text(slo))}</code></td>'
            f'<td><code>{esc(slo.get("metric", NO_VALUE))}</code></td><td class="num">{threshold}</td>'
            f'<td class="num">{esc(str(slo.get("verdict_text") or measured_text(slo)))}</td>'
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

#: Key figures too when devices lost their connection during the run: what the outage cost.
_OUTAGE_FIGURES: tuple[tuple[str, str, str], ...] = (
    ("disconnects", "Disconnects", "count"),
    ("reconnects", "Reconnects", "count"),
    ("reconnect_p50_ms", "Reconnect p50", "ms"),
    ("reconnect_p99_ms", "Reconnect p99", "ms"),
    ("reconnect_max_ms", "Reconnect max", "ms"),
    ("offline_device_s", "Offline", "device_s"),
    ("dropped_offline", "Dropped offline", "count"),
    ("resent", "Resent", "count"),
)
_OUTAGE_ALERTS = ("dropped_offline",)

_MORE_FIGURES: tuple[tuple[str, str, str], ...] = (
    ("p90_delay_ms", "p90 delay", "ms"),
    ("sent_delay_p50_ms", "delay from actual send, p50", "ms"),
    ("sent_delay_p95_ms", "delay from actual send, p95", "ms"),
    ("sent_delay_p99_ms", "delay from actual send, p99", "ms"),
    ("out_of_order", "out of order", "count"),
    ("unexpected", "unexpected (unknown device or seq)", "count"),
    ("other_runs", "messages of other runs", "count"),
    ("malformed", "malformed payloads", "count"),
    ("batched", "headers read from batched messages (JSON arrays, JSON lines)", "count"),
    ("extract_errors", "messages the pytest_iotperf_extract hook raised on (not accounted)", "count"),
    ("scheduled", "messages scheduled", "count"),
    ("connected", "devices connected at go", "count"),
    ("connect_failures", "connect failures", "count"),
    ("connect_retries", "connect retries", "count"),
    ("connect_p50_ms", "connect time p50", "ms"),
    ("connect_p99_ms", "connect time p99", "ms"),
    ("publish_errors", "publish errors", "count"),
    ("unsent", "scheduled but not sent (besides dropped offline)", "count"),
    ("disconnects", "device disconnects", "count"),
    ("reconnects", "device reconnects", "count"),
    ("reconnect_p50_ms", "reconnect time p50 (disconnect to CONNACK)", "ms"),
    ("reconnect_p99_ms", "reconnect time p99", "ms"),
    ("reconnect_max_ms", "reconnect time max", "ms"),
    ("offline_device_s", "time offline", "device_s"),
    ("dropped_offline", "dropped offline (offline queue full)", "count"),
    ("resent", "QoS 1 retransmissions after a reconnect", "count"),
    ("puback_p50_ms", "publish to PUBACK p50 (QoS 1)", "ms"),
    ("puback_p95_ms", "publish to PUBACK p95", "ms"),
    ("puback_p99_ms", "publish to PUBACK p99", "ms"),
    ("puback_max_ms", "publish to PUBACK max", "ms"),
    ("sas_renewals", "SAS token renewals (reconnects before expiry)", "count"),
    ("redispatched_devices", "users re-dispatched after a lost worker (never connected)", "count"),
    ("sink_disconnects", "sink disconnects", "count"),
    ("sink_reconnects", "sink reconnects", "count"),
    ("workers", "worker processes reported", "count"),
    ("drain", "drain", "text"),
    ("complete", "complete", "text"),
)

#: More figures shown only when not zero: a run without batched outputs or an extract hook does not mention them.
_NONZERO_FIGURES = frozenset({"batched", "extract_errors"})


def figures_section(result: Mapping[str, Any]) -> str:
    """The key figures as cards (the outage's too when devices disconnected), the rest in a folded table."""
    cards = []
    outage = any((finite(result.get(key)) or 0) > 0 for key in ("disconnects", "reconnects", "dropped_offline"))
    for key, label, unit in _KEY_FIGURES + (_OUTAGE_FIGURES if outage else ()):
        value = result.get(key)
        text = format_in_unit(value, unit)
        alert = key in ("lost", "loss", "duplicates", *_OUTAGE_ALERTS) and (finite(value) or 0) > 0
        css = "fig alert" if alert else "fig"
        cards.append(f'<div class="{css}" data-key="{key}"><dt>{esc(label)}</dt><dd>{esc(text)}</dd></div>')
    rows = []
    for key, label, unit in _MORE_FIGURES:
        if key not in result or (key in _NONZERO_FIGURES and not finite(result.get(key))):
            continue
        value = result.get(key)
        text = format_plain(value) if unit == "text" else format_in_unit(value, unit)
        rows.append([label, text])
    more = data_table("More figures", ["figure", "value"], rows) if rows else ""
    refusals = read_publish_refusals(result)
    refused = (
        f'<p class="summary" id="publish-refused">publish refused: {esc(reason_counts_text(refusals))}</p>'
        if refusals
        else ""
    )
    return (
        '<section id="figures"><h2>Key figures</h2>'
        f'<dl class="figures">{"".join(cards)}</dl>{refused}'
        f"<details><summary>More figures</summary>{more}</details></section>"
    )


def losses_section(result: Mapping[str, Any]) -> str:
    """The devices with the most lost messages and their missing seq ranges (empty without losses)."""
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
        rows.append([device, format_count(lost), ", ".join(texts) or NO_VALUE])
    headers = ["device", "lost", "missing seqs"]
    table = data_table("Devices with the most lost messages", headers, rows, text_columns=(0, 2))
    return f'<section id="losses"><h2>Lost messages by device</h2>{table}</section>'


def disconnects_section(result: Mapping[str, Any]) -> str:
    """The devices' unexpected disconnects by reason, and what reconnecting took (empty without disconnects)."""
    reasons = read_disconnect_reasons(result)
    disconnects = finite(result.get("disconnects")) or 0
    if not reasons and disconnects <= 0:
        return ""
    reconnects = finite(result.get("reconnects")) or 0
    summary = f"{format_count(disconnects)} unexpected disconnect(s), {format_count(reconnects)} reconnect(s)"
    if reconnects > 0:
        summary += (
            f"; disconnect to CONNACK p50 {format_ms(result.get('reconnect_p50_ms'))}, "
            f"p99 {format_ms(result.get('reconnect_p99_ms'))}, max {format_ms(result.get('reconnect_max_ms'))}"
        )
    offline = finite(result.get("offline_device_s"))
    if offline:
        summary += f"; {format_in_unit(offline, 'device_s')} offline"
    rows = [[reason, format_count(count)] for reason, count in reasons]
    table = data_table("Device disconnects by reason", ["reason", "disconnects"], rows)
    return f'<section id="disconnects"><h2>Disconnects</h2><p class="summary">{esc(summary)}.</p>{table}</section>'


_STAGE_COLUMNS = (
    ("label", "stage"),
    ("sent", "sent"),
    ("received", "received"),
    ("lost", "lost"),
    ("loss", "loss"),
    ("p50_delay_ms", "p50 delay"),
    ("p95_delay_ms", "p95 delay"),
    ("p99_delay_ms", "p99 delay"),
    ("max_delay_ms", "max delay"),
    ("throughput_per_s", "throughput"),
    ("lateness_p99_ms", "lateness p99"),
)


def stages_section(result: Mapping[str, Any]) -> str:
    """A run in stages: one row per stage, each accounted by due time (empty for a run of one stage)."""
    raw = result.get("stages")
    if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes)):
        return ""
    stages = [stage for stage in raw if isinstance(stage, Mapping)]
    if len(stages) < 2:
        return ""
    rows = [[_stage_cell(key, stage.get(key)) for key, _ in _STAGE_COLUMNS] for stage in stages]
    caption = "Each stage's messages, by the time they were due (the stages add up to the run)"
    table = data_table(caption, [header for _, header in _STAGE_COLUMNS], rows)
    return f'<section id="stages"><h2>Stages</h2>{table}</section>'


def _stage_cell(key: str, value: Any) -> str:
    if key == "label":
        return shown_text(value)
    if key == "loss" and finite(value) is not None:
        return format_percent(float(value))
    return format_by_key(key, value)


def workers_section(result: Mapping[str, Any]) -> str:
    """One folded table row per load generator worker process (empty without worker stats)."""
    stats = result.get("worker_stats")
    if not isinstance(stats, Sequence) or isinstance(stats, (str, bytes)) or not stats:
        return ""
    workers = [redact_settings(item) for item in stats if isinstance(item, Mapping)]
    keys: list[str] = []
    for worker in workers:
        keys.extend(key for key in worker if key not in keys)
    rows = [[format_by_key(key, worker.get(key)) for key in keys] for worker in workers]
    headers = [key.replace("_", " ") for key in keys]
    table = data_table("Load generator worker processes", headers, rows, text_columns=())
    return (
        f'<section id="workers"><details><summary>Worker processes ({len(workers)})</summary>{table}</details>'
        "</section>"
    )


def settings_section(result: Mapping[str, Any]) -> str:
    """Every setting, secrets masked, with where its value came from."""
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
        source_text = NO_VALUE if source is None else str(redact_value(str(source)))
        rows.append(
            f'<tr data-setting="{esc(key)}"><th scope="row"><code>{esc(key)}</code></th>'
            f"<td><code>{esc(format_plain(value))}</code></td><td>{esc(source_text)}</td></tr>"
        )
    return (
        head + '<table class="settings" id="settings-table"><caption>Every setting and where its value came from'
        '</caption><thead><tr><th scope="col">setting</th><th scope="col">value</th><th scope="col">source</th>'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table></section>"
    )


def messages_section(result: Mapping[str, Any]) -> str:
    """The run's warnings and errors, secrets masked."""
    return _message_list("warnings", "Warnings", shown_texts(result.get("warnings")), "warn") + _message_list(
        "errors", "Errors", shown_texts(result.get("errors")), "bad"
    )


def _message_list(section_id: str, title: str, texts: Sequence[str], css_class: str) -> str:
    out = [f'<section id="{section_id}"><h2>{title}</h2>']
    if texts:
        out.append(f'<ul class="messages {css_class}">')
        out.extend(f"<li>{esc(text)}</li>" for text in texts)
        out.append("</ul>")
    else:
        out.append(f'<p class="empty">No {title.lower()}.</p>')
    out.append("</section>")
    return "".join(out)


