"""A templated payload must not cost the fleet its scale: one worker, 10,000 devices x 1 msg/s, QoS 0.

    python benchmarks/template_fleet.py                      # fixed payload, 6-field template, callable
    python benchmarks/template_fleet.py --devices 5000 --duration 15 --payloads template

Same run, same broker (embedded Mosquitto), the fleet alone (no sink: the figures describe the
generator): for each payload, messages sent vs scheduled, lateness p50/p99/max and the worker's CPU
per message.  The issue's bar: with the 6-field template, lateness p99 <= 10 ms and every scheduled
message sent.  The machine is shared: read the template's figures against the fixed payload's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pytest_iotperf.broker_endpoint import BrokerEndpoint
from pytest_iotperf.config import resolve
from pytest_iotperf.embedded.broker import EmbeddedBroker
from pytest_iotperf.fleet.naming import DeviceName
from pytest_iotperf.process_guard import raise_nofile_limit
from pytest_iotperf.runner import PerfRun, RunFailed

sys.path.insert(0, str(Path(__file__).parent))
from fleet_scale import fleet_row
from payload_cost import TEMPLATE

LATENESS_P99_MAX_MS = 10.0


def reading(device: DeviceName, seq: int) -> dict[str, Any]:
    """The same reading written as a callable (what a user reaches for when a template is not enough)."""
    return {"deviceId": device.device_id, "temperature": 21.5, "humidity": 45.0, "status": "ok", "n": seq}


# The template is the 6-field one payload_cost.py times one render at a time.
PAYLOADS: dict[str, Any] = {"fixed": None, "template": TEMPLATE, "callable": "template_fleet:reading"}


def measure(broker: BrokerEndpoint, name: str, devices: int, duration_s: float) -> dict[str, Any]:
    code: dict[str, Any] = {"devices": devices, "rate_per_device": 1.0, "duration": duration_s, "workers": 1, "qos": 0}
    if PAYLOADS[name] is not None:
        code["payload"] = PAYLOADS[name]
    settings = resolve({}, {}, {}).for_run(code)
    try:
        result = PerfRun(settings, broker, read_back=False).execute()
        error = None
    except RunFailed as failed:
        result, error = failed.result, str(failed)
    return {"payload": name, **fleet_row(result, impl=f"pytest-iotperf, {name} payload", qos=0, error=error)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--payloads", default="fixed,template,callable")
    args = parser.parse_args()
    raise_nofile_limit()
    rows = []
    with EmbeddedBroker(prefer="mosquitto") as broker:
        for name in args.payloads.split(","):
            row = measure(broker.endpoint, name, args.devices, args.duration)
            rows.append(row)
            print(row, flush=True)
    print(f"\n{args.devices} devices x 1 msg/s, QoS 0, one worker, {args.duration:g} s steady state")
    print(f"{'payload':<10} {'sent/scheduled':>17} {'lateness p50/p99/max ms':>26} {'worker CPU µs/msg':>18}  verdict")
    for row in rows:
        ok = row["sent"] == row["scheduled"] and (row["lateness_p99_ms"] or 1e9) <= LATENESS_P99_MAX_MS
        lateness = f"{row['lateness_p50_ms']:.2f}/{row['lateness_p99_ms']:.2f}/{row['lateness_max_ms']:.1f}"
        cpu = row["cpu_us_per_message"]
        print(
            f"{row['payload']:<10} {row['sent']:>8}/{row['scheduled']:<8} {lateness:>26} "
            f"{cpu if cpu is None else f'{cpu:.1f}':>18}  {'ok' if ok else 'NOT MET'}"
            + (f" ({row['error']})" if row["error"] else "")
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
