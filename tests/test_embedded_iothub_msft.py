"""Microsoft's own device SDK (``azure-iot-device``) against the embedded IoT Hub.

azure-iot-device pins paho-mqtt < 2, so it lives in its own environment, ``.venv-msft`` at the repository's
root (``python3 -m venv .venv-msft && .venv-msft/bin/pip install azure-iot-device``); the test is skipped
without it.  The SDK always dials port 8883: the hub listens there when it is free, otherwise the script
redirects paho's connect from 8883 to the hub's port (the SDK's own code is untouched).
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest
from eventhub_helpers import collect

from pytest_iotperf.embedded.eventhub.partition_key import partition_for_key
from pytest_iotperf.embedded.iothub import EmbeddedIotHub, HubOptions
from pytest_iotperf.iothub.sas import derive_device_key

MSFT_PYTHON = Path(__file__).resolve().parent.parent / ".venv-msft" / "bin" / "python"
SDK_PORT = 8883

SCRIPT = """
import json, sys
settings = json.loads(sys.argv[1])
if settings["port"] != 8883:
    import paho.mqtt.client as paho
    original = paho.Client.connect
    def connect(self, host, port=1883, *args, **kwargs):
        return original(self, host, settings["port"] if port == 8883 else port, *args, **kwargs)
    paho.Client.connect = connect
from azure.iot.device import IoTHubDeviceClient, Message
client = IoTHubDeviceClient.create_from_connection_string(
    settings["connection_string"], server_verification_cert=settings["ca"], connection_retry=False
)
client.connect()
message = Message('{"temperature": 20.5}', content_encoding="utf-8", content_type="application/json")
message.custom_properties["site"] = "north & south"
message.custom_properties["line"] = "7"
client.send_message(message)
client.shutdown()
print("sent")
"""


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.fleet  # two SDKs: the device in a subprocess, Event Hubs here
@pytest.mark.skipif(not MSFT_PYTHON.exists(), reason="no .venv-msft with azure-iot-device (see this module's doc)")
def test_microsofts_device_sdk_connects_and_its_message_arrives_with_annotations() -> None:
    port = SDK_PORT if _port_free(SDK_PORT) else 0
    with EmbeddedIotHub(HubOptions(hub="seed", partitions=2, port=port)) as hub:
        device_id = "msft-dev-1"
        key = derive_device_key(hub.group_key, device_id)
        settings = {
            "port": hub.port,
            "connection_string": f"HostName={hub.host};DeviceId={device_id};SharedAccessKey={key}",
            "ca": Path(hub.ca_file).read_text(),
        }
        result = subprocess.run(
            [str(MSFT_PYTHON), "-c", SCRIPT, json.dumps(settings)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0 and result.stdout.strip() == "sent", result.stderr[-2000:]
        partition = str(partition_for_key(device_id, 2))
        (event,) = collect(hub.eventhub_connection_string, partition, 1, timeout=20)
        system = event.system_properties
        assert system[b"iothub-connection-device-id"] == device_id.encode()
        assert system[b"iothub-message-source"] == b"Telemetry"
        assert system[b"content-type"] == b"application/json" and system[b"content-encoding"] == b"utf-8"
        assert event.properties == {b"site": b"north & south", b"line": b"7"}
        assert event.body_as_str() == '{"temperature": 20.5}'
        stats = hub.stats()
        assert stats["refusals"] == {} and stats["connects"] == 1
        assert stats["disconnects"] == {"disconnected by the device": 1}
