"""The generators a payload template may use: in test code, in file form, and bound to one device.

In test code ``uniform(15, 30)`` makes a :class:`Generator`; in a template file
the same is ``{"$uniform": [15, 30]}``: the arguments as a list, or as an object
of keyword arguments (``{"$uniform": {"lo": 15, "hi": 30, "digits": 1}}``), or
a single argument alone (``{"$now": "ms"}``).  ``$choice`` takes its values as
the list itself (``{"$choice": ["ok", "warn"]}``) or ``{"values": [...],
"weights": [...]}``.

Each kind checks its arguments once (:func:`parse_generator`) and is then bound
to one device (:meth:`GeneratorKind.bind`): the result is either a constant
JSON fragment (``device_id()`` is the same in every message of a device) or a
:class:`Slot`, a function that returns the JSON text of one message's value.

What the values are:

* ``uniform(lo, hi)``, ``normal(mean, sd)``: floats (``digits=1``: rounded to 1
  decimal; ``digits=0``: whole numbers);
* ``walk(start, step, lo, hi)``: starts at ``start``, then moves by a uniform
  step in [-step, step] per message, reflected at ``lo`` and ``hi``; each device
  walks on its own;
* ``sine(period_s, amplitude, offset)``: ``offset + amplitude * sin(2 pi t / period_s)``
  of the message's *intended* (scheduled) time, so the curve does not depend on
  when the message happened to be sent;
* ``choice(values, weights=None)``: one of the values (any JSON), weighted if asked;
* ``counter(start=0)``: ``start + seq``: gap-free over the messages a device sent;
* ``now(format)``: the time the message is *sent*, as a real device stamps it:
  ``iso`` (``"2026-12-03T14:32:05.123Z"``, UTC, milliseconds), ``ms``, ``us``
  or ``s`` since the Unix epoch (integers);
* ``device_id()``, ``device_number()``: the device's id (string) and number n;
* ``random_string(n)``: n letters and digits.

Random values come from the device's own stream (seeded from the run's seed and
the device number): a run with the same seed repeats them, and devices do not
share a stream.
"""

from __future__ import annotations

import difflib
import json
import math
import string
from bisect import bisect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Final, NamedTuple

from pytest_iotperf.fleet.naming import DeviceName
from pytest_iotperf.payloads.json_text import compact
from pytest_iotperf.payloads.prng import Seeds, uniform_source
from pytest_iotperf.payloads.timestamps import iso_json

__all__ = [
    "GENERATORS",
    "HELPERS",
    "INTENDED_AT_US",
    "NOW_FORMATS",
    "SENT_AT_US",
    "SEQ",
    "Generator",
    "GeneratorKind",
    "Slot",
    "choice",
    "counter",
    "device_id",
    "device_number",
    "is_generator_form",
    "normal",
    "now",
    "parse_generator",
    "random_string",
    "sine",
    "uniform",
    "walk",
]

#: What a slot function may be given, by these names: the message's seq and its intended and sent times (µs).
SEQ: Final = "seq"
INTENDED_AT_US: Final = "intended_at_us"
SENT_AT_US: Final = "sent_at_us"
NOW_FORMATS: Final = ("iso", "ms", "us", "s")
_ALPHABET: Final = string.ascii_letters + string.digits
_MAX_DIGITS: Final = 17  # a float has no more significant decimals than this


class Slot(NamedTuple):
    """One generated value of a device: a Python expression, written into the render function (render_code).

    ``expr`` may read ``seq``, ``intended_at_us``, ``sent_at_us``, its own ``{names}`` (placeholders,
    given values in ``names``) and ``{u0}``, ``{u1}``, ... (``draws`` floats in [0, 1) from the device's
    stream, fresh per message); ``conversion`` formats its value into the JSON text (``%s`` for text that
    is already JSON, ``%d``, ``%r`` or ``%.1f`` for numbers).  Expressions are this module's own strings,
    never text from a template.
    """

    conversion: str
    expr: str
    names: Mapping[str, Any]
    draws: int = 0


#: Binds checked arguments to one device (its seeds, its name): a constant JSON fragment or a Slot.
Binder = Callable[[Mapping[str, Any], Seeds, DeviceName], "str | Slot"]


