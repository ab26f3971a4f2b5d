"""Payload callables: named ``module:qualname``, imported in each worker, called per message.

``payload(device: DeviceName, seq: int) -> bytes | dict``: bytes are the body
as is (protobuf, CBOR, anything); a dict is written as compact JSON.  Workers
are fresh interpreters, possibly on other machines, so a callable travels by
name: :func:`callable_ref` takes it from a module-level function (and refuses
what could not be imported by that name), :func:`load_callable` imports it.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pytest_iotperf.fleet.naming import DeviceName
from pytest_iotperf.payloads.errors import PayloadError
from pytest_iotperf.payloads.json_text import compact
from pytest_iotperf.payloads.placement import header_object, place_header
from pytest_iotperf.payloads.render_code import RenderFn

__all__ = ["CallablePayload", "callable_ref", "import_root", "load_callable"]

_MODULE_LEVEL = "define it at module level (def reading(device, seq): ...) or pass 'module:function'"


def _prefixed(where: str, message: str) -> str:
    return f"{where}: {message}" if where else message


def load_callable(ref: str, *, path: str | None = None, where: str = "") -> Callable[..., Any]:
    """The function ``ref`` (``"module:qualname"``) names; ``path`` goes first on ``sys.path`` before importing.

    Raises:
        PayloadError: ``ref`` is malformed, its module cannot be imported (with the import error), or lacks it.
    """
    module_name, _, qualname = ref.partition(":")
    if not module_name or not qualname:
        expected = f"payload callable {ref!r}: expected module:function, e.g. mypkg.payloads:reading"
        raise PayloadError(_prefixed(where, expected))
    if path and path not in sys.path:
        sys.path.insert(0, path)
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raised while importing
        raise PayloadError(
            _prefixed(where, f"payload callable {ref}: cannot import {module_name}: {type(exc).__name__}: {exc}")
        ) from exc
    for part in qualname.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise PayloadError(_prefixed(where, f"payload callable {ref}: {module_name} has no {qualname}")) from None
    if not callable(target):
        raise PayloadError(_prefixed(where, f"payload callable {ref} is a {type(target).__name__}, not a function"))
    return target  # type: ignore[no-any-return]


def callable_ref(fn: object) -> str:
    """``module:qualname`` of a module-level function (or class attribute), checked to import back as ``fn``.

    Raises:
        PayloadError: a lambda, a nested function, one defined in ``__main__``, or anything else that the
            workers could not import by name.
    """
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise PayloadError(f"payload {fn!r} has no module and name the workers could import it by: {_MODULE_LEVEL}")
    if "<lambda>" in qualname:
        raise PayloadError(
            f"payload {module}:{qualname} is a lambda; the workers import the payload by name: {_MODULE_LEVEL}"
        )
    if "<locals>" in qualname:
        raise PayloadError(
            f"payload {module}:{qualname} is defined inside a function; the workers import the payload by name: "
            + _MODULE_LEVEL
        )
    if module == "__main__":
        raise PayloadError(
            f"payload {qualname} is defined in __main__ (the script being run), which the workers cannot import: "
            "move it into a module, or pass 'module:function'"
        )
    ref = f"{module}:{qualname}"
    found = load_callable(ref)
    if found is not fn and found != fn:
        raise PayloadError(f"payload {ref} names another object than the one given (a decorator?): {_MODULE_LEVEL}")
    return ref


def import_root(fn: object) -> str | None:
    """The directory that must be on ``sys.path`` for ``fn``'s module to import by its name (None: no file)."""
    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    file = getattr(module, "__file__", None)
    if module is None or not file:
        return None
    levels = module.__name__.count(".") + (1 if Path(file).name == "__init__.py" else 0)
    return str(Path(file).resolve().parents[levels])


def _preview(body: bytes) -> str:
    return repr(body[:24]) + ("..." if len(body) > 24 else "")


class CallablePayload:
    """A payload callable imported once per process, and the render function of each device."""

    def __init__(self, ref: str, *, path: str | None = None, where: str = "") -> None:
        self.ref = ref
        self.where = where
        self.fn = load_callable(ref, path=path, where=where)

    def _fail(self, message: str) -> PayloadError:
        return PayloadError(_prefixed(self.where, f"payload callable {self.ref} {message}"))

    def produce(self, device: DeviceName, seq: int) -> Any:
        try:
            return self.fn(device, seq)
        except Exception as exc:
            raise self._fail(f"raised {type(exc).__name__}: {exc} (device {device.device_id}, seq {seq})") from exc

    def body(self, produced: Any) -> bytes:
        """The body as the callable made it: bytes as they are, a dict as compact JSON."""
        if isinstance(produced, bytes):
            return produced
        if isinstance(produced, bytearray | memoryview):
            return bytes(produced)
        if isinstance(produced, dict):
            try:
                return compact(produced).encode()
            except (TypeError, ValueError) as exc:
                raise self._fail(f"returned a dict that is not JSON: {exc}") from None
        raise self._fail(f"returned {type(produced).__name__}; it must return bytes or a dict")

    def json_object(self, produced: Any) -> Any:
        """The JSON object the header goes into (``--iot-header body``)."""
        if isinstance(produced, dict):
            return produced
        body = self.body(produced)
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            return doc
        raise self._fail(
            f"returned bytes that are not a JSON object ({_preview(body)}), so the measurement header cannot "
            "go into the body: use --iot-header properties to send the body as it is and the header as "
            "MQTT 5 user properties (or in IoT Hub's property bag)"
        )

    def renderer(self, device: DeviceName, run_id: str, header_path: Sequence[str] | None) -> RenderFn:
        """``render(seq, intended_at_us, sent_at_us) -> body``; the header placed at ``header_path`` when given."""
        if header_path is None:

            def render_as_is(seq: int, intended_at_us: int, sent_at_us: int) -> bytes:
                return self.body(self.produce(device, seq))

            return render_as_is
        path, device_id = tuple(header_path), device.device_id

        def render_with_header(seq: int, intended_at_us: int, sent_at_us: int) -> bytes:
            doc = self.json_object(self.produce(device, seq))
            header = header_object(run_id, device_id, seq, intended_at_us, sent_at_us)
            try:
                return compact(place_header(doc, path, header)).encode()
            except PayloadError as exc:  # the header cannot go where --iot-header-key says
                raise PayloadError(_prefixed(self.where, f"payload callable {self.ref}: {exc}")) from None
            except (TypeError, ValueError) as exc:
                raise self._fail(f"returned a dict that is not JSON: {exc}") from None

        return render_with_header
