"""Fleet at scale: devices per worker process, ours vs Locust's own MqttUser, same machine, same run.

    python benchmarks/fleet_scale.py                       # the issue's sweep (takes a while)
    python benchmarks/fleet_scale.py --sizes 1000,5000 --qos 0 --duration 10 --skip-locust

For each device count N and QoS, one worker process publishes 1 msg/s per device to embedded
Mosquitto for the steady-state window (the fleet alone: no sink, so the figures describe the
generator). Prints connected, messages sent vs scheduled, lateness p50/p99/max, worker CPU % and
RSS per device (resident memory after minus before the devices existed). Then the same sweep with
Locust's ``MqttUser`` (default settings, and ``use_loop_selectors=True``), each stopping at the
first size it cannot sustain, and the ratio of the largest N each sustains: every device connected,
every scheduled message sent, lateness p99 <= 10 ms. Also: 20,000 devices at 0.1 msg/s (connection
scale) and 1 vs 2 workers. Not a test: run by hand; the machine is shared, so read ratios.
"""

from __future__ import annotations

import argparse
import functools
import resource
import sys
from pathlib import Path
from typing import Any

from pytest_iotperf.broker_endpoint import BrokerEndpoint
from pytest_iotperf.config import resolve
from pytest_iotperf.embedded.broker import EmbeddedBroker
from pytest_iotperf.process_guard import raise_nofile_limit
from pytest_iotperf.result import RunResult
from pytest_iotperf.runner import PerfRun, RunFailed

sys.path.insert(0, str(Path(__file__).parent))
from locust_mqttuser_baseline import measure as measure_locust

SIZES = (1000, 2500, 5000, 7500, 10000, 15000, 20000)
LATENESS_P99_MAX_MS = 10.0


def measure_ours(
    broker: BrokerEndpoint, devices: int, qos: int, rate: float, duration_s: float, workers: int = 1
) -> dict[str, Any]:
    settings = resolve({}, {}, {}).for_run(
        {"devices": devices, "rate_per_device": rate, "duration": duration_s, "workers": workers, "qos": qos}
    )
    try:
        result = PerfRun(settings, broker, read_back=False).execute()
        error = None
    except RunFailed as failed:
        result, error = failed.result, str(failed)
    impl = f"pytest-iotperf ({workers} worker{'s' if workers > 1 else ''})"
    return fleet_row(result, impl=impl, qos=qos, error=error)


def fleet_row(result: RunResult, *, impl: str, qos: int, error: str | None) -> dict[str, Any]:
    """One fleet-only run's figures: what was sent, its lateness and the workers' cost (weighted by their share)."""
    stats = result.worker_stats
    devices = result.devices
    return {
        "impl": impl,
        "devices": devices,
        "qos": qos,
        "connected": result.connected,
        "scheduled": result.scheduled,
        "sent": result.sent,
        "lateness_p50_ms": result.lateness_p50_ms,
        "lateness_p99_ms": result.lateness_p99_ms,
        "lateness_max_ms": (result.lateness_histogram.max_us or 0) / 1000.0,
        "cpu_percent": sum(w["cpu_percent"] for w in stats) / max(len(stats), 1),
        "cpu_us_per_message": sum(w["cpu_us_per_message"] * w["sent"] for w in stats) / max(result.sent, 1),
        "rss_bytes_per_device": sum(w["rss_bytes_per_device"] * w["devices"] for w in stats) / max(devices, 1),
        "error": error,
    }


@functools.cache  # says the note once
def connection_scale_devices(wanted: int = 20000, reserve: int = 100) -> int:
    """20,000, or what the open-files hard limit allows (broker and worker need one socket per device)."""
    raise_nofile_limit()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY or hard - reserve >= wanted:
        return wanted
    print(f"note: RLIMIT_NOFILE hard limit is {hard} and cannot be raised here; capping at {hard - reserve}")
    return int(hard - reserve)


def sustained(row: dict[str, Any]) -> bool:
    return (
        not row.get("error")
        and row["connected"] == row["devices"]
        and row["sent"] == row["scheduled"] > 0
        and row["lateness_p99_ms"] <= LATENESS_P99_MAX_MS
    )


