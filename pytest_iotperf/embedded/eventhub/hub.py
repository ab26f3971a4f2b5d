"""Event storage: an Event Hub's partitions, their events and starting-position lookup.

Everything here runs on the server's event loop thread, so there is no locking.
Consumers subscribe a callback per partition and are woken when events arrive.
"""

from __future__ import annotations

import bisect
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

__all__ = ["EventHub", "Partition", "StartPosition", "StoredEvent", "parse_selector"]

_SELECTOR: Final = re.compile(
    r"amqp\.annotation\.(x-opt-offset|x-opt-sequence-number|x-opt-enqueued-time)\s*(>=|>|=)\s*'([^']*)'"
)


@dataclass(frozen=True)
class StoredEvent:
    """One enqueued event: its broker-assigned position and the encoded message parts."""

    sequence_number: int
    offset: int
    enqueued_time: int
    header: bytes
    tail: bytes


@dataclass(frozen=True)
class StartPosition:
    """Where a consumer starts: ``field`` compared with ``operator`` against ``value`` (a selector filter)."""

    field: str
    operator: str
    value: str


def parse_selector(selector: str) -> StartPosition:
    """Parse an ``apache.org:selector-filter:string`` expression as the Event Hubs SDKs write them.

    Raises ValueError for any other expression.
    """
    match = _SELECTOR.fullmatch(selector.strip())
    if match is None:
        raise ValueError(f"unsupported selector filter {selector!r}")
    return StartPosition(match.group(1), match.group(2), match.group(3))


@dataclass
class Partition:
    """One partition: an append-only event list with sequence numbers, byte offsets and enqueued times."""

    partition_id: str
    events: list[StoredEvent] = field(default_factory=list)
    next_offset: int = 0
    last_time: int = 0
    listeners: set[Callable[[], None]] = field(default_factory=set)

    def append(self, header: bytes, tail: bytes, now_ms: int) -> StoredEvent:
        """Store one event; enqueued times never go backwards even if the wall clock does."""
        self.last_time = max(self.last_time, now_ms)
        event = StoredEvent(len(self.events), self.next_offset, self.last_time, header, tail)
        self.events.append(event)
        self.next_offset += len(header) + len(tail)
        return event

    def notify(self) -> None:
        """Wake every consumer of this partition."""
        for listener in list(self.listeners):
            listener()

    def start_index(self, position: StartPosition | None) -> int:
        """Return the index of the first event at or after ``position`` (None = the SDK default, latest)."""
        if position is None:
            return len(self.events)
        inclusive = position.operator in (">=", "=")
        if position.field == "x-opt-offset":
            if position.value == "-1":
                return 0
            if position.value == "@latest":
                return len(self.events)
            return self._bisect(int(position.value), inclusive, lambda e: e.offset)
        if position.field == "x-opt-sequence-number":
            return self._bisect(int(position.value), inclusive, lambda e: e.sequence_number)
        return self._bisect(int(position.value), inclusive, lambda e: e.enqueued_time)

    def _bisect(self, value: int, inclusive: bool, key: Callable[[StoredEvent], int]) -> int:
        if inclusive:
            return bisect.bisect_left(self.events, value, key=key)
        return bisect.bisect_right(self.events, value, key=key)


@dataclass
class EventHub:
    """One Event Hub: named partitions ``"0"..`` and the consumer groups it accepts."""

    name: str
    partition_count: int
    consumer_groups: frozenset[str] = frozenset({"$Default"})
    created_at: int = field(default_factory=lambda: int(time.time() * 1000))
    partitions: dict[str, Partition] = field(default_factory=dict)
    round_robin: int = 0

    def __post_init__(self) -> None:
        if self.partition_count < 1:
            raise ValueError("an Event Hub needs at least one partition")
        self.partitions = {str(i): Partition(str(i)) for i in range(self.partition_count)}

    @property
    def partition_ids(self) -> list[str]:
        """The partition ids, in order."""
        return list(self.partitions)

    def next_round_robin(self) -> str:
        """Return the partition for the next unkeyed send (each send, batch or single, stays on one partition)."""
        partition_id = str(self.round_robin % self.partition_count)
        self.round_robin += 1
        return partition_id
