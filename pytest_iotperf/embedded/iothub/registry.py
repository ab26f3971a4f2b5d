"""The device registry: which device ids exist and their symmetric keys, and the bulk import/delete it answers.

Until the first device is created any device id may connect (a load test that
never provisions still runs); once the registry holds devices, only those do.
"""

from __future__ import annotations

import base64
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["MAX_BULK", "Device", "Registry"]

MAX_BULK: Final = 100


def new_key() -> str:
    """A random 32-byte symmetric key, base64 (what IoT Hub generates for a SAS device)."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass
class Device:
    device_id: str
    primary_key: str = field(repr=False)
    secondary_key: str = field(repr=False)
    generation_id: str
    etag: str
    connected: bool = False
    last_activity: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The device as ``GET /devices/{id}`` returns it (IoT Hub's field names)."""
        return {
            "deviceId": self.device_id,
            "generationId": self.generation_id,
            "etag": self.etag,
            "connectionState": "Connected" if self.connected else "Disconnected",
            "status": "enabled",
            "statusReason": None,
            "connectionStateUpdatedTime": "0001-01-01T00:00:00Z",
            "statusUpdatedTime": "0001-01-01T00:00:00Z",
            "lastActivityTime": _iso(self.last_activity),
            "cloudToDeviceMessageCount": 0,
            "authentication": {
                "symmetricKey": {"primaryKey": self.primary_key, "secondaryKey": self.secondary_key},
                "x509Thumbprint": {"primaryThumbprint": None, "secondaryThumbprint": None},
                "type": "sas",
            },
            "capabilities": {"iotEdge": False},
        }

    def keys(self) -> tuple[str, str]:
        return self.primary_key, self.secondary_key


def _iso(epoch: float) -> str:
    if not epoch:
        return "0001-01-01T00:00:00Z"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


class Registry:
    """Devices by id (on the hub's loop: no locking)."""

    def __init__(self) -> None:
        self.devices: dict[str, Device] = {}

    @property
    def in_use(self) -> bool:
        """Whether CONNECT must name a registered device."""
        return bool(self.devices)

    def get(self, device_id: str) -> Device | None:
        return self.devices.get(device_id)

    def create(self, device_id: str, primary_key: str | None = None, secondary_key: str | None = None) -> bool:
        """Register ``device_id`` (False when it exists already: left as it is)."""
        if device_id in self.devices:
            return False
        self.devices[device_id] = Device(
            device_id,
            primary_key or new_key(),
            secondary_key or new_key(),
            generation_id=str(time.time_ns() // 1000),
            etag=base64.b64encode(uuid.uuid4().bytes[:6]).decode(),
        )
        return True

    def delete(self, device_id: str) -> bool:
        """Forget ``device_id`` (False when it was not registered)."""
        return self.devices.pop(device_id, None) is not None

    def bulk(self, items: list[Any]) -> tuple[int, dict[str, Any]]:
        """Apply a ``POST /devices`` body; return (HTTP status, response document).

        Create of an existing device and delete of a missing one are reported per device
        (``DeviceAlreadyExists`` / ``DeviceNotFound``) and change nothing, so a retried call is harmless.
        """
        if not isinstance(items, list):
            return 400, _error("ArgumentInvalid", "The request body must be a JSON list of devices.")
        if len(items) > MAX_BULK:
            return 400, _error("TooManyDevices", f"Too many devices in one request: {len(items)} > {MAX_BULK}.")
        errors: list[dict[str, str]] = []
        for item in items:
            problem = _check_item(item)
            if problem:
                return 400, _error("ArgumentInvalid", problem)
        for item in items:
            device_id, mode = item["id"], item.get("importMode", "create").lower()
            if mode == "delete":
                if not self.delete(device_id):
                    errors.append(_device_error(device_id, "DeviceNotFound", f"Device {device_id} not found."))
                continue
            symmetric = (item.get("authentication") or {}).get("symmetricKey") or {}
            created = self.create(device_id, symmetric.get("primaryKey"), symmetric.get("secondaryKey"))
            if not created:
                errors.append(_device_error(device_id, "DeviceAlreadyExists", f"Device {device_id} already exists."))
        return 200, {"isSuccessful": not errors, "errors": errors, "warnings": []}


def _check_item(item: Any) -> str | None:
    if not isinstance(item, dict):
        return "Every device in the list must be a JSON object."
    device_id = item.get("id")
    if not isinstance(device_id, str) or not device_id or len(device_id) > 128:
        return "Every device needs an 'id' of 1 to 128 characters."
    mode = item.get("importMode", "create")
    if not isinstance(mode, str) or mode.lower() not in ("create", "delete"):
        return f"Device {device_id}: importMode must be 'create' or 'delete'."
    authentication = item.get("authentication")
    if authentication is not None and not isinstance(authentication, dict):
        return f"Device {device_id}: 'authentication' must be an object."
    symmetric = (authentication or {}).get("symmetricKey")
    if symmetric is not None and not isinstance(symmetric, dict):
        return f"Device {device_id}: 'authentication.symmetricKey' must be an object."
    return None


def _device_error(device_id: str, code: str, status: str) -> dict[str, str]:
    return {"deviceId": device_id, "errorCode": code, "errorStatus": status}


def _error(code: str, message: str) -> dict[str, Any]:
    return {"Message": f"ErrorCode:{code};{message}", "ExceptionMessage": ""}
