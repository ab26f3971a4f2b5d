"""An embedded, Event Hubs-compatible AMQP 1.0 endpoint for the ``azure-eventhub`` SDK.

``EmbeddedEventHub`` runs the server on a background thread for tests;
``python -m pytest_iotperf.embedded.eventhub`` runs it as its own process.
"""

from __future__ import annotations

from pytest_iotperf.embedded.eventhub.errors import EventHubError
from pytest_iotperf.embedded.eventhub.server import EmbeddedEventHub, EventHubServer, connection_string

__all__ = ["EmbeddedEventHub", "EventHubError", "EventHubServer", "connection_string"]
