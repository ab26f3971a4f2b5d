"""A Mosquitto 2 with an ACL file, for tests of what a broker refuses (MQTT 5 PUBACK 0x87 and the like).

Anonymous clients are allowed in; the ACL's ``topic`` lines (before any ``user``
line) apply to them, and whatever no line grants is refused.  Readiness is read
from the broker's own log ("running"), with a deadline; the broker is stopped
on the way out whatever the test did.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pytest_iotperf.embedded.broker import find_mosquitto
from pytest_iotperf.processes import free_port

WAIT_S = 10.0


@contextmanager
def acl_mosquitto(directory: Path, acl: str) -> Iterator[int]:
    """Run Mosquitto on 127.0.0.1 with ``acl`` (the ACL file's text); yields its port."""
    binary = find_mosquitto()
    if binary is None:
        raise RuntimeError("mosquitto is not installed")
    port = free_port()
    (directory / "acl").write_text(acl)
    log = directory / "mosquitto.log"
    config = directory / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nacl_file {directory / 'acl'}\n"
        f"persistence false\nlog_dest file {log}\nlog_type error\nlog_type warning\nlog_type information\n"
        "user root\n"  # as root mosquitto would otherwise switch users and fail to open its log here
    )
    process = subprocess.Popen([binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + WAIT_S
        while "running" not in (log.read_text() if log.exists() else ""):
            assert process.poll() is None and time.monotonic() < deadline, tail(log)
            time.sleep(0.05)  # polling the broker's log for readiness, with a deadline
        yield port
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def tail(log: Path) -> str:
    return log.read_text()[-2000:] if log.exists() else "mosquitto wrote no log"
