"""Who device *n* is when it connects: client id, user name, password, TLS context.

A device asks its :class:`IdentityProvider` once, before its client is made.
Today's one provider, :class:`SharedIdentity`, gives every device of a run
the same credentials; per-device credentials or SAS tokens become another
provider, not edits across the fleet.

Pure: imports neither locust nor gevent.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from typing import Protocol

from pytest_iotperf.connection import Connection
from pytest_iotperf.mqtt_client import ClientIdentity
from pytest_iotperf.mqtt_options import mqtt_password

__all__ = ["DeviceIdentity", "IdentityProvider", "SharedIdentity"]

#: A device connects as an MQTT client: its identity is a client identity
#: (client id, user name, password, TLS context or None), the factory's input.
DeviceIdentity = ClientIdentity


class IdentityProvider(Protocol):
    """Hands out the identity of each device of a worker."""

    def identity_for(self, device_id: str) -> DeviceIdentity:
        """The identity device ``device_id`` connects with."""
        ...


class SharedIdentity:
    """Client id ``{run_id}-{device_id}``, the run's user name and password, one TLS context per worker."""

    def __init__(self, run_id: str, connection: Connection, environ: Mapping[str, str] = os.environ) -> None:
        self.run_id = run_id
        self.username = connection.username
        self._password = mqtt_password(environ) if self.username else None
        # One context for every device: building one per client costs ~1 ms and memory each.
        self._ssl_context: ssl.SSLContext | None = connection.ssl_context()

    def identity_for(self, device_id: str) -> DeviceIdentity:
        return DeviceIdentity(
            client_id=f"{self.run_id}-{device_id}",
            username=self.username,
            password=self._password,
            ssl_context=self._ssl_context,
        )
