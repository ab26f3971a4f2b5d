"""Per-device client certificates at fleet scale: 2,000 certificates vs one shared, same broker, same run shape.

    python benchmarks/device_certs.py                      # 2,000 devices, one worker
    python benchmarks/device_certs.py --devices 500 --duration 3

A test CA signs one client certificate per device (``certs/{device_id}.pem`` /
``.key``, EC P-256, made here) and one more that every device shares.  A
Mosquitto takes the devices on an mTLS listener (``require_certificate``,
``use_identity_as_username``: each certificate's CN becomes the user name) and
the run's broker check on a plain one.  The fleet connects all at once (ramp
0.1 s: the connect rate is what the fleet and broker manage, not the spawn
rate) and publishes for a short steady state, without a sink.

Prints, for each run: devices connected, the connect rate during the ramp
(devices / seconds from the spawn to the last CONNACK), connect latency
p50/p99 (attempt -> CONNACK: the TLS handshakes queue up at the broker), the
worker's resident memory (peak, and per device: after minus before the devices
existed) and how many distinct certificates the broker saw.  Per-device certificates cost one TLS context each (the
fleet caches one per distinct file pair); this shows what that costs.
Not a test: run by hand; the machine is shared, so read ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pytest_iotperf.broker_endpoint import BrokerEndpoint
from pytest_iotperf.config import resolve
from pytest_iotperf.embedded.broker import find_mosquitto
from pytest_iotperf.embedded.iothub.certs import make_ca, make_device_certificates, make_server_certificate
from pytest_iotperf.process_guard import raise_nofile_limit
from pytest_iotperf.processes import free_port
from pytest_iotperf.runner import PerfRun, RunFailed

_CONNECTED = re.compile(r"New client connected from \S+ as \S+ \(.*u'([^']*)'\)")


class CertBroker:
    """Mosquitto: a plain listener (the run's broker check) and an mTLS one for the devices."""

    def __init__(self, directory: Path, ca: str, server_cert: str, server_key: str) -> None:
        binary = find_mosquitto()
        if binary is None:
            raise SystemExit("mosquitto is not installed")
        self.plain_port, self.tls_port = free_port(), free_port()
        self.log = directory / "mosquitto.log"
        config = directory / "mosquitto.conf"
        config.write_text(
            "allow_anonymous true\npersistence false\nmax_queued_messages 0\n"
            f"listener {self.plain_port} 127.0.0.1\n"
            f"listener {self.tls_port} 127.0.0.1\ncafile {ca}\ncertfile {server_cert}\nkeyfile {server_key}\n"
            "require_certificate true\nuse_identity_as_username true\n"
            f"log_dest file {self.log}\nlog_type notice\nlog_type information\nconnection_messages true\n"
            "user root\n"
        )
        self.process = subprocess.Popen([binary, "-c", str(config)], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while "running" not in (self.log.read_text() if self.log.exists() else ""):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("mosquitto did not start")
            time.sleep(0.05)  # polling the broker's log for readiness, with a deadline
        self._log_offset = 0

    def identities_since_last(self) -> set[str]:
        """Distinct certificate CNs of the clients that connected since the last call."""
        text = self.log.read_text()
        seen = set(_CONNECTED.findall(text[self._log_offset :]))
        self._log_offset = len(text)
        return seen

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def measure(
    broker: CertBroker, ca: str, cert: str, key: str, devices: int, duration_s: float, label: str
) -> dict[str, Any]:
    plain = f"mqtt://127.0.0.1:{broker.plain_port}"
    settings = resolve({"broker": plain, "tls_ca": ca, "tls_cert": cert, "tls_key": key}, {}, {}).for_run(
        {"devices": devices, "rate_per_device": 0.2, "duration": duration_s, "workers": 1, "qos": 0, "ramp_up": 0.1}
    )
    ramp: list[tuple[float, int]] = []  # (time, devices connected) from the master's progress, ~1 s apart

    def follow(state: dict[str, Any]) -> None:
        if state.get("phase") == "connecting":
            ramp.append((time.monotonic(), int(state.get("connected") or 0)))

    run = PerfRun(settings, BrokerEndpoint.external(plain), read_back=False, progress=follow)
    mtls = dataclasses.replace(run.fleet_spec.connection, port=broker.tls_port, tls=True)
    run.fleet_spec = dataclasses.replace(run.fleet_spec, connection=mtls)
    try:
        result = run.execute()
        error = None
    except RunFailed as failed:
        result, error = failed.result, str(failed)
    stats = result.worker_stats[0] if result.worker_stats else {}
    return {
        "label": label,
        "devices": devices,
        "connected": result.connected,
        "connect_rate": _connect_rate(result.connected, ramp),
        "connect_p50_ms": result.connect_p50_ms,
        "connect_p99_ms": result.connect_p99_ms,
        "max_rss_mb": stats.get("max_rss_bytes", 0) / 1e6,
        "rss_kb_per_device": stats.get("rss_bytes_per_device", 0.0) / 1e3,
        "certificates_seen": len(broker.identities_since_last()),
        "sent": result.sent,
        "scheduled": result.scheduled,
        "error": error,
    }


def _connect_rate(connected: int, ramp: list[tuple[float, int]]) -> float:
    """Devices per second from the spawn to the last CONNACK of the ramp.

    The master says "connecting" as it starts spawning and once more the moment every device has
    connected (or given up): both ends are exact to a few ms, the 1 s progress lines between do not matter.
    """
    if not connected or not ramp:
        return float("nan")
    done = next((t for t, n in ramp if n >= connected), None)
    if done is None or done <= ramp[0][0]:
        return float("nan")
    return connected / (done - ramp[0][0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--duration", type=float, default=5.0, help="steady state, seconds")
    args = parser.parse_args(argv)
    raise_nofile_limit()
    with tempfile.TemporaryDirectory(prefix="iotperf-device-certs-") as tmp:
        folder = Path(tmp)
        started = time.monotonic()
        ca = make_ca(folder / "ca")
        server = make_server_certificate(folder / "server", ca)
        ids = [f"dev{n:06d}" for n in range(args.devices)]
        make_device_certificates(folder / "certs", ca, ids)
        (shared,) = make_device_certificates(folder / "shared", ca, ["shared-device"])
        print(f"made {args.devices + 1} client certificates in {time.monotonic() - started:.1f}s", flush=True)
        broker = CertBroker(folder, ca.cert_file, server.cert_file, server.key_file)
        try:
            rows = [
                measure(broker, ca.cert_file, shared.cert_file, shared.key_file, args.devices, args.duration, "shared"),
                measure(
                    broker,
                    ca.cert_file,
                    f"{folder}/certs/{{device_id}}.pem",
                    f"{folder}/certs/{{device_id}}.key",
                    args.devices,
                    args.duration,
                    "per-device",
                ),
            ]
        finally:
            broker.stop()
    header = (
        f"{'certificates':<12} {'devices':>7} {'connected':>9} {'connect/s':>9} {'conn p50':>8} {'conn p99':>8} "
        f"{'RSS peak':>8} {'RSS/dev':>8} {'CNs seen':>8} {'sent/sched':>11}"
    )
    print(header)
    for row in rows:
        print(
            f"{row['label']:<12} {row['devices']:>7} {row['connected']:>9} {row['connect_rate']:>9.0f} "
            f"{row['connect_p50_ms']:>6.0f}ms {row['connect_p99_ms']:>6.0f}ms {row['max_rss_mb']:>6.0f}MB "
            f"{row['rss_kb_per_device']:>5.1f}kB {row['certificates_seen']:>8} "
            f"{row['sent']:>5}/{row['scheduled']:<5}"
        )
        if row["error"]:
            print(f"  error: {row['error']}", file=sys.stderr)
    return 0 if all(not r["error"] and r["connected"] == r["devices"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
