"""IoT Hub connection strings: ``HostName=...;SharedAccessKeyName=...;SharedAccessKey=...`` (or ``DeviceId=...``).

The key is a secret: :class:`IotHubConnectionString` keeps it out of ``repr``
and no error message here repeats the string.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["IotHubConnectionString", "parse_iothub_connection_string"]


@dataclass(frozen=True)
class IotHubConnectionString:
    host: str
    key: str = field(repr=False)
    policy: str | None = None  # SharedAccessKeyName: a hub policy (tokens carry skn)
    device_id: str | None = None  # DeviceId: a device's own connection string (tokens without skn)

    def to_string(self) -> str:
        parts = [f"HostName={self.host}"]
        if self.device_id:
            parts.append(f"DeviceId={self.device_id}")
        if self.policy:
            parts.append(f"SharedAccessKeyName={self.policy}")
        parts.append(f"SharedAccessKey={self.key}")
        return ";".join(parts)


def parse_iothub_connection_string(text: str, where: str = "the IoT Hub connection string") -> IotHubConnectionString:
    """Parse an IoT Hub connection string; ``where`` names its source in errors.

    Raises:
        ValueError: a part is malformed, or HostName / SharedAccessKey is missing, or it has neither
            SharedAccessKeyName nor DeviceId (the message names the parts, never the key).
    """
    values: dict[str, str] = {}
    for part in (p.strip() for p in text.strip().split(";")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep or not name:
            raise ValueError(f"{where}: expected NAME=VALUE parts separated by ';'")
        values[name.strip().lower()] = value.strip()
    missing = [name for name in ("HostName", "SharedAccessKey") if not values.get(name.lower())]
    if missing:
        raise ValueError(f"{where} has no {' or '.join(missing)}")
    policy = values.get("sharedaccesskeyname") or None
    device_id = values.get("deviceid") or None
    if policy is None and device_id is None:
        raise ValueError(f"{where} names neither a SharedAccessKeyName (a hub policy) nor a DeviceId")
    return IotHubConnectionString(values["hostname"], values["sharedaccesskey"], policy, device_id)
