"""An embedded Azure IoT Hub stand-in: MQTT 3.1.1 over TLS, the registry over HTTPS, the built-in endpoint.

Devices connect as they would to IoT Hub (client id = device id, user name
``{host}/{device_id}/?api-version=...``, a SAS token or a client certificate);
accepted telemetry goes straight into the embedded Event Hub (same process, same
loop), read with the ``azure-eventhub`` SDK.  ``EmbeddedIotHub`` runs it on a
background thread for tests; ``python -m pytest_iotperf.embedded.iothub`` runs it
as its own process.
"""

from __future__ import annotations

from pytest_iotperf.embedded.iothub.auth import HubKeys
from pytest_iotperf.embedded.iothub.certs import (
    CertificateAuthority,
    DeviceCertificate,
    make_ca,
    make_device_certificates,
    make_server_certificate,
)
from pytest_iotperf.embedded.iothub.errors import IotHubError
from pytest_iotperf.embedded.iothub.server import EmbeddedIotHub, HubOptions, IotHubServer

__all__ = [
    "CertificateAuthority",
    "DeviceCertificate",
    "EmbeddedIotHub",
    "HubKeys",
    "HubOptions",
    "IotHubError",
    "IotHubServer",
    "make_ca",
    "make_device_certificates",
    "make_server_certificate",
]
