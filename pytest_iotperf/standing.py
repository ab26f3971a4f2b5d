"""Child processes that stay up across the runs of a session: the Locust fleet and the MQTT sink.

Starting a Locust master and its workers (each importing locust, gevent and
zmq, then joining) and a sink costs a couple of seconds per run; a session of
many short perf tests, or a capacity search, would pay it every time.  A
``StandingProcesses`` owned by the session lends a run its processes when the
run's key matches the ones standing (same workers, master address, child
environment; for the sink the same connection), and starts fresh ones
otherwise.  Each run still has its own run id, spec and report.

A run hands them back when it ends: after a run that went well they stand
for the next; after a failed, aborted or interrupted one they are stopped
(and that run's lines of their logs are copied into its working directory,
where a broken run's logs are kept), so a broken run never poisons the next.
``StandingProcesses.one_run()`` is the owner of a run without a session
(scripts, benchmarks): the same path, but every process is started in the
run's directory and stopped with the run.  ``stop()`` at the session's end
stops whatever stands; no process outlives the session (and each dies with
its parent anyway: ``process_guard``).
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from pytest_iotperf.processes import Child, ChildExited, ProcessGroup, child_environment

T = TypeVar("T")

#: Set by pytest for each test phase: never a reason for fresh processes.
_VOLATILE_ENV = frozenset({"PYTEST_CURRENT_TEST"})
_QUIT_GRACE_S = 3.0

StartProcesses = Callable[[ProcessGroup, Path, bool], tuple[T, list[Child]]]
"""Starts a kind of processes: (the run's group, the directory for their logs, standing?) -> (handle, children).

It adds every child to the group as it starts it (an interrupt meanwhile then stops it)."""


def environment_digest(extra: dict[str, str] | None = None) -> str:
    """A digest of the environment a child would get: standing children started under another are not reused.

    (Tests and users change the environment between runs; secrets are in it, hence only a digest.)
    """
    env = child_environment(extra)
    text = "\0".join(f"{k}={v}" for k, v in sorted(env.items()) if k not in _VOLATILE_ENV)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Lease(Generic[T]):
    """Processes lent to one run; given back with :meth:`StandingProcesses.give_back`."""

    kind: str
    key: Hashable
    handle: T
    children: list[Child]
    standing: bool  # False: started for this run only (stopped with it)
    reused: bool = False  # True: they served an earlier run
    marks: list[int] = field(default_factory=list)  # each child's log size when this run began

    def alive(self) -> bool:
        return all(child.alive() for child in self.children)


class StandingProcesses:
    """The processes a session keeps between runs, one set per kind (``fleet``, ``sink``).

    Thread-safe: runs execute on their own threads, and two runs may overlap (the second then
    gets processes of its own for its whole run).
    """

    def __init__(self, *, keep: bool = True) -> None:
        self.keep = keep
        self._lock = threading.Lock()
        self._idle: dict[str, Lease[object]] = {}
        self._busy: set[str] = set()
        self._root: Path | None = None
        self._generation = 0
        self._stopped = False

    @classmethod
    def one_run(cls) -> StandingProcesses:
        """The owner of a single run: fresh processes in the run's directory, stopped with the run."""
        return cls(keep=False)

    def lease(
        self,
        kind: str,
        key: Hashable,
        start: StartProcesses[T],
        group: ProcessGroup,
        workdir: Path,
        usable: Callable[[T], bool] = lambda handle: True,
    ) -> Lease[T]:
        """The standing ``kind`` processes when their key matches and they are ``usable``, else fresh ones.

        The children are added to ``group`` (an interrupt stops them).  Raises what ``start`` raises.
        """
        reuse: Lease[T] | None = None
        stale: Lease[object] | None = None
        with self._lock:
            stand = self.keep and not self._stopped and kind not in self._busy
            if stand:
                self._busy.add(kind)
                idle = self._idle.pop(kind, None)
                if idle is not None and idle.key == key and idle.alive():
                    reuse = idle  # type: ignore[assignment]  # a kind's handle type never changes
                else:
                    stale = idle  # another key (or dead): replaced by fresh ones
        if stale is not None:
            _retire(stale)
        try:
            if reuse is not None:
                for child in reuse.children:
                    group.add(child)
                if reuse.alive() and usable(reuse.handle):
                    reuse.reused = True
                    reuse.marks = [child.log_size() for child in reuse.children]
                    return reuse
                group.release(reuse.children)
                _retire(reuse)
            log_dir = self._log_dir() if stand else workdir
            handle, children = start(group, log_dir, stand)
        except BaseException:
            if stand:
                with self._lock:
                    self._busy.discard(kind)
            raise
        return Lease(kind, key, handle, children, standing=stand, marks=[0] * len(children))

    def give_back(self, lease: Lease[T], group: ProcessGroup, workdir: Path, *, healthy: bool) -> None:
        """The run is over: ``healthy`` standing processes stand for the next run; others are stopped.

        A standing set that is stopped leaves this run's lines of its logs in ``workdir``.
        """
        if not lease.standing:
            return  # the run's group stops them with the run
        with self._lock:
            self._busy.discard(lease.kind)
            keep = healthy and not self._stopped and lease.alive() and lease.kind not in self._idle
            if keep:
                group.release(lease.children)
                self._idle[lease.kind] = lease  # type: ignore[assignment]
                return
        for child, mark in zip(lease.children, lease.marks, strict=False):
            child.copy_log(mark, workdir / child.log_path.name)
        group.release(lease.children)
        _retire(lease)

    def discard(self, lease: Lease[T], group: ProcessGroup) -> None:
        """Stop a lease's processes now (a standing set that could not serve the run); ``group`` forgets them."""
        with self._lock:
            if lease.standing:
                self._busy.discard(lease.kind)
        group.release(lease.children)
        _retire(lease)

    def stop(self) -> None:
        """Stop every standing process (the session's end); later leases start one-run processes."""
        with self._lock:
            self._stopped = True
            idle = list(self._idle.values())
            self._idle.clear()
            root, self._root = self._root, None
        for lease in idle:
            _retire(lease)
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)

    def pids(self, kind: str) -> list[int]:
        """The pids of the ``kind`` processes standing idle now (empty when none): for tests and benchmarks."""
        with self._lock:
            idle = self._idle.get(kind)
            return [child.pid for child in idle.children] if idle is not None else []

    def _log_dir(self) -> Path:
        # One directory per started set: a fresh set never truncates the logs of the one it replaces.
        with self._lock:
            if self._root is None:
                self._root = Path(tempfile.mkdtemp(prefix="iotperf-standing-"))
            self._generation += 1
            path = self._root / f"set-{self._generation}"
        path.mkdir()
        return path


def _retire(lease: Lease[T]) -> None:
    """Ask the lease's first child (master or sink) to quit cleanly, then stop every child.

    The master quits its workers (remote ones included) and the sink ends its persistent session.
    """
    first = lease.children[0] if lease.children else None
    if first is not None and first.alive():
        with contextlib.suppress(ChildExited):
            first.send({"cmd": "quit"})
        with contextlib.suppress(subprocess.TimeoutExpired):
            first.process.wait(_QUIT_GRACE_S)
    _stop_all(lease.children)


def _stop_all(children: Iterable[Child]) -> None:
    group = ProcessGroup()
    for child in children:
        group.add(child)
    group.stop_all()


__all__ = ["Lease", "StandingProcesses", "environment_digest"]
