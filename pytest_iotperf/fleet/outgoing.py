"""What a device sends: each message's body, and its header properties when the header travels outside the body.

``renderer_for(spec, run_id, name, payload_bytes).render(seq, intended_at_us, sent_at_us)``
returns ``(body, properties)``:

* the fixed payload, header in the body: today's bytes (``header.PayloadTemplate``,
  padded to ``payload_bytes``), properties None;
* a template or callable, header in the body: the user's JSON with the header
  object at ``--iot-header-key``; properties None;
* header in properties: the body byte-exactly what the template or callable
  produced (the fixed payload: today's bytes), and one property per header field,
  named as :data:`~pytest_iotperf.message_spec.HEADER_FIELDS`, values as plain
  decimal strings: ``[("run_id", "r1"), ("device_id", "d7"), ("seq", "7"),
  ("intended_at", "1764198351123456"), ("sent_at", "1764198351123502")]``.

``payload_bytes`` pads the fixed payload only (a user's body is the user's).
Rendering is pure: no gevent, importable in the pytest process.

A worker calls :func:`prepare_renderers` when it receives the spec, so a callable
that cannot be imported there fails the run before T0 (``PayloadError`` with the
import error); devices then take their renderer from it, or from
:func:`renderer_for`, which prepares once per spec.
"""

from __future__ import annotations

from typing import Final, Protocol

from pytest_iotperf.fleet.naming import DeviceName
from pytest_iotperf.header import PayloadTemplate
from pytest_iotperf.message_spec import HEADER_FIELDS, MessageSpec
from pytest_iotperf.payloads.prepared import JSON_CONTENT_TYPE, PreparedPayload
from pytest_iotperf.payloads.render_code import RenderFn

__all__ = ["MessageRenderer", "MessageRenderers", "Properties", "prepare_renderers", "renderer_for"]

#: Header properties, in HEADER_FIELDS order.
Properties = list[tuple[str, str]]

_RUN_ID, _DEVICE_ID, _SEQ, _INTENDED_AT, _SENT_AT = HEADER_FIELDS


class MessageRenderer(Protocol):
    """One device's messages."""

    @property
    def content_type(self) -> str | None:
        """``application/json`` when the body is JSON; None when unknown (a callable's bytes)."""
        ...

    @property
    def render_body(self) -> RenderFn | None:
        """With the header in the body (properties always None): ``render``'s body alone, one call less
        (the fixed payload's is ``PayloadTemplate.render`` itself: today's cost); else None."""
        ...

    def render(self, seq: int, intended_at_us: int, sent_at_us: int) -> tuple[bytes, Properties | None]: ...


class _HeaderInBody:
    """The body carries the header; no properties."""

    __slots__ = ("_body", "content_type")

    def __init__(self, body: RenderFn, content_type: str | None) -> None:
        self._body = body
        self.content_type = content_type

    @property
    def render_body(self) -> RenderFn | None:
        return self._body

    def render(self, seq: int, intended_at_us: int, sent_at_us: int) -> tuple[bytes, Properties | None]:
        return self._body(seq, intended_at_us, sent_at_us), None


class _HeaderInProperties:
    """The body as produced; the header as properties."""

    __slots__ = ("_body", "_device_id", "_run_id", "content_type")

    def __init__(self, body: RenderFn, run_id: str, device_id: str, content_type: str | None) -> None:
        self._body = body
        self._run_id = (_RUN_ID, run_id)
        self._device_id = (_DEVICE_ID, device_id)
        self.content_type = content_type

    @property
    def render_body(self) -> RenderFn | None:
        return None

    def render(self, seq: int, intended_at_us: int, sent_at_us: int) -> tuple[bytes, Properties | None]:
        return self._body(seq, intended_at_us, sent_at_us), [
            self._run_id,
            self._device_id,
            (_SEQ, str(seq)),
            (_INTENDED_AT, str(intended_at_us)),
            (_SENT_AT, str(sent_at_us)),
        ]


class MessageRenderers:
    """A run's message spec prepared once per process: compile or import here, bind per device after.

    Raises (constructor):
        PayloadError: the template or callable cannot be used here (a callable's import error, named).
    """

    def __init__(self, spec: MessageSpec, run_id: str) -> None:
        self.spec = spec
        self.run_id = run_id
        # The fixed payload needs no preparation; a callable is imported from callable_path when given.
        self._prepared = None if spec.kind == "fixed" else PreparedPayload(spec, run_id, import_path=spec.callable_path)

    def for_device(self, name: DeviceName, payload_bytes: int = 0) -> MessageRenderer:
        prepared = self._prepared
        if prepared is None:
            body: RenderFn = PayloadTemplate(self.run_id, name.device_id, payload_bytes).render
            content_type: str | None = JSON_CONTENT_TYPE
        else:
            body, content_type = prepared.body_renderer(name), prepared.content_type
        if self.spec.header == "body":
            return _HeaderInBody(body, content_type)
        return _HeaderInProperties(body, self.run_id, name.device_id, content_type)


#: The last prepared spec of this process: a worker runs one spec, its devices share the preparation.
_last: Final[list[MessageRenderers | None]] = [None]


def prepare_renderers(spec: MessageSpec, run_id: str) -> MessageRenderers:
    """The worker's check when the spec arrives (and what its devices render from).

    Raises:
        PayloadError: e.g. the callable cannot be imported in this process, with the import error.
    """
    renderers = MessageRenderers(spec, run_id)
    _last[0] = renderers
    return renderers



def renderer_for(spec: MessageSpec, run_id: str, name: DeviceName, payload_bytes: int) -> MessageRenderer:
    """Device ``name``'s renderer; the spec is prepared once (compiled, imported) for all devices of a process."""
    renderers = _last[0]
    if renderers is None or renderers.run_id != run_id or not (renderers.spec is spec or renderers.spec == spec):
        renderers = prepare_renderers(spec, run_id)
    return renderers.for_device(name, payload_bytes)
