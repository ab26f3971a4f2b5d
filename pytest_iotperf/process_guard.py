"""Process hygiene for a run: children that die with their parent, open-files limits, signals that interrupt.

What a child says to its parent is ``child_protocol``'s.  No locust, no gevent, no pytest here.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import queue
import resource
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from pathlib import Path
from types import FrameType
from typing import TypeVar

_PR_SET_PDEATHSIG = 1
_T = TypeVar("_T")


def _prctl() -> Callable[..., int] | None:
    """libc's prctl, resolved once in the parent: a child between fork and exec must not dlopen."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    function: Callable[..., int] = libc.prctl
    return function


_PRCTL = _prctl()


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies, so no child outlives pytest.

    For children started by other means than :func:`parent_death_preexec` (a Python child
    calls it first thing; children started through ``processes.Child`` have it already).
    """
    if _PRCTL is not None:
        with contextlib.suppress(OSError):
            _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def parent_death_preexec() -> Callable[[], None] | None:
    """A ``Popen(preexec_fn=...)`` that makes the child die with this process, even a SIGKILLed one.

    Set between fork and exec, so it also covers a C program (mosquitto) and leaves no window
    in which the parent can die unnoticed.  Linux keeps the setting across exec unless the
    program is set-user-ID or changes its user (mosquitto as root is told ``user root``).
    Linux sends the signal when the *thread* that forked dies: start long-lived children
    through :func:`on_long_lived_thread`.  None where there is no prctl (Popen then forks as usual).
    """
    prctl = _PRCTL
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        # Nothing here may take a lock another thread held at fork time: a pre-resolved C call and two syscalls.
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl: nobody will ever stop this child
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


_spawn_jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
_spawner: threading.Thread | None = None
_spawner_lock = threading.Lock()


def _serve_spawn_jobs() -> None:
    while True:
        _spawn_jobs.get()()


def on_long_lived_thread(start: Callable[[], _T]) -> _T:
    """Run ``start`` (a ``Popen``) on the main thread or on one thread that lives as long as the process.

    A child set to die with its parent (:func:`parent_death_preexec`) is signalled when the
    thread that forked it ends: a session's broker first started from a short-lived thread
    (a run handle's) would be stopped with that thread.
    """
    if threading.current_thread() is threading.main_thread():
        return start()
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = threading.Thread(target=_serve_spawn_jobs, name="iotperf-spawner", daemon=True)
            _spawner.start()
    done: Future[_T] = Future()

    def job() -> None:
        try:
            done.set_result(start())
        except BaseException as exc:  # handed to the caller's thread, which re-raises it
            done.set_exception(exc)

    _spawn_jobs.put(job)
    return done.result()


#: Open files wanted per process: one socket per device, 20,000+ devices per worker.
WANTED_NOFILE = 1 << 17


def raise_nofile_limit(wanted: int = WANTED_NOFILE) -> int:
    """Raise the open-files limit as far as allowed; return the new soft limit. Never raises.

    One socket per device (and, in the broker, per connected device).  A
    privileged process (root, CAP_SYS_RESOURCE) also lifts its hard limit to
    ``wanted``; children inherit both.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, wanted))
            hard = wanted
    if soft == hard or soft == resource.RLIM_INFINITY:
        return int(soft)
    candidates: list[int] = []
    if hard != resource.RLIM_INFINITY:
        candidates.append(hard)
    else:
        # Linux refuses an infinite RLIMIT_NOFILE (the ceiling is fs.nr_open).
        with contextlib.suppress(OSError, ValueError):
            candidates.append(int(Path("/proc/sys/fs/nr_open").read_text().strip()))
        candidates.extend((1 << 20, 65536, 10240))
    for target in candidates:
        if target <= soft:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            continue
        break
    return int(resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def open_files_limit_of(pid: int) -> int | None:
    """The soft open-files limit of another process (Linux /proc), None where it cannot be read or is unlimited."""
    try:
        text = Path(f"/proc/{pid}/limits").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Max open files"):
            soft = line[len("Max open files") :].split()[0]
            return int(soft) if soft.isdigit() else None
    return None


#: Signals that stop pytest like a Ctrl-C: what ``timeout``, CI runners and Kubernetes send on cancel,
#: and a closed terminal.
TERMINATION_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGHUP)


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"{signal.Signals(signum).name} received")


def interrupt_on(signals: Iterable[signal.Signals] = TERMINATION_SIGNALS) -> Callable[[], None]:
    """Make ``signals`` raise KeyboardInterrupt in the main thread, as Ctrl-C does; returns the undo.

    Only where the signal still has its default action (someone else's handler stays), and
    only from the main thread (the only one Python lets set handlers).  The undo restores
    the default unless someone replaced our handler meanwhile.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    installed: list[signal.Signals] = []
    for signum in signals:
        with contextlib.suppress(OSError, ValueError):
            if signal.getsignal(signum) is signal.SIG_DFL:
                signal.signal(signum, _interrupt)
                installed.append(signum)

    def undo() -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in installed:
            with contextlib.suppress(OSError, ValueError):
                if signal.getsignal(signum) is _interrupt:
                    signal.signal(signum, signal.SIG_DFL)
        installed.clear()

    return undo


__all__ = [
    "TERMINATION_SIGNALS",
    "WANTED_NOFILE",
    "die_with_parent",
    "interrupt_on",
    "on_long_lived_thread",
    "open_files_limit_of",
    "parent_death_preexec",
    "raise_nofile_limit",
]
