"""A platform with its own schema that renames fields on the way out, measured end to end.

pytest -m perf examples/renamed_fields/

Devices send the platform's schema (a template with generators); the
measurement header rides along under ``_iotperf``; the platform renames it
(``conftest.py`` shows the output) and the ``pytest_iotperf_extract`` hook in
``conftest.py`` reads the renamed fields back, so loss and delay are measured
on what the platform actually delivers.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_iotperf.fixture import IotPerf
from pytest_iotperf.payloads import device_id, normal, now, uniform

from .fake_platform import INPUT, OUTPUT

READING = {
    "deviceId": device_id(),
    "temperature": normal(21.0, 0.5, digits=1),
    "humidity": uniform(30, 60, digits=1),
    "ts": now("iso"),
}


@pytest.mark.perf(slo=["loss < 0.1%", "p95_delay_ms < 1000"])
def test_a_platform_that_renames_fields(iot_perf: IotPerf, platform: Any) -> None:
    result = iot_perf.run(
        devices=20,
        rate_per_device=2.0,
        duration="2s",
        broker=platform.broker_url,
        topic=INPUT.replace("+", "{device_id}"),
        sink_topic=OUTPUT,
        payload=READING,
    )
    assert platform.rejected == 0  # every message had the platform's schema
    assert result.received == result.sent > 0 and result.malformed == 0
