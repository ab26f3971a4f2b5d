"""The seed's load, 340k events/min (5,700/s), through the WHOLE chain on this machine.

    python benchmarks/seed_load_chain.py                          # 5,700 devices x 1 msg/s, QoS 1, 30 s
    python benchmarks/seed_load_chain.py --steps 5700,2850,1425 --consumers 1,2 --duration 30
    python benchmarks/seed_load_chain.py --rate 10 --steps 5700   # 570 devices x 10 msg/s instead
    python benchmarks/seed_load_chain.py --chains mosquitto,iothub --steps 5700 --consumers 1 --all-steps

Two chains, side by side in the same run (``--chains``): ``mosquitto`` (below) and ``iothub``: devices
(SAS identities, TLS) -> the embedded IoT Hub, which writes straight into its built-in Event Hubs endpoint
(same process, no bridge hop) -> consumers.  Each run prints the CPU us per message of every process and
of the whole chain.

devices (Locust worker) -> Mosquitto -> platform bridge -> embedded Event Hubs endpoint (own process,
as the plugin's session starts it) -> 1 or 2 Event Hubs consumer processes, via ``PerfRun(...,
eventhub=EventHubAccess(...))``.

Fleet shape: by default 1 msg/s per device, so 5,700 devices.  That is the seed's shape (about 6k
devices, one telemetry a second each, 24 Locust containers of ~250 devices).  Downstream of the
broker only the message rate matters (bridge, endpoint and consumers work per message, not per
device), and one of our workers keeps 15,000 devices at 1 msg/s on schedule at QoS 1 (fleet_scale.py), so
the device count costs the chain little besides a ~11 s connect ramp; ``--rate 10`` runs 570 devices
x 10 msg/s for comparison.

For each consumer count, the rate steps down (5,700 -> 2,850 -> 1,425 msg/s by default) until a run
has loss 0 and delay p99 < 1 s; each run prints sent, received, loss, delay p50/p99, lateness p99 and
the CPU% (of one core) of every process of the chain, sampled with psutil over the steady publishing
window (from 2 s after T0 to the end of the schedule), and names the bottleneck.  Not a test: run by
hand on an otherwise idle machine; it has 2 cores, so the sum of CPU% tops out near 200%.

Measured here (QoS 1, 30 s, 2026-11-27): at 5,700 msg/s the chain takes ~285 us of CPU per message
(bridge 85, sink 62, endpoint 52, worker 48, broker 36), ~1.6 of the 2 cores, and the seed's rate
passes with 1 consumer (loss 0, p99 306 ms) and with 2 (p99 172 ms).  Before devices, bridge and
MQTT sink used the lean MQTT path it was ~300 us (worker 95) and passed only with 1 consumer on an
otherwise idle machine.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from pytest_iotperf.broker_endpoint import BrokerEndpoint
from pytest_iotperf.config import resolve
from pytest_iotperf.embedded.broker import EmbeddedBroker
from pytest_iotperf.embedded.iothub_child import start_embedded_iothub
from pytest_iotperf.process_guard import raise_nofile_limit
from pytest_iotperf.processes import Child
from pytest_iotperf.readback import EventHubAccess, start_embedded_eventhub
from pytest_iotperf.result import RunResult
from pytest_iotperf.runner import PerfRun, RunFailed

SEED_RATE = 5700
PARTITIONS = 4
WARM_S = 2.0  # CPU is sampled from this long after T0: the first second still carries start-up work
P99_LIMIT_MS = 1000.0
SATURATED_CORE = 85.0  # % of one core: a Python process there is bound by its GIL
SATURATED_MACHINE = 170.0  # % summed over all processes, of the 200 two cores give

# cmdline fragment -> component; the first match wins (the bridge's module name is a prefix of nothing else).
COMPONENTS: tuple[tuple[str, str], ...] = (
    ("pytest_iotperf.embedded.iothub", "iothub"),
    ("pytest_iotperf.fleet.worker", "worker"),
    ("pytest_iotperf.fleet.master", "master"),
    ("pytest_iotperf.sinks.eventhub_sink", "sink"),
    ("pytest_iotperf.embedded.eventhub", "endpoint"),
    ("pytest_iotperf.bridge", "bridge"),
    ("mosquitto", "broker"),
)


def component_of(process: psutil.Process) -> str | None:
    try:
        cmdline = process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    for fragment, name in COMPONENTS:
        if any(part == fragment or part.endswith("/" + fragment) for part in cmdline):
            return name
    return None


MACHINE = -1  # key of the machine-wide busy CPU seconds in a sample


def cpu_times() -> dict[int, tuple[str, float]]:
    """CPU seconds so far of this process and each descendant that is part of the chain, and of the machine."""
    me = psutil.Process()
    machine = psutil.cpu_times()
    idle = machine.idle + getattr(machine, "iowait", 0.0)
    out: dict[int, tuple[str, float]] = {MACHINE: ("machine", sum(machine) - idle)}
    for process in [me, *me.children(recursive=True)]:
        name = "runner (this process)" if process.pid == me.pid else component_of(process)
        if name is None:
            continue
        try:
            times = process.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out[process.pid] = (name, float(times.user + times.system))
    return out


@dataclass
class CpuSampler:
    """Fed by the run's progress callback: keeps the CPU times at the start and end of the publishing window."""

    duration_s: float
    first: tuple[float, dict[int, tuple[str, float]]] | None = None
    last: tuple[float, dict[int, tuple[str, float]]] | None = None
    phases: list[str] = field(default_factory=list)

    def __call__(self, state: dict[str, Any]) -> None:
        phase = str(state.get("phase"))
        if not self.phases or self.phases[-1] != phase:
            self.phases.append(phase)
        elapsed = state.get("elapsed_s")
        if phase != "publishing" or elapsed is None or not WARM_S <= float(elapsed) <= self.duration_s:
            return
        sample = (time.monotonic(), cpu_times())
        if self.first is None:
            self.first = sample
        else:
            self.last = sample

    def machine_percent(self) -> float:
        """Busy CPU of the whole machine over the window, % of one core (two cores: at most 200)."""
        if self.first is None or self.last is None:
            return math.nan
        (t0, before), (t1, after) = self.first, self.last
        return (after[MACHINE][1] - before[MACHINE][1]) / (t1 - t0) * 100.0

    def percent(self) -> list[tuple[str, float]]:
        """(label, % of one core) per process that lived through the window, busiest first."""
        if self.first is None or self.last is None:
            return []
        (t0, before), (t1, after) = self.first, self.last
        wall = t1 - t0
        rows: list[tuple[str, float]] = []
        counts: dict[str, int] = {}
        for pid in sorted(after):
            if pid == MACHINE or pid not in before:
                continue
            name, cpu = after[pid]
            counts[name] = counts.get(name, 0) + 1
            rows.append((name, (cpu - before[pid][1]) / wall * 100.0))
        # Number the components that run several processes (sinks, workers).
        seen: dict[str, int] = {}
        labelled = []
        for name, pct in rows:
            if counts[name] > 1:
                seen[name] = seen.get(name, 0) + 1
                name = f"{name} {seen[name] - 1}"
            labelled.append((name, pct))
        return sorted(labelled, key=lambda row: -row[1])


