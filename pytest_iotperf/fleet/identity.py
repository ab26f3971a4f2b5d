"""Who device *n* is when it connects: client id, user name, password, TLS context, and until when.

A device asks its :class:`IdentityProvider` at every connect (the first, each
reconnect, each token renewal), so credentials that expire (SAS tokens) are
always fresh.  The client id and the TLS context of a device never change: the
device reads them from its first identity when it makes its client.

:class:`TemplatedIdentity` serves any MQTT broker: user name, password
(``$IOTPERF_MQTT_PASSWORD``) and client certificate from templates, each
overridden per device by its row of the credentials file
(``fleet/credentials.py``).  :func:`provider_for` picks the provider of a run.

Pure: imports neither locust nor gevent.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pytest_iotperf.connection import Connection
from pytest_iotperf.fleet.credentials import CredentialRow, load_credentials
from pytest_iotperf.fleet.identity_spec import IdentitySpec
from pytest_iotperf.fleet.naming import DEVICE_FIELDS, DeviceName, DeviceNaming, render, template_fields
from pytest_iotperf.mqtt_client import ClientIdentity
from pytest_iotperf.mqtt_options import mqtt_password

if TYPE_CHECKING:
    from pytest_iotperf.fleet.spec import FleetSpec

__all__ = [
    "DeviceIdentity",
    "DeviceName",
    "IdentityError",
    "IdentityProvider",
    "TemplatedIdentity",
    "TlsContexts",
    "check_device_files",
    "provider_for",
]

#: A device connects as an MQTT client: its identity is a client identity
#: (client id, user name, password, TLS context or None, expiry), the factory's input.
DeviceIdentity = ClientIdentity


class IdentityError(Exception):
    """No identity can be made for a device (a missing row, key or certificate); names the device, never a secret."""


class IdentityProvider(Protocol):
    """Hands out the identity of each device of a worker."""

    def identity_for(self, device: DeviceName) -> DeviceIdentity:
        """The identity ``device`` connects with now (called at every connect).

        Raises:
            IdentityError: none can be made; the device counts it as a failed connect.
        """
        ...


class TlsContexts:
    """One TLS context per distinct (certificate, key) pair of files: ~1 ms and some memory each, so shared."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._contexts: dict[tuple[str | None, str | None], ssl.SSLContext] = {}

    def context(self, cert: str | None, key: str | None, device_id: str = "") -> ssl.SSLContext | None:
        """The context for these files (None without TLS: the connection is plain)."""
        if not self.connection.tls:
            return None
        found = self._contexts.get((cert, key))
        if found is None:
            options = self.connection.options
            if cert is not None or key is not None:
                options = replace(options, cert_file=cert, key_file=key)
            try:
                found = options.ssl_context()
            except (OSError, ssl.SSLError) as exc:
                who = f"{device_id}: " if device_id else ""
                reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or type(exc).__name__
                raise IdentityError(f"{who}client certificate {cert} / key {key}: {reason}") from None
            self._contexts[(cert, key)] = found
        return found

    def __len__(self) -> int:
        return len(self._contexts)


