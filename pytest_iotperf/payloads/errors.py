"""PayloadError, and how a message names a field of a template.

Every message says which field (``sensors[0].temperature``), what is wrong
with it and what it should be, and where the template came from.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from pytest_iotperf.errors import ConfigError

__all__ = ["PayloadError", "field_error", "field_path"]

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


class PayloadError(ConfigError, ValueError):
    """A payload template, file or callable that cannot be used; the message names the field and the source."""


def field_path(path: Sequence[str | int]) -> str:
    """``sensors[0].temperature``; keys that are not plain names as ``["a.b"]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out


def field_error(path: Sequence[str | int], problem: str, where: str) -> PayloadError:
    """``where: payload field "a.b": problem`` (the template itself when ``path`` is empty)."""
    what = f'payload field "{field_path(path)}"' if path else "payload template"
    return PayloadError(f"{where}: {what}: {problem}" if where else f"{what}: {problem}")
