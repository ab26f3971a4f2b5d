"""Where the measurement header goes in a JSON body (``--iot-header body``), and why it sometimes cannot.

The header is an object (``{"run_id": ..., "device_id": ..., "seq": ...,
"intended_at": ..., "sent_at": ...}``) placed at the header key, a dotted path:
missing objects on the way are created (after the fields already there), existing
ones are used.  It never replaces anything of the user's: a path that runs into
a value that is not an object, or ends on an existing field, is refused.
The template compiler applies the same rule to its tree (same sentences).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pytest_iotperf.message_spec import HEADER_FIELDS
from pytest_iotperf.payloads.errors import field_error

__all__ = ["header_object", "inside_non_object", "not_an_object", "overwrites", "place_header"]


def not_an_object(what: str) -> str:
    return (
        f"is {what}, but the measurement header (--iot-header body) needs a JSON object to go into: "
        "make the payload an object, or use --iot-header properties"
    )


def inside_non_object(what: str, header_key: str) -> str:
    return (
        f"is {what}, so the header key {header_key!r} cannot go inside it: "
        "choose another --iot-header-key, or use --iot-header properties"
    )


def overwrites(header_key: str) -> str:
    return f"exists already, and the header key {header_key!r} would overwrite it: choose another --iot-header-key"


def header_object(run_id: str, device_id: str, seq: int, intended_at_us: int, sent_at_us: int) -> dict[str, Any]:
    return dict(zip(HEADER_FIELDS, (run_id, device_id, seq, intended_at_us, sent_at_us), strict=True))


def _describe(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return "null" if value is None else f"the value {value!r}"


def place_header(
    doc: Any, path: Sequence[str], header: Mapping[str, Any], *, where: str = ""
) -> dict[str, Any]:
    """A copy of ``doc`` (copied along the path only; the user's object is not changed) with the header placed.

    Raises:
        PayloadError: ``doc`` is not an object, the path runs into a non-object, or ends on an existing field.
    """
    if not isinstance(doc, dict):
        raise field_error((), not_an_object(_describe(doc)), where)
    header_key = ".".join(path)
    top = node = dict(doc)
    for depth, key in enumerate(path[:-1]):
        inner = node.get(key)
        if inner is None and key not in node:
            inner = {}
        elif isinstance(inner, dict):
            inner = dict(inner)
        else:
            raise field_error(path[: depth + 1], inside_non_object(_describe(inner), header_key), where)
        node[key] = inner
        node = inner
    if path[-1] in node:
        raise field_error(path, overwrites(header_key), where)
    node[path[-1]] = header
    return top

