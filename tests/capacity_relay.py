"""A system under test with a known capacity: it forwards at most ``capacity_per_s`` messages a second.

The relay subscribes to the devices' topics (``in/+/t``), queues every
message in arrival order and republishes it unchanged to the sink's topic
(``out/<device_id>/t``) on a fixed grid of ``1 / capacity_per_s`` seconds: a
message goes out at the later of its arrival and the next free slot.  Below
the capacity a message waits at most one slot; above it the queue, and with
it the delay, grows without bound for as long as the load lasts.  The knee of
a fleet of devices at ``rate`` messages a second each is therefore
``capacity_per_s / rate`` devices.

Each run starts on an empty queue: the first message of a new ``run_id``
discards what an earlier run left queued (a step past the knee leaves a
backlog that would otherwise slow the next step down), as if the system were
restarted between runs.

Independent of the code under test on purpose: payloads are read with
``json`` (the header flat or under ``_iotperf``), nothing is imported from
``pytest_iotperf``.
"""

from __future__ import annotations

import collections
import json
import threading
import time
import uuid
from types import TracebackType
from typing import Any, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

HEADER_KEY = "_iotperf"


class CapacityRelay:
    """``input_filter`` -> FIFO -> ``output_template`` at most ``capacity_per_s`` messages a second."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        capacity_per_s: float,
        input_filter: str = "in/+/t",
        output_template: str = "out/{device_id}/t",
        qos: int = 1,
    ) -> None:
        if capacity_per_s <= 0:
            raise ValueError(f"capacity_per_s must be > 0, got {capacity_per_s!r}")
        self.host, self.port = host, port
        self.capacity_per_s = capacity_per_s
        self.input_filter = input_filter
        self.output_template = output_template
        self.qos = qos
        self.forwarded = 0
        self.discarded = 0  # left queued by an earlier run
        self.errors: list[str] = []
        self._queue: collections.deque[tuple[float, str, bytes]] = collections.deque()
        self._run_id: str | None = None
        self._cond = threading.Condition()
        self._stopping = False
        self._subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-capacity-{uuid.uuid4().hex[:8]}")
        self._client.max_inflight_messages_set(0)  # the pacing is ours: never let the client hold one back
        self._client.max_queued_messages_set(0)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._thread = threading.Thread(target=self._forward, name="capacity-relay", daemon=True)

    def start(self, timeout_s: float = 10.0) -> Self:
        self._thread.start()
        self._client.connect(self.host, self.port, keepalive=30)
        self._client.loop_start()
        if not self._subscribed.wait(timeout_s):
            self.stop()
            raise TimeoutError(f"capacity relay: no SUBACK for {self.input_filter!r} within {timeout_s:g}s")
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(10)
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- paho callbacks (network loop thread) ---------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.errors.append(f"connection refused: {reason}")
            return
        client.subscribe(self.input_filter, qos=self.qos)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        if not any(r.is_failure for r in reasons):
            self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        arrived = time.monotonic()
        payload = bytes(message.payload)
        header = _header(payload)
        if header is None:
            return
        run_id, device_id = str(header.get("run_id", "")), str(header["device_id"])
        with self._cond:
            if run_id != self._run_id:  # a new run: what the last one left queued goes
                self.discarded += len(self._queue)
                self._queue.clear()
                self._run_id = run_id
            self._queue.append((arrived, self.output_template.format(device_id=device_id), payload))
            self._cond.notify_all()

    # -- the forwarder ---------------------------------------------------------------

    def _forward(self) -> None:
        gap_s = 1.0 / self.capacity_per_s
        next_slot = 0.0
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                arrived, topic, payload = self._queue.popleft()
            # The later of its arrival and the next free slot: no credit is saved up while idle.
            slot = max(next_slot, arrived)
            wait_s = slot - time.monotonic()
            if wait_s > 0:
                with self._cond:
                    if self._cond.wait_for(lambda: self._stopping, wait_s):
                        return
            info = self._client.publish(topic, payload, qos=self.qos)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                self.errors.append(f"publish failed: {mqtt.error_string(info.rc)}")
            self.forwarded += 1
            next_slot = slot + gap_s


def _header(payload: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    header = doc.get(HEADER_KEY, doc)
    return header if isinstance(header, dict) and isinstance(header.get("device_id"), str) else None