def bottleneck(cpu: list[tuple[str, float]], machine: float) -> str:
    if not cpu:
        return "unknown (no CPU sample over the publishing window)"
    name, busiest = cpu[0]
    ours = sum(pct for _, pct in cpu)
    if busiest >= SATURATED_CORE:
        return f"{name} ({busiest:.0f}% of a core: one Python process, bound by its GIL)"
    if machine >= SATURATED_MACHINE:
        others = max(machine - ours, 0.0)
        return (
            f"the machine's 2 cores (busy {machine:.0f}% of 200%: the chain {ours:.0f}%, other processes "
            f"{others:.0f}%); the chain's largest share: {name} {busiest:.0f}%"
        )
    return f"none saturated (busiest {name} {busiest:.0f}%, machine {machine:.0f}% of 200%)"


def start_endpoint(workdir: Path) -> tuple[Child, EventHubAccess]:
    """The embedded endpoint in its own process, as the plugin's session starts it."""
    return start_embedded_eventhub(workdir, partitions=PARTITIONS)


@dataclass(frozen=True)
class Outcome:
    result: RunResult
    failure: str | None  # RunFailed's message
    cpu: list[tuple[str, float]]  # (process, % of one core), busiest first
    machine_cpu: float  # the whole machine, % of one core


def run_once(
    broker: BrokerEndpoint | None, msg_rate: int, rate_per_device: float, consumers: int, args: argparse.Namespace
) -> Outcome:
    """One run; ``broker`` None: the embedded IoT Hub chain (a fresh hub per run, like a fresh endpoint)."""
    devices = max(1, round(msg_rate / rate_per_device))
    settings = resolve({}, {}, {}).for_run(
        {
            "devices": devices,
            "rate_per_device": rate_per_device,
            "duration": args.duration,
            "workers": args.workers,
            "qos": args.qos,
            "sink": "eventhub",
            "eventhub_consumers": consumers,
            "bridge": "embedded" if broker is not None else "none",
            "drain": args.drain,
        }
    )
    workdir = Path(tempfile.mkdtemp(prefix="iotperf-seedload-"))
    if broker is None:
        endpoint, hub = start_embedded_iothub(workdir, partitions=PARTITIONS)
        broker, access = hub.endpoint, hub.eventhub
    else:
        endpoint, access = start_endpoint(workdir)
    sampler = CpuSampler(float(args.duration))
    failure: str | None = None
    try:
        try:
            result = PerfRun(settings, broker, eventhub=access, progress=sampler, workdir=workdir).execute()
        except RunFailed as failed:
            result, failure = failed.result, str(failed)
    finally:
        endpoint.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return Outcome(result, failure, sampler.percent(), sampler.machine_percent())


