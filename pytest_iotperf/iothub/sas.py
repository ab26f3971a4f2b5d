"""IoT Hub shared access signatures: make a device's token, derive a group-enrolled device's key, check a token.

The token is the one Microsoft's device SDKs make (``azure-iot-device``'s
``RenewableSasToken``; ``tests/data/iothub_sas_vectors.json`` holds vectors
recorded from it)::

    SharedAccessSignature sr={quote(uri, safe='')}&sig={quote(sig, safe='')}&se={expiry}[&skn={policy}]

where ``sig = base64(HMAC-SHA256(base64decode(key), quote(uri, safe='') + "\\n" + str(expiry)))``.
Keys and tokens are secrets: nothing here puts one in an exception message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, unquote

__all__ = [
    "SasError",
    "SasToken",
    "derive_device_key",
    "device_resource_uri",
    "make_sas_token",
    "parse_sas_token",
    "signature_for",
]

_PREFIX: Final = "SharedAccessSignature "


class SasError(ValueError):
    """A key or token is malformed (the message never repeats the key or the signature)."""


def device_resource_uri(host: str, device_id: str) -> str:
    """The resource a device's token is signed for: ``{host}/devices/{device_id}``."""
    return f"{host}/devices/{device_id}"


def _key_bytes(key: str) -> bytes:
    try:
        return base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise SasError("the shared access key is not valid base64") from None


def signature_for(encoded_uri: str, expiry: int, key: str) -> str:
    """``base64(HMAC-SHA256(key, encoded_uri + "\\n" + expiry))`` (not yet URL-encoded)."""
    message = f"{encoded_uri}\n{expiry}".encode()
    return base64.b64encode(hmac.digest(_key_bytes(key), message, hashlib.sha256)).decode()


def make_sas_token(uri: str, key: str, expiry: int, policy: str | None = None) -> str:
    """A SAS token for ``uri`` valid until ``expiry`` (epoch seconds), signed with ``key``.

    ``policy`` (``skn``) when the key is a hub policy's rather than the device's own.
    """
    encoded_uri = quote(uri, safe="")
    signature = quote(signature_for(encoded_uri, expiry, key), safe="")
    token = f"{_PREFIX}sr={encoded_uri}&sig={signature}&se={expiry}"
    return f"{token}&skn={policy}" if policy else token


def derive_device_key(group_key: str, device_id: str) -> str:
    """A DPS symmetric-key enrollment group's device key: ``base64(HMAC-SHA256(group key, device_id))``."""
    return base64.b64encode(hmac.digest(_key_bytes(group_key), device_id.encode(), hashlib.sha256)).decode()


@dataclass(frozen=True)
class SasToken:
    """A parsed token: what the server checks. ``signature`` stays out of ``repr``."""

    resource_uri: str  # decoded ``sr``
    encoded_uri: str  # ``sr`` as sent (what was signed)
    expiry: int
    policy: str | None
    signature: str  # decoded ``sig``

    def __repr__(self) -> str:
        return f"SasToken(resource_uri={self.resource_uri!r}, expiry={self.expiry}, policy={self.policy!r})"

    def signed_with(self, key: str) -> bool:
        """Whether ``key`` made this token's signature (constant-time compare)."""
        expected = signature_for(self.encoded_uri, self.expiry, key)
        return hmac.compare_digest(expected.encode(), self.signature.encode())


def parse_sas_token(token: str) -> SasToken:
    """Parse ``SharedAccessSignature sr=...&sig=...&se=...[&skn=...]`` (fields in any order).

    Raises:
        SasError: not a SAS token, or ``sr``/``sig``/``se`` missing or malformed.
    """
    if not token.startswith(_PREFIX):
        raise SasError("the password is not a SharedAccessSignature token")
    fields: dict[str, str] = {}
    for part in token[len(_PREFIX) :].split("&"):
        name, sep, value = part.partition("=")
        if not sep or name in fields:
            raise SasError("the SAS token has a malformed or repeated field")
        fields[name] = value
    missing = [name for name in ("sr", "sig", "se") if name not in fields]
    if missing:
        raise SasError(f"the SAS token has no {', '.join(missing)}")
    try:
        expiry = int(fields["se"])
    except ValueError:
        raise SasError("the SAS token's expiry (se) is not a number") from None
    return SasToken(
        resource_uri=unquote(fields["sr"]),
        encoded_uri=fields["sr"],
        expiry=expiry,
        policy=unquote(fields["skn"]) if fields.get("skn") else None,
        signature=unquote(fields["sig"]),
    )
