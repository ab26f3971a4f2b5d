"""PUBLISH packets whose measurement header rides in IoT Hub's property bag (``--iot-header properties``).

IoT Hub speaks MQTT 3.1.1, which has no user properties: a device puts
application properties in the telemetry topic, after
``devices/{device_id}/messages/events/``, and the hub turns them into Event Hubs
application properties.  So with the header in properties every message has its
own topic: the fixed part (device, system properties, ``--iot-property`` ones) is
encoded once, the header's fields are appended per message.  Same ``frame``
interface as :class:`~pytest_iotperf.mqtt_wire.PublishFramer`.  Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

from pytest_iotperf.mqtt_wire import PUBLISH, length_field

#: What needs no encoding in a property-bag value: header values are digits and ids, usually all safe.
_SAFE = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_.~")


class PropertyBagFramer:
    """PUBLISH packets to ``base_topic`` + ``&name=value...`` of each message's properties."""

    __slots__ = ("_base", "_command", "_joiner", "_qos")

    def __init__(self, base_topic: str, qos: int) -> None:
        if qos not in (0, 1):
            raise ValueError(f"the fast path publishes at QoS 0 or 1, not {qos}")
        self._base = base_topic
        # The bag already holds something (system properties) unless the topic ends at "events/".
        self._joiner = "" if base_topic.endswith("/") else "&"
        self._qos = qos
        self._command = bytes([PUBLISH | (qos << 1)])

    def topic(self, properties: Sequence[tuple[str, str]] | None) -> str:
        if not properties:
            return self._base
        bag = "&".join(f"{_encode(name)}={_encode(value)}" for name, value in properties)
        return f"{self._base}{self._joiner}{bag}"

    def frame(
        self, payload: bytes, packet_id: int = 0, properties: Sequence[tuple[str, str]] | None = None
    ) -> bytes:
        """The whole packet; ``packet_id`` (1..65535) is used at QoS 1 only."""
        topic = self.topic(properties).encode()
        if len(topic) > 0xFFFF:
            raise ValueError("the topic with its property bag is longer than 65,535 bytes")
        head = len(topic).to_bytes(2, "big") + topic
        if self._qos:
            head += packet_id.to_bytes(2, "big")
        remaining = len(head) + len(payload)
        return b"".join((self._command, length_field(remaining), head, payload))


def _encode(text: str) -> str:
    # ``quote`` is ~1 µs; header values (digits, run and device ids) rarely need it.
    return text if _SAFE.issuperset(text) else quote(text, safe="")
