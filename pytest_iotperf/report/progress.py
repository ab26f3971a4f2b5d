"""Live progress of a run: in place on a TTY, one line every ~10 s otherwise (CI logs stay readable)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

_LOG_INTERVAL_S = 10.0


def format_progress(state: dict[str, Any], sent_per_s: float | None, received_per_s: float | None) -> str:
    """One human line for a progress snapshot."""
    head = f"iotperf {state.get('run_id', '')}:"
    phase = state.get("phase")
    devices = int(state.get("devices", 0))
    if phase == "connecting":
        failed = int(state.get("connect_failed", 0))
        tail = f", {failed} gave up" if failed else ""
        return f"{head} connecting {state.get('connected', 0)}/{devices} devices{tail}"
    if phase == "publishing":
        sent, received = int(state.get("sent", 0)), int(state.get("received", 0))
        p95 = state.get("p95_delay_ms")
        p95_text = f"{p95:.1f} ms" if isinstance(p95, (int, float)) else "-"
        elapsed = float(state.get("elapsed_s", 0.0))
        duration = float(state.get("duration_s", 0.0))
        rates = ""
        if sent_per_s is not None and received_per_s is not None:
            rates = f" | {sent_per_s:,.0f}/s out, {received_per_s:,.0f}/s in"
        return (
            f"{head} {elapsed:4.0f}s of {duration:g}s | {state.get('connected', 0)}/{devices} connected | "
            f"sent {sent:,} received {received:,} (not yet seen {max(sent - received, 0):,}){rates} | p95 {p95_text}"
        )
    if phase == "draining":
        return f"{head} draining: waiting for {int(state.get('sent', 0)):,} messages to arrive"
    return f"{head} starting {devices} devices"


class ProgressReporter:
    """Turns progress snapshots into terminal output."""

    def __init__(self, write: Callable[[str], None], *, tty: bool, interval_s: float = _LOG_INTERVAL_S) -> None:
        self._write = write
        self._tty = tty
        self._interval_s = interval_s
        self._last_line_at = 0.0
        self._last_phase: object = None
        self._width = 0
        self._previous: tuple[float, int, int] | None = None
        self._rates: tuple[float, float] | None = None

    def __call__(self, state: dict[str, Any]) -> None:
        now = time.monotonic()
        sent, received = int(state.get("sent", 0)), int(state.get("received", 0))
        if self._previous is not None and now - self._previous[0] >= 1.0:
            elapsed = now - self._previous[0]
            self._rates = ((sent - self._previous[1]) / elapsed, (received - self._previous[2]) / elapsed)
            self._previous = (now, sent, received)
        elif self._previous is None:
            self._previous = (now, sent, received)
        rates = self._rates or (None, None)
        line = format_progress(state, *rates)
        if self._tty:
            self._write("\r" + line.ljust(self._width))
            self._width = len(line)
            return
        phase = state.get("phase")
        if phase != self._last_phase or now - self._last_line_at >= self._interval_s:
            self._last_phase = phase
            self._last_line_at = now
            self._write(line + "\n")

    def close(self) -> None:
        if self._tty and self._width:
            self._write("\n")
            self._width = 0
