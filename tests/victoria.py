"""A throwaway VictoriaMetrics server for tests: it accepts influxdb-client's v2 writes and exports them back.

InfluxDB 2 is not packaged for Debian; VictoriaMetrics is (``apt-get install
victoria-metrics``) and ingests the InfluxDB line protocol at
``/api/v2/write``.  It names a field ``<measurement>_<field>`` and keeps tags
as labels; ``/api/v1/export`` returns the raw samples, one JSON line per
series.  It ignores the token.

It keeps every sample it is sent, even one at the same series and timestamp;
started with ``-dedup.minScrapeInterval=1ms`` it keeps only the last sample per
series and millisecond, like InfluxDB overwriting a point with the same series
key and time, which is what a re-export test needs.

    with VictoriaMetrics.start(tmp_path) as vm:
        export_run(InfluxTarget(vm.url, "org", "bucket", "token"), ...)
        for series in vm.export('{__name__="iotperf_delay_count"}'):
            ...
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

_START_TIMEOUT_S = 20.0
_STOP_GRACE_S = 5.0
_POLL_S = 0.02
_HTTP_TIMEOUT_S = 5.0
_BIND_ATTEMPTS = 3


def find_binary() -> str | None:
    """The ``victoria-metrics`` binary (Debian puts it in /usr/bin), or ``None``."""
    found = shutil.which("victoria-metrics")
    if found:
        return found
    candidate = Path("/usr/bin/victoria-metrics")
    return str(candidate) if candidate.is_file() else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Series:
    """One exported series: its labels (``__name__`` included) and its samples."""

    labels: dict[str, str]
    values: list[float]
    timestamps_ms: list[int]

    @property
    def name(self) -> str:
        """The metric name, ``<measurement>_<field>``."""
        return self.labels["__name__"]


class VictoriaMetrics:
    """A running ``victoria-metrics`` process on a free loopback port, with its own data directory."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path

    @classmethod
    def start(cls, workdir: Path, *, dedup: bool = True) -> VictoriaMetrics:
        """Start a server under ``workdir`` and wait until ``/health`` answers; skips the test if not installed."""
        binary = find_binary()
        if binary is None:
            missing = "victoria-metrics is not installed (apt-get install victoria-metrics)"
            if os.environ.get("CI"):
                pytest.fail(f"{missing}: .ci/run must install it")  # a skip would hide the missing install step
            pytest.skip(missing)
        workdir.mkdir(parents=True, exist_ok=True)
        for attempt in range(_BIND_ATTEMPTS):
            # Another process may take the free port between our probe and the server's bind: try again.
            port = free_port()
            log_path = workdir / f"victoria-metrics-{attempt}.log"
            args = [
                binary,
                f"-httpListenAddr=127.0.0.1:{port}",
                f"-storageDataPath={workdir / f'data-{attempt}'}",
                "-loggerLevel=ERROR",
            ]
            if dedup:
                args.append("-dedup.minScrapeInterval=1ms")
            with log_path.open("wb") as log:
                process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            server = cls(process, port, log_path)
            if server._wait_healthy():
                return server
            server.stop()
        raise RuntimeError(f"victoria-metrics did not start; last log:\n{log_path.read_text()[-2000:]}")

    def _wait_healthy(self) -> bool:
        """Poll ``/health`` until it answers OK (True) or the process exits or the deadline passes (False)."""
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1.0) as response:
                    if response.status == 200:
                        return True
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(_POLL_S)  # polling interval of a readiness probe with a deadline, not a synchronisation guess
        return False

    def stop(self) -> None:
        """Terminate, wait, kill if it does not exit in time."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=_STOP_GRACE_S)

    def __enter__(self) -> VictoriaMetrics:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def flush(self) -> None:
        """Make every sample ingested so far searchable (VictoriaMetrics buffers them for up to a second)."""
        with urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=_HTTP_TIMEOUT_S) as response:
            response.read()

    def export(self, match: str) -> list[Series]:
        """Every series matching the selector ``match``, with all its samples (after a flush)."""
        self.flush()
        # start=1 (epoch + 1 s): VictoriaMetrics 1.79 returned nothing for start=0.
        query = urllib.parse.urlencode({"match[]": match, "start": "1"})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{query}", timeout=_HTTP_TIMEOUT_S) as response:
            body = response.read().decode()
        series: list[Series] = []
        for line in body.splitlines():
            if line.strip():
                item: dict[str, Any] = json.loads(line)
                series.append(
                    Series(
                        labels={str(k): str(v) for k, v in item["metric"].items()},
                        values=[float(v) for v in item["values"]],
                        timestamps_ms=[int(t) for t in item["timestamps"]],
                    )
                )
        return series
