"""Fixtures for the embedded Event Hub tests: a fresh server per test, real SDK clients with short timeouts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from azure.eventhub import EventHubProducerClient
from eventhub_helpers import FAST

from pytest_iotperf.embedded.eventhub import EmbeddedEventHub


@pytest.fixture
def hub() -> Iterator[EmbeddedEventHub]:
    with EmbeddedEventHub(hub="telemetry", partitions=4, consumer_groups=["$Default", "analytics"]) as server:
        yield server


@pytest.fixture
def producer(hub: EmbeddedEventHub) -> Iterator[EventHubProducerClient]:
    client = EventHubProducerClient.from_connection_string(hub.connection_string, **FAST)
    with client:
        yield client
