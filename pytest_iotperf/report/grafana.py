"""The Grafana dashboard for the InfluxDB export: ``python -m pytest_iotperf.report.grafana [--out DIR]``.

Without ``--out`` it prints the path of the packaged dashboard JSON (to import
by hand in Grafana).  With ``--out DIR`` it writes, for Grafana's file
provisioning:

- ``DIR/iotperf-run.json``: the dashboard (uid ``iotperf-run``);
- ``DIR/iotperf-dashboards.yaml``: a dashboard provider reading ``DIR``; copy it
  to Grafana's ``provisioning/dashboards/``.

The dashboard picks its InfluxDB (Flux) datasource through a ``datasource``
variable, and the bucket through a ``bucket`` text variable (default
``iotperf``), so no datasource uid or secret is baked in.  See
:mod:`pytest_iotperf.report.influx` for the series it reads and the exact
percentile definition.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Final

DASHBOARD_RESOURCE: Final = "grafana_dashboard.json"
DASHBOARD_FILE: Final = "iotperf-run.json"
PROVIDER_FILE: Final = "iotperf-dashboards.yaml"

__all__ = ["dashboard", "dashboard_path", "main", "write_provisioning"]


def dashboard_path() -> Path:
    """Where the packaged dashboard JSON is on disk."""
    return Path(str(resources.files("pytest_iotperf.report").joinpath(DASHBOARD_RESOURCE)))


def dashboard() -> dict[str, Any]:
    """The dashboard as a dictionary (the packaged JSON, parsed)."""
    loaded: dict[str, Any] = json.loads(
        resources.files("pytest_iotperf.report").joinpath(DASHBOARD_RESOURCE).read_text()
    )
    return loaded


def write_provisioning(out_dir: Path) -> tuple[Path, Path]:
    """Write the dashboard and a file-provider yaml pointing at ``out_dir``; returns both paths."""
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    dashboard_file = out_dir / DASHBOARD_FILE
    dashboard_file.write_text(json.dumps(dashboard(), indent=2) + "\n")
    provider_file = out_dir / PROVIDER_FILE
    # json.dumps quotes the path as a YAML double-quoted scalar would (YAML is a JSON superset).
    provider_file.write_text(
        "# Grafana dashboard provisioning for pytest-iotperf: copy to <grafana>/provisioning/dashboards/\n"
        "apiVersion: 1\n"
        "providers:\n"
        "  - name: iotperf\n"
        "    folder: IoT perf\n"
        "    type: file\n"
        "    disableDeletion: false\n"
        "    allowUiUpdates: true\n"
        "    options:\n"
        f"      path: {json.dumps(str(out_dir))}\n"
        "      foldersFromFilesStructure: false\n"
    )
    return dashboard_file, provider_file


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m pytest_iotperf.report.grafana",
        description="Print the path of the pytest-iotperf Grafana dashboard, or write it with a provisioning yaml.",
    )
    parser.add_argument("--out", type=Path, metavar="DIR", help="write the dashboard JSON and a provisioning yaml here")
    args = parser.parse_args(argv)
    if args.out is None:
        print(dashboard_path())
        return 0
    try:
        dashboard_file, provider_file = write_provisioning(args.out)
    except OSError as exc:
        print(f"cannot write the dashboard to {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(dashboard_file)
    print(provider_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
