"""The product's card, runnable: a fleet of devices through the embedded broker, gated on SLOs.

pytest -m perf examples/
pytest -m perf examples/ --iot-devices 200 --iot-duration 10s --iot-report-dir out/
pytest -m perf examples/ --iot-slo "p99_delay_ms < 50"      # tighten the gate from CI
"""

from __future__ import annotations

import pytest

from pytest_iotperf.fixture import IotPerf


@pytest.mark.perf(slo=["p95_delay_ms < 1000", "loss < 0.1%"])
def test_ingestion_slo(iot_perf: IotPerf) -> None:
    result = iot_perf.run(devices=50, rate_per_device=1.0, duration="5s")
    # The marker's SLOs are checked by run(); plain asserts work as well.
    assert result.sent > 0
    assert result.p95_delay_ms < 1000
    assert result.loss < 0.001
