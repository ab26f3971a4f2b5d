"""The JSON result file of a run (same keys as ``RunResult.to_dict()``)."""

from __future__ import annotations

import re
from pathlib import Path

from pytest_iotperf.files import write_json_atomically
from pytest_iotperf.result import RunResult


def result_path(report_dir: Path, test_id: str, run_index: int) -> Path:
    """``<report_dir>/<test id>.json``; a second run of the same test gets ``.run2.json``."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", test_id).strip("_") or "run"
    suffix = "" if run_index <= 1 else f".run{run_index}"
    return report_dir / f"{safe}{suffix}.json"


def write_result(result: RunResult, path: Path) -> None:
    """Write the JSON result atomically (a reader never sees half a file)."""
    write_json_atomically(path, result.to_dict(), indent=2, allow_nan=False)
