"""Child processes of a run, owned by the pytest process (or a script driving a run).

Every child talks JSON lines on stdout and logs to a file.  A ``ProcessGroup``
stops every child it started, on success, failure, Ctrl-C and SIGTERM: children
run in their own session so a terminal's Ctrl-C reaches pytest first and pytest
stops them in order; a parent-death signal set before exec
(``process_guard.parent_death_preexec``) covers a pytest that is killed outright.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from pytest_iotperf.errors import IotPerfError
from pytest_iotperf.process_guard import on_long_lived_thread, parent_death_preexec

_PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)
_STOP_GRACE_S = 5.0


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (bind to 0, read, release)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def child_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child: ours, plus this package importable from a source checkout."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = _PACKAGE_PARENT + (os.pathsep + path if path else "")
    env.update(extra or {})
    return env


def read_json(path: Path) -> dict[str, Any] | None:
    """A report a child wrote (atomically); None when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class ChildExited(IotPerfError):
    """A child process ended or went silent before the event we waited for."""


class Child:
    """One child process whose stdout is a stream of JSON events."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        stdin: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._log: IO[str] = open(log_path, "w")  # noqa: SIM115  closed in stop()
        self.process = on_long_lived_thread(
            lambda: subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self._log,
                text=True,
                bufsize=1,
                env=child_environment(env),  # secrets travel here, never in argv or spec files
                start_new_session=True,
                # Dies with pytest from the first instruction on, even a SIGKILLed pytest.
                preexec_fn=parent_death_preexec(),
            )
        )
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read_stdout, name=f"iotperf-{name}-stdout", daemon=True)
        self._reader.start()

    @classmethod
    def python_module(
        cls,
        name: str,
        module: str,
        args: Iterable[str],
        log_path: Path,
        *,
        stdin: bool = False,
        env: dict[str, str] | None = None,
    ) -> Child:
        return cls(name, [sys.executable, "-m", module, *args], log_path, stdin=stdin, env=env)

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                self._log.write(f"[stdout] {line}\n")
                continue
            if isinstance(event, dict):
                self.events.put(event)
        self.events.put(None)  # end of stream

    def next_event(self, deadline: float) -> dict[str, Any]:
        """The next event before the monotonic ``deadline``; ChildExited on EOF or timeout."""
        remaining = deadline - time.monotonic()
        try:
            event = self.events.get(timeout=max(remaining, 0.0))
        except queue.Empty:
            raise ChildExited(f"{self.name} sent nothing for too long{self._tail()}") from None
        if event is None:
            self.events.put(None)  # keep EOF visible to later calls
            code = self.process.wait()
            raise ChildExited(f"{self.name} exited with code {code}{self._tail()}")
        return event

    def pending_events(self) -> list[dict[str, Any]]:
        """Events already received, without waiting (EOF stays queued for next_event)."""
        out: list[dict[str, Any]] = []
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return out
            if event is None:
                self.events.put(None)
                return out
            out.append(event)

    def wait_for(self, wanted: str, timeout_s: float) -> dict[str, Any]:
        """Skip events until ``wanted``; an ``error`` event raises with its message."""
        deadline = time.monotonic() + timeout_s
        while True:
            event = self.next_event(deadline)
            if event.get("event") == wanted:
                return event
            if event.get("event") == "error":
                raise ChildExited(f"{self.name}: {event.get('message')}")

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        except (OSError, ValueError) as exc:  # ValueError: stopped already (its stdin closed), e.g. by kill()
            raise ChildExited(f"{self.name} no longer reads its input: {exc}{self._tail()}") from None

    def alive(self) -> bool:
        return self.process.poll() is None

    def gone_reason(self) -> str | None:
        """Why this long-lived child is gone (``the NAME exited with code C during the run``); None while it runs."""
        code = self.process.poll()
        return None if code is None else f"the {self.name} exited with code {code} during the run"

    def stop(self, grace_s: float = _STOP_GRACE_S) -> None:
        """Terminate, wait, kill: the child is gone when this returns."""
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=1.0)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()

    def log_size(self) -> int:
        """Bytes in its log so far: where the next run's lines of a standing child begin."""
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def copy_log(self, since: int, destination: Path) -> None:
        """Its log from byte ``since`` on into ``destination`` (a standing child's lines of one run)."""
        with contextlib.suppress(OSError), open(self.log_path, "rb") as source, open(destination, "wb") as out:
            source.seek(since)
            shutil.copyfileobj(source, out)

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(ValueError):  # already closed
            self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _tail(self) -> str:
        tail = self.log_tail()
        return f"; last lines of its log:\n{tail}" if tail else ""


def start_service(
    name: str, module: str, args: Iterable[str], log_path: Path, error: type[IotPerfError], ready_s: float
) -> tuple[Child, dict[str, Any]]:
    """A long-lived server child (an embedded endpoint or hub) and its ``ready`` event; the caller stops it.

    Its stdin stays open: the server ends when it closes.

    Raises:
        error: it did not get ready (``the NAME did not start: ...``); the child is stopped.
    """
    child = Child.python_module(name, module, args, log_path, stdin=True)
    try:
        return child, child.wait_for("ready", ready_s)
    except ChildExited as exc:
        child.stop()
        raise error(f"the {name} did not start: {exc}") from None


class ProcessGroup:
    """Owns children and stops them all on exit, whatever happened."""

    def __init__(self) -> None:
        self.children: list[Child] = []

    def add(self, child: Child) -> Child:
        self.children.append(child)
        return child

    def release(self, children: Iterable[Child]) -> None:
        """Hand ``children`` back to their owner (standing processes): this group no longer stops them."""
        released = set(map(id, children))
        self.children = [child for child in self.children if id(child) not in released]

    def stop_all(self) -> None:
        # Terminate everyone first, then wait: a fleet of workers stops in
        # parallel instead of one grace period after another.
        for child in self.children:
            if child.alive():
                child.process.terminate()
        for child in reversed(self.children):
            child.stop()

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_all()
