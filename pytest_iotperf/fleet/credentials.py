"""A credentials file: one row per device, row k for device number ``offset + k``.

Two forms, told apart by the file name:

* CSV (any name but the two below) with a header row.  Columns, all optional,
  in any order: ``device_id``, ``username``, ``password``, ``cert``, ``key``,
  ``sas_key``.
* JSON lines (``.jsonl`` / ``.ndjson``): one JSON object per line with the
  same field names (string values; null or a missing field is empty).  Blank
  lines are skipped.

``key`` means two things in the issue (a TLS client certificate's private key
file next to ``cert``, and an IoT Hub device's own SAS key), so it is read by
what the file has: with a ``cert`` column (CSV header) or field (any JSONL
line) ``key`` is the certificate's key file; without one it is the device's
SAS key.  ``sas_key`` is always the SAS key, so a file can carry both.

An empty value means "not given": the template or the run's setting applies
(an empty ``device_id`` takes the device id template).  Errors name the file
and line and never a value; passwords and keys stay out of every ``repr``.

Pure: imports neither locust nor gevent.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

__all__ = ["COLUMNS", "CredentialRow", "CredentialsError", "load_credentials"]

COLUMNS: Final = ("device_id", "username", "password", "cert", "key", "sas_key")
_JSON_LINES_SUFFIXES: Final = (".jsonl", ".ndjson")


class CredentialsError(ValueError):
    """The credentials file cannot be used; the message names the file and line, never a value."""


@dataclass(frozen=True, slots=True)
class CredentialRow:
    """One device's row (None: not given).  ``line``: where it is in the file (1-based), for messages."""

    line: int
    device_id: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    cert: str | None = None  # TLS client certificate file
    cert_key: str | None = None  # its private key file
    sas_key: str | None = field(default=None, repr=False)  # IoT Hub device key (base64)


def load_credentials(path: str | Path) -> list[CredentialRow]:
    """Every row of the file, in order.

    Raises:
        CredentialsError: unreadable, no header, unknown column, a row with more fields than the header,
            a line that is not a JSON object, a non-string value, or a device id given twice.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM from a spreadsheet export is not a column name
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(f"credentials file {path}: cannot read it ({type(exc).__name__})") from None
    if path.suffix.lower() in _JSON_LINES_SUFFIXES:
        records = list(_json_lines(path, text))
    else:
        records = list(_csv_rows(path, text))
    key_is_cert_key = any("cert" in fields for _, fields in records)
    rows = [_row(line, fields, key_is_cert_key) for line, fields in records]
    _check_unique_ids(path, rows)
    return rows


def _csv_rows(path: Path, text: str) -> Iterator[tuple[int, dict[str, str]]]:
    reader = csv.reader(text.splitlines())
    header: list[str] | None = None
    for raw in reader:
        line = reader.line_num
        if header is None:
            if not any(cell.strip() for cell in raw):
                continue
            header = [cell.strip() for cell in raw]
            _check_columns(path, line, header)
            continue
        if not any(cell.strip() for cell in raw):
            continue  # a blank line is no device
        if len(raw) > len(header):
            raise CredentialsError(f"{path}:{line}: {len(raw)} fields but the header names {len(header)} columns")
        yield line, {name: _clean(name, cell) for name, cell in zip(header, raw, strict=False) if name}
    if header is None:
        raise CredentialsError(f"{path}: empty; a CSV credentials file starts with a header ({','.join(COLUMNS)})")


def _json_lines(path: Path, text: str) -> Iterator[tuple[int, dict[str, str]]]:
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            # Only the position: the message quotes nothing of the line.
            raise CredentialsError(f"{path}:{line}: not JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(data, dict):
            raise CredentialsError(f"{path}:{line}: a JSON lines credentials file has one object per line")
        _check_columns(path, line, list(data))
        fields: dict[str, str] = {}
        for name, value in data.items():
            if value is None:
                continue
            if not isinstance(value, str):
                raise CredentialsError(f"{path}:{line}: field {name!r} must be a string")
            fields[name] = _clean(name, value)
        yield line, fields


def _clean(name: str, value: str) -> str:
    """Surrounding blanks are layout, except in a password (it may really begin or end with one)."""
    return value if name == "password" else value.strip()


def _check_columns(path: Path, line: int, names: Iterable[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name not in COLUMNS:
            raise CredentialsError(f"{path}:{line}: unknown column {name!r}; known: {', '.join(COLUMNS)}")
        if name in seen:
            raise CredentialsError(f"{path}:{line}: column {name!r} given twice")
        seen.add(name)


def _row(line: int, fields: Mapping[str, str], key_is_cert_key: bool) -> CredentialRow:
    def get(name: str) -> str | None:
        return fields.get(name) or None

    key = get("key")
    return CredentialRow(
        line=line,
        device_id=get("device_id"),
        username=get("username"),
        password=get("password"),
        cert=get("cert"),
        cert_key=key if key_is_cert_key else None,
        sas_key=get("sas_key") or (None if key_is_cert_key else key),
    )


def _check_unique_ids(path: Path, rows: list[CredentialRow]) -> None:
    first_line: dict[str, int] = {}
    for row in rows:
        if row.device_id is None:
            continue
        if row.device_id in first_line:
            raise CredentialsError(
                f"{path}:{row.line}: device id {row.device_id!r} already on line {first_line[row.device_id]}"
            )
        first_line[row.device_id] = row.line
