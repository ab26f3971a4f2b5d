"""A run's own payload (template or callable) made ready once per process, then bound to each device.

Both sides use it: the pytest process to check the payload before any device
connects (:func:`check_message_spec`), the workers to render
(:mod:`pytest_iotperf.fleet.outgoing`).  The header goes into the body here
when ``--iot-header body``; carrying it in properties is the renderer's job.
"""

from __future__ import annotations

import time

from pytest_iotperf.fleet.naming import DeviceName
from pytest_iotperf.message_spec import MessageSpec
from pytest_iotperf.payloads.callables import CallablePayload
from pytest_iotperf.payloads.render_code import RenderFn
from pytest_iotperf.payloads.template import CompiledTemplate, compile_template

__all__ = ["JSON_CONTENT_TYPE", "PreparedPayload", "check_message_spec"]

JSON_CONTENT_TYPE = "application/json"


class PreparedPayload:
    """The template compiled (header placed when it goes in the body), or the callable imported.

    Raises (constructor):
        PayloadError: a bad template (naming the field), a callable that cannot be imported, a header key
            that cannot go into the template; every message starts with ``spec.source``.
    """

    def __init__(self, spec: MessageSpec, run_id: str, *, import_path: str | None = None) -> None:
        if spec.kind == "fixed":
            raise ValueError("the fixed payload is rendered by header.PayloadTemplate, not prepared")
        self.spec = spec
        self.run_id = run_id
        self.header_path = spec.header_path if spec.header == "body" else None
        self.template: CompiledTemplate | None = None
        self.callable: CallablePayload | None = None
        if spec.kind == "template":
            template = compile_template(spec.template, where=spec.source)
            if self.header_path is not None:
                template = template.with_header(self.header_path, run_id)
            self.template = template
        else:
            assert spec.callable_ref is not None  # MessageSpec checks it
            self.callable = CallablePayload(spec.callable_ref, path=import_path, where=spec.source)

    @property
    def content_type(self) -> str | None:
        """JSON unless a callable's bytes go out as they are (they may be protobuf, CBOR, ...)."""
        return JSON_CONTENT_TYPE if self.callable is None or self.header_path is not None else None

    def body_renderer(self, device: DeviceName) -> RenderFn:
        """``render(seq, intended_at_us, sent_at_us) -> body`` of one device."""
        if self.template is not None:
            return self.template.for_device(device, self.spec.seed).render
        assert self.callable is not None
        return self.callable.renderer(device, self.run_id, self.header_path)


def check_message_spec(spec: MessageSpec, run_id: str, *, device: DeviceName | None = None) -> None:
    """The pytest side's check before any device connects: compile or import, then render one message.

    ``device``: who the trial message is from (default: device 0 named ``device-0``); a callable is called
    once with it and seq 0.

    Raises:
        PayloadError: what :class:`PreparedPayload` refuses, a callable that raises or returns something
            unusable, bytes that are not a JSON object with the header in the body (suggesting properties).
    """
    if spec.kind == "fixed":
        return
    now_us = time.time_ns() // 1_000
    PreparedPayload(spec, run_id).body_renderer(device or DeviceName(0, "device-0"))(0, now_us, now_us)
