"""The measurement header: how a device writes it into a message, and how a sink finds it again.

Today the header travels in the body, as compact JSON:

``{"run_id":"…","device_id":"…","seq":7,"intended_at":1764198351123456,"sent_at":1764198351123502}``

Times are integer microseconds since the Unix epoch (exact, and shorter than
floats).  ``intended_at`` is the schedule's due time, ``sent_at`` when the
publish call ran.  With ``payload_bytes`` set, a ``"pad"`` field fills the
message up to that size.

Both sides use this module: the fleet renders (``PayloadTemplate``), the
sinks read a ``MessageView`` (body, topic, properties, system properties);
``header_finders`` finds every header of a view wherever it travels (a JSON
body, under a header key, in arrays and JSON lines, in MQTT 5 user properties
or Event Hubs application properties, or through the conftest hook).  Pure:
no locust, no gevent, no client library.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple

#: Sent once per partition by the platform bridge before a run, so each
#: partition's link is open before the first telemetry (the SDK opens links
#: lazily, ~0.45 s each).  Sinks skip it without counting it as malformed.
WARMUP_PAYLOAD = b'{"iotperf":"warmup"}'


class PayloadTemplate:
    """Pre-built prefix and suffix, so rendering a message is one string format."""

    __slots__ = ("_pad_to", "_prefix", "_suffix")

    def __init__(self, run_id: str, device_id: str, payload_bytes: int = 0) -> None:
        self._prefix = f'{{"run_id":{json.dumps(run_id)},"device_id":{json.dumps(device_id)},"seq":'
        self._pad_to = payload_bytes
        self._suffix = "}"

    def render(self, seq: int, intended_at_us: int, sent_at_us: int) -> bytes:
        body = f'{self._prefix}{seq},"intended_at":{intended_at_us},"sent_at":{sent_at_us}'
        if self._pad_to:
            # ',"pad":""}' is 10 bytes; pad only when there is room for it.
            room = self._pad_to - len(body) - 10
            if room >= 0:
                return f'{body},"pad":"{"x" * room}"}}'.encode()
        return (body + self._suffix).encode()


class Telemetry(NamedTuple):
    """A decoded header (a NamedTuple: made in a third of a frozen dataclass's time, once per message)."""

    run_id: str
    device_id: str
    seq: int
    intended_at_us: int
    sent_at_us: int


class MessageView(NamedTuple):
    """One message as a sink read it, handed over as the client library gave it (nothing decoded).

    A NamedTuple: immutable and made in a few hundred nanoseconds, which
    matters at 12,000+ messages a second in one sink process.

    Attributes:
        body: the payload bytes.
        topic: the MQTT topic as it came off the wire (UTF-8 bytes); None for Event Hubs.
        properties: MQTT 5 user properties, or an Event Hubs event's application
            properties (keys as the library gives them: bytes for Event Hubs); None when absent.
        system_properties: what the service stamped on the message: Event Hubs
            message annotations (``x-opt-enqueued-time``, ``iothub-connection-device-id``, bytes keys); None for MQTT.
    """

    body: bytes
    topic: bytes | None = None
    properties: Mapping[Any, Any] | None = None
    system_properties: Mapping[Any, Any] | None = None


#: The annotation IoT Hub's built-in endpoint stamps on every device message: the device that sent it.
IOTHUB_DEVICE_ID = b"iothub-connection-device-id"
