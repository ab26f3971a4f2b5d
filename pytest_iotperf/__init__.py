"""pytest-iotperf: IoT end-to-end load tests as a pytest CI gate.

Public API: the result of a run and the errors the plugin raises.  The
fixture ``iot_perf`` and the ``perf`` marker come with the pytest plugin.
"""

from __future__ import annotations

from pytest_iotperf.errors import BrokerError, ConfigError, FleetError, IotPerfError, SinkError
from pytest_iotperf.result import RunResult, TimelinePoint

__all__ = [
    "BrokerError",
    "ConfigError",
    "FleetError",
    "IotPerfError",
    "RunResult",
    "SinkError",
    "TimelinePoint",
]