def print_row(row: dict[str, Any]) -> None:
    verdict = "ok" if sustained(row) else "NOT SUSTAINED"
    error = f"  ({row['error'][:80]})" if row.get("error") else ""
    print(
        f"{row['impl']:<28} N={row['devices']:>6} qos{row['qos']}  connected {row['connected']:>6}  "
        f"sent {row['sent']:>8}/{row['scheduled']:<8} lateness p50/p99/max "
        f"{row['lateness_p50_ms']:7.2f}/{row['lateness_p99_ms']:8.2f}/{row['lateness_max_ms']:8.1f} ms  "
        f"cpu {row['cpu_percent']:5.1f}% {row.get('cpu_us_per_message', float('nan')):5.1f} us/msg  "
        f"rss/device {row['rss_bytes_per_device'] / 1024:5.1f} KB  {verdict}{error}",
        flush=True,
    )


def sweep(name: str, run: Any, sizes: list[int]) -> int:
    """Largest size sustained; stops at the first size that is not.

    A size beyond what the open-files limit lets one process hold runs at that limit instead.
    """
    best = 0
    cap = connection_scale_devices(max(sizes))
    for devices in sorted({min(n, cap) for n in sizes}):
        row = run(devices)
        print_row(row)
        if not sustained(row):
            break
        best = devices
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--qos", default="0,1")
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--skip-locust", action="store_true")
    parser.add_argument("--skip-extras", action="store_true", help="no 20k connection run, no 1 vs 2 workers")
    parser.add_argument("--workers-size", type=int, default=15000, help="devices for the 1 vs 2 workers run (QoS 1)")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    qos_levels = [int(q) for q in args.qos.split(",")]
    best: dict[tuple[str, int], int] = {}
    with EmbeddedBroker(prefer="mosquitto") as broker:
        endpoint = broker.endpoint
        print(f"broker: {endpoint.description}; rate 1 msg/s per device; window {args.duration:g} s; one process")
        for qos in qos_levels:
            best[("ours", qos)] = sweep(
                "ours", lambda n, q=qos: measure_ours(endpoint, n, q, 1.0, args.duration), sizes
            )
            if args.skip_locust:
                continue
            for selectors in (False, True):
                key = "locust-selectors" if selectors else "locust"

                def run_locust(n: int, q: int = qos, s: bool = selectors) -> dict[str, Any]:
                    row = measure_locust(n, q, 1.0, args.duration, s, endpoint.host, endpoint.port)
                    row.setdefault("lateness_max_ms", float("nan"))
                    if row.get("cpu_percent") and row.get("sent") and row.get("duration_s"):
                        cpu_s = row["cpu_percent"] / 100 * row["duration_s"]
                        row["cpu_us_per_message"] = 1e6 * cpu_s / row["sent"]
                    return row

                best[(key, qos)] = sweep(key, run_locust, sizes)
        if not args.skip_extras:
            connections = connection_scale_devices()
            print(f"connection scale: {connections:,} devices at 0.1 msg/s")
            print_row(measure_ours(endpoint, connections, 0, 0.1, max(args.duration, 20.0)))
            print(f"1 vs 2 workers, {args.workers_size:,} devices, qos 1")
            for workers in (1, 2):
                print_row(measure_ours(endpoint, args.workers_size, 1, 1.0, args.duration, workers=workers))
    print("\nlargest N sustained (all connected, all sent, lateness p99 <= 10 ms):")
    for qos in qos_levels:
        ours = best[("ours", qos)]
        line = f"  qos {qos}: pytest-iotperf {ours:,}"
        for key in ("locust", "locust-selectors"):
            if (key, qos) in best:
                theirs = best[(key, qos)]
                ratio = f"{ours / theirs:.1f}x" if theirs else "inf (it sustained none of the sizes)"
                line += f" | {key} {theirs:,} (ours/theirs {ratio})"
        print(line)


if __name__ == "__main__":
    main()
