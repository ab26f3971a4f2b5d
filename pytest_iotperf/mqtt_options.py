"""How every MQTT client of a run connects: TLS (CA, client certificate for mTLS, insecure) and credentials.

Shared by the devices, the MQTT sink, the platform bridge and the broker
reachability check, so they all connect the same way.  Pure data plus one
function that applies it to a paho client; the password is read from
``$IOTPERF_MQTT_PASSWORD`` at the moment it is needed and never stored in a
spec file.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from pytest_iotperf.secrets import MQTT_PASSWORD_ENV

if TYPE_CHECKING:
    from paho.mqtt import client as mqtt



@dataclass(frozen=True)
class MqttClientOptions:
    """Everything but the address. No secret lives here."""

    tls: bool = False
    ca_file: str | None = None  # None: the system CAs
    cert_file: str | None = None  # client certificate (mTLS)
    key_file: str | None = None
    insecure: bool = False  # skip hostname and chain verification: only when asked
    username: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MqttClientOptions:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**fields)

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def configure_client(client: mqtt.Client, options: MqttClientOptions, environ: Mapping[str, str] = os.environ) -> None:
    """Apply TLS and credentials to a paho client before it connects."""
    if options.username:
        client.username_pw_set(options.username, environ.get(MQTT_PASSWORD_ENV))
    if options.tls:
        client.tls_set_context(options.ssl_context())
        if options.insecure:
            client.tls_insecure_set(True)
