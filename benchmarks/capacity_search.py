"""A capacity search against embedded Mosquitto on this machine: each step, the bound found, how long it took.

    python benchmarks/capacity_search.py [--start 200] [--limit 20000] [--rate 10] [--hold 5s] [--factor 2]
        [--resolution 0.1] [--workers 1] [--qos 1] [--slo "p95_delay_ms < 100"] [--slo "loss < 0.1%"]

The system under test is the broker itself (devices -> Mosquitto -> the sink), so on a small
machine the load generator usually gives out first: the search then stops with
``bound=generator`` and says so, rather than reporting the generator's limit as the broker's.
The escalation is one run in stages (the devices already connected stay connected; the run is stopped
early once a stage is clearly breaking); each bisection step is a run of its own.  Not a test: run it by hand.
"""

from __future__ import annotations

import argparse
import os
import time

from pytest_iotperf.capacity_result import StepOutcome
from pytest_iotperf.capacity_run import find_capacity
from pytest_iotperf.embedded.broker import EmbeddedBroker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", type=int, default=200)
    parser.add_argument("--limit", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=10.0, help="messages per second per device")
    parser.add_argument("--hold", default="5s", help="steady state of each step")
    parser.add_argument("--factor", type=float, default=2.0)
    parser.add_argument("--resolution", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--qos", type=int, default=1)
    parser.add_argument("--slo", action="append", default=None, help="repeatable (default: p95 < 100 ms, loss < 0.1%%)")
    args = parser.parse_args()
    slos = args.slo or ["p95_delay_ms < 100", "loss < 0.1%"]
    print(f"machine : {os.cpu_count()} cores; {args.workers} worker(s), qos {args.qos}, {args.rate:g} msg/s per device")
    print(f"search  : start {args.start}, limit {args.limit}, factor {args.factor:g}, resolution {args.resolution:g}, "
          f"hold {args.hold}; SLOs {'; '.join(slos)}")  # fmt: skip

    def show(step: StepOutcome) -> None:
        cut = f"; cut short: {step.cut_short}" if step.cut_short else ""
        print(f"step    : {step.describe()} [{step.where()}, {step.elapsed_s:.1f}s{cut}]", flush=True)

    with EmbeddedBroker(prefer="mosquitto") as broker:
        started = time.monotonic()
        outcome = find_capacity(
            broker.endpoint,
            slos=slos,
            start=args.start,
            limit=args.limit,
            hold=args.hold,
            factor=args.factor,
            resolution=args.resolution,
            name="benchmark",
            on_step=show,
            rate_per_device=args.rate,
            workers=args.workers,
            qos=args.qos,
        )
        wall_s = time.monotonic() - started
        kind = broker.endpoint.kind
    capacity = outcome.capacity
    print(f"broker  : {kind} (embedded Mosquitto)")
    print(f"found   : {capacity.summary()}")
    print(f"bound   : {capacity.bound}")
    print(f"hint    : {capacity.hint}")
    print(f"runs    : {capacity.runs_text()}")
    steps_s = sum(step.elapsed_s for step in capacity.steps)
    print(f"search  : {capacity.search_s:.1f}s for {len(capacity.steps)} steps ({steps_s:.1f}s in the steps' runs; "
          f"{wall_s:.1f}s wall)")  # fmt: skip


if __name__ == "__main__":
    main()
