"""Drive a run from a script, without pytest: verdicts, JSON and HTML report, exit code.

    python examples/run_from_script.py                     # 100 devices for 30 s, reports in out/
    python examples/run_from_script.py --devices 20 --duration 2s --out /tmp/iotperf

The pipeline is the one ``iot_perf.run()`` uses; importing it does not import pytest.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pytest_iotperf import Outputs, Pipeline
from pytest_iotperf.config import resolve
from pytest_iotperf.embedded.broker import EmbeddedBroker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default="100")
    parser.add_argument("--duration", default="30s")
    parser.add_argument("--out", type=Path, default=Path("out"))
    args = parser.parse_args(argv)

    # Settings resolve as in pytest: the IOTPERF_* environment overrides what the script asks for.
    settings = resolve({}, {}, {}).for_run({"devices": args.devices, "duration": args.duration, "workers": 1})
    with EmbeddedBroker() as broker:
        outcome = Pipeline(Outputs(report_dir=args.out)).run(
            settings, broker.endpoint, slos=["p95_delay_ms < 1000", "loss < 0.1%"], name="nightly"
        )
    print(outcome.summary())
    print(f"report: {args.out / 'nightly.json'} and {args.out / 'nightly.html'}")
    return 0 if outcome.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
