"""Errors of the embedded Event Hubs endpoint."""

from __future__ import annotations

from pytest_iotperf.errors import IotPerfError

__all__ = ["AmqpDecodeError", "EventHubError"]


class EventHubError(IotPerfError):
    """The embedded Event Hubs endpoint could not be started, or a peer broke the protocol."""


class AmqpDecodeError(EventHubError):
    """Bytes received from a peer are not valid AMQP 1.0; the connection that sent them is closed."""
