"""The JSON-lines protocol every child process of a run speaks with its parent.

Events go to stdout, one JSON object a line (``{"event": "ready"}``,
``progress``, ``done``, ``error``, ...); commands come on stdin the same way
(``{"cmd": "drain", ...}``, ``{"cmd": "stop", ...}``).  The parent's side is
``processes.Child``.  Spoken by the MQTT and Event Hubs sinks, the platform
bridge, the Locust master and the embedded Event Hubs endpoint.  Reports go
through files (``files.write_json_atomically``), not through these lines.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from typing import IO, Any

from pytest_iotperf.secrets import Scrubber

_log = logging.getLogger(__name__)


class EventWriter:
    """Writes protocol events to stdout; safe to call from any thread (progress tickers, SDK callbacks).

    With ``scrub`` (a ``secrets.Scrubber`` taught the child's secrets), every
    line passes it before it leaves the process.
    """

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


def scrubbing_event_writer(*secrets: str | None) -> EventWriter:
    """An EventWriter whose lines lose ``secrets`` (those given; None and "" are skipped) and secret shapes."""
    scrubber = Scrubber()
    for secret in secrets:
        if secret:
            scrubber.add(secret)
    return EventWriter(scrub=scrubber)