@dataclass(frozen=True)
class GeneratorKind:
    """One generator: its arguments, what is wrong with given ones, and how it binds to a device."""

    name: str
    params: tuple[str, ...]
    defaults: Mapping[str, Any]  # the optional params and their defaults
    usage: str  # completes "$name needs ...", e.g. "2 numbers [lo, hi]"
    check: Callable[[Mapping[str, Any]], str | None]
    bind: Binder
    #: Work done once per template on checked arguments, so that binding a device is cheap.
    prepare: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None

    @property
    def required(self) -> int:
        return len(self.params) - len(self.defaults)


@dataclass(frozen=True, eq=False)
class Generator:
    """A generator as written in test code: ``uniform(15, 30)``.  ``args`` is already the file form's."""

    name: str
    args: Any

    def to_file_form(self) -> dict[str, Any]:
        return {"$" + self.name: self.args}

    def __repr__(self) -> str:
        return f"{self.name}({json.dumps(self.args, default=repr)})"


# -- checks ------------------------------------------------------------------------------------------------


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _numbers(args: Mapping[str, Any], *names: str) -> str | None:
    for name in names:
        if not _is_number(args[name]):
            return f"{name} must be a number, got {_show(args[name])}"
    return None


def _digits(args: Mapping[str, Any]) -> str | None:
    digits = args.get("digits")
    if digits is None or (type(digits) is int and 0 <= digits <= _MAX_DIGITS):
        return None
    return f"digits must be a whole number from 0 to {_MAX_DIGITS} (or null: all of them), got {_show(digits)}"


def _span(args: Mapping[str, Any]) -> str | None:
    lo, hi = args["lo"], args["hi"]
    if lo > hi:
        return f"lo ({_show(lo)}) is above hi ({_show(hi)})"
    if not math.isfinite(hi - lo):
        return "hi - lo is too large for a float"
    return None


def _check_uniform(args: Mapping[str, Any]) -> str | None:
    return _numbers(args, "lo", "hi") or _span(args) or _digits(args)


def _check_normal(args: Mapping[str, Any]) -> str | None:
    problem = _numbers(args, "mean", "sd") or _digits(args)
    if problem is None and args["sd"] < 0:
        problem = f"sd must be 0 or more, got {_show(args['sd'])}"
    return problem


def _check_walk(args: Mapping[str, Any]) -> str | None:
    problem = _numbers(args, "start", "step", "lo", "hi") or _span(args) or _digits(args)
    if problem is None and args["step"] < 0:
        problem = f"step must be 0 or more, got {_show(args['step'])}"
    if problem is None and not args["lo"] <= args["start"] <= args["hi"]:
        problem = f"start ({_show(args['start'])}) must lie within [lo, hi] ([{args['lo']}, {args['hi']}])"
    return problem


def _check_sine(args: Mapping[str, Any]) -> str | None:
    problem = _numbers(args, "period_s", "amplitude", "offset") or _digits(args)
    if problem is None and args["period_s"] <= 0:
        problem = f"period_s must be above 0, got {_show(args['period_s'])}"
    return problem


def _constant_problem(value: Any) -> str | None:
    """What keeps ``value`` from being a JSON constant (no generators inside), or None."""
    if value is None or isinstance(value, str | bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value} is not a JSON number"
    if isinstance(value, Generator) or is_generator_form(value):
        return "values are constants, not generators"
    if isinstance(value, list | tuple):
        return next((p for p in map(_constant_problem, value) if p), None)
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            return "object keys must be strings"
        return next((p for p in map(_constant_problem, value.values()) if p), None)
    return f"{type(value).__name__} is not a JSON value"


def _check_choice(args: Mapping[str, Any]) -> str | None:
    values, weights = args["values"], args["weights"]
    if not isinstance(values, list | tuple) or not values:
        return f"values must be a non-empty list, got {_show(values)}"
    for index, value in enumerate(values):
        problem = _constant_problem(value)
        if problem:
            return f"values[{index}]: {problem}"
    if weights is None:
        return None
    if not isinstance(weights, list | tuple) or len(weights) != len(values):
        return f"weights must be a list of {len(values)} numbers, one per value, got {_show(weights)}"
    if not all(_is_number(w) and w >= 0 for w in weights):
        return f"weights must be numbers, 0 or more, got {_show(weights)}"
    if not sum(weights) > 0:
        return "weights must not all be 0"
    return None