def ok(outcome: Outcome) -> bool:
    result = outcome.result
    return outcome.failure is None and result.sent > 0 and result.lost == 0 and result.p99_delay_ms < P99_LIMIT_MS


def show(msg_rate: int, rate_per_device: float, consumers: int, outcome: Outcome) -> None:
    result, failure, cpu = outcome.result, outcome.failure, outcome.cpu

    def ms(value: float) -> str:
        return "n/a" if math.isnan(value) else f"{value:,.0f} ms"

    print(
        f"  {msg_rate:>5} msg/s ({result.devices} devices x {rate_per_device:g}/s), {consumers} consumer(s): "
        f"sent {result.sent:,} of {result.scheduled:,}, received {result.received:,}, lost {result.lost:,} "
        f"({result.loss:.2%}), delay p50 {ms(result.p50_delay_ms)} p99 {ms(result.p99_delay_ms)}, "
        f"lateness p99 {ms(result.lateness_p99_ms)}, drain {result.drain} -> " + ("OK" if ok(outcome) else "NOT OK")
    )
    if failure:
        print(f"    run failed: {failure.splitlines()[0][:300]}")
    for warning in result.warnings:
        print(f"    warning: {warning[:200]}")
    if cpu:
        print("    CPU % of one core over the publishing window: " + ", ".join(f"{n} {p:.0f}" for n, p in cpu))
        print(
            "    CPU us per message: "
            + ", ".join(f"{n} {p / 100 / msg_rate * 1e6:.0f}" for n, p in cpu if p >= 1)
            + f"; chain {sum(p for _, p in cpu) / 100 / msg_rate * 1e6:.0f}"
        )
        ours = sum(p for _, p in cpu)
        print(
            f"    chain {ours:.0f}%, machine {outcome.machine_cpu:.0f}% of 200% "
            f"(other processes {max(outcome.machine_cpu - ours, 0):.0f}%); bottleneck: "
            f"{bottleneck(cpu, outcome.machine_cpu)}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default="5700,2850,1425", help="total msg/s to try, highest first")
    parser.add_argument("--rate", type=float, default=1.0, help="msg/s per device (devices = step / rate)")
    parser.add_argument("--consumers", default="1,2", help="consumer process counts to try")
    parser.add_argument("--qos", type=int, choices=[0, 1], default=1)
    parser.add_argument("--duration", type=float, default=30.0, help="steady publishing time, s")
    parser.add_argument("--drain", type=float, default=30.0, help="longest read-back after publishing, s")
    parser.add_argument("--workers", type=int, default=1, help="Locust worker processes")
    parser.add_argument("--all-steps", action="store_true", help="run every step, not only down to the first OK")
    parser.add_argument("--chains", default="mosquitto", help="mosquitto (-> bridge -> endpoint), iothub, or both")
    args = parser.parse_args(argv)
    steps = [int(s) for s in args.steps.split(",")]
    raise_nofile_limit()
    print(
        f"seed load {SEED_RATE:,} msg/s = {SEED_RATE * 60:,}/min; QoS {args.qos}, {args.duration:g} s, "
        f"{args.workers} worker(s), {os.cpu_count()} cores; Mosquitto -> bridge -> endpoint ({PARTITIONS} "
        "partitions) -> consumers"
    )
    best: dict[tuple[str, int], int | None] = {}
    with EmbeddedBroker(prefer="mosquitto") as embedded:
        for consumers in (int(c) for c in args.consumers.split(",")):
            for msg_rate in steps:
                for chain in args.chains.split(","):
                    if (chain, consumers) in best and best[(chain, consumers)] and not args.all_steps:
                        continue
                    best.setdefault((chain, consumers), None)
                    print(f"  chain {chain}:")
                    started = time.monotonic()
                    broker = embedded.endpoint if chain == "mosquitto" else None
                    outcome = run_once(broker, msg_rate, args.rate, consumers, args)
                    show(msg_rate, args.rate, consumers, outcome)
                    print(f"    ({time.monotonic() - started:.0f} s)")
                    if ok(outcome):
                        best[(chain, consumers)] = max(best[(chain, consumers)] or 0, msg_rate)
    for (chain, consumers), rate in best.items():
        verdict = f"{rate:,} msg/s ({rate / SEED_RATE:.0%} of the seed's load)" if rate else "none of the steps"
        print(f"{chain}: highest rate with loss 0 and delay p99 < 1 s, {consumers} consumer(s): {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
