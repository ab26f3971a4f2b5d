"""Devices renew expiring SAS tokens by reconnecting, spread out, with no message unaccounted.

A real fleet (one Locust worker) signs in with IoT Hub SAS identities whose
tokens live a few seconds, so every device renews several times in an 8 s run,
against the embedded IoT Hub, which refuses an expired token and closes a
connection when its token expires (read back from its built-in endpoint).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_iotperf.config import resolve
from pytest_iotperf.embedded.iothub_child import start_embedded_iothub
from pytest_iotperf.runner import PerfRun

pytestmark = pytest.mark.fleet

DEVICES = 20
RATE = 2.0
DURATION_S = 8.0
TTL_S = 3.0
KEY = "88JamVNcB20per5saIg/P+iocU8GI7fk7VsvtZqFPLg="


def test_the_embedded_iot_hub_sees_renewed_tokens_and_never_closes_a_connection_at_expiry(
    no_child_left_behind: None, tmp_path: Path
) -> None:
    """The embedded IoT Hub checks every token and closes a connection when its token expires: renewals beat it."""
    child, hub = start_embedded_iothub(tmp_path)
    try:
        settings = resolve({"sas_ttl": f"{TTL_S:g}s"}, {}, {}).for_run(
            {
                "devices": DEVICES,
                "rate_per_device": RATE,
                "duration": f"{DURATION_S:g}s",
                "qos": 1,
                "workers": 1,
                "sink": "eventhub",
                "bridge": "none",
            }
        )
        result = PerfRun(settings, hub.endpoint, eventhub=hub.eventhub).execute()
    finally:
        child.stop()
    # Each token lives 2-3 s (its expiry is whole seconds) and is renewed a second before it expires at the
    # latest: over the ramp and 8 s of schedule every device renews at least twice.
    assert result.sas_renewals >= 2 * DEVICES
    assert result.lost == 0 and result.unsent == 0 and result.duplicates == 0
    assert result.received == result.sent == result.scheduled
    # A renewal is neither a disconnect nor an outage, and no connection outlived its token.
    assert result.disconnects == 0 and result.reconnects == 0, result.disconnect_reasons
    assert result.connect_failures == 0
    assert not result.errors
    assert result.puback_p50_ms <= result.puback_p99_ms <= result.puback_max_ms
