"""The product's card, runnable: a fleet of devices through the embedded broker, gated on SLOs.

pytest -m perf examples/
pytest -m perf examples/ --iot-devices 200 --iot-duration 10s --iot-report-dir out/
"""

import pytest


@pytest.mark.perf
def test_ingestion_slo(iot_perf):
    result = iot_perf.run(devices=50, rate_per_device=1.0, duration="5s")
    assert result.sent > 0
    assert result.p95_delay_ms < 1000
    assert result.loss < 0.001
