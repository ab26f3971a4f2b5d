"""Durations as people write them (``30s``, ``2m``, ``1m30s``, ``500ms``) and back.

Pure stdlib, so the SLO grammar, stage plans and due-time figures can use it
without importing a client library (``setting_parsers`` pulls in paho).
"""

from __future__ import annotations

import math
import re

__all__ = ["format_duration", "parse_duration", "window_label"]

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h)", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Parse ``30s``, ``2m``, ``1m30s``, ``500ms``, ``1.5h`` or a bare number of seconds."""
    raw = text.strip()
    if not raw:
        raise ValueError("expected a duration such as 30s, 2m or 1m30s, got an empty value")
    try:
        seconds = float(raw)
    except ValueError:
        pos = 0
        seconds = 0.0
        for match in _DURATION_PART.finditer(raw):
            if match.start() != pos and raw[pos : match.start()].strip():
                break
            seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2).lower()]
            pos = match.end()
        if pos == 0 or raw[pos:].strip():
            raise ValueError(f"expected a duration such as 30s, 2m, 1m30s or 500ms, got {text!r}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"expected a non-negative duration, got {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """The inverse of :func:`parse_duration` for display (``90`` -> ``1m30s``)."""
    if seconds < 1 and seconds > 0:
        return f"{seconds * 1000:g}ms"
    minutes, rest = divmod(seconds, 60)
    if minutes and rest:
        return f"{int(minutes)}m{rest:g}s"
    if minutes:
        return f"{int(minutes)}m"
    return f"{rest:g}s"


def window_label(start_s: float, end_s: float) -> str:
    """``[3m,4m)``: how verdicts and reports name an interval of due time from T0 (a window, a stage)."""
    return f"[{format_duration(start_s)},{format_duration(end_s)})"
