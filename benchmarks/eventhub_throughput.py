"""Event Hubs read and ingest rates on this machine: our sink process vs the SDK's default receive loop.

    python benchmarks/eventhub_throughput.py                      # 40,000 events over 4 partitions
    python benchmarks/eventhub_throughput.py --events 20000 --partitions 2 --batch 250

The embedded endpoint runs as its own process (``python -m pytest_iotperf.embedded.eventhub``).
This process fills it with N telemetry events of one run id (~150 bytes each, device id as the key
that picks the partition), in batches of ``--batch`` events sent round-robin over the partitions
with ``send_batch``; the first batch of each partition is not timed (it opens the partition's link,
~0.45 s each).  Printed:

(b) ingest: events/s the endpoint accepted from one producer process, and the endpoint's CPU time
    per event (psutil, the endpoint process only); after (a), its CPU time per event delivered.
(a) read: events/s ONE consumer process reads from the pre-filled partitions, first read to last
    read: ours (``pytest_iotperf.sinks.eventhub_sink``: a client and a ``receive_batch`` thread per
    partition, its report's ``first_read_us``/``last_read_us``), then the SDK's default
    ``EventHubConsumerClient.receive(on_event=...)`` over all partitions in a subprocess (defaults
    except ``starting_position="-1"``, without which it would read nothing already stored).
    Goal: ours >= 6,000 events/s and >= 5x the default loop.  Also printed: the default loop's rate
    until the first partition was read to its end.  Keyed partitions hold unequal shares, and from that
    moment every turn of the SDK's loop (one event from each partition in turn, one thread) waits the
    socket timeout (0.2 s) on the exhausted partition: ~5 events/s per partition left.  The 5x holds
    because of that stall; while every partition still has events the default loop is not slower.

Measured here (40,000 events): ingest 34-50k events/s at 16-23 us of endpoint CPU each; ours 12-16k
events/s; the default loop 784-1,419 events/s overall (timed out) but 15-20k events/s until the first
partition ran dry, so ours is 9-20x faster end to end and 0.6-0.8x while every partition has events.

Not a test: run by hand; the machine is shared, so read ratios.  The connection string (it holds
the key) only travels in child environments and is never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient, PartitionContext

from pytest_iotperf.embedded.eventhub.partition_key import partition_for_key
from pytest_iotperf.header import PayloadTemplate
from pytest_iotperf.processes import Child, child_environment
from pytest_iotperf.readback import start_embedded_eventhub
from pytest_iotperf.secrets import EVENTHUB_CONNECTION_STRING_ENV

PAYLOAD_BYTES = 150
DEVICES = 570
READ_GOAL_PER_S = 6000.0
RATIO_GOAL = 5.0


def cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def telemetry(run_id: str, count: int, partitions: int) -> list[list[bytes]]:
    """``count`` payloads of one run, grouped by the partition their device id hashes to."""
    templates = [PayloadTemplate(run_id, f"device-{d:05d}", PAYLOAD_BYTES) for d in range(DEVICES)]
    keys = [partition_for_key(f"device-{d:05d}", partitions) for d in range(DEVICES)]
    grouped: list[list[bytes]] = [[] for _ in range(partitions)]
    now_us = time.time_ns() // 1000
    for i in range(count):
        device, seq = i % DEVICES, i // DEVICES
        at = now_us + i * 100
        grouped[keys[device]].append(templates[device].render(seq, at, at + 40))
    return grouped


def batches_of(producer: EventHubProducerClient, partition: str, bodies: list[bytes], size: int) -> list[Any]:
    out = []
    for start in range(0, len(bodies), size):
        batch = producer.create_batch(partition_id=partition)
        for body in bodies[start : start + size]:
            batch.add(EventData(body))
        out.append(batch)
    return out


def fill(connection_string: str, hub: psutil.Process, grouped: list[list[bytes]], batch_size: int) -> dict[str, Any]:
    """Send everything; the first batch of each partition untimed (it opens the link)."""
    producer = EventHubProducerClient.from_connection_string(connection_string, retry_total=0, auth_timeout=5)
    with producer:
        queues = [batches_of(producer, str(p), bodies, batch_size) for p, bodies in enumerate(grouped)]
        warm_events = 0
        for queue in queues:
            if queue:
                first = queue.pop(0)
                warm_events += len(first)
                producer.send_batch(first)
        timed_events = sum(len(b) for queue in queues for b in queue)
        cpu_before, wall_before = cpu_s(hub), time.perf_counter()
        while any(queues):
            for queue in queues:
                if queue:
                    producer.send_batch(queue.pop(0))
        wall = time.perf_counter() - wall_before
        cpu = cpu_s(hub) - cpu_before
    return {"events": timed_events, "untimed": warm_events, "wall_s": wall, "hub_cpu_s": cpu}


def read_with_our_sink(
    connection_string: str, run_id: str, start_s: float, events: int, workdir: Path, timeout_s: float
) -> dict[str, Any]:
    spec = {"run_id": run_id, "start_time_epoch_s": start_s, "ready_timeout_s": 30}
    spec_path, report_path = workdir / "sink-spec.json", workdir / "sink-report.json"
    spec_path.write_text(json.dumps(spec))
    sink = Child.python_module(
        "Event Hubs sink",
        "pytest_iotperf.sinks.eventhub_sink",
        [str(spec_path), str(report_path)],
        workdir / "sink.log",
        stdin=True,
        env={EVENTHUB_CONNECTION_STRING_ENV: connection_string},
    )
    try:
        sink.wait_for("ready", 40.0)
        sink.send({"cmd": "drain", "expected": events, "timeout_s": timeout_s})
        sink.wait_for("done", timeout_s + 30.0)
    finally:
        sink.stop()
    report = json.loads(report_path.read_text())
    first, last = report.get("first_read_us"), report.get("last_read_us")
    span_s = (last - first) / 1e6 if first is not None and last is not None else float("nan")
    return {"received": int(report["received"]), "span_s": span_s, "drain": report.get("drain")}


def read_with_default_loop(
    connection_string: str, per_partition: list[int], workdir: Path, timeout_s: float
) -> dict[str, Any]:
    """This script again, as ``--role default-consumer``, in its own process."""
    argv = [sys.executable, __file__, "--role", "default-consumer", "--timeout", str(timeout_s)]
    argv += ["--filled", ",".join(str(n) for n in per_partition)]
    with open(workdir / "default-consumer.log", "w") as log:
        proc = subprocess.run(
            argv,
            env=child_environment({EVENTHUB_CONNECTION_STRING_ENV: connection_string}),
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            timeout=timeout_s + 60.0,
            check=False,
        )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (workdir / "default-consumer.log").read_text()[-1500:]
        raise RuntimeError(f"the default consumer failed (exit {proc.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def default_consumer(filled: list[int], timeout_s: float) -> int:
    """The SDK's plain receive loop over all partitions, defaults except where to start; prints one JSON line.

    Besides first-to-last, it reports the rate up to the moment the first partition was read to its end:
    the sync loop serves partitions in turn, one event each, and from then on every turn also waits the
    SDK's socket timeout (0.2 s) on the exhausted partition.
    """
    events = sum(filled)
    client = EventHubConsumerClient.from_connection_string(os.environ[EVENTHUB_CONNECTION_STRING_ENV], "$Default")
    lock = threading.Lock()
    stamps: list[tuple[int, str]] = []
    counts: dict[str, int] = {}
    enough = threading.Event()

    def on_event(context: PartitionContext, event: EventData | None) -> None:
        if event is None:
            return
        now = time.time_ns()
        with lock:
            stamps.append((now, context.partition_id))
            counts[context.partition_id] = counts.get(context.partition_id, 0) + 1
            if len(stamps) >= events:
                enough.set()

    thread = threading.Thread(
        target=client.receive, kwargs={"on_event": on_event, "starting_position": "-1"}, daemon=True
    )
    thread.start()
    complete = enough.wait(timeout_s)
    client.close()
    thread.join(10)
    with lock:
        out: dict[str, Any] = {"received": len(stamps), "complete": complete, "per_partition": dict(counts)}
        if stamps:
            first = stamps[0][0]
            out["span_s"] = (stamps[-1][0] - first) / 1e9
            ends = [
                max(t for t, p in stamps if p == str(partition))
                for partition, n in enumerate(filled)
                if n and counts.get(str(partition), 0) >= n
            ]
            busy_end = min(ends) if ends else stamps[-1][0]
            out["busy_events"] = sum(1 for t, _ in stamps if t <= busy_end)
            out["busy_span_s"] = (busy_end - first) / 1e9
        else:
            out.update(span_s=float("nan"), busy_events=0, busy_span_s=float("nan"))
        print(json.dumps(out), flush=True)
    return 0


def start_hub(partitions: int, workdir: Path) -> tuple[Child, str]:
    child, access = start_embedded_eventhub(workdir, partitions)
    return child, access.connection_string


def rate(events: int, span_s: float) -> float:
    return events / span_s if span_s > 0 else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=40_000, help="events to pre-fill and read (default 40000)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the hub (default 4)")
    parser.add_argument("--batch", type=int, default=250, help="events per send_batch (default 250)")
    parser.add_argument("--timeout", type=float, default=45.0, help="longest read, per consumer (default 45 s)")
    parser.add_argument("--role", choices=["main", "default-consumer"], default="main", help=argparse.SUPPRESS)
    parser.add_argument("--filled", default="", help=argparse.SUPPRESS)  # events per partition, for the role
    args = parser.parse_args(argv)
    if args.role == "default-consumer":
        return default_consumer([int(n) for n in args.filled.split(",")], args.timeout)

    run_id = uuid.uuid4().hex[:12]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="iotperf-ehbench-") as tmp:
        workdir = Path(tmp)
        hub, connection_string = start_hub(args.partitions, workdir)
        try:
            hub_process = psutil.Process(hub.pid)
            grouped = telemetry(run_id, args.events, args.partitions)
            size = len(grouped[0][0]) if grouped[0] else 0
            print(
                f"{args.events} events of {size} bytes, one run id, {DEVICES} devices keyed over "
                f"{args.partitions} partitions; batches of {args.batch}"
            )
            start_s = time.time() - 1.0
            ingest = fill(connection_string, hub_process, grouped, args.batch)
            ingest_rate = rate(ingest["events"], ingest["wall_s"])
            print(
                f"(b) ingest, one producer process: {ingest_rate:,.0f} events/s "
                f"({ingest['events']} events in {ingest['wall_s']:.2f} s, {ingest['untimed']} untimed); "
                f"endpoint CPU {ingest['hub_cpu_s'] / ingest['events'] * 1e6:.1f} us/event, "
                f"{ingest['hub_cpu_s'] / ingest['wall_s']:.0%} of a core"
            )

            cpu_before = cpu_s(hub_process)
            ours = read_with_our_sink(connection_string, run_id, start_s, args.events, workdir, args.timeout)
            hub_delivery_cpu = cpu_s(hub_process) - cpu_before
            ours_rate = rate(ours["received"], ours["span_s"])
            print(
                f"(a) ours (eventhub_sink, 1 process, {args.partitions} partitions): {ours_rate:,.0f} events/s "
                f"({ours['received']} of {args.events} in {ours['span_s']:.2f} s, drain {ours['drain']})"
            )
            print(
                f"(b) deliver: endpoint CPU {hub_delivery_cpu / max(ours['received'], 1) * 1e6:.1f} us/event "
                f"while our sink read (attach included)"
            )
            filled = [len(bodies) for bodies in grouped]
            default = read_with_default_loop(connection_string, filled, workdir, args.timeout)
            default_rate = rate(int(default["received"]), float(default["span_s"]))
            busy_rate = rate(int(default["busy_events"]), float(default["busy_span_s"]))
            print(
                f"(a) SDK default receive(on_event) loop, 1 process: {default_rate:,.0f} events/s "
                f"({default['received']} of {args.events} in {default['span_s']:.2f} s"
                f"{'' if default['complete'] else f', timed out after {args.timeout:g} s'}); "
                f"per partition {default['per_partition']} of {filled}"
            )
            print(
                f"    of which, until the first partition was read to its end: {busy_rate:,.0f} events/s "
                f"({default['busy_events']} in {default['busy_span_s']:.2f} s); after that each turn of its "
                "loop waits 0.2 s on the exhausted partition"
            )
        finally:
            hub.stop()
    ratio = ours_rate / default_rate if default_rate > 0 else float("nan")
    busy_ratio = ours_rate / busy_rate if busy_rate > 0 else float("nan")
    met = ours_rate >= READ_GOAL_PER_S and ratio >= RATIO_GOAL
    print(
        f"ratio ours / default loop: {ratio:.1f}x (goal >= {RATIO_GOAL:g}x); ours {ours_rate:,.0f} events/s "
        f"(goal >= {READ_GOAL_PER_S:,.0f}): {'MET' if met else 'NOT MET'}"
    )
    print(f"ratio ours / default loop while every partition still had events: {busy_ratio:.1f}x")
    print(f"deliver/ingest: {ours_rate / ingest_rate:.2f}; total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
