"""How a run's MQTT clients authenticate: TLS files (CA, client certificate for mTLS, insecure) and the user name.

Pure data, part of a :class:`~pytest_iotperf.connection.Connection` (which
also says whether TLS is on at all).  The password is read from
``$IOTPERF_MQTT_PASSWORD`` at the moment it is needed and never stored in a
spec file.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from pytest_iotperf.secrets import MQTT_PASSWORD_ENV


@dataclass(frozen=True)
class MqttClientOptions:
    """Everything a client needs besides the address. No secret lives here."""

    ca_file: str | None = None  # None: the system CAs
    cert_file: str | None = None  # client certificate (mTLS)
    key_file: str | None = None
    insecure: bool = False  # skip hostname and chain verification: only when asked
    username: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MqttClientOptions:
        """Build from :meth:`to_dict`'s output; unknown keys (e.g. an older spec's ``tls``) are ignored."""
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**fields)

    def ssl_context(self) -> ssl.SSLContext:
        """A new TLS context with these files (costs ~1 ms: build one and share it where many clients connect)."""
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def mqtt_password(environ: Mapping[str, str] = os.environ) -> str | None:
    """The MQTT password from ``$IOTPERF_MQTT_PASSWORD``, or None."""
    return environ.get(MQTT_PASSWORD_ENV)
