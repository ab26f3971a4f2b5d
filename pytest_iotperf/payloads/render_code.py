"""The render function of a compiled template: one string format, written for the template's shape.

A device's message is a format string (the template's constant JSON, its own
device id folded in) and the values of its slots.  Calling a function per value
would cost a call each; instead one function is generated per template *shape*
(the slots' expressions), with every value computed inline and the device's
random stream stepped inline (see ``prng``), e.g. for
``{"t": uniform(15, 30, digits=1), "n": counter()}`` and the header in the body::

    def make(fmt, state, lo_0, span_0, start_1):
        def render(seq, intended_at_us, sent_at_us):
            nonlocal state
            state = (state * 6364136223846793005 + 1442695040888963407) & 18446744073709551615
            u0_0 = (state >> 11) * 1.1102230246251565e-16
            return (fmt % (lo_0 + span_0 * u0_0, seq + start_1, seq, intended_at_us, sent_at_us, )).encode()
        return render

with ``fmt = '{"t":%.1f,"n":%d,"_iotperf":{..."seq":%d,...}}'``.  The code is
the generators' own strings (never text from a template: template values reach
the function as the closure's values), and each shape is compiled once.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from typing import Any, Final

from pytest_iotperf.payloads.generators import HELPERS, INTENDED_AT_US, SENT_AT_US, SEQ, Slot
from pytest_iotperf.payloads.prng import DRAW

__all__ = ["RenderFn", "Shape", "make_render"]

#: ``render(seq, intended_at_us, sent_at_us) -> body``.
RenderFn = Callable[[int, int, int], bytes]
#: Per slot: its expression, the names it reads (in the order their values are passed), how many draws.
Shape = tuple[tuple[str, tuple[str, ...], int], ...]

_ARGS: Final = (SEQ, INTENDED_AT_US, SENT_AT_US)
_DRAW_NAME: Final = re.compile(r"u\d+")


def make_render(fmt: str, slots: Sequence[Slot], state: int) -> RenderFn:
    """``render`` formatting ``fmt`` (one conversion per slot, in order) with the slots' values.

    ``state``: the device's stream (:class:`~pytest_iotperf.payloads.prng.Seeds` ``.device``).
    """
    shape: Shape = tuple((slot.expr, tuple(slot.names), slot.draws) for slot in slots)
    values = [value for slot in slots for value in slot.names.values()]
    return _factory(shape)(fmt, state, *values)  # type: ignore[no-any-return]


@functools.cache
def _factory(shape: Shape) -> Callable[..., Any]:
    """``make(fmt, state, *slot_values) -> render`` for templates of this shape."""
    params = ["fmt", "state"]
    draws: list[str] = []
    values = []
    step, uniform = DRAW
    for index, (expr, names, count) in enumerate(shape):
        renamed = {}
        for name in names:
            taken = name in _ARGS or name in HELPERS or name in ("state", "fmt") or _DRAW_NAME.fullmatch(name)
            if taken or not name.isidentifier():
                raise ValueError(f"a slot's name must be an identifier of its own, not {name!r}")
            renamed[name] = f"{name}_{index}"
            params.append(renamed[name])
        for k in range(count):
            renamed[f"u{k}"] = f"u{index}_{k}"
            draws += [step, f"{renamed[f'u{k}']} = {uniform}"]
        values.append(expr.format(**renamed))
    body = ["nonlocal state", *draws] if draws else []
    body.append(f"return (fmt % ({''.join(value + ', ' for value in values)})).encode()")
    source = (
        f"def make({', '.join(params)}):\n"
        f"    def render({', '.join(_ARGS)}):\n"
        + "".join(f"        {line}\n" for line in body)
        + "    return render\n"
    )
    namespace: dict[str, Any] = dict(HELPERS)
    exec(compile(source, f"<payload render, {len(shape)} slots>", "exec"), namespace)
    return namespace["make"]  # type: ignore[no-any-return]
