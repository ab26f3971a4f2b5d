"""Errors raised by pytest-iotperf.

Every message is a sentence a user can act on: what was tried, what happened,
what to do next. None of them may contain a secret.
"""

from __future__ import annotations


class IotPerfError(Exception):
    """Base class of every error pytest-iotperf raises on purpose."""


class ConfigError(IotPerfError):
    """A setting has a value that cannot be used; the message names its source."""


class BrokerError(IotPerfError):
    """The MQTT broker could not be started or reached."""


class FleetError(IotPerfError):
    """The Locust fleet (master or workers) failed to start, connect or report."""


class SinkError(IotPerfError):
    """The sink that reads telemetry back failed to start, subscribe or report."""