def _whole(name: str, minimum: int) -> Callable[[Mapping[str, Any]], str | None]:
    def check(args: Mapping[str, Any]) -> str | None:
        value = args[name]
        if type(value) is int and value >= minimum:
            return None
        return f"{name} must be a whole number, {minimum} or more, got {_show(value)}"

    return check


def _check_counter(args: Mapping[str, Any]) -> str | None:
    return None if type(args["start"]) is int else f"start must be a whole number, got {_show(args['start'])}"


def _check_now(args: Mapping[str, Any]) -> str | None:
    if args["format"] in NOW_FORMATS:
        return None
    return f"format must be one of {', '.join(map(json.dumps, NOW_FORMATS))}, got {_show(args['format'])}"


def _no_check(args: Mapping[str, Any]) -> str | None:
    return None


# -- binding to a device -------------------------------------------------------------------------------------


def _float_conversion(digits: int | None) -> str:
    """``%r`` (the shortest text that reads back the same float) or ``%.{digits}f``; both valid JSON numbers."""
    return "%r" if digits is None else f"%.{digits}f"


def _bind_uniform(args: Mapping[str, Any], seeds: Seeds, device: DeviceName) -> str | Slot:
    lo = float(args["lo"])
    names = {"lo": lo, "span": float(args["hi"]) - lo}
    return Slot(_float_conversion(args["digits"]), "{lo} + {span} * {u0}", names, 1)


def _bind_normal(args: Mapping[str, Any], seeds: Seeds, device: DeviceName) -> str | Slot:
    names = {"mean": float(args["mean"]), "sd": float(args["sd"])}
    # Box-Muller: 1 - u0 is in (0, 1], so the log is finite.
    expr = "{mean} + {sd} * _sqrt(-2.0 * _log(1.0 - {u0})) * _cos(6.283185307179586 * {u1})"
    return Slot(_float_conversion(args["digits"]), expr, names, 2)


def _bind_walk(args: Mapping[str, Any], seeds: Seeds, device: DeviceName) -> str | Slot:
    lo, hi, step = float(args["lo"]), float(args["hi"]), float(args["step"])
    draw, width = uniform_source(seeds.sub()), 2.0 * step
    position = float(args["start"])

    def walk_value() -> float:
        nonlocal position
        value = position
        moved = position + width * draw() - step
        if moved > hi:  # reflect; clamp when the step is wider than the range
            moved = max(lo, 2.0 * hi - moved)
        elif moved < lo:
            moved = min(hi, 2.0 * lo - moved)
        position = moved
        return value

    return Slot(_float_conversion(args["digits"]), "{walk}()", {"walk": walk_value})


def _bind_sine(args: Mapping[str, Any], seeds: Seeds, device: DeviceName) -> str | Slot:
    period_us = float(args["period_s"]) * 1e6
    names = {
        "offset": float(args["offset"]),
        "amplitude": float(args["amplitude"]),
        "period_us": period_us,
        "per_us": 2.0 * math.pi / period_us,
    }
    # The phase from the time modulo the period: epoch microseconds times 2 pi / period would lose precision.
    expr = "{offset} + {amplitude} * _sin((intended_at_us % {period_us}) * {per_us})"
    return Slot(_float_conversion(args["digits"]), expr, names)


def _prepare_choice(args: Mapping[str, Any]) -> dict[str, Any]:
    """The values' JSON and the cumulative weights, once per template (not per device)."""
    texts = tuple(compact(value) for value in args["values"])
    cumulative = tuple(accumulate(float(w) for w in args["weights"] or ()))
    return {**args, "texts": texts, "cumulative": cumulative}


