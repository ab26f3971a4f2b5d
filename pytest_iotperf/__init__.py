"""pytest-iotperf: IoT end-to-end load tests as a pytest CI gate.

Public API: the pipeline that runs and judges a fleet without pytest, the
result of a run and the errors it raises.  The fixture ``iot_perf`` (type
``pytest_iotperf.fixture.IotPerf``) and the ``perf`` marker come with the
pytest plugin; importing this package does not import pytest.
"""

from __future__ import annotations

from pytest_iotperf.errors import BrokerError, ConfigError, FleetError, IotPerfError, SinkError
from pytest_iotperf.pipeline import InfluxOutput, Outputs, Pipeline, RunOutcome
from pytest_iotperf.result import RunResult, TimelinePoint

__all__ = [
    "BrokerError",
    "ConfigError",
    "FleetError",
    "InfluxOutput",
    "IotPerfError",
    "Outputs",
    "Pipeline",
    "RunOutcome",
    "RunResult",
    "SinkError",
    "TimelinePoint",
]
