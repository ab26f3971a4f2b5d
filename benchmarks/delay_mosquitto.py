"""Delay through embedded Mosquitto at 1,000 devices x 1 msg/s, and the fleet's lateness.

    python benchmarks/delay_mosquitto.py [--devices 1000] [--rate 1] [--duration 30s] [--workers 1] [--qos 1]

Prints one line per figure; the README's performance section quotes it.
Not a test: run it by hand on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import time

from pytest_iotperf.config import resolve
from pytest_iotperf.embedded.broker import EmbeddedBroker
from pytest_iotperf.runner import PerfRun


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=1.0)
    parser.add_argument("--duration", default="30s")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--qos", type=int, default=1)
    args = parser.parse_args()
    settings = resolve({}, {}, {}).for_run(
        {
            "devices": args.devices,
            "rate_per_device": args.rate,
            "duration": args.duration,
            "workers": args.workers,
            "qos": args.qos,
        }
    )
    with EmbeddedBroker(prefer="mosquitto") as broker:
        started = time.monotonic()
        result = PerfRun(settings, broker.endpoint).execute()
        wall = time.monotonic() - started
    print(f"machine           : {os.cpu_count()} cores")
    print(f"broker            : {result.broker}")
    print(
        f"fleet             : {result.devices} devices x {result.rate_per_device:g} msg/s, qos {args.qos}, "
        f"{result.duration_s:g}s steady state, {result.workers} worker(s)"
    )
    print(f"sent / received   : {result.sent} / {result.received} (lost {result.lost}, dup {result.duplicates})")
    print(
        f"delay p50 / p99   : {result.p50_delay_ms:.2f} ms / {result.p99_delay_ms:.2f} ms "
        f"(p99.9 {result.p999_delay_ms:.2f} ms, max {result.max_delay_ms:.2f} ms)"
    )
    print(f"sent delay p50/p99: {result.sent_delay_p50_ms:.2f} ms / {result.sent_delay_p99_ms:.2f} ms")
    print(
        f"lateness p50 / p99: {result.lateness_p50_ms:.2f} ms / {result.lateness_p99_ms:.2f} ms "
        f"(generator saturated: {result.generator_saturated})"
    )
    for worker in result.worker_stats:
        print(
            f"worker {worker['worker_index']}          : {worker['devices']} devices, "
            f"cpu {worker['cpu_percent']:.0f}%, lateness p99 {worker['lateness_p99_ms']:.2f} ms"
        )
    print(f"wall time         : {wall:.1f} s")


if __name__ == "__main__":
    main()