def _bind_choice(args: Mapping[str, Any], seeds: Seeds, device: DeviceName) -> str | Slot:
    texts, cumulative = args["texts"], args["cumulative"]
    if not cumulative:
        return Slot("%s", "{texts}[int({u0} * {count})]", {"texts": texts, "count": len(texts)}, 1)
    names = {"texts": texts, "cumulative": cumulative, "total": cumulative[-1], "last": len(texts) - 1}
    # As random.choices does it: a uniform draw over the total weight, found among the cumulative weights.
    return Slot("%s", "{texts}[_bisect({cumulative}, {u0} * {total}, 0, {last})]", names, 1)


def _bind_counter(args: Mapping[str, Any], seeds: Seeds, device: DeviceName) -> str | Slot:
    return Slot("%d", "seq + {start}", {"start": args["start"]})


def _bind_now(args: Mapping[str, Any], seeds: Seeds, device: DeviceName) -> str | Slot:
    fmt = args["format"]
    if fmt == "iso":
        return Slot("%s", "_iso(sent_at_us)", {})
    if fmt == "us":
        return Slot("%d", "sent_at_us", {})
    return Slot("%d", "sent_at_us // {divisor}", {"divisor": 1_000 if fmt == "ms" else 1_000_000})


def _bind_device_id(args: Mapping[str, Any], seeds: Seeds, device: DeviceName) -> str | Slot:
    return compact(device.device_id)


def _bind_device_number(args: Mapping[str, Any], seeds: Seeds, device: DeviceName) -> str | Slot:
    return str(device.n)


def _bind_random_string(args: Mapping[str, Any], seeds: Seeds, device: DeviceName) -> str | Slot:
    draw, length, size = uniform_source(seeds.sub()), args["n"], len(_ALPHABET)

    def text() -> str:
        return "".join([_ALPHABET[int(draw() * size)] for _ in range(length)])

    return Slot('"%s"', "{text}()", {"text": text})


_DIGITS_NOTE = ", optionally digits"

#: What slot expressions call by these names (globals of the render function: one for all devices).
HELPERS: Final[Mapping[str, Any]] = {
    "_sqrt": math.sqrt,
    "_log": math.log,
    "_cos": math.cos,
    "_sin": math.sin,
    "_bisect": bisect,
    "_iso": iso_json,
}

#: Every generator, by the name written after ``$``.
GENERATORS: Final[Mapping[str, GeneratorKind]] = {
    kind.name: kind
    for kind in (
        GeneratorKind(
            "uniform", ("lo", "hi", "digits"), {"digits": None}, "2 numbers [lo, hi]" + _DIGITS_NOTE,
            _check_uniform, _bind_uniform,
        ),
        GeneratorKind(
            "normal", ("mean", "sd", "digits"), {"digits": None}, "2 numbers [mean, sd]" + _DIGITS_NOTE,
            _check_normal, _bind_normal,
        ),
        GeneratorKind(
            "walk", ("start", "step", "lo", "hi", "digits"), {"digits": None},
            "4 numbers [start, step, lo, hi]" + _DIGITS_NOTE, _check_walk, _bind_walk,
        ),
        GeneratorKind(
            "sine", ("period_s", "amplitude", "offset", "digits"), {"offset": 0, "digits": None},
            "numbers [period_s, amplitude] or [period_s, amplitude, offset]" + _DIGITS_NOTE,
            _check_sine, _bind_sine,
        ),
        GeneratorKind(
            "choice", ("values", "weights"), {"weights": None},
            'a list of values, or {"values": [...], "weights": [...]}', _check_choice, _bind_choice,
            _prepare_choice,
        ),
        GeneratorKind("counter", ("start",), {"start": 0}, "[] or [start]", _check_counter, _bind_counter),
        GeneratorKind(
            "now", ("format",), {"format": "iso"}, f"[] or one format of {', '.join(NOW_FORMATS)}",
            _check_now, _bind_now,
        ),
        GeneratorKind("device_id", (), {}, "no arguments: []", _no_check, _bind_device_id),
        GeneratorKind("device_number", (), {}, "no arguments: []", _no_check, _bind_device_number),
        GeneratorKind("random_string", ("n",), {}, "[n], the length", _whole("n", 0), _bind_random_string),
    )
}


