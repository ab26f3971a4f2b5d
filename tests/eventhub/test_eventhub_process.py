"""The endpoint as its own process: ``python -m pytest_iotperf.embedded.eventhub``."""

from __future__ import annotations

import json
import subprocess
import sys

from azure.eventhub import EventHubProducerClient
from eventhub_helpers import FAST


def test_module_prints_ready_line_and_serves() -> None:
    command = [
        sys.executable,
        "-m",
        "pytest_iotperf.embedded.eventhub",
        "--port",
        "0",
        "--hub",
        "telemetry",
        "--partitions",
        "2",
        "--exit-on-stdin-close",
    ]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdin is not None
        ready = json.loads(process.stdout.readline())
        assert ready["event"] == "ready" and ready["port"] > 0
        assert f"127.0.0.1:{ready['port']}" in ready["connection_string"]
        client = EventHubProducerClient.from_connection_string(ready["connection_string"], **FAST)
        with client:
            assert client.get_partition_ids() == ["0", "1"]
        process.stdin.close()
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
