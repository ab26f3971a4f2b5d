"""Who may connect: IoT Hub's checks of a CONNECT's client id, user name and SAS token (or client certificate).

A refusal carries a short ``reason`` (the counter it is tallied under) and a
``detail`` sentence naming the device; neither ever holds a key, a token or a
signature.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field
from typing import Final

from pytest_iotperf.embedded.iothub.registry import Registry
from pytest_iotperf.iothub.naming import parse_username
from pytest_iotperf.iothub.sas import SasError, SasToken, derive_device_key, parse_sas_token

__all__ = ["Admission", "HubKeys", "Refused", "admit", "check_registry_token"]

DEVICE_POLICY: Final = "device"
REGISTRY_POLICY: Final = "registryReadWrite"


def _key(size: int = 32) -> str:
    return base64.b64encode(secrets.token_bytes(size)).decode()


@dataclass(frozen=True)
class HubKeys:
    """The hub's host name and its keys (random unless given); kept out of ``repr``."""

    host: str = "127.0.0.1"
    device_policy_key: str = field(default_factory=_key, repr=False)
    registry_key: str = field(default_factory=_key, repr=False)
    group_key: str = field(default_factory=lambda: _key(64), repr=False)  # DPS group keys are 64 bytes


@dataclass(frozen=True)
class Admission:
    """An accepted CONNECT: the device, when its credentials stop working, and how it authenticated."""

    device_id: str
    expires_at: float | None  # the token's se; None for a certificate
    method: str  # "sas" (a device key), "policy" (the hub's device policy) or "x509"


class Refused(Exception):
    """CONNECT refused: ``reason`` is the counter's name, ``detail`` a sentence naming the device."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def admit(
    keys: HubKeys,
    registry: Registry,
    client_id: str,
    username: str | None,
    password: bytes | None,
    peer_common_name: str | None,
    now: float,
) -> Admission:
    """Check a CONNECT as IoT Hub does; return the admission or raise :class:`Refused`.

    ``peer_common_name`` is the CN of a client certificate that already chained to the device CA.
    """
    who = client_id or "(no client id)"
    if not client_id:
        raise Refused("bad client id", "(no client id): the client id must be the device id")
    if username is None:
        raise Refused("bad username", f"{who}: no user name (IoT Hub wants '{{host}}/{{device_id}}/?api-version=...')")
    try:
        parsed = parse_username(username)
    except ValueError as exc:
        raise Refused("bad username", f"{who}: {exc}") from None
    if parsed.host.lower() != keys.host.lower():
        raise Refused("wrong host", f"{who}: the user name names host {parsed.host!r}, this hub is {keys.host!r}")
    if parsed.device_id != client_id:
        raise Refused(
            "client id mismatch", f"{who}: the user name names device {parsed.device_id!r}, not the client id"
        )
    device = registry.get(client_id)
    if registry.in_use and device is None:
        raise Refused("unknown device", f"{who}: no such device in the hub's registry")
    if not password:
        if peer_common_name is None:
            raise Refused("no credentials", f"{who}: neither a SAS token nor a client certificate")
        if peer_common_name != client_id:
            raise Refused(
                "certificate mismatch", f"{who}: the client certificate is for {peer_common_name!r}, not this device"
            )
        return Admission(client_id, None, "x509")
    try:
        token = parse_sas_token(password.decode("utf-8", errors="replace"))
    except SasError as exc:
        raise Refused("malformed token", f"{who}: {exc}") from None
    if token.expiry <= now:
        raise Refused("token expired", f"{who}: the SAS token expired {now - token.expiry:.0f} s ago")
    _check_resource(keys.host, client_id, token, who)
    if token.policy is not None:
        if token.policy != DEVICE_POLICY:
            raise Refused(
                "unknown policy", f"{who}: policy {token.policy!r} has no DeviceConnect permission on this hub"
            )
        if not token.signed_with(keys.device_policy_key):
            raise Refused("bad signature", f"{who}: the SAS signature does not match the '{DEVICE_POLICY}' policy key")
        return Admission(client_id, float(token.expiry), "policy")
    candidates = [*(device.keys() if device is not None else ()), derive_device_key(keys.group_key, client_id)]
    if not any(_signed(token, key) for key in candidates):
        raise Refused("bad signature", f"{who}: the SAS signature does not match the device's key")
    return Admission(client_id, float(token.expiry), "sas")


def _signed(token: SasToken, key: str) -> bool:
    try:
        return token.signed_with(key)
    except SasError:  # a registered key that is not base64 signs nothing
        return False


def _check_resource(host: str, device_id: str, token: SasToken, who: str) -> None:
    wanted = f"{host}/devices/{device_id}".lower()
    resource = token.resource_uri.rstrip("/").lower()
    if resource == wanted or (token.policy is not None and resource == host.lower()):
        return
    raise Refused(
        "wrong resource", f"{who}: the SAS token is for {token.resource_uri!r}, not '{host}/devices/{device_id}'"
    )


def check_registry_token(keys: HubKeys, authorization: str | None, now: float) -> str | None:
    """None when ``authorization`` is a valid ``registryReadWrite`` token for the hub, else why not."""
    if not authorization:
        return "no Authorization header"
    try:
        token = parse_sas_token(authorization.strip())
    except SasError as exc:
        return str(exc)
    if token.policy != REGISTRY_POLICY:
        return f"the token's policy must be '{REGISTRY_POLICY}'"
    resource = token.resource_uri.rstrip("/").lower()
    if resource != keys.host.lower() and not resource.startswith(keys.host.lower() + "/"):
        return f"the token is for {token.resource_uri!r}, not this hub"
    if token.expiry <= now:
        return "the token has expired"
    if not token.signed_with(keys.registry_key):
        return "the signature does not match the registryReadWrite key"
    return None
