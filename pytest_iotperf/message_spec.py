"""What a run's messages look like and where their measurement header travels (issue 15).

One value, built on the pytest side, travels as JSON to every worker (inside
the ``FleetSpec``) and to every sink (inside its spec): the workers render
messages from it, the sinks find the header again with it.  Pure data: no
client library, no locust, no gevent.

Payload kinds:

* ``fixed``: our own JSON (``run_id, device_id, seq, intended_at, sent_at``,
  padded to ``payload_bytes``); the header *is* the body.
* ``template``: a JSON template in file form (generators written as
  ``{"$uniform": [15, 30]}``, see :mod:`pytest_iotperf.payloads`), compiled
  once per device and seeded per device from ``seed``.
* ``callable``: ``"module:qualname"`` of ``payload(device, seq) -> bytes | dict``,
  imported by name in each worker (a callable cannot travel between machines).

Header placement:

* ``body``: the header fields inside the user's JSON object under ``header_key``
  (a dotted path: ``meta.trace`` nests), the rest exactly the template.
* ``properties``: the body is byte-exactly what the template or callable
  produced; the header travels as MQTT 5 user properties, or in IoT Hub's
  property bag (which IoT Hub turns into Event Hubs application properties),
  one property per header field (:data:`HEADER_FIELDS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

PayloadKind = Literal["fixed", "template", "callable"]
HeaderPlacement = Literal["body", "properties"]

PAYLOAD_KINDS: Final = ("fixed", "template", "callable")
HEADER_PLACEMENTS: Final = ("body", "properties")
DEFAULT_HEADER_KEY: Final = "_iotperf"
#: The header's fields, in the order they are written: as JSON keys under the header key, or as property names.
HEADER_FIELDS: Final = ("run_id", "device_id", "seq", "intended_at", "sent_at")


@dataclass(frozen=True)
class MessageSpec:
    """The payload of every device of a run and where the header goes.

    Attributes:
        kind: ``fixed``, ``template`` or ``callable``.
        template: the JSON template in file form (kind ``template``), else None.
        callable_ref: ``"module:qualname"`` (kind ``callable``), else None.
        header: ``body`` or ``properties``.
        header_key: where the header sits in a JSON body: a key, or a dotted path into nested objects.
        seed: the run's seed; device n's generators draw from a stream derived from (seed, n).
        callable_path: a directory a local worker puts first on ``sys.path`` before importing ``callable_ref``
            (a function in a test module pytest imported from the rootdir); None: importable as installed.
        source: where the payload came from, for messages (``--iot-payload-file=t.json (command line)``).
    """

    kind: PayloadKind = "fixed"
    template: Any = None
    callable_ref: str | None = None
    header: HeaderPlacement = "body"
    header_key: str = DEFAULT_HEADER_KEY
    seed: int = 0
    source: str = "default"
    callable_path: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in PAYLOAD_KINDS:
            raise ValueError(f"payload kind must be one of {', '.join(PAYLOAD_KINDS)}, not {self.kind!r}")
        if self.header not in HEADER_PLACEMENTS:
            raise ValueError(f"--iot-header must be one of {', '.join(HEADER_PLACEMENTS)}, not {self.header!r}")
        if (self.kind == "template") != (self.template is not None):
            raise ValueError("a template payload needs its template, and only it has one")
        if (self.kind == "callable") != (self.callable_ref is not None):
            raise ValueError("a callable payload needs its module:qualname, and only it has one")
        if not self.header_key or any(not part for part in self.header_key.split(".")):
            raise ValueError(
                f"the header key must be a key or a dotted path such as meta.trace, not {self.header_key!r}"
            )

    @property
    def json_body(self) -> bool:
        """Whether every body is JSON: ours and templates are; a callable's bytes are known to be only when the
        header goes into them (it needs a JSON object)."""
        return not (self.kind == "callable" and self.header == "properties")

    @property
    def header_path(self) -> tuple[str, ...]:
        """``header_key`` split at its dots: the keys from the body's top object down to the header object."""
        return tuple(self.header_key.split("."))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; :meth:`from_dict` reads it back."""
        return {
            "kind": self.kind,
            "template": self.template,
            "callable_ref": self.callable_ref,
            "header": self.header,
            "header_key": self.header_key,
            "seed": self.seed,
            "source": self.source,
            "callable_path": self.callable_path,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MessageSpec:
        return cls(**data)
