"""Compiling a JSON template once, and rendering it per device and message as one string format.

:func:`compile_template` reads the file form (generators as ``{"$uniform": [15, 30]}``;
``$$key`` writes a literal key starting with ``$``), checks every generator's
arguments, and refuses anything that is not JSON, naming the field.  The result
is flattened into constant JSON text and value pieces.  :meth:`CompiledTemplate.for_device`
binds the pieces to one device (its random stream, its id folded into the
constant text) and returns a :class:`DeviceTemplate` whose ``render`` formats
one message (see :mod:`~pytest_iotperf.payloads.render_code`).

The output is the template's JSON, compact (as :func:`~pytest_iotperf.payloads.json_text.compact`
writes it), keys in the template's order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from pytest_iotperf.fleet.naming import DeviceName
from pytest_iotperf.message_spec import HEADER_FIELDS
from pytest_iotperf.payloads.errors import field_error
from pytest_iotperf.payloads.generators import (
    GENERATORS,
    INTENDED_AT_US,
    SENT_AT_US,
    SEQ,
    Generator,
    GeneratorKind,
    Slot,
    is_generator_form,
    parse_generator,
)
from pytest_iotperf.payloads.json_text import compact
from pytest_iotperf.payloads.placement import inside_non_object, not_an_object, overwrites
from pytest_iotperf.payloads.prng import Seeds
from pytest_iotperf.payloads.render_code import RenderFn, make_render

__all__ = ["CompiledTemplate", "DeviceTemplate", "compile_template"]

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class _Const:
    text: str  # its JSON


@dataclass(frozen=True)
class _Object:
    items: tuple[tuple[str, _Node], ...]


@dataclass(frozen=True)
class _Array:
    items: tuple[_Node, ...]


@dataclass(frozen=True, eq=False)
class _Gen:
    kind: GeneratorKind
    args: dict[str, Any]


@dataclass(frozen=True)
class _Header:
    run_id: str


_Node = _Const | _Object | _Array | _Gen | _Header
_Piece = str | _Gen | Slot
#: The header's fields in the body: run_id a constant, the device id per device, the rest per message.
_DEVICE_ID: Final = _Gen(GENERATORS["device_id"], {})
_HEADER_VALUES: Final[dict[str, _Piece]] = {
    "device_id": _DEVICE_ID,
    "seq": Slot("%d", SEQ, {}),
    "intended_at": Slot("%d", INTENDED_AT_US, {}),
    "sent_at": Slot("%d", SENT_AT_US, {}),
}


class DeviceTemplate:
    """A template bound to one device: ``render(seq, intended_at_us, sent_at_us) -> JSON bytes``."""

    __slots__ = ("render",)

    def __init__(self, render: RenderFn) -> None:
        self.render = render


class CompiledTemplate:
    """A checked template, flattened: bind it to each device with :meth:`for_device`."""

    def __init__(self, root: _Node, where: str) -> None:
        self.where = where
        self._root = root
        self._pieces = _merged(_flatten(root))

    @property
    def is_object(self) -> bool:
        return isinstance(self._root, _Object)

    def with_header(self, path: Sequence[str], run_id: str) -> CompiledTemplate:
        """This template with the measurement header placed at ``path`` (see :mod:`.placement`).

        Raises:
            PayloadError: the template is not an object, the path runs into a non-object, or ends on a field.
        """
        return CompiledTemplate(_insert(self._root, tuple(path), (), _Header(run_id), self.where), self.where)

    def for_device(self, device: DeviceName, seed: int) -> DeviceTemplate:
        """The template of one device; its random values come from streams of its own, seeded by (seed, n)."""
        seeds = Seeds(seed, device.n)
        parts: list[str] = []
        slots: list[Slot] = []
        for piece in self._pieces:
            bound = piece.kind.bind(piece.args, seeds, device) if isinstance(piece, _Gen) else piece
            if isinstance(bound, str):
                parts.append(bound.replace("%", "%%"))
            else:
                parts.append(bound.conversion)
                slots.append(bound)
        fmt = "".join(parts)
        if not slots:  # nothing changes between messages
            body = (fmt % ()).encode()
            return DeviceTemplate(lambda seq, intended_at_us, sent_at_us: body)
        return DeviceTemplate(make_render(fmt, slots, seeds.device))


def compile_template(file_form: Any, *, where: str) -> CompiledTemplate:
    """Check and compile a template in file form (generator objects from test code are accepted too).

    ``where`` says where it came from (``--iot-payload-file=t.json (command line)``) and starts every message.

    Raises:
        PayloadError: naming the field: an unknown generator, bad arguments, a value that is not JSON.
    """
    return CompiledTemplate(_parse(file_form, (), where), where)


# -- parsing -------------------------------------------------------------------------------------------------


def _parse(value: Any, path: Path, where: str) -> _Node:
    if isinstance(value, Generator):
        value = value.to_file_form()
    if isinstance(value, dict):
        if is_generator_form(value):
            ((key, raw),) = value.items()
            parsed = parse_generator(key[1:], raw)
            if isinstance(parsed, str):
                raise field_error(path, parsed, where)
            return _Gen(*parsed)
        return _Object(tuple(_parse_item(key, item, path, where) for key, item in value.items()))
    if isinstance(value, list | tuple):
        return _Array(tuple(_parse(item, (*path, index), where) for index, item in enumerate(value)))
    if value is None or isinstance(value, bool | int | float | str):
        try:
            text = compact(value)
            text.encode()
        except ValueError:  # NaN or an infinity; a lone surrogate (UnicodeEncodeError)
            raise field_error(path, f"{value!r} is not a JSON value", where) from None
        return _Const(text)
    raise field_error(path, f"{type(value).__name__} is not a JSON value (nor a generator)", where)


def _parse_item(key: Any, value: Any, path: Path, where: str) -> tuple[str, _Node]:
    if not isinstance(key, str):
        raise field_error(path, f"keys must be strings, got {key!r}", where)
    if key.startswith("$"):
        if not key.startswith("$$"):
            raise field_error(
                (*path, key),
                'a key starting with "$" names a generator, written as an object with that one key '
                '({"$uniform": [15, 30]}); write "$$" for a literal key starting with "$"',
                where,
            )
        key = key[1:]
    try:
        key.encode()
    except UnicodeEncodeError:
        raise field_error(path, f"the key {key!r} is not valid Unicode", where) from None
    return key, _parse(value, (*path, key), where)


# -- the header in the body -----------------------------------------------------------------------------------


def _describe(node: _Node) -> str:
    if isinstance(node, _Array):
        return "a list"
    if isinstance(node, _Gen):
        return f"the generator ${node.kind.name}"
    return f"the constant {node.text}" if isinstance(node, _Const) else "an object"


def _insert(node: _Node, path: tuple[str, ...], trail: tuple[str, ...], header: _Header, where: str) -> _Node:
    header_key = ".".join(trail + path)
    if not isinstance(node, _Object):
        problem = inside_non_object(_describe(node), header_key) if trail else not_an_object(_describe(node))
        raise field_error(trail, problem, where)
    key, rest = path[0], path[1:]
    index = next((i for i, (existing, _) in enumerate(node.items) if existing == key), None)
    if not rest:
        if index is not None:
            raise field_error((*trail, key), overwrites(header_key), where)
        return _Object((*node.items, (key, header)))
    if index is None:
        return _Object((*node.items, (key, _insert(_Object(()), rest, (*trail, key), header, where))))
    inner = _insert(node.items[index][1], rest, (*trail, key), header, where)
    return _Object(tuple((k, inner if i == index else v) for i, (k, v) in enumerate(node.items)))


# -- flattening ----------------------------------------------------------------------------------------------


def _flatten(node: _Node) -> list[_Piece]:
    out: list[_Piece] = []
    _emit(node, out)
    return out


def _emit(node: _Node, out: list[_Piece]) -> None:
    if isinstance(node, _Const):
        out.append(node.text)
    elif isinstance(node, _Gen):
        out.append(node)
    elif isinstance(node, _Object):
        out.append("{")
        for index, (key, value) in enumerate(node.items):
            out.append(("," if index else "") + compact(key) + ":")
            _emit(value, out)
        out.append("}")
    elif isinstance(node, _Array):
        out.append("[")
        for index, value in enumerate(node.items):
            if index:
                out.append(",")
            _emit(value, out)
        out.append("]")
    else:
        out.append("{")
        for index, field in enumerate(HEADER_FIELDS):
            out.append(("," if index else "") + compact(field) + ":")
            out.append(compact(node.run_id) if field == "run_id" else _HEADER_VALUES[field])
        out.append("}")


def _merged(pieces: list[_Piece]) -> list[_Piece]:
    """Adjacent constant text joined: fewer, longer pieces."""
    out: list[_Piece] = []
    for piece in pieces:
        if isinstance(piece, str) and out and isinstance(out[-1], str):
            out[-1] += piece
        else:
            out.append(piece)
    return out
