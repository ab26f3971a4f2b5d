"""Open files a run needs, checked before any device connects (no locust here: the pytest side uses it too).

A device holds one socket in the worker that simulates it and one in the broker.  Past a
process's open-files limit, devices fail one by one with "Too many open files" over the
connect phase, and the run measures a smaller load than the test asked for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

# Besides its devices' sockets a worker holds ~13 descriptors (zmq to the master, its log,
# /proc/self/statm, epoll, pipes; measured on Linux with 100 devices); the rest is headroom.
WORKER_SPARE_FILES: Final = 50
# Besides one per device, the broker holds the sink's and the bridge's connections, its
# listener, log and epoll (~7 measured with mosquitto); the rest is headroom.
BROKER_SPARE_FILES: Final = 50


class NotEnoughOpenFiles(Exception):
    """The run asks for more devices than its processes may open sockets for."""


def worker_share(devices: int, workers: int) -> int:
    """The most devices one worker simulates: Locust hands users out evenly."""
    return math.ceil(devices / max(workers, 1))


def workers_needed(devices: int, open_files: int) -> int | None:
    """Workers that may each open ``open_files`` files it takes to simulate ``devices``; None: no number does."""
    per_worker = open_files - WORKER_SPARE_FILES
    return math.ceil(devices / per_worker) if per_worker > 0 else None


def worker_shortfall(devices: int, workers: int, limits: Sequence[int]) -> str | None:
    """Why ``workers`` workers with these open-files limits cannot hold ``devices``; None when they can.

    ``limits`` are the workers' own (soft, after raising it); a worker that did not say is left out.
    """
    if devices <= 0 or not limits:
        return None
    # Devices are spread evenly whatever each worker may open: the smallest limit is the one that binds.
    smallest = min(limits)
    share = worker_share(devices, workers)
    if share + WORKER_SPARE_FILES <= smallest:
        return None
    each = "each may" if len(set(limits)) == 1 else "the smallest may"
    needed = workers_needed(devices, smallest)
    if needed is None:
        return (
            f"{devices:,} devices cannot run here: a worker process may open only {smallest:,} files; "
            "raise the open-files limit (ulimit -n; the hard limit: ulimit -Hn, systemd LimitNOFILE, docker --ulimit)"
        )
    return (
        f"{devices:,} devices need at least {needed:,} worker processes here: {each} open {smallest:,} files "
        f"({_held(workers, share)}, plus ~{WORKER_SPARE_FILES} files of its own); run with --iot-workers {needed} "
        "(remote workers: --iot-expect-workers), or raise the hard open-files limit "
        "(ulimit -Hn, systemd LimitNOFILE, docker --ulimit)"
    )


def _held(workers: int, share: int) -> str:
    """``"1 worker would hold 30,000 devices"``, ``"2 workers would hold 15,000 devices each"``."""
    if workers == 1:
        return f"1 worker would hold {share:,} devices"
    return f"{workers:,} workers would hold {share:,} devices each"


def broker_shortfall(devices: int, open_files: int | None, description: str = "the embedded broker") -> str | None:
    """Why a broker that may open ``open_files`` files cannot hold ``devices`` clients; None if it can (or unknown)."""
    if open_files is None or devices <= 0 or devices + BROKER_SPARE_FILES <= open_files:
        return None
    return (
        f"{devices:,} devices need more open files than {description} may have ({open_files:,}): it holds "
        "one per device plus the sink's; it inherits pytest's limit, so raise the hard open-files limit "
        "(ulimit -Hn, systemd LimitNOFILE, docker --ulimit), run fewer devices, "
        "or use an external broker (--iot-broker)"
    )


__all__ = [
    "BROKER_SPARE_FILES",
    "WORKER_SPARE_FILES",
    "NotEnoughOpenFiles",
    "broker_shortfall",
    "worker_share",
    "worker_shortfall",
    "workers_needed",
]
