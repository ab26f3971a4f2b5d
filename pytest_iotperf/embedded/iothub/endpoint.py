"""IoT Hub's built-in endpoint: telemetry appended straight to the embedded Event Hub's partitions.

Each message becomes the AMQP message IoT Hub writes to its Event Hubs-compatible
endpoint: message annotations ``iothub-connection-device-id``,
``iothub-connection-auth-method``, ``iothub-enqueuedtime``,
``iothub-message-source`` = ``Telemetry`` (plus the broker's ``x-opt-*``); the
property bag's ``$.ct``/``$.ce``/``$.mid``/``$.cid``/``$.uid``/``$.to`` as AMQP
properties; user properties as application properties; the payload as one Data
section.

The hot path is byte joins: what is constant for a connection (its device's
annotations, its partition) is a :class:`Route`; what is constant for a topic
(properties and application properties) is encoded once per topic by the caller's
cache; per message only the times, the sequence number and the offset are packed.
Consumers are woken at most every ``NOTIFY_DELAY_S``, not per message.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Mapping
from typing import Any, Final

from pytest_iotperf.embedded.eventhub.codec import Described, Symbol, ULong, encode_value
from pytest_iotperf.embedded.eventhub.hub import EventHub, Partition, StoredEvent
from pytest_iotperf.embedded.eventhub.partition_key import partition_for_key

__all__ = ["BuiltInEndpoint", "Route", "auth_method", "encode_sections"]

_MESSAGE_ANNOTATIONS: Final = b"\x00\x53\x72\xd1"  # described (small ulong 0x72) map32
_DATA8: Final = b"\x00\x53\x75\xa0"
_DATA32: Final = b"\x00\x53\x75\xb0"
_MAP_HEADER: Final = struct.Struct(">II")
_LENGTH32: Final = struct.Struct(">I")
# Per message: iothub-enqueuedtime, then x-opt-sequence-number (long), then x-opt-offset (str8 follows).
_TIMES_AND_SEQUENCE: Final = struct.Struct(">q")


def _symbol(name: str) -> bytes:
    data = name.encode("ascii")
    return bytes((0xA3, len(data))) + data


def _string(value: str) -> bytes:
    out = bytearray()
    encode_value(out, value)
    return bytes(out)


_ENQUEUED_KEY: Final = _symbol("iothub-enqueuedtime") + b"\x83"
_SOURCE_ENTRY: Final = _symbol("iothub-message-source") + _string("Telemetry")
_SEQUENCE_KEY: Final = _symbol("x-opt-sequence-number") + b"\x81"
_OFFSET_KEY: Final = _symbol("x-opt-offset") + b"\xa1"
_X_ENQUEUED_KEY: Final = _symbol("x-opt-enqueued-time") + b"\x83"
# Consumers are woken this long after the first new event, so one pump (one socket write) carries every
# event of those milliseconds rather than one pump per device's message.  Delays are measured at the
# enqueued time, so this costs them nothing; 20 ms rather than 2 ms took the SDK consumer from ~141 to
# ~131 us per event at the seed's 5,700/s (seed_load_chain.py --chains iothub, one run each, 2026-12-03).
NOTIFY_DELAY_S: Final = 0.02
_ENTRIES: Final = 7  # device id, auth method, enqueued time, source, sequence number, offset, x-opt enqueued time

# Where each system property of the property bag goes in the AMQP properties section (field index, type).
_PROPERTY_FIELDS: Final[dict[str, tuple[int, str]]] = {
    "$.mid": (0, "string"),
    "$.uid": (1, "binary"),
    "$.to": (2, "string"),
    "$.cid": (5, "string"),
    "$.ct": (6, "symbol"),
    "$.ce": (7, "symbol"),
}


def auth_method(kind: str) -> str:
    """The ``iothub-connection-auth-method`` annotation IoT Hub writes: ``sas``, ``x509Certificate`` or a hub policy."""
    if kind == "policy":
        document: dict[str, Any] = {"scope": "hub", "type": "sas", "issuer": "iothub"}
    elif kind == "x509":
        document = {"scope": "device", "type": "x509Certificate", "issuer": "external"}
    else:
        document = {"scope": "device", "type": "sas", "issuer": "iothub"}
    document["acceptingIpFilterRule"] = None
    return json.dumps(document, separators=(",", ":"))


def encode_sections(system_properties: Mapping[str, str], properties: Mapping[str, str]) -> bytes:
    """The properties and application-properties sections of a telemetry topic's property bag (empty ones left out).

    Content type and encoding are symbols, as IoT Hub writes them; system properties it does not map are dropped.
    """
    out = bytearray()
    fields: list[Any] = [None] * 13
    for name, value in system_properties.items():
        place = _PROPERTY_FIELDS.get(name)
        if place is None or value == "":
            continue
        index, kind = place
        fields[index] = Symbol(value) if kind == "symbol" else value.encode() if kind == "binary" else value
    if any(field is not None for field in fields):
        try:
            encode_value(out, Described(ULong(0x73), fields))
        except UnicodeEncodeError:  # a content type that is no symbol (not ASCII): sent as a string instead
            fields = [str(f) if isinstance(f, Symbol) else f for f in fields]
            encode_value(out, Described(ULong(0x73), fields))
    if properties:
        encode_value(out, Described(ULong(0x74), dict(properties)))
    return bytes(out)


class Route:
    """Where one connected device's telemetry goes: its partition and its constant annotations."""

    __slots__ = ("constant", "device_id", "partition")

    def __init__(self, partition: Partition, device_id: str, method: str) -> None:
        self.device_id = device_id
        self.partition = partition
        self.constant = (
            _symbol("iothub-connection-device-id")
            + _string(device_id)
            + _symbol("iothub-connection-auth-method")
            + _string(method)
            + _SOURCE_ENTRY
        )