def is_generator_form(value: Any) -> bool:
    """``{"$name": args}``: an object with one key, starting with one ``$`` (``$$`` escapes a literal ``$``)."""
    if not isinstance(value, dict) or len(value) != 1:
        return False
    key = next(iter(value))
    return isinstance(key, str) and key.startswith("$") and not key.startswith("$$")


def parse_generator(name: str, raw: Any) -> tuple[GeneratorKind, dict[str, Any]] | str:
    """The kind and its checked arguments (every param present), or what is wrong, as a sentence."""
    kind = GENERATORS.get(name)
    if kind is None:
        close = difflib.get_close_matches(name, GENERATORS, n=1)
        hint = f"did you mean ${close[0]}? " if close else ""
        known = ", ".join("$" + known for known in GENERATORS)
        return f"${name} is not a generator; {hint}the generators are {known}"
    if name == "choice" and isinstance(raw, list | tuple):
        raw = {"values": raw}
    if raw is None:
        raw = []
    if isinstance(raw, dict):
        unknown = [key for key in raw if key not in kind.params]
        if unknown:
            takes = ", ".join(kind.params) if kind.params else "none"
            return f"${name} has no argument {_show(unknown[0])} (its arguments: {takes})"
        missing = [param for param in kind.params if param not in raw and param not in kind.defaults]
        if missing:
            return f"${name} needs {kind.usage}, got {_show(raw)} (no {', '.join(missing)})"
        args = {**kind.defaults, **raw}
    else:
        given = list(raw) if isinstance(raw, list | tuple) else [raw]
        if not kind.required <= len(given) <= len(kind.params):
            return f"${name} needs {kind.usage}, got {_show(given)}"
        args = {**kind.defaults, **dict(zip(kind.params, given, strict=False))}
    problem = kind.check(args)
    if problem:
        return f"${name}: {problem}"
    return kind, args if kind.prepare is None else kind.prepare(args)


# -- the generators in test code -----------------------------------------------------------------------------


def _make(name: str, positional: Sequence[Any], **optional: Any) -> Generator:
    """The list form when only positional arguments are given, else the object form."""
    given = {key: value for key, value in optional.items() if value is not None}
    if not given:
        return Generator(name, list(positional))
    return Generator(name, {**dict(zip(GENERATORS[name].params, positional, strict=False)), **given})


def uniform(lo: float, hi: float, *, digits: int | None = None) -> Generator:
    """A float drawn uniformly from [lo, hi] per message (``digits``: rounded to that many decimals)."""
    return _make("uniform", [lo, hi], digits=digits)


def normal(mean: float, sd: float, *, digits: int | None = None) -> Generator:
    """A float drawn from a normal distribution per message."""
    return _make("normal", [mean, sd], digits=digits)


def walk(start: float, step: float, lo: float, hi: float, *, digits: int | None = None) -> Generator:
    """A random walk per device: ``start`` first, then a uniform step in [-step, step], reflected at lo and hi."""
    return _make("walk", [start, step, lo, hi], digits=digits)


def sine(period_s: float, amplitude: float, offset: float = 0.0, *, digits: int | None = None) -> Generator:
    """``offset + amplitude * sin(2 pi t / period_s)`` of the message's intended time t."""
    return _make("sine", [period_s, amplitude, offset], digits=digits)


def choice(values: Sequence[Any], weights: Sequence[float] | None = None) -> Generator:
    """One of ``values`` (JSON constants) per message, with ``weights`` if given."""
    if weights is None:
        return Generator("choice", list(values))
    return Generator("choice", {"values": list(values), "weights": list(weights)})


def counter(start: int = 0) -> Generator:
    """``start + seq``: counts the messages the device sent."""
    return Generator("counter", [start])


def now(format: str = "iso") -> Generator:
    """The time the message is sent: ``iso`` (UTC, ms), or ``ms``, ``us``, ``s`` since the epoch."""
    return Generator("now", [format])


def device_id() -> Generator:
    """The device's id."""
    return Generator("device_id", [])


def device_number() -> Generator:
    """The device's number n (across all workers)."""
    return Generator("device_number", [])


def random_string(n: int) -> Generator:
    """``n`` random letters and digits per message."""
    return Generator("random_string", [n])
