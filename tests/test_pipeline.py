"""The pipeline without pytest: the README's script produces verdicts and writes the JSON and HTML report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.fleet

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "run_from_script.py"

# Runs the example as a script would, then checks that pytest was never imported.
RUNNER = """
import runpy, sys
sys.argv = [sys.argv[1], *sys.argv[2:]]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exc:
    code = exc.code
assert "_pytest" not in sys.modules and "pytest" not in sys.modules, "the pipeline imported pytest"
sys.exit(code)
"""


def test_script_gets_verdicts_and_reports_without_pytest(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(SCRIPT), "--devices", "5", "--duration", "2s", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "p95_delay_ms < 1000: measured" in done.stdout and "loss < 0.1%: measured 0.000% -> PASS" in done.stdout
    result = json.loads((out / "nightly.json").read_text())
    assert [(v["slo"], v["passed"]) for v in result["slos"]] == [
        ("p95_delay_ms < 1000", True),
        ("loss < 0.1%", True),
        # The load the run was asked for is the load that ran: checked by default.
        ("connect_failures == 0", True),
        ("unsent == 0", True),
        ("lateness_p99_ms <= 50", True),
    ]
    assert result["sent"] == result["received"] > 0
    html = (out / "nightly.html").read_text()
    assert "loss &lt; 0.1%" in html or "loss < 0.1%" in html


def test_a_master_that_cannot_start_is_a_fleet_error(tmp_path: Path) -> None:
    """Nothing measured yet, so no result: the error names the fleet and why (here: its port is taken)."""
    import socket

    from pytest_iotperf import FleetError, Pipeline
    from pytest_iotperf.config import resolve
    from pytest_iotperf.embedded.broker import EmbeddedBroker

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = resolve({"master_bind": f"127.0.0.1:{port}"}, {}, {}).for_run({"devices": 2, "workers": 1})
        with EmbeddedBroker() as broker, pytest.raises(FleetError, match="Locust master could not start"):
            Pipeline().run(settings, broker.endpoint)
