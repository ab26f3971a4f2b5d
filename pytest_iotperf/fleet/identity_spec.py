"""Who the devices of a run are, as pure data: names, numbers, where credentials come from.

Part of the :class:`~pytest_iotperf.fleet.spec.FleetSpec` that travels as JSON
to the master and every worker, so it holds no secret: passwords and keys come
from the environment or the credentials file at the moment a device connects
(see ``fleet/identity.py``).

Pure: imports neither locust nor gevent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

from pytest_iotperf.iothub.naming import API_VERSION

__all__ = ["DEFAULT_DEVICE_ID_TEMPLATE", "KEY_SOURCES", "IdentitySpec", "IotHubSpec", "KeySource"]

DEFAULT_DEVICE_ID_TEMPLATE: Final = "dev{n:06d}"

KeySource = Literal["hub_policy", "group_key", "device_keys"]
#: hub_policy: $IOTPERF_IOTHUB_CONNECTION_STRING's key, tokens carry ``skn``; group_key: each device's key
#: derived from $IOTPERF_IOTHUB_GROUP_KEY; device_keys: the credentials file's key column.
KEY_SOURCES: Final = ("hub_policy", "group_key", "device_keys")


@dataclass(frozen=True)
class IotHubSpec:
    """An Azure IoT Hub (or the embedded one): the name tokens are signed for, and where the keys come from."""

    host: str  # the host name usernames carry and tokens are signed for (no port)
    key_source: KeySource
    sas_ttl_s: float = 3600.0
    api_version: str = API_VERSION

    def __post_init__(self) -> None:
        if self.key_source not in KEY_SOURCES:
            raise ValueError(f"IoT Hub key source must be one of {', '.join(KEY_SOURCES)}, not {self.key_source!r}")
        if not self.host:
            raise ValueError("IoT Hub host name is empty")
        if not self.sas_ttl_s > 0:
            raise ValueError(f"SAS time to live must be positive, not {self.sas_ttl_s!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IotHubSpec:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class IdentitySpec:
    """How device number ``n`` becomes a device id, a client id and credentials.

    Templates are ``str.format`` strings: the device id template takes ``{n}``
    (with a format spec, e.g. ``{n:06d}``) and ``{run_id}``; the client id,
    user name, certificate and key templates also take ``{device_id}``.
    Device numbers run from ``device_offset`` to ``device_offset + devices - 1``;
    row k of ``credentials_file`` is device ``device_offset + k``.
    A template without fields is a plain value (one shared certificate, say).
    """

    device_id_template: str = DEFAULT_DEVICE_ID_TEMPLATE
    device_offset: int = 0
    client_id_template: str | None = None  # None: the device id
    username_template: str | None = None  # None: the connection's user name
    credentials_file: str | None = None  # CSV or JSON lines, see fleet/credentials.py
    cert_template: str | None = None  # None: the connection's client certificate (if any)
    key_template: str | None = None
    iothub: IotHubSpec | None = None

    def __post_init__(self) -> None:
        if isinstance(self.device_offset, bool) or not isinstance(self.device_offset, int) or self.device_offset < 0:
            raise ValueError(f"device offset must be a whole number >= 0, not {self.device_offset!r}")

    @property
    def per_device_tls(self) -> bool:
        """Certificates (or keys) differ per device: one TLS context per distinct pair of files."""
        return self.cert_template is not None or self.key_template is not None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["iothub"] = self.iothub.to_dict() if self.iothub is not None else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IdentitySpec:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        hub = fields.get("iothub")
        fields["iothub"] = IotHubSpec.from_dict(hub) if hub is not None else None
        return cls(**fields)
