"""``python -m pytest_iotperf.bridge SPEC_JSON REPORT_JSON``: run the platform bridge.

Prints ``ready`` once the Event Hub answered and the subscription is
acknowledged, ``progress`` about once a second, and on
``{"cmd": "stop", "timeout_s": D}`` (or EOF on stdin) flushes what is queued
within D, writes REPORT and prints ``done``.  A start failure prints
``error`` and exits with 1 (2 for a bad spec or environment).
"""

from __future__ import annotations

from pytest_iotperf.bridge.child import start_child
from pytest_iotperf.bridge.service import Bridge, StartError
from pytest_iotperf.bridge.spec import BridgeSpec
from pytest_iotperf.child_protocol import Ticker, commands
from pytest_iotperf.files import write_json_atomically


def main(argv: list[str] | None = None) -> int:
    """Run the bridge until stopped; the exit code is 0 once the report is written."""
    child = start_child("python -m pytest_iotperf.bridge", __doc__, "bridge", BridgeSpec.from_dict, argv)
    if isinstance(child, int):
        return child
    spec, emit = child.spec, child.emit
    bridge = Bridge(spec, child.connection_string, child.target, child.scrubber)
    try:
        bridge.start()
    except StartError as exc:
        emit("error", message=f"bridge: {child.scrubber(str(exc))}")
        bridge.close_after_failed_start()
        return 1
    emit("ready", eventhub=child.target.describe(), partition_ids=bridge.partition_ids, topic_filter=spec.topic_filter)
    ticker = Ticker(lambda: emit("progress", **bridge.progress())).start()
    timeout_s, how = spec.stop_timeout_s, "stdin closed"
    for command in commands():
        if command.get("cmd") == "stop":
            timeout_s, how = float(command.get("timeout_s", timeout_s)), "stop command"
            break
    bridge.stop(timeout_s)
    ticker.stop()
    report = bridge.report(stopped_by=how)
    write_json_atomically(child.report_path, report)
    emit("done", received=report["received"], forwarded=report["forwarded"], failed=report["failed"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
