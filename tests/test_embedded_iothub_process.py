"""The embedded IoT Hub as its own process: ``python -m pytest_iotperf.embedded.iothub``."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from pytest_iotperf.iothub.connection_string import parse_iothub_connection_string
from pytest_iotperf.iothub.naming import telemetry_topic, username_for
from pytest_iotperf.iothub.sas import derive_device_key, device_resource_uri, make_sas_token

READY_KEYS = {
    "event",
    "host",
    "port",
    "ca_file",
    "hub_connection_string",
    "registry_connection_string",
    "eventhub_connection_string",
    "eventhub_port",
    "registry_port",
    "group_key",
}


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.parametrize("port", [0, 8883])
def test_module_prints_ready_line_serves_and_exits_on_stdin_close(port: int) -> None:
    if port and not _port_free(port):
        pytest.skip(f"port {port} is in use on this machine")
    command = [sys.executable, "-m", "pytest_iotperf.embedded.iothub", "--port", str(port), "--hub", "seed"]
    command += ["--partitions", "2", "--exit-on-stdin-close"]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdin is not None
        ready = json.loads(process.stdout.readline())
        assert set(ready) == READY_KEYS and ready["event"] == "ready"
        assert ready["host"] == "127.0.0.1" and (ready["port"] == port or (port == 0 and ready["port"] > 0))
        hub = parse_iothub_connection_string(ready["hub_connection_string"])
        assert (hub.host, hub.policy) == ("127.0.0.1", "device")
        assert parse_iothub_connection_string(ready["registry_connection_string"]).policy == "registryReadWrite"
        endpoint = ready["eventhub_connection_string"]
        assert f"Endpoint=sb://127.0.0.1:{ready['eventhub_port']}/;" in endpoint
        assert "EntityPath=seed;" in endpoint and endpoint.endswith("UseDevelopmentEmulator=true")

        device_id = "dev000000"
        key = derive_device_key(ready["group_key"], device_id)
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv311)
        token = make_sas_token(device_resource_uri(hub.host, device_id), key, int(time.time()) + 60)
        client.username_pw_set(username_for(hub.host, device_id), token)
        client.tls_set(ca_certs=ready["ca_file"])
        client.connect("127.0.0.1", ready["port"])
        client.loop_start()
        info = client.publish(telemetry_topic(device_id), b"{}", qos=1)
        info.wait_for_publish(5)
        assert info.is_published()
        client.disconnect()
        client.loop_stop()

        process.stdin.write(json.dumps({"cmd": "stats"}) + "\n")
        process.stdin.flush()
        stats = json.loads(process.stdout.readline())
        assert stats["event"] == "stats" and stats["messages"] == 1 and stats["connects"] == 1
        process.stdin.close()
        assert process.wait(timeout=10) == 0
        stopped = json.loads(process.stdout.readline())
        assert stopped["event"] == "stopped"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
