"""Reading a run's result dict for the HTML report, whatever it holds.

The page is built from ``RunResult.to_dict()`` or the same dict loaded back
from a JSON file, possibly from an older version or edited by hand: every
reader here tolerates missing keys, ``None``, NaN and wrong types, and masks
secrets in the texts it hands out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_iotperf.message_spec import DEFAULT_HEADER_KEY
from pytest_iotperf.metrics import DelayHistogram
from pytest_iotperf.numbers import finite, format_in_unit, format_plain
from pytest_iotperf.secrets import redact_text


def shown_text(value: Any) -> str:
    """A text value fit for the page: secrets masked, ``None`` as empty."""
    return "" if value is None else redact_text(str(value))


def shown_texts(value: Any) -> list[str]:
    """A list of messages (or one) fit for the page, secrets masked."""
    if isinstance(value, str):
        return [redact_text(value)]
    if isinstance(value, Iterable):
        return [redact_text(str(item)) for item in value]
    return []


def read_histogram(result: Mapping[str, Any], key: str) -> tuple[DelayHistogram | None, str | None]:
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
class TimelinePoint:
    """One slot of the run's timeline: seconds since T0, messages sent and received, p95 delay, devices connected."""

    t_s: float
    sent: int
    received: int
    p95_ms: float | None
    connected: int | None = None  # at the slot's end; None in results from before reconnects


def read_timeline(result: Mapping[str, Any]) -> list[TimelinePoint]:
    """The readable slots of ``result["timeline"]``, in time order."""
    raw = result.get("timeline")
    if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes)):
        return []
    points = []
    for item in raw:
        if not isinstance(item, Mapping):
            continue
        t_s = finite(item.get("t_s"))
        if t_s is None:
            continue
        points.append(
            TimelinePoint(
                t_s=t_s,
                sent=int(finite(item.get("sent")) or 0),
                received=int(finite(item.get("received")) or 0),
                p95_ms=finite(item.get("p95_delay_ms")),
                connected=None if (connected := finite(item.get("connected"))) is None else int(connected),
            )
        )
    points.sort(key=lambda point: point.t_s)
    return points


def read_disconnect_reasons(result: Mapping[str, Any]) -> list[tuple[str, int]]:
    """``result["disconnect_reasons"]`` as (reason, count), most frequent first, reasons' secrets masked."""
    return read_reason_counts(result, "disconnect_reasons")


def read_publish_refusals(result: Mapping[str, Any]) -> list[tuple[str, int]]:
    """``result["publish_errors_by_reason"]`` (MQTT 5 PUBACK refusals) as (reason, count), most frequent first."""
    return read_reason_counts(result, "publish_errors_by_reason")


def reason_counts_text(counts: Sequence[tuple[str, int]]) -> str:
    """``0x87 not authorized x12, 0x97 quota exceeded x3``: one line for a summary."""
    return ", ".join(f"{reason} x{count}" for reason, count in counts)


def read_reason_counts(result: Mapping[str, Any], key: str) -> list[tuple[str, int]]:
    """A ``reason -> count`` mapping of the result as (reason, count), most frequent first, secrets masked.

    Counts that are not positive numbers are left out (a hand-edited or older file).
    """
    raw = result.get(key)
    if not isinstance(raw, Mapping):
        return []
    counts: dict[str, int] = {}
    for reason, count in raw.items():
        number = finite(count)
        if number is not None and number > 0:
            text = shown_text(reason)
            counts[text] = counts.get(text, 0) + int(number)
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def read_message_setup(result: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What ran, message-wise, as (label, text): the payload, where the header travelled, MQTT version and
    transport, and the seed.

    Only what differs from the defaults (the fixed payload, the header in the body under ``_iotperf``, MQTT
    3.1.1 over TCP), so a default run's page head stays as it was; the seed whenever the run recorded one
    (it reproduces the payload generators' values).
    """
    raw = result.get("settings")
    # Not redact_settings: it masks every value whose name holds "key" (header_key); each text shown is masked.
    settings: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    version = str(settings.get("mqtt_version") or "3.1.1")
    out: list[tuple[str, str]] = []
    payload = settings.get("payload_file")
    if payload:
        out.append(("payload", shown_text(payload)))
    key = settings.get("header_key")
    if settings.get("header") == "properties":
        out.append(("header", "in MQTT 5 user properties" if version == "5" else "in the property bag"))
    elif key and key != DEFAULT_HEADER_KEY:
        out.append(("header", f"in the body under {shown_text(key)}"))
    transport = settings.get("transport")
    if version != "3.1.1" or settings.get("topic_alias") or transport not in (None, "tcp"):
        text = shown_text(version) + (" with topic alias" if settings.get("topic_alias") else "")
        if transport == "websockets":
            path = settings.get("ws_path")
            text += " over WebSockets" + (f" ({shown_text(path)})" if path else "")
        elif transport not in (None, "tcp"):
            text += f" over {shown_text(transport)}"
        out.append(("MQTT", text))
    seed = settings.get("seed")
    if seed is not None and not isinstance(seed, bool):
        out.append(("seed", shown_text(seed)))
    return out


def read_slos(result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The SLO verdicts of ``result["slos"]`` (each a mapping)."""
    raw = result.get("slos")
    if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes)):
        return []
    return [item for item in raw if isinstance(item, Mapping)]


def slo_text(slo: Mapping[str, Any]) -> str:
    """The SLO as written (``loss < 1%``), or rebuilt from its parts."""
    text = slo.get("slo")
    if text:
        return str(text)
    return f"{slo.get('metric', '?')} {slo.get('op', '?')} {format_plain(slo.get('threshold'))}"


def measured_text(slo: Mapping[str, Any]) -> str:
    """What the SLO measured, as text (``no data`` when nothing was)."""
    text = slo.get("measured_text")
    if text:
        return str(text)
    measured = slo.get("measured")
    return "no data" if finite(measured) is None else format_in_unit(measured, str(slo.get("unit", "")))
