"""Names from numbers: device n's device id and client id, and the templates that make them.

Templates are ``str.format`` strings restricted to a few named fields (``{n}``
with any format spec, ``{device_id}``, ``{run_id}``): no positional fields, no
attribute or index access, so a template can neither fail oddly at run time
nor read anything but what it is given.  :func:`check_template` says what is
wrong with one (the settings call it before a run).

Pure: imports neither locust nor gevent.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from pytest_iotperf.fleet.identity_spec import IdentitySpec

if TYPE_CHECKING:
    from pytest_iotperf.fleet.credentials import CredentialRow

__all__ = [
    "DEVICE_FIELDS",
    "DEVICE_ID_FIELDS",
    "DeviceName",
    "DeviceNaming",
    "check_template",
    "render",
    "template_fields",
]

#: Fields of the device id template.
DEVICE_ID_FIELDS: Final = frozenset({"n", "run_id"})
#: Fields of every other per-device template (client id, user name, password, certificate, key).
DEVICE_FIELDS: Final = frozenset({"n", "run_id", "device_id"})

_FORMATTER: Final = string.Formatter()


@dataclass(frozen=True, slots=True)
class DeviceName:
    """Device number ``n`` (global across workers) and its device id."""

    n: int
    device_id: str


def template_fields(template: str) -> set[str] | None:
    """The field names ``template`` uses, or None when it is not a valid format string."""
    try:
        return {name for _, name, _, _ in _FORMATTER.parse(template) if name is not None}
    except ValueError:
        return None


def check_template(template: str, allowed: frozenset[str], what: str) -> str | None:
    """What is wrong with ``template`` (None when nothing): unbalanced braces, unknown fields, bad format specs."""
    fields = template_fields(template)
    if fields is None:
        return f"{what} {template!r} is not a valid template (a literal brace is written {{{{ or }}}})"
    unknown = sorted(fields - allowed)
    if unknown:
        shown = ", ".join("{" + name + "}" if name else "{}" for name in unknown)
        known = ", ".join("{" + name + "}" for name in sorted(allowed))
        return f"{what} {template!r} uses {shown}; it may use {known}"
    try:
        render(template, n=0, run_id="run", device_id="dev")
    except (ValueError, TypeError) as exc:
        return f"{what} {template!r}: {exc}"
    return None


def render(template: str, *, n: int, run_id: str, device_id: str = "") -> str:
    """``template`` with its fields filled (the caller checked it with :func:`check_template`)."""
    return template.format(n=n, run_id=run_id, device_id=device_id)


class DeviceNaming:
    """Device n's device id: the credentials file's ``device_id`` when it has one, else the template.

    Row k of the credentials file is device ``offset + k``.
    """

    def __init__(
        self, identity: IdentitySpec, run_id: str, credentials: Sequence[CredentialRow] | None = None
    ) -> None:
        self.identity = identity
        self.run_id = run_id
        self.offset = identity.device_offset
        if credentials is None and identity.credentials_file:
            from pytest_iotperf.fleet.credentials import load_credentials

            credentials = load_credentials(identity.credentials_file)
        self._rows = credentials or ()
        self._client_id_template = identity.client_id_template

    def device_id(self, n: int) -> str:
        index = n - self.offset
        if 0 <= index < len(self._rows):
            named = self._rows[index].device_id
            if named:
                return named
        return render(self.identity.device_id_template, n=n, run_id=self.run_id)

    def name(self, n: int) -> DeviceName:
        return DeviceName(n, self.device_id(n))

    def client_id(self, device: DeviceName) -> str:
        """The MQTT client id (default: the device id)."""
        if self._client_id_template is None:
            return device.device_id
        return render(self._client_id_template, n=device.n, run_id=self.run_id, device_id=device.device_id)
