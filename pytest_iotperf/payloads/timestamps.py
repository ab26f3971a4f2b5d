"""ISO 8601 timestamps of messages, cheaply: the date and time of day are formatted once per second.

All devices of a worker send within the same few seconds, so one shared
cache hits almost always, and a timestamp costs a divmod and an f-string.
"""

from __future__ import annotations

import time
from typing import Final

__all__ = ["iso_json"]

#: (second since the epoch, its JSON text up to the fraction: ``"2026-12-03T14:32:05.``); one tuple, so a
#: reader never sees the second of one entry with the text of another.
_last: tuple[int, str] = (-1, "")
#: The milliseconds and the end of the string: an index is cheaper than formatting.
_MILLIS: Final = tuple(f'{ms:03d}Z"' for ms in range(1000))


def iso_json(at_us: int) -> str:
    """``"2026-12-03T14:32:05.123Z"`` (quoted: a JSON string), UTC, in ms, of ``at_us`` µs since the epoch."""
    global _last
    second, micro = divmod(at_us, 1_000_000)
    cached_second, prefix = _last
    if second != cached_second:
        prefix = '"' + time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) + "."
        _last = (second, prefix)
    return prefix + _MILLIS[micro // 1000]
