"""A template's file form: from a dict in test code (:func:`to_file_form`) or a file (:func:`payload_file`).

The file form is plain JSON, so it travels inside the fleet spec to every
worker: generators are written ``{"$uniform": [15, 30]}``, a literal key starting
with ``$`` as ``$$key``.  A dict in test code follows the same rules and may hold
generator objects (``uniform(15, 30)``) anywhere a value goes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pytest_iotperf.payloads.errors import PayloadError, field_error
from pytest_iotperf.payloads.generators import Generator

__all__ = ["payload_file", "to_file_form"]


def to_file_form(template: Any, *, where: str = "") -> Any:
    """The JSON-able file form of a template from test code: generator objects written as ``{"$name": args}``.

    Raises:
        PayloadError: a value that is neither JSON nor a generator, naming the field.
    """
    return _file_form(template, (), where)


def _file_form(value: Any, path: tuple[str | int, ...], where: str) -> Any:
    if isinstance(value, Generator):
        return value.to_file_form()
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise field_error(path, f"keys must be strings, got {key!r}", where)
            out[key] = _file_form(item, (*path, key), where)
        return out
    if isinstance(value, list | tuple):
        return [_file_form(item, (*path, index), where) for index, item in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        raise field_error(path, f"{value!r} is not a JSON number", where)
    if value is None or isinstance(value, str | bool | int | float):
        return value
    raise field_error(path, f"{type(value).__name__} is not a JSON value (nor a generator)", where)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {key!r} appears twice in one object")
        out[key] = value
    return out


def _no_nan(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def payload_file(path: str | Path) -> Any:
    """The template in a JSON file (file form, unchecked: :func:`compile_template` checks it).

    Raises:
        PayloadError: the file cannot be read, or is not JSON (with the line and column).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PayloadError(f"payload file {path}: cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise PayloadError(f"payload file {path}: not UTF-8 text (byte {exc.start})") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_nan)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise PayloadError(f"payload file {path}: not valid JSON: {exc.msg} at {where}") from None
    except ValueError as exc:
        raise PayloadError(f"payload file {path}: {exc}") from None
