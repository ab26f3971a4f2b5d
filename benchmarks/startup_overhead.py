"""Start-up cost per perf test in one pytest session: standing processes vs fresh ones per run (issue 16 §5).

    python benchmarks/startup_overhead.py [--tests 10] [--devices 10] [--duration 1s] [--fresh-too]

Writes a test file of ``--tests`` tiny perf tests (``iot_perf.run(devices=10, duration="1s")``),
runs it with ``python -m pytest`` in a subprocess (one session, the embedded broker) and prints,
per test, its wall time minus its steady-state time: the first test pays the broker and the
processes' start-up, the later ones only what a run adds around its steady state (ramp, T0,
report hand-off, drain).  ``--fresh-too`` runs the session again with ``--iot-fresh-processes``
(every run starts its own master, workers and sink), for comparison.
Not a test: run it by hand on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

_TEST_FILE = """
import json
import time

import pytest


@pytest.mark.parametrize("index", range({tests}))
def test_tiny(iot_perf, index):
    started = time.monotonic()
    result = iot_perf.run(devices={devices}, duration="{duration}", drain="5s", workers=1)
    wall_s = time.monotonic() - started
    with open("timings.jsonl", "a") as out:
        out.write(json.dumps({{"index": index, "wall_s": wall_s, "steady_s": result.duration_s,
                               "run_id": result.run_id, "worker_pid": result.worker_stats[0]["pid"]}}) + "\\n")
"""


def run_session(tests: int, devices: int, duration: str, fresh: bool) -> list[dict[str, float]]:
    """One pytest session of ``tests`` tiny perf tests; each test's timing row."""
    with tempfile.TemporaryDirectory(prefix="iotperf-startup-") as directory:
        path = Path(directory)
        (path / "test_tiny.py").write_text(
            textwrap.dedent(_TEST_FILE.format(tests=tests, devices=devices, duration=duration))
        )
        args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_tiny.py"]
        if fresh:
            args.append("--iot-fresh-processes")
        env = {k: v for k, v in os.environ.items() if not k.startswith("IOTPERF_")}
        started = time.monotonic()
        done = subprocess.run(args, cwd=path, env=env, capture_output=True, text=True, timeout=600)
        session_s = time.monotonic() - started
        if done.returncode != 0:
            print(done.stdout[-3000:], done.stderr[-2000:], sep="\n")
            raise SystemExit(f"the session failed (exit {done.returncode})")
        rows = [json.loads(line) for line in (path / "timings.jsonl").read_text().splitlines()]
    print(f"  whole session: {session_s:.1f}s (interpreter, collection and teardown included)")
    return sorted(rows, key=lambda row: row["index"])


def report(label: str, rows: list[dict[str, float]]) -> None:
    overheads = [row["wall_s"] - row["steady_s"] for row in rows]
    print(f"{label}: overhead = wall time - steady state, per test (s):")
    print("  " + " ".join(f"{o:.2f}" for o in overheads))
    later = overheads[1:]
    if later:
        print(
            f"  first {overheads[0]:.2f}s; later: mean {statistics.mean(later):.2f}s, "
            f"max {max(later):.2f}s, min {min(later):.2f}s"
        )
    pids = {row["worker_pid"] for row in rows}
    run_ids = {row["run_id"] for row in rows}
    print(f"  {len(pids)} distinct worker process(es) for {len(rows)} runs ({len(run_ids)} run ids)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tests", type=int, default=10)
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--duration", default="1s")
    parser.add_argument("--fresh-too", action="store_true", help="also a session with --iot-fresh-processes")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; {args.tests} tests x {args.devices} devices x {args.duration}, 1 worker")
    modes = [("standing processes (default)", False)] + ([("fresh processes per run", True)] if args.fresh_too else [])
    for label, fresh in modes:
        report(label, run_session(args.tests, args.devices, args.duration, fresh))


if __name__ == "__main__":
    main()
