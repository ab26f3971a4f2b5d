"""The embedded IoT Hub as a child of the pytest session: start it, read its ready line, describe how to reach it.

The hub runs in its own process (``python -m pytest_iotperf.embedded.iothub``),
like the embedded Event Hubs endpoint: its CPU is not the pytest process's,
and it dies with its parent.  Its ready line hands over the CA the fleet must
trust and three connection strings (secrets: they travel only in child
environments, never in a spec, a log or a report).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pytest_iotperf.broker_endpoint import BrokerEndpoint
from pytest_iotperf.errors import BrokerError
from pytest_iotperf.processes import Child, start_service
from pytest_iotperf.readback import EventHubAccess
from pytest_iotperf.secrets import IOTHUB_CONNECTION_STRING_ENV

__all__ = ["EmbeddedIotHubAccess", "start_embedded_iothub"]

_READY_S = 30.0
HUB_NAME = "iotperf"


@dataclass(frozen=True)
class EmbeddedIotHubAccess:
    """What the session hands a run: the MQTT endpoint and the built-in endpoint (secrets stay out of repr)."""

    endpoint: BrokerEndpoint
    eventhub: EventHubAccess


def start_embedded_iothub(workdir: Path, partitions: int = 4) -> tuple[Child, EmbeddedIotHubAccess]:
    """Start the embedded IoT Hub; the caller stops the child.

    Raises:
        BrokerError: it did not start (the message is its own last words, scrubbed by the child).
    """
    child, ready = start_service(
        "embedded IoT Hub",
        "pytest_iotperf.embedded.iothub",
        ["--port", "0", "--hub", HUB_NAME, "--partitions", str(partitions), "--exit-on-stdin-close"],
        workdir / "iothub.log",
        BrokerError,
        _READY_S,
    )
    host, port = str(ready["host"]), int(ready["port"])
    endpoint = BrokerEndpoint(
        host=host,
        port=port,
        tls=True,
        kind="iothub-embedded",
        description=f"embedded IoT Hub {host}:{port}",
        ca_file=str(ready["ca_file"]),
        fleet_env={IOTHUB_CONNECTION_STRING_ENV: str(ready["hub_connection_string"])},
    )
    eventhub = EventHubAccess(
        str(ready["eventhub_connection_string"]),
        f"embedded IoT Hub built-in endpoint 127.0.0.1:{ready['eventhub_port']}/{HUB_NAME} ({partitions} partitions)",
        partitions=tuple(str(p) for p in range(partitions)),
        eventhub_name=HUB_NAME,
        failure=child.gone_reason,
    )
    return child, EmbeddedIotHubAccess(endpoint, eventhub)