class TemplatedIdentity:
    """User name, password and client certificate from templates; a credentials file's row wins per device.

    The password (``$IOTPERF_MQTT_PASSWORD``) is a template only when it names
    ``{n}``, ``{device_id}`` or ``{run_id}`` and nothing else; any other
    password is used as it is, braces included.
    """

    def __init__(
        self,
        spec: FleetSpec,
        environ: Mapping[str, str] = os.environ,
        credentials: Sequence[CredentialRow] | None = None,
    ) -> None:
        identity = spec.identity
        if credentials is None and identity.credentials_file:
            credentials = load_credentials(identity.credentials_file)
        self._rows: Sequence[CredentialRow] = credentials or ()
        self.credentials_file = identity.credentials_file
        self.offset = identity.device_offset
        self.run_id = spec.run_id
        self.naming = DeviceNaming(identity, spec.run_id, self._rows)
        self._username = identity.username_template or spec.connection.username
        self._username_is_template = bool(self._username and template_fields(self._username))
        password = mqtt_password(environ)
        self._password = password
        self._password_is_template = _is_template(password)
        options = spec.connection.options
        self._cert = identity.cert_template if identity.cert_template is not None else options.cert_file
        self._key = identity.key_template if identity.key_template is not None else options.key_file
        self.tls = TlsContexts(spec.connection)

    def row(self, n: int) -> CredentialRow | None:
        """Device n's row of the credentials file (None without a file).

        Raises:
            IdentityError: the file has no row for it.
        """
        if not self.credentials_file:
            return None
        index = n - self.offset
        if not 0 <= index < len(self._rows):
            raise IdentityError(
                f"device number {n}: no row {index + 1} in {self.credentials_file} ({len(self._rows)} rows)"
            )
        return self._rows[index]

    def identity_for(self, device: DeviceName) -> DeviceIdentity:
        row = self.row(device.n)
        username = (row.username if row else None) or self._fill(self._username, device, self._username_is_template)
        password = (row.password if row else None) or self._fill(self._password, device, self._password_is_template)
        cert = (row.cert if row else None) or self._fill(self._cert, device, True)
        key = (row.cert_key if row else None) or self._fill(self._key, device, True)
        return DeviceIdentity(
            client_id=self.naming.client_id(device),
            username=username,
            # MQTT 3.1.1 sends no password without a user name.
            password=password if username else None,
            ssl_context=self.tls.context(cert, key, device.device_id),
        )

    def _fill(self, template: str | None, device: DeviceName, is_template: bool) -> str | None:
        if template is None or not is_template:
            return template
        return render(template, n=device.n, run_id=self.run_id, device_id=device.device_id)


def _is_template(value: str | None) -> bool:
    """A value is a template when it names only device fields (and at least one)."""
    if not value:
        return False
    fields = template_fields(value)
    return bool(fields) and fields is not None and fields <= DEVICE_FIELDS


def provider_for(
    spec: FleetSpec, environ: Mapping[str, str] = os.environ, credentials: Sequence[CredentialRow] | None = None
) -> IdentityProvider:
    """The provider of a run: IoT Hub SAS identities, or templates and the credentials file."""
    if credentials is None and spec.identity.credentials_file:
        credentials = load_credentials(spec.identity.credentials_file)
    if spec.identity.iothub is not None:
        from pytest_iotperf.fleet.iothub_identity import IotHubIdentity  # it builds on this module

        return IotHubIdentity(spec, environ, credentials)
    return TemplatedIdentity(spec, environ, credentials)


def check_device_files(
    identity: IdentitySpec,
    devices: int,
    run_id: str,
    credentials: Sequence[CredentialRow] | None = None,
    limit: int = 20,
) -> list[str]:
    """Problems with per-device certificate and key files, before a run: one line per device and path.

    Checks devices ``offset .. offset + devices - 1``: the files their templates
    or credentials rows name must exist.  At most ``limit`` lines, then one
    saying how many more devices have a problem.  Each distinct path is looked up once.
    """
    if credentials is None and identity.credentials_file:
        credentials = load_credentials(identity.credentials_file)
    rows = credentials or ()
    if identity.cert_template is None and identity.key_template is None and not any(r.cert or r.cert_key for r in rows):
        return []
    naming = DeviceNaming(identity, run_id, rows)
    exists: dict[str, bool] = {}
    problems: list[str] = []
    more = 0
    for n in range(identity.device_offset, identity.device_offset + devices):
        name = naming.name(n)
        index = n - identity.device_offset
        row = rows[index] if index < len(rows) else None
        paths = (
            ("certificate", (row.cert if row else None) or _render_path(identity.cert_template, name, run_id)),
            ("key", (row.cert_key if row else None) or _render_path(identity.key_template, name, run_id)),
        )
        missing = []
        for what, path in paths:
            if path is None:
                continue
            if path not in exists:
                exists[path] = Path(path).is_file()
            if not exists[path]:
                missing.append(f"{what} {path}")
        if not missing:
            continue
        if len(problems) < limit:
            problems.append(f"{name.device_id}: no {' and no '.join(missing)}")
        else:
            more += 1
    if more:
        problems.append(f"... and {more} more device(s) with missing files")
    return problems


def _render_path(template: str | None, device: DeviceName, run_id: str) -> str | None:
    if template is None:
        return None
    return render(template, n=device.n, run_id=run_id, device_id=device.device_id)
