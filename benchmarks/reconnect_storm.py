"""Reconnect storm: 10,000 devices in one worker lose the broker at once; how fast and how evenly do they return?

    python benchmarks/reconnect_storm.py                  # 10,000 devices, QoS 1, 1 msg/s, cut at T0+10 s
    python benchmarks/reconnect_storm.py --devices 2000 --refuse 0 --duration 30

Embedded Mosquitto behind a cutting TCP proxy (``storm_proxy.py``: processes of its own, two
sockets per device). At T0 + ``--cut-at`` the proxy closes every connection and refuses new
ones for ``--refuse`` seconds (a broker pod gone behind its service address), then forwards
again. Prints the time from the cut until 99 % and 100 % of the devices were connected again,
the disconnect -> CONNACK latency percentiles (the result's ``reconnect_p50/p99/max_ms``), the
worker's CPU in the steady state and during the storm, and the reconnect timeline per 100 ms
(the fleet's ``reconnect_timeline``): jittered backoff spreads the storm, where synchronized
retries would show as waves. Not a test: run it by hand; the machine is shared, so read it as
an order of magnitude.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pytest_iotperf.broker_endpoint import BrokerEndpoint
from pytest_iotperf.config import resolve
from pytest_iotperf.embedded.broker import EmbeddedBroker
from pytest_iotperf.process_guard import raise_nofile_limit
from pytest_iotperf.result import RunResult
from pytest_iotperf.runner import PerfRun, RunFailed

sys.path.insert(0, str(Path(__file__).parent))
from storm_proxy import StormProxy

_TICK_S = os.sysconf("SC_CLK_TCK")
_BUCKET_S = 0.1


def worker_pids() -> list[int]:
    """The Locust worker processes this script started (children running ``pytest_iotperf.fleet.worker``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() and b"pytest_iotperf.fleet.worker" in cmdline:
            pids.append(int(entry.name))
    return pids


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of ``pid`` so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK_S


class Storm:
    """Cuts the proxy at T0 + ``cut_at_s`` (told T0 by the run's progress) and samples the worker's CPU."""

    def __init__(self, proxy: StormProxy, cut_at_s: float, refuse_s: float) -> None:
        self.proxy = proxy
        self.cut_at_s = cut_at_s
        self.refuse_s = refuse_s
        self.t0: float | None = None
        self.cut_started: float | None = None
        self.cut_count = 0
        self.connections_before = 0
        self.cpu: list[tuple[float, float]] = []  # (time.time(), worker CPU s)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def progress(self, state: dict[str, Any]) -> None:
        if self.t0 is None and state.get("phase") == "publishing" and state.get("t0"):
            self.t0 = float(state["t0"])
            for target in (self._cut_later, self._sample_cpu):
                thread = threading.Thread(target=target, daemon=True)
                thread.start()
                self._threads.append(thread)

    def _cut_later(self) -> None:
        assert self.t0 is not None
        self._stop.wait(max(0.0, self.t0 + self.cut_at_s - time.time()))
        if self._stop.is_set():
            return
        self.connections_before = self.proxy.connections()
        self.cut_started, self.cut_count = self.proxy.cut(self.refuse_s)

    def _sample_cpu(self) -> None:
        pids = worker_pids()
        while not self._stop.is_set() and pids:
            used = [cpu_seconds(pid) for pid in pids]
            if any(u is None for u in used):
                return
            self.cpu.append((time.time(), sum(u for u in used if u is not None)))
            self._stop.wait(_BUCKET_S)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def cpu_percent(self, start: float, end: float) -> float:
        """The worker's CPU % between two instants (from the 100 ms samples)."""
        inside = [(t, c) for t, c in self.cpu if start <= t <= end]
        if len(inside) < 2:
            return math.nan
        (t_a, c_a), (t_b, c_b) = inside[0], inside[-1]
        return 100.0 * (c_b - c_a) / max(t_b - t_a, 1e-9)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def back_after(buckets: dict[int, int], cut: float, wanted: float) -> float:
    """Seconds from the cut until ``wanted`` reconnects had completed (the end of that 100 ms bucket)."""
    done = 0
    for bucket in sorted(buckets):
        done += buckets[bucket]
        if done >= wanted:
            return (bucket + 1) * _BUCKET_S - cut
    return math.nan


def by_bucket(stamps: Any) -> dict[int, int]:
    """Epoch times counted per 100 ms bucket of the epoch grid (the fleet's reconnect_timeline grid)."""
    out: dict[int, int] = {}
    for stamp in stamps:
        bucket = int(stamp / _BUCKET_S)
        out[bucket] = out.get(bucket, 0) + 1
    return out


def print_timeline(attempts: dict[int, int], connacks: dict[int, int], fleet: dict[int, int], cut: float) -> None:
    """One line per 100 ms bucket (epoch grid) from the cut on; runs of empty buckets folded into one line."""
    every = attempts.keys() | connacks.keys() | fleet.keys()
    if not every:
        return
    top = max([*attempts.values(), 1])
    print("    since the cut  attempts (proxy)  CONNACK sent (proxy)  reconnected (fleet)  attempts")
    empty = 0
    for bucket in range(min(every), max(every) + 1):
        tried, sent, done = attempts.get(bucket, 0), connacks.get(bucket, 0), fleet.get(bucket, 0)
        if not (tried or sent or done):
            empty += 1
            continue
        if empty:
            print(f"    ({empty} bucket(s) of 100 ms with nothing)")
            empty = 0
        since = bucket * _BUCKET_S - cut
        bar = "#" * round(30 * tried / top)
        print(f"    t+{since:5.2f} s  {tried:16,}  {sent:20,}  {done:19,}  {bar}")


def report(result: RunResult, storm: Storm, proxy_stats: list[dict[str, Any]], args: argparse.Namespace) -> None:
    t0 = result.t0 or storm.t0
    print(
        f"fleet: {result.devices:,} devices, {result.connected:,} connected at T0; sent {result.sent:,} of "
        f"{result.scheduled:,} scheduled; dropped offline {result.dropped_offline:,}; resent {result.resent:,}; "
        f"lateness p99 {result.lateness_p99_ms:.1f} ms (messages held offline count with their delay)"
    )
    if storm.cut_started is None or t0 is None:
        print("the cut did not happen (the run ended before T0 + --cut-at?)")
        return
    cut = storm.cut_started
    print(
        f"cut at T0+{cut - t0:.2f} s: {storm.cut_count:,} connections closed "
        f"({storm.connections_before:,} open just before); new connections refused for {args.refuse:g} s"
    )
    print(
        f"devices: {result.disconnects:,} disconnects {dict(result.disconnect_reasons)}, {result.reconnects:,} "
        f"reconnects, {result.offline_device_s:,.0f} device-seconds offline"
    )
    # Both timelines on the epoch's 100 ms grid: the fleet's (when each device had its CONNACK) and the proxy's
    # (when the broker's CONNACK went back to the device).
    fleet: dict[int, int] = {}
    for since_t0, count in result.reconnect_timeline.items():
        bucket = round((t0 + float(since_t0)) / _BUCKET_S)
        if bucket * _BUCKET_S >= cut - _BUCKET_S:  # the storm's, not an earlier drop's
            fleet[bucket] = fleet.get(bucket, 0) + count
    proxy = by_bucket(t for shard in proxy_stats for t in shard["connacks"])
    attempts = by_bucket(t for shard in proxy_stats for t in shard["attempts"])
    connacks = sorted(t - cut for shard in proxy_stats for t in shard["connacks"])
    total = storm.cut_count or result.disconnects
    for name, buckets in (("fleet: CONNACK handled", fleet), ("proxy: CONNACK sent", proxy)):
        if buckets:
            print(
                f"back after the cut ({name}): 99 % in {back_after(buckets, cut, 0.99 * total):.1f} s, "
                f"100 % in {back_after(buckets, cut, total):.1f} s (the refusal ended after {args.refuse:g} s)"
            )
    if not fleet:
        print("no reconnect_timeline in the result (the worker does not report one)")
    print(
        f"disconnect -> CONNACK again (fleet): p50 {result.reconnect_p50_ms:,.0f} ms, p99 "
        f"{result.reconnect_p99_ms:,.0f} ms, max {result.reconnect_max_ms:,.0f} ms"
    )
    if connacks:
        print(
            f"cut -> CONNACK sent (proxy): p50 {percentile(connacks, 50):.2f} s, p99 {percentile(connacks, 99):.2f} s, "
            f"max {connacks[-1]:.2f} s; {sum(int(s['refused']) for s in proxy_stats):,} connection attempts "
            "refused while cut"
        )
    back_all = back_after(fleet, cut, total) if fleet else args.refuse + 5.0
    steady = storm.cpu_percent(cut - 5.0, cut)
    during = storm.cpu_percent(cut, cut + back_all if math.isfinite(back_all) else time.time())
    whole = sum(w.get("cpu_percent", 0.0) for w in result.worker_stats)
    print(
        f"worker CPU: {steady:.0f} % in the 5 s before the cut, {during:.0f} % during the storm (cut -> all back), "
        f"{whole:.0f} % over the run; proxy CPU {sum(float(s['cpu_s']) for s in proxy_stats):.1f} s in total"
    )
    if attempts:
        print(
            f"per 100 ms: {sum(attempts.values()):,} connection attempts in {len(attempts)} buckets, the busiest "
            f"{max(attempts.values()):,}; reconnects completed in {len(fleet)} buckets, the busiest "
            f"{max(fleet.values(), default=0):,} = {100 * max(fleet.values(), default=0) / max(total, 1):.1f} % of "
            "the fleet:"
        )
    print_timeline(attempts, proxy, fleet, cut)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=1.0)
    parser.add_argument("--qos", type=int, default=1)
    parser.add_argument("--duration", type=float, default=40.0, help="steady state, seconds")
    parser.add_argument("--cut-at", type=float, default=10.0, help="seconds after T0")
    parser.add_argument("--refuse", type=float, default=3.0, help="seconds the proxy refuses new connections")
    parser.add_argument("--shards", type=int, default=2, help="proxy processes (two descriptors per device)")
    parser.add_argument("--read-back", action="store_true", help="also run the sink (through the proxy too)")
    args = parser.parse_args()
    raise_nofile_limit()
    settings = resolve({}, {}, {}).for_run(
        {
            "devices": args.devices,
            "rate_per_device": args.rate,
            "duration": args.duration,
            "workers": 1,
            "qos": args.qos,
        }
    )
    with EmbeddedBroker(prefer="mosquitto") as broker:
        target = broker.endpoint
        with StormProxy(target.host, target.port, shards=args.shards) as proxy:
            endpoint = BrokerEndpoint(
                host=proxy.host,
                port=proxy.port,
                tls=False,
                kind=target.kind,
                description=f"{target.description} behind a cutting proxy ({args.shards} processes)",
                open_files=target.open_files,
            )
            print(
                f"broker: {endpoint.description}; {args.devices:,} devices in one worker, QoS {args.qos}, "
                f"{args.rate:g} msg/s each, {args.duration:g} s; cut at T0+{args.cut_at:g} s, refuse {args.refuse:g} s",
                flush=True,
            )
            storm = Storm(proxy, args.cut_at, args.refuse)
            try:
                result = PerfRun(settings, endpoint, progress=storm.progress, read_back=args.read_back).execute()
            except RunFailed as failed:
                result = failed.result
                print(f"the run failed: {str(failed)[:300]}")
            finally:
                storm.stop()
            proxy_stats = proxy.stop()
    report(result, storm, proxy_stats, args)
    if args.read_back:
        print(f"sink: received {result.received:,}, lost {result.lost:,}, duplicates {result.duplicates:,}")
    for line in result.warnings:
        print(f"warning: {line[:200]}")
    for line in result.errors[:5]:
        print(f"error: {line[:200]}")


if __name__ == "__main__":
    main()
