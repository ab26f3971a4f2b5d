"""Errors of the embedded IoT Hub."""

from __future__ import annotations

from pytest_iotperf.errors import BrokerError

__all__ = ["IotHubError"]


class IotHubError(BrokerError):
    """The embedded IoT Hub could not start (a port in use, a certificate it cannot read)."""
