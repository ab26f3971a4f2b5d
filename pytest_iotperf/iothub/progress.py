"""A progress display for long registry runs: a redrawn bar on a terminal, plain lines otherwise (CI logs)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["ProgressBar"]


class ProgressBar:
    """``bar(done, total)`` after each step; ``bar.close()`` at the end.

    On a terminal: ``provision [#########-----------]  450/1000 devices  812/s``, redrawn at most
    10 times a second. Otherwise one line at the start, at most one every ``plain_every_s`` and one at
    the end, so a CI log stays short.
    """

    def __init__(
        self,
        label: str,
        stream: TextIO,
        *,
        tty: bool | None = None,
        width: int = 30,
        plain_every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self._stream = stream
        self._tty = stream.isatty() if tty is None else tty
        self._width = width
        self._plain_every_s = plain_every_s
        self._clock = clock
        self._started = clock()
        self._last_shown: float | None = None
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        now = self._clock()
        final = done >= total
        if self._tty:
            if not final and self._last_shown is not None and now - self._last_shown < 0.1:
                return
            self._stream.write("\r" + self._bar(done, total, now))
            self._drawn = True
        else:
            if not final and self._last_shown is not None and now - self._last_shown < self._plain_every_s:
                return
            self._stream.write(f"{self.label}: {self._counts(done, total, now)}\n")
        self._stream.flush()
        self._last_shown = now

    def close(self) -> None:
        if self._tty and self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False

    def _counts(self, done: int, total: int, now: float) -> str:
        elapsed = now - self._started
        rate = f"  {done / elapsed:.0f}/s" if elapsed > 0 and done else ""
        return f"{done:>{len(str(total))}}/{total} devices{rate}"

    def _bar(self, done: int, total: int, now: float) -> str:
        filled = self._width * done // total if total else self._width
        return f"{self.label} [{'#' * filled}{'-' * (self._width - filled)}] {self._counts(done, total, now)}"
