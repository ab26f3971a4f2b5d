"""Small process hygiene helpers for the child processes of a run (no locust, no gevent)."""

from __future__ import annotations

import ctypes
import ctypes.util
import resource
import signal
import sys

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


def raise_nofile_limit() -> int:
    """Raise the soft open-files limit to the hard limit: one socket per device."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return int(hard)
        except (ValueError, OSError):
            pass
    return int(soft)
