"""A stand-in for an IoT platform that checks its own schema and renames fields on the way out.

Devices must send ``{"deviceId", "temperature", "humidity", "ts"}`` (anything
else is rejected, as a real platform would dead-letter it).  The platform keeps
the trace context a device sends under ``_iotperf`` (as platforms keep a
``traceparent``), and writes each reading to ``platform/telemetry`` in its
own shape::

    {"device": "...", "temperature": 21.4, "humidity": 44.9, "time": "...",
     "trace": {"run": "...", "n": 7, "due": 1764198351123456, "sent": 1764198351123502}}

so the plugin's header fields arrive renamed: the ``pytest_iotperf_extract``
hook in ``conftest.py`` reads them back.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

SCHEMA: Final = ("deviceId", "temperature", "humidity", "ts")
INPUT: Final = "devices/+/telemetry"
OUTPUT: Final = "platform/telemetry"


class RenamingPlatform:
    """Subscribes to the devices' topic on ``host:port`` and republishes each accepted reading renamed."""

    def __init__(self, host: str, port: int) -> None:
        self.accepted = 0
        self.rejected = 0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="renaming-platform")
        self._client.on_connect = lambda client, userdata, flags, reason, props: client.subscribe(INPUT, qos=1)
        self._client.on_subscribe = lambda client, userdata, mid, reasons, props: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(host, port)

    def start(self) -> RenamingPlatform:
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError(f"the platform could not subscribe to {INPUT}")
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            doc = json.loads(message.payload)
            reading = {name: doc[name] for name in SCHEMA}
            trace = doc["_iotperf"]
            output = {
                "device": reading["deviceId"],
                "temperature": reading["temperature"],
                "humidity": reading["humidity"],
                "time": reading["ts"],
                "trace": {
                    "run": trace["run_id"],
                    "n": trace["seq"],
                    "due": trace["intended_at"],
                    "sent": trace["sent_at"],
                },
            }
        except (ValueError, KeyError, TypeError):
            with self._lock:
                self.rejected += 1
            return
        client.publish(OUTPUT, json.dumps(output), qos=1)
        with self._lock:
            self.accepted += 1
