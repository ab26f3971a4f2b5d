"""Figures of a run as text, the same way wherever they are shown (SLO messages, terminal, HTML).

Pure: stdlib only, no pytest.  Every function takes what a result dict may
hold (a number, ``None``, NaN, a bool, a string) and never raises for it;
a figure with no value shows as :data:`NO_VALUE`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

#: Shown for a figure with no value (None, NaN, missing).
NO_VALUE = "\u2013"


def finite(value: Any) -> float | None:
    """A finite float, or None for None / NaN / inf / bool / anything not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def format_percent(fraction: float) -> str:
    """A fraction (a loss) as a percentage with 3 decimals: ``0.0025`` -> ``"0.250%"``."""
    percent = fraction * 100
    text = f"{percent:.3f}"
    if percent != 0 and math.isfinite(percent) and float(text) == 0:
        text = f"{percent:.2g}"  # a loss too small for 3 decimals is still not zero
    return f"{text}%"


def format_fraction(value: Any) -> str:
    """:func:`format_percent`, or the dash when there is no value."""
    number = finite(value)
    return NO_VALUE if number is None else format_percent(number)


def format_count(value: Any) -> str:
    """``12,345``; a count that is not whole (a mean) keeps one decimal."""
    number = finite(value)
    if number is None:
        return NO_VALUE
    return f"{int(number):,}" if number.is_integer() else f"{number:,.1f}"


def format_ms(value: Any) -> str:
    """A delay in ms, with the decimals its size deserves: ``1,234 ms``, ``12.3 ms``, ``1.23 ms``, ``0.123 ms``."""
    number = finite(value)
    if number is None:
        return NO_VALUE
    size = abs(number)
    if size >= 1000:
        text = f"{number:,.0f}"
    elif size >= 10:
        text = f"{number:.1f}"
    elif size >= 1 or size == 0:
        text = f"{number:.2f}"
    else:
        text = f"{number:.3f}"
    return f"{text} ms"


def format_rate(value: Any) -> str:
    """A rate per second: ``1,234.5/s``."""
    number = finite(value)
    return NO_VALUE if number is None else f"{number:,.1f}/s"


def format_bytes(value: Any) -> str:
    """A size in binary units: ``12.5 MiB``."""
    number = finite(value)
    if number is None:
        return NO_VALUE
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(number) >= size:
            return f"{number / size:,.1f} {unit}"
    return f"{number:,.0f} B"


def format_in_unit(value: Any, unit: str) -> str:
    """A value in an SLO unit: ``ms``, ``fraction``, ``per_s``, ``device_s`` or ``count``."""
    if unit == "ms":
        return format_ms(value)
    if unit == "fraction":
        return format_fraction(value)
    if unit == "per_s":
        return format_rate(value)
    number = finite(value)
    if number is None:
        return NO_VALUE
    if unit == "device_s":
        return f"{number:,.1f} device-s"
    return f"{int(number):,}" if number.is_integer() else f"{number:,g}"


def format_plain(value: Any) -> str:
    """Any JSON value as short text (None: the dash)."""
    if value is None:
        return NO_VALUE
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            return NO_VALUE
        return f"{value:.0f}" if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def format_by_key(key: str, value: Any) -> str:
    """Format a figure of a generic table by what its name says it is (``_ms``, ``bytes``, ``per_s``...)."""
    if finite(value) is None:
        return format_plain(value)
    if key.endswith("_ms"):
        return format_ms(value)
    if "bytes" in key:
        return format_bytes(value)
    if key.endswith("percent"):
        return f"{float(value):.1f}%"
    if key.endswith("per_s"):
        return format_rate(value)
    return format_count(value)
