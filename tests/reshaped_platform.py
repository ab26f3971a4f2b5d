"""What a reshaping platform writes, and the conftest hook its users would write to read it back.

The platform (``reshaping_relay.ReshapingRelay``) takes each device reading
``{"_iotperf": {header}, ...reading}`` and writes either:

* ``renamed``: the header fields renamed (``RENAMED``) in an ``envelope``,
  the reading beside it: ``{"envelope": {"runId": ..., "deviceId": ...}, "reading": {...}}``;
  the built-in finders cannot know these names: :func:`pytest_iotperf_extract` reads them;
* ``traced``: the header as it came, under ``meta.trace``
  (``--iot-header-key meta.trace``): the built-in finders read it.

Several readings go out together as a JSON array or as JSON lines.  This
file is also what the MQTT sink imports by path for the hook (as it would
import a conftest.py): standard library only, nothing from the code under
test.
"""

from __future__ import annotations

import json
from typing import Any, Final, Literal

Naming = Literal["renamed", "traced"]
Framing = Literal["single", "array", "lines"]

#: Our header field -> the platform's name for it.
RENAMED: Final = {
    "run_id": "runId",
    "device_id": "deviceId",
    "seq": "sequence",
    "intended_at": "dueUs",
    "sent_at": "sentUs",
}
TRACE_KEY: Final = "meta.trace"


def reshape(header: dict[str, Any], reading: dict[str, Any], naming: Naming) -> dict[str, Any]:
    """One reading as the platform writes it."""
    if naming == "renamed":
        return {"envelope": {RENAMED[name]: value for name, value in header.items()}, "reading": reading}
    return {"meta": {"trace": header, "schema": 3}, "reading": reading}


def frame(elements: list[dict[str, Any]], framing: Framing) -> bytes:
    """One output message holding ``elements`` (``single``: exactly one)."""
    if framing == "single":
        (element,) = elements
        return json.dumps(element).encode()
    if framing == "array":
        return json.dumps(elements).encode()
    return b"\n".join(json.dumps(element).encode() for element in elements) + b"\n"


def pytest_iotperf_extract(body: bytes, properties: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The conftest hook for the renamed envelope: one header per element, in any framing; None if not ours."""
    try:
        text = body.decode()
        docs: Any = json.loads(text) if "\n" not in text.strip() else [json.loads(line) for line in text.splitlines()]
    except ValueError:
        return None
    elements = docs if isinstance(docs, list) else [docs]
    if not elements or not all(isinstance(e, dict) and "envelope" in e for e in elements):
        return None
    return [{ours: element["envelope"].get(theirs) for ours, theirs in RENAMED.items()} for element in elements]
