"""``python -m pytest_iotperf.bridge SPEC_JSON REPORT_JSON``: run the platform bridge.

Prints ``ready`` once the Event Hub answered and the subscription is
acknowledged, ``progress`` about once a second, and on
``{"cmd": "stop", "timeout_s": D}`` (or EOF on stdin) flushes what is queued
within D, writes REPORT and prints ``done``.  A start failure prints
``error`` and exits with 1 (2 for a bad spec or environment).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from pytest_iotperf.bridge.eventhub_access import (
    EventHubConfigError,
    Scrubber,
    describe_error,
    install_scrubbed_logging,
    read_connection_string,
)
from pytest_iotperf.bridge.protocol import EventWriter, Ticker, commands, write_json_atomically
from pytest_iotperf.bridge.service import Bridge, StartError
from pytest_iotperf.bridge.spec import BridgeSpec
from pytest_iotperf.process_guard import die_with_parent


def main(argv: list[str] | None = None) -> int:
    """Run the bridge until stopped; the exit code is 0 once the report is written."""
    parser = argparse.ArgumentParser(prog="python -m pytest_iotperf.bridge", description=__doc__)
    parser.add_argument("spec", type=Path, help="bridge spec (JSON, no secrets)")
    parser.add_argument("report", type=Path, help="where to write the report (JSON)")
    args = parser.parse_args(argv)
    die_with_parent()
    scrubber = Scrubber()
    install_scrubbed_logging(scrubber)
    emit = EventWriter(scrub=scrubber)
    try:
        spec = BridgeSpec.from_dict(json.loads(args.spec.read_text()))
        connection_string, target = read_connection_string(dict(os.environ), scrubber)
    except (OSError, ValueError, EventHubConfigError) as exc:
        emit("error", message=f"bridge: {describe_error(exc, scrubber)}")
        return 2
    bridge = Bridge(spec, connection_string, target, scrubber)
    try:
        bridge.start()
    except StartError as exc:
        emit("error", message=f"bridge: {scrubber(str(exc))}")
        bridge.close_after_failed_start()
        return 1
    emit("ready", eventhub=target.describe(), partition_ids=bridge.partition_ids, topic_filter=spec.topic_filter)
    ticker = Ticker(lambda: emit("progress", **bridge.progress())).start()
    timeout_s, how = spec.stop_timeout_s, "stdin closed"
    for command in commands():
        if command.get("cmd") == "stop":
            timeout_s, how = float(command.get("timeout_s", timeout_s)), "stop command"
            break
    bridge.stop(timeout_s)
    ticker.stop()
    report = {**bridge.report(), "stopped_by": how}
    write_json_atomically(args.report, report)
    emit("done", received=report["received"], forwarded=report["forwarded"], failed=report["failed"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
