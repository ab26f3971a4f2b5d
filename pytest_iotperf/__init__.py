"""pytest-iotperf: IoT end-to-end load tests as a pytest CI gate.

Public API: the pipeline that runs and judges a fleet without pytest, the
result of a run and the errors it raises.  The fixture ``iot_perf`` (type
``pytest_iotperf.fixture.IotPerf``) and the ``perf`` marker come with the
pytest plugin; importing this package does not import pytest.

The pipeline and the result are imported on first use (PEP 562): every child
process of a run (Locust master and workers, sinks, bridge, embedded servers)
imports this package, and none of them needs the pipeline's ~0.25 s of imports
(reports, InfluxDB client) at start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pytest_iotperf.errors import BrokerError, ConfigError, FleetError, IotPerfError, SinkError

if TYPE_CHECKING:
    from pytest_iotperf.capacity_result import CapacityResult
    from pytest_iotperf.pipeline import InfluxOutput, Outputs, Pipeline, RunOutcome
    from pytest_iotperf.result import RunResult, TimelinePoint
    from pytest_iotperf.stage_plan import Stage

__all__ = [
    "BrokerError",
    "CapacityResult",
    "ConfigError",
    "FleetError",
    "InfluxOutput",
    "IotPerfError",
    "Outputs",
    "Pipeline",
    "RunOutcome",
    "RunResult",
    "SinkError",
    "Stage",
    "TimelinePoint",
]

_LAZY = {
    "CapacityResult": "pytest_iotperf.capacity_result",
    "InfluxOutput": "pytest_iotperf.pipeline",
    "Outputs": "pytest_iotperf.pipeline",
    "Pipeline": "pytest_iotperf.pipeline",
    "RunOutcome": "pytest_iotperf.pipeline",
    "RunResult": "pytest_iotperf.result",
    "Stage": "pytest_iotperf.stage_plan",
    "TimelinePoint": "pytest_iotperf.result",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_iotperf' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups do not come here
    return value
