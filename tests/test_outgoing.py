"""What a device sends: body and header properties for each payload kind and header placement."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from pytest_iotperf.fleet import outgoing
from pytest_iotperf.fleet.naming import DeviceName
from pytest_iotperf.fleet.outgoing import prepare_renderers, renderer_for
from pytest_iotperf.header import PayloadTemplate
from pytest_iotperf.message_spec import HeaderPlacement, MessageSpec
from pytest_iotperf.payloads import (
    PayloadError,
    choice,
    compile_template,
    counter,
    device_id,
    now,
    to_file_form,
    uniform,
)

DEVICE = DeviceName(4, "dev-4")
T_US = 1_764_198_351_123_456
TEMPLATE = to_file_form(
    {
        "deviceId": device_id(),
        "temperature": uniform(15, 30, digits=1),
        "ts": now("iso"),
        "status": choice(["ok", "warn"]),
        "counter": counter(),
    }
)
PROPERTIES = [
    ("run_id", "run-1"),
    ("device_id", "dev-4"),
    ("seq", "7"),
    ("intended_at", str(T_US)),
    ("sent_at", str(T_US + 46)),
]


def template_spec(header: HeaderPlacement, key: str = "_iotperf") -> MessageSpec:
    return MessageSpec(kind="template", template=TEMPLATE, header=header, header_key=key, seed=9, source="test")


def reading(device: DeviceName, seq: int) -> dict[str, Any]:
    return {"deviceId": device.device_id, "seq": seq}


def cbor(device: DeviceName, seq: int) -> bytes:
    return bytes([0xA1, 0x61, 0x73, seq])


def test_the_fixed_payload_with_the_header_in_the_body_is_todays_bytes() -> None:
    for payload_bytes in (0, 256):
        renderer = renderer_for(MessageSpec(), "run-1", DEVICE, payload_bytes)
        today = PayloadTemplate("run-1", "dev-4", payload_bytes).render(7, T_US, T_US + 46)
        assert renderer.render(7, T_US, T_US + 46) == (today, None)
        assert renderer.content_type == "application/json"
        render_body = renderer.render_body  # the device's fast path: today's PayloadTemplate.render itself
        assert render_body is not None and render_body(7, T_US, T_US + 46) == today


def test_the_fixed_payload_with_the_header_in_properties_keeps_its_body() -> None:
    renderer = renderer_for(MessageSpec(header="properties"), "run-1", DEVICE, 0)
    body, properties = renderer.render(7, T_US, T_US + 46)
    assert body == PayloadTemplate("run-1", "dev-4").render(7, T_US, T_US + 46)
    assert properties == PROPERTIES
    assert renderer.render_body is None  # the properties must go too


def test_a_template_with_the_header_in_properties_sends_the_template_byte_for_byte() -> None:
    renderer = renderer_for(template_spec("properties"), "run-1", DEVICE, 512)  # no padding of the user's body
    expected = compile_template(TEMPLATE, where="test").for_device(DEVICE, 9).render
    for seq in range(5):
        body, properties = renderer.render(seq, T_US + seq, T_US + seq + 46)
        assert body == expected(seq, T_US + seq, T_US + seq + 46)
        assert properties is not None and properties[2] == ("seq", str(seq))
    assert renderer.render(7, T_US, T_US + 46)[1] == PROPERTIES
    assert renderer.content_type == "application/json"


def test_a_template_with_the_header_in_the_body_carries_it_at_the_dotted_key() -> None:
    renderer = renderer_for(template_spec("body", "meta.trace"), "run-1", DEVICE, 0)
    body, properties = renderer.render(7, T_US, T_US + 46)
    assert properties is None
    doc = json.loads(body)
    assert doc["meta"] == {
        "trace": {"run_id": "run-1", "device_id": "dev-4", "seq": 7, "intended_at": T_US, "sent_at": T_US + 46}
    }
    without = renderer_for(template_spec("properties"), "run-1", DEVICE, 0).render(7, T_US, T_US + 46)[0]
    assert {k: v for k, v in doc.items() if k != "meta"} == json.loads(without)


def callable_spec(fn: Any, header: HeaderPlacement) -> MessageSpec:
    return MessageSpec(kind="callable", callable_ref=f"{__name__}:{fn.__name__}", header=header, source="test")


def test_a_callable_body_as_produced_or_with_the_header() -> None:
    as_is = renderer_for(callable_spec(cbor, "properties"), "run-1", DEVICE, 0)
    assert as_is.render(7, T_US, T_US + 46) == (bytes([0xA1, 0x61, 0x73, 7]), PROPERTIES)
    assert as_is.content_type is None  # bytes of the user's: we do not know what they are
    as_json = renderer_for(callable_spec(reading, "properties"), "run-1", DEVICE, 0)
    assert as_json.render(7, T_US, T_US + 46)[0] == b'{"deviceId":"dev-4","seq":7}'
    in_body = renderer_for(callable_spec(reading, "body"), "run-1", DEVICE, 0)
    body, properties = in_body.render(7, T_US, T_US + 46)
    assert properties is None and in_body.content_type == "application/json"
    header = {"run_id": "run-1", "device_id": "dev-4", "seq": 7, "intended_at": T_US, "sent_at": T_US + 46}
    assert json.loads(body) == {"deviceId": "dev-4", "seq": 7, "_iotperf": header}


def test_a_worker_that_cannot_import_the_callable_fails_naming_the_import_error() -> None:
    spec = MessageSpec(kind="callable", callable_ref="iotperf_not_installed.payloads:reading", source="test")
    with pytest.raises(PayloadError, match=r"cannot import iotperf_not_installed\.payloads: ModuleNotFoundError"):
        prepare_renderers(spec, "run-1")


def test_devices_share_one_preparation_per_spec() -> None:
    spec = template_spec("body")
    renderer_for(spec, "run-1", DEVICE, 0)
    prepared = outgoing._last[0]
    renderer_for(spec, "run-1", DeviceName(5, "dev-5"), 0)
    renderer_for(template_spec("body"), "run-1", DeviceName(6, "dev-6"), 0)  # an equal spec, as unpickled
    assert outgoing._last[0] is prepared
    renderer_for(spec, "run-2", DEVICE, 0)
    assert outgoing._last[0] is not prepared


def test_rendering_needs_neither_gevent_nor_locust() -> None:
    code = (
        "import sys, pytest_iotperf.fleet.outgoing, pytest_iotperf.payloads; "
        "assert not {'gevent', 'locust'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
