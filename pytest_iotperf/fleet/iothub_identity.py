"""Azure IoT Hub identities: each device signs in as itself with a fresh SAS token at every connect.

Client id = device id; user name ``{host}/{device_id}/?api-version=...``;
password ``SharedAccessSignature sr={host}/devices/{device_id}&sig=...&se=...``
valid for ``sas_ttl_s`` from the connect (``expires_at`` = its ``se``, so the
device renews it before then).  The key comes from where
``IotHubSpec.key_source`` says (decided on the pytest side, ``run_identity``):

``hub_policy``   ``$IOTPERF_IOTHUB_CONNECTION_STRING``'s key, tokens carry ``skn`` (the policy's name);
``group_key``    each device's key derived from ``$IOTPERF_IOTHUB_GROUP_KEY`` (a DPS enrollment group),
                 no ``skn``; derived once per device;
``device_keys``  the device's own key from the credentials file (``key`` / ``sas_key``), no ``skn``.

A key that is missing or unusable here (a remote worker without the variable,
say) is not a crash: every connect raises :class:`IdentityError` naming the
device and the variable or file, so the result says why no device connected.
No message ever carries a key or a token.

Pure: imports neither locust nor gevent.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from pytest_iotperf.fleet.credentials import CredentialRow
from pytest_iotperf.fleet.identity import DeviceIdentity, IdentityError
from pytest_iotperf.fleet.identity_spec import IotHubSpec
from pytest_iotperf.fleet.naming import DeviceName
from pytest_iotperf.iothub.connection_string import parse_iothub_connection_string
from pytest_iotperf.iothub.naming import username_for
from pytest_iotperf.iothub.sas import SasError, derive_device_key, device_resource_uri, make_sas_token
from pytest_iotperf.secrets import IOTHUB_CONNECTION_STRING_ENV, IOTHUB_GROUP_KEY_ENV

if TYPE_CHECKING:
    from pytest_iotperf.fleet.spec import FleetSpec

__all__ = ["IotHubIdentity"]


class IotHubIdentity:
    """SAS-token identities for the devices of one worker; one TLS context for all of them."""

    def __init__(
        self,
        spec: FleetSpec,
        environ: Mapping[str, str] = os.environ,
        credentials: Sequence[CredentialRow] | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        hub = spec.identity.iothub
        if hub is None:
            raise ValueError("IotHubIdentity needs a spec with identity.iothub")
        self.hub: IotHubSpec = hub
        self.offset = spec.identity.device_offset
        self.credentials_file = spec.identity.credentials_file
        self._rows: Sequence[CredentialRow] = credentials or ()
        self._clock = clock
        self._ttl_s = hub.sas_ttl_s
        self._policy: str | None = None
        self._key: str | None = None  # hub policy or group key, by key_source
        self._problem: str | None = None  # why no device can get a token (said at every connect)
        self._device_keys: dict[str, str] = {}  # group_key: device id -> derived key
        # One context for every device: ~1 ms and memory each; system CAs unless --iot-tls-ca.
        self._ssl_context: ssl.SSLContext | None = spec.connection.ssl_context()
        if hub.key_source == "hub_policy":
            self._read_hub_policy(environ)
        elif hub.key_source == "group_key":
            self._key = environ.get(IOTHUB_GROUP_KEY_ENV, "").strip() or None
            if self._key is None:
                self._problem = f"${IOTHUB_GROUP_KEY_ENV} is not set in this worker's environment"

    def _read_hub_policy(self, environ: Mapping[str, str]) -> None:
        name = IOTHUB_CONNECTION_STRING_ENV
        text = environ.get(name, "").strip()
        if not text:
            self._problem = f"${name} is not set in this worker's environment"
            return
        try:
            parsed = parse_iothub_connection_string(text, f"${name}")
        except ValueError as exc:  # its messages name the variable and the missing part, never the key
            self._problem = str(exc)
            return
        if parsed.policy is None:
            self._problem = f"${name} is a device's connection string, not a hub policy's (SharedAccessKeyName)"
            return
        hub_host = parsed.host.rpartition(":")[0] if ":" in parsed.host else parsed.host
        if hub_host.lower() != self.hub.host.lower():
            self._problem = f"${name} is for the hub {parsed.host}, but the devices connect to {self.hub.host}"
            return
        self._key, self._policy = parsed.key, parsed.policy

    def identity_for(self, device: DeviceName) -> DeviceIdentity:
        device_id = device.device_id
        key, where = self._key_for(device)
        expiry = int(self._clock() + self._ttl_s)
        try:
            token = make_sas_token(device_resource_uri(self.hub.host, device_id), key, expiry, self._policy)
        except SasError as exc:
            raise IdentityError(f"{device_id}: the key from {where}: {exc}") from None
        return DeviceIdentity(
            client_id=device_id,  # IoT Hub refuses any other
            username=username_for(self.hub.host, device_id, self.hub.api_version),
            password=token,
            ssl_context=self._ssl_context,
            expires_at=float(expiry),
        )

    def _key_for(self, device: DeviceName) -> tuple[str, str]:
        """The key device's token is signed with, and where it came from (for messages)."""
        if self._problem is not None:
            raise IdentityError(f"{device.device_id}: {self._problem}")
        source = self.hub.key_source
        if source == "device_keys":
            return self._row_key(device), f"row {device.n - self.offset + 1} of {self.credentials_file}"
        assert self._key is not None
        if source == "hub_policy":
            return self._key, f"${IOTHUB_CONNECTION_STRING_ENV}"
        found = self._device_keys.get(device.device_id)
        if found is None:
            try:
                found = derive_device_key(self._key, device.device_id)
            except SasError as exc:
                raise IdentityError(f"{device.device_id}: ${IOTHUB_GROUP_KEY_ENV}: {exc}") from None
            self._device_keys[device.device_id] = found
        return found, f"${IOTHUB_GROUP_KEY_ENV}"

    def _row_key(self, device: DeviceName) -> str:
        index = device.n - self.offset
        if not self.credentials_file:
            raise IdentityError(f"{device.device_id}: no credentials file with the devices' keys")
        if not 0 <= index < len(self._rows):
            raise IdentityError(
                f"{device.device_id}: no row {index + 1} in {self.credentials_file} ({len(self._rows)} rows)"
            )
        key = self._rows[index].sas_key
        if not key:
            raise IdentityError(f"{device.device_id}: row {index + 1} of {self.credentials_file} has no key")
        return key