class BuiltInEndpoint:
    """Appends telemetry to an Event Hub's partitions (on the loop that owns the hub: no locking)."""

    def __init__(self, hub: EventHub) -> None:
        self.hub = hub
        self.messages = 0
        self._dirty: dict[str, Partition] = {}  # by id: a Partition is a mutable dataclass, not hashable
        self._loop: asyncio.AbstractEventLoop | None = None

    def route(self, device_id: str, method: str) -> Route:
        """The route of ``device_id``: partitioned by device id with the service's partition-key hash."""
        index = partition_for_key(device_id, self.hub.partition_count)
        return Route(self.hub.partitions[str(index)], device_id, method)

    def append(self, route: Route, sections: bytes, payload: bytes, now_ms: int) -> None:
        """Store one message; its consumers are woken at the end of this event-loop turn."""
        partition = route.partition
        enqueued = now_ms if now_ms > partition.last_time else partition.last_time
        partition.last_time = enqueued
        offset = str(partition.next_offset).encode()
        events = partition.events
        stamp = _TIMES_AND_SEQUENCE.pack(enqueued)
        body = b"".join(
            (
                route.constant,
                _ENQUEUED_KEY,
                stamp,
                _SEQUENCE_KEY,
                _TIMES_AND_SEQUENCE.pack(len(events)),
                _OFFSET_KEY,
                bytes((len(offset),)),
                offset,
                _X_ENQUEUED_KEY,
                stamp,
            )
        )
        size = len(payload)
        data = _DATA8 + bytes((size,)) if size < 256 else _DATA32 + _LENGTH32.pack(size)
        tail = b"".join(
            (_MESSAGE_ANNOTATIONS, _MAP_HEADER.pack(len(body) + 4, 2 * _ENTRIES), body, sections, data, payload)
        )
        events.append(StoredEvent(len(events), partition.next_offset, enqueued, b"", tail))
        partition.next_offset += len(tail)
        self.messages += 1
        if partition.listeners and partition.partition_id not in self._dirty:
            if not self._dirty:
                if self._loop is None:
                    self._loop = asyncio.get_running_loop()
                self._loop.call_later(NOTIFY_DELAY_S, self._notify)
            self._dirty[partition.partition_id] = partition

    def _notify(self) -> None:
        dirty, self._dirty = self._dirty, {}
        for partition in dirty.values():
            partition.notify()
