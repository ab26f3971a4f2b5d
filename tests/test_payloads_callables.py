"""Payload callables: named by module:qualname, imported by name, checked once before a run."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_iotperf.fleet.naming import DeviceName
from pytest_iotperf.message_spec import HeaderPlacement, MessageSpec
from pytest_iotperf.payloads import (
    PayloadError,
    callable_ref,
    check_message_spec,
    import_root,
    load_callable,
    to_file_form,
    uniform,
)

DEVICE = DeviceName(3, "dev-3")


def reading(device: DeviceName, seq: int) -> dict[str, Any]:
    return {"deviceId": device.device_id, "seq": seq, "temperature": 21.5}


def protobuf(device: DeviceName, seq: int) -> bytes:
    return b"\x08\x96\x01\x12\x04dev3"


def json_bytes(device: DeviceName, seq: int) -> bytes:
    return b'{"deviceId": "%s"}' % device.device_id.encode()


def broken(device: DeviceName, seq: int) -> bytes:
    raise RuntimeError("sensor offline")


def a_number(device: DeviceName, seq: int) -> int:
    return 42


def with_header_key(device: DeviceName, seq: int) -> dict[str, Any]:
    return {"_iotperf": "mine"}


class Payloads:
    @staticmethod
    def reading(device: DeviceName, seq: int) -> dict[str, Any]:
        return {"n": device.n}


def ref(fn: Any) -> str:
    return f"{__name__}:{fn.__qualname__}"


def spec(fn: Any, header: HeaderPlacement = "body", key: str = "_iotperf") -> MessageSpec:
    return MessageSpec(
        kind="callable", callable_ref=ref(fn), header=header, header_key=key, source="iot_perf.run(payload=...)"
    )


def test_callable_ref_of_module_level_functions_imports_back() -> None:
    assert callable_ref(reading) == ref(reading)
    assert load_callable(callable_ref(reading)) is reading
    assert load_callable(callable_ref(Payloads.reading)) is Payloads.reading


def test_callable_ref_refuses_what_the_workers_cannot_import_by_name() -> None:
    def nested(device: DeviceName, seq: int) -> bytes:
        return b""

    with pytest.raises(PayloadError, match=r"is a lambda; .*define it at module level .* or pass 'module:function'"):
        callable_ref(lambda device, seq: b"")
    with pytest.raises(PayloadError, match=r"nested is defined inside a function; .*module level"):
        callable_ref(nested)
    with pytest.raises(PayloadError, match=r"has no module and name"):
        callable_ref(functools.partial(reading))

    def scripted(device: DeviceName, seq: int) -> bytes:
        return b""

    scripted.__module__ = "__main__"
    scripted.__qualname__ = "scripted"
    with pytest.raises(PayloadError, match=r"defined in __main__ .* move it into a module, or pass 'module:function'"):
        callable_ref(scripted)


def test_load_callable_names_the_ref_and_the_import_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    with pytest.raises(PayloadError, match=r"'reading': expected module:function"):
        load_callable("reading")
    with pytest.raises(PayloadError, match=r"no_such_module_x:f: cannot import no_such_module_x: ModuleNotFoundError"):
        load_callable("no_such_module_x:f")
    with pytest.raises(PayloadError, match=rf"{__name__}:missing: {__name__} has no missing"):
        load_callable(f"{__name__}:missing")
    with pytest.raises(PayloadError, match=r"is a MessageSpec, not a function"):
        load_callable(f"{__name__}:SOME_SPEC")
    (tmp_path / "iotperf_broken_payloads.py").write_text("raise RuntimeError('no numpy here')\n")
    with pytest.raises(PayloadError, match=r"cannot import iotperf_broken_payloads: RuntimeError: no numpy here"):
        load_callable("iotperf_broken_payloads:reading", path=str(tmp_path))
    (tmp_path / "iotperf_ok_payloads.py").write_text("def reading(device, seq):\n    return b'x'\n")
    monkeypatch.delitem(sys.modules, "iotperf_ok_payloads", raising=False)
    assert load_callable("iotperf_ok_payloads:reading", path=str(tmp_path))(DEVICE, 0) == b"x"
    monkeypatch.delitem(sys.modules, "iotperf_ok_payloads")
    root = import_root(reading)
    assert root is not None
    assert (Path(root) / Path(*__name__.split("."))).with_suffix(".py") == Path(__file__).resolve()


SOME_SPEC = MessageSpec()


def test_check_calls_the_callable_once_and_names_what_it_raised() -> None:
    check_message_spec(spec(reading), "run-1")
    check_message_spec(spec(protobuf, header="properties"), "run-1")
    check_message_spec(spec(json_bytes), "run-1")  # a JSON object in bytes takes the header too
    with pytest.raises(
        PayloadError,
        match=r"^iot_perf.run\(payload=\.\.\.\): payload callable .*:broken raised RuntimeError: sensor offline "
        r"\(device device-0, seq 0\)",
    ):
        check_message_spec(spec(broken), "run-1")
    with pytest.raises(PayloadError, match=r"a_number returned int; it must return bytes or a dict"):
        check_message_spec(spec(a_number, header="properties"), "run-1")


def test_bytes_that_are_not_a_json_object_need_the_header_in_properties() -> None:
    with pytest.raises(
        PayloadError,
        match=r"protobuf returned bytes that are not a JSON object \(b'\\x08\\x96.*\), so the measurement header "
        r"cannot go into the body: use --iot-header properties",
    ):
        check_message_spec(spec(protobuf), "run-1")


def test_the_header_key_must_not_overwrite_a_field_of_the_callable() -> None:
    with pytest.raises(PayloadError, match=r'with_header_key: payload field "_iotperf": exists already'):
        check_message_spec(spec(with_header_key), "run-1")
    check_message_spec(spec(with_header_key, key="meta.trace"), "run-1")
    check_message_spec(spec(with_header_key, header="properties"), "run-1")


def test_check_refuses_a_bad_template_or_one_the_header_cannot_go_into() -> None:
    good = MessageSpec(kind="template", template=to_file_form({"t": uniform(1, 2)}), source="t.json")
    check_message_spec(good, "run-1")
    check_message_spec(MessageSpec(kind="template", template=[1, 2], header="properties"), "run-1")
    with pytest.raises(PayloadError, match=r'^t\.json: payload field "t": \$uniform needs'):
        check_message_spec(MessageSpec(kind="template", template={"t": {"$uniform": [1]}}, source="t.json"), "r")
    with pytest.raises(PayloadError, match=r"^t\.json: payload template: is a list, but the measurement header"):
        check_message_spec(MessageSpec(kind="template", template=[1, 2], source="t.json"), "r")
    check_message_spec(MessageSpec(), "run-1")  # the fixed payload: nothing to check


def test_a_dict_result_gets_the_header_without_changing_the_users_dict() -> None:
    from pytest_iotperf.payloads import CallablePayload

    kept = {"meta": {"fw": "1.0"}, "t": 20}
    shared = CallablePayload(f"{__name__}:shared_reading")
    global _SHARED
    _SHARED = kept
    body = shared.renderer(DEVICE, "run-1", ("meta", "trace"))(5, 100, 120)
    assert json.loads(body) == {
        "meta": {
            "fw": "1.0",
            "trace": {"run_id": "run-1", "device_id": "dev-3", "seq": 5, "intended_at": 100, "sent_at": 120},
        },
        "t": 20,
    }
    assert kept == {"meta": {"fw": "1.0"}, "t": 20}
    assert shared.renderer(DEVICE, "run-1", None)(5, 100, 120) == b'{"meta":{"fw":"1.0"},"t":20}'


_SHARED: dict[str, Any] = {}


def shared_reading(device: DeviceName, seq: int) -> dict[str, Any]:
    return _SHARED
