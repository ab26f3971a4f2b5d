"""The ``$management`` node: READ of Event Hub and partition runtime information."""

from __future__ import annotations

from typing import Any

from pytest_iotperf.embedded.eventhub.codec import Symbol, Timestamp
from pytest_iotperf.embedded.eventhub.hub import EventHub

__all__ = ["handle_management"]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def handle_management(
    application_properties: dict[Any, Any], hubs: dict[str, EventHub]
) -> tuple[int, str, dict[str, Any] | None]:
    """Answer one management request: return (status code, status description, body map).

    Every request gets an answer (the SDK waits forever for one), so unknown
    operations get 400 rather than silence.
    """
    props = {str(k): v for k, v in application_properties.items()}
    operation = _text(props.get("operation"))
    entity_type = _text(props.get("type"))
    name = _text(props.get("name")) or ""
    if operation != "READ":
        return 400, f"unsupported management operation {operation!r}", None
    hub = hubs.get(name)
    if hub is None:
        return 404, f"The messaging entity '{name}' could not be found.", None
    if entity_type == "com.microsoft:eventhub":
        return (
            200,
            "OK",
            {
                "name": hub.name,
                "created_at": Timestamp(hub.created_at),
                "partition_count": len(hub.partitions),
                "partition_ids": hub.partition_ids,
                "type": Symbol("com.microsoft:eventhub"),
            },
        )
    if entity_type == "com.microsoft:partition":
        partition_id = _text(props.get("partition")) or ""
        partition = hub.partitions.get(partition_id)
        if partition is None:
            return 404, f"Partition '{partition_id}' of '{name}' could not be found.", None
        last = partition.events[-1] if partition.events else None
        return (
            200,
            "OK",
            {
                "name": hub.name,
                "partition": partition_id,
                "type": Symbol("com.microsoft:partition"),
                "begin_sequence_number": 0,
                "last_enqueued_sequence_number": last.sequence_number if last else -1,
                # The SDK decodes the offset as a string: the service has always sent it as one.
                "last_enqueued_offset": str(last.offset) if last else "-1",
                "last_enqueued_time_utc": Timestamp(last.enqueued_time if last else 0),
                "is_partition_empty": last is None,
            },
        )
    return 400, f"unsupported management type {entity_type!r}", None
