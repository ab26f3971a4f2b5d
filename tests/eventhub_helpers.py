"""Helpers for the embedded Event Hub tests.

A uniquely named module in tests/ (the test folders have no packages): pytest puts tests/ on sys.path for
tests/eventhub too, and mypy takes tests/ as a package base, so both resolve `from eventhub_helpers import ...`.
"""

from __future__ import annotations

import threading
from typing import Any

from azure.eventhub import EventData, EventHubConsumerClient

FAST: dict[str, Any] = {"retry_total": 0, "auth_timeout": 5}


def collect(
    connection_string: str,
    partition_id: str,
    expected: int,
    *,
    starting_position: Any = "-1",
    inclusive: bool = False,
    timeout: float = 20.0,
    consumer_group: str = "$Default",
    **receive: Any,
) -> list[EventData]:
    """Receive from one partition until ``expected`` events arrived (or ``timeout``); return them."""
    client = EventHubConsumerClient.from_connection_string(connection_string, consumer_group, **FAST)
    events: list[EventData] = []
    enough = threading.Event()

    def on_event(_: Any, event: EventData | None) -> None:
        if event is not None:
            events.append(event)
            if len(events) >= expected:
                enough.set()

    kwargs = {
        "on_event": on_event,
        "partition_id": partition_id,
        "starting_position": starting_position,
        "starting_position_inclusive": inclusive,
        "max_wait_time": 0.2,
        **receive,
    }
    thread = threading.Thread(target=client.receive, kwargs=kwargs, daemon=True)
    thread.start()
    enough.wait(timeout)
    client.close()
    thread.join(10)
    assert not thread.is_alive()
    return events
