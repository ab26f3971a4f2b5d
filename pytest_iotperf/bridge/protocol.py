"""The JSON-lines protocol the run's child processes speak with their parent.

Events go to stdout, one JSON object a line (``{"event": "ready"}``, ``progress``,
``done``, ``error``); commands come on stdin the same way.  Reports are
written to a temporary file and renamed, so the parent never reads half a
report.  Shared by the bridge and the Event Hubs sink.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

_log = logging.getLogger(__name__)


class EventWriter:
    """Writes protocol events to stdout; safe to call from any thread (progress tickers, SDK callbacks)."""

    def __init__(self, stream: IO[str] | None = None, scrub: Callable[[str], str] | None = None) -> None:
        self._stream = stream
        self._scrub = scrub
        self._lock = threading.Lock()

    def __call__(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, **fields})
        if self._scrub is not None:
            # Last line of defence: whatever a caller put in a message, no secret leaves the process.
            line = self._scrub(line)
        stream = self._stream or sys.stdout
        with self._lock:
            try:
                stream.write(line + "\n")
                stream.flush()
            except (BrokenPipeError, ValueError):
                pass  # the parent is gone or stopped reading; nothing left to tell it


def commands(stream: IO[str] | None = None) -> Iterator[dict[str, Any]]:
    """Yield the JSON objects read from stdin until EOF; lines that are not objects are logged and skipped."""
    for line in stream or sys.stdin:
        text = line.strip()
        if not text:
            continue
        try:
            command = json.loads(text)
        except ValueError:
            _log.warning("ignored a command line that is not JSON (%d characters)", len(text))
            continue
        if isinstance(command, dict):
            yield command
        else:
            _log.warning("ignored a command that is not a JSON object")


def write_json_atomically(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document))
    os.replace(tmp, path)


class Ticker:
    """Calls ``tick`` about every ``interval_s`` on a daemon thread until ``stop``."""

    def __init__(self, tick: Callable[[], None], interval_s: float = 1.0, name: str = "iotperf-progress") -> None:
        self._tick = tick
        self._interval_s = interval_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Ticker:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stopped.wait(self._interval_s):
            self._tick()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
