"""Small process hygiene helpers for the child processes of a run (no locust, no gevent).

What a child says to its parent is ``child_protocol``'s.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import resource
import signal
import sys
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies, so no child outlives pytest."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


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
