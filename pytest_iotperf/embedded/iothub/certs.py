"""Test certificates: a CA, a server certificate for the embedded IoT Hub, and per-device client certificates.

EC P-256 keys throughout: a key and a signature take tens of microseconds, so
2,000 device certificates are made in about a second.  Every certificate has
the extensions strict verifiers want (basic constraints, key usage, subject and
authority key identifiers), so OpenSSL's X509 strict mode accepts the chain.
Nothing here is for production: keys are written unencrypted.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CertificateAuthority",
    "DeviceCertificate",
    "ServerCertificate",
    "make_ca",
    "make_device_certificates",
    "make_server_certificate",
]

_VALID_BEFORE: Final = datetime.timedelta(hours=1)  # tolerate a client clock a little behind
_VALID_FOR: Final = datetime.timedelta(days=30)
_NO_PASSWORD: Final = serialization.NoEncryption()


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA's certificate and key; ``cert_file`` is its PEM (what clients trust)."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_file: str


@dataclass(frozen=True)
class ServerCertificate:
    cert_file: str
    key_file: str


@dataclass(frozen=True)
class DeviceCertificate:
    """A device's client certificate (CN = device id) and its key, as PEM files."""

    device_id: str
    cert_file: str
    key_file: str


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, _NO_PASSWORD)


def _write(path: Path, data: bytes, private: bool = False) -> None:
    # Keys are created owner-only from the start rather than chmod-ed after being written.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as stream:
        stream.write(data)


def make_ca(directory: str | os.PathLike[str], common_name: str = "pytest-iotperf test CA") -> CertificateAuthority:
    """A self-signed CA written to ``directory/ca.pem`` (its key to ``ca.key``)."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _VALID_BEFORE)
        .not_valid_after(now + _VALID_FOR)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file = folder / "ca.pem"
    _write(cert_file, certificate.public_bytes(serialization.Encoding.PEM))
    _write(folder / "ca.key", _key_pem(key), private=True)
    return CertificateAuthority(certificate, key, str(cert_file))


class _Issuer:
    """Signs leaf certificates with one CA; the parts every leaf shares are computed once."""

    def __init__(self, ca: CertificateAuthority) -> None:
        self._ca = ca
        self._authority_key_id = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key())
        self._now = _now()

    def issue(
        self,
        common_name: str,
        key: ec.EllipticCurvePrivateKey,
        usage: x509.ObjectIdentifier,
        alt_names: Sequence[x509.GeneralName] = (),
    ) -> x509.Certificate:
        public = key.public_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self._ca.certificate.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._now - _VALID_BEFORE)
            .not_valid_after(self._now + _VALID_FOR)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(self._authority_key_id, critical=False)
        )
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(alt_names)), critical=False)
        return builder.sign(self._ca.key, hashes.SHA256())


def make_server_certificate(
    directory: str | os.PathLike[str],
    ca: CertificateAuthority,
    dns_names: Iterable[str] = ("localhost",),
    ip_addresses: Iterable[str] = ("127.0.0.1",),
) -> ServerCertificate:
    """A server certificate for ``dns_names`` and ``ip_addresses`` signed by ``ca`` (``server.pem``/``server.key``)."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(address)) for address in ip_addresses]
    key = ec.generate_private_key(ec.SECP256R1())
    first = next(iter(dns_names), None) or next(iter(ip_addresses), "server")
    certificate = _Issuer(ca).issue(first, key, ExtendedKeyUsageOID.SERVER_AUTH, names)
    cert_file, key_file = folder / "server.pem", folder / "server.key"
    _write(cert_file, certificate.public_bytes(serialization.Encoding.PEM))
    _write(key_file, _key_pem(key), private=True)
    return ServerCertificate(str(cert_file), str(key_file))


def make_device_certificates(
    directory: str | os.PathLike[str], ca: CertificateAuthority, device_ids: Iterable[str]
) -> list[DeviceCertificate]:
    """One client certificate per device (CN = device id), ``{device_id}.pem`` and ``{device_id}.key``.

    The names fit templates like ``--iot-tls-cert DIR/{device_id}.pem --iot-tls-key DIR/{device_id}.key``.
    Every device gets its own key.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    issuer = _Issuer(ca)
    made: list[DeviceCertificate] = []
    for device_id in device_ids:
        if not device_id or "/" in device_id or device_id in (".", ".."):
            raise ValueError(f"{device_id!r} cannot name a certificate file")
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = issuer.issue(device_id, key, ExtendedKeyUsageOID.CLIENT_AUTH)
        cert_file, key_file = folder / f"{device_id}.pem", folder / f"{device_id}.key"
        _write(cert_file, certificate.public_bytes(serialization.Encoding.PEM))
        _write(key_file, _key_pem(key), private=True)
        made.append(DeviceCertificate(device_id, str(cert_file), str(key_file)))
    return made
