"""What rendering a message costs a device: CPU µs per message for each kind of payload and header placement.

    python benchmarks/payload_cost.py [--messages 200000] [--repeats 5]

Renders ``--messages`` messages through ``fleet.outgoing.renderer_for`` (100
devices, round robin, as a worker interleaves them) and prints the median of
the repeats in CPU µs per message (``time.process_time``), for: today's
``header.PayloadTemplate`` called directly (the baseline), the fixed payload,
a 6-field template (deviceId, temperature uniform, humidity normal, ts iso,
status weighted choice, counter) and a callable returning the same as a dict,
each with the header in the body and in properties; and the fixed payload's
``render_body`` (the device's fast path with the header in the body).
Measured 2026-12-03 on the shared 2-core machine (busy: the same function varied 0.7-1.0 µs between
rows), two runs: PayloadTemplate 0.7-1.0, fixed via renderer 0.8-1.3 (render_body: PayloadTemplate
itself), 6-field template 3.4-4.8 (body) and 3.8-6.3 (properties), callable 21-25 (body, a dict
re-encoded with the header) and 15-17 (properties), CPU µs per message; timeit on one device:
template 3.2 (body) / 3.3 (properties), renderer wrapper +0.1-0.3 over PayloadTemplate.
Not a test: run it by hand on a quiet machine.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from pytest_iotperf.fleet.naming import DeviceName
from pytest_iotperf.fleet.outgoing import renderer_for
from pytest_iotperf.header import PayloadTemplate
from pytest_iotperf.message_spec import HeaderPlacement, MessageSpec
from pytest_iotperf.payloads import choice, counter, device_id, normal, now, to_file_form, uniform

DEVICES = 100
TEMPLATE = {
    "deviceId": device_id(),
    "temperature": uniform(15, 30, digits=1),
    "humidity": normal(45, 5, digits=1),
    "ts": now("iso"),
    "status": choice(["ok", "warn", "fail"], weights=[90, 9, 1]),
    "counter": counter(),
}
_rng = random.Random(1)


def reading(device: DeviceName, seq: int) -> dict[str, Any]:
    """The callable case: what the template makes, by hand (``time.time`` standing in for the ISO stamp)."""
    return {
        "deviceId": device.device_id,
        "temperature": round(_rng.uniform(15, 30), 1),
        "humidity": round(_rng.gauss(45, 5), 1),
        "ts": time.time(),
        "status": _rng.choices(("ok", "warn", "fail"), (90, 9, 1))[0],
        "counter": seq,
    }


def cpu_us(renders: list[Callable[[int, int, int], Any]], count: int) -> float:
    rounds = count // len(renders)
    t_us = time.time_ns() // 1000
    started = time.process_time()
    for seq in range(rounds):
        at = t_us + seq * 1_000_000
        for one in renders:
            one(seq, at, at + 40)
    return (time.process_time() - started) / (rounds * len(renders)) * 1e6


def renders_of(spec: MessageSpec | None, body_only: bool) -> list[Callable[[int, int, int], Any]]:
    names = [DeviceName(n, f"dev{n:06d}") for n in range(DEVICES)]
    if spec is None:
        return [PayloadTemplate("run1", name.device_id).render for name in names]
    renderers = [renderer_for(spec, "run1", name, 0) for name in names]
    if body_only:
        return [r.render_body for r in renderers if r.render_body is not None]
    return [r.render for r in renderers]


def cases() -> list[tuple[str, MessageSpec | None, bool]]:
    out: list[tuple[str, MessageSpec | None, bool]] = [("PayloadTemplate.render (today)", None, False)]
    out.append(("fixed, header body, render_body", MessageSpec(), True))
    header: HeaderPlacement
    for header in ("body", "properties"):
        out.append((f"fixed, header {header}", MessageSpec(header=header), False))
        template = MessageSpec(kind="template", template=to_file_form(TEMPLATE), header=header, seed=1)
        out.append((f"6-field template, header {header}", template, False))
        by_name = MessageSpec(kind="callable", callable_ref="payload_cost:reading", header=header)
        out.append((f"callable (dict), header {header}", by_name, False))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    options = parser.parse_args()
    print(f"{'payload':40} {'CPU µs/msg (median of ' + str(options.repeats) + ')':>28}")
    for label, spec, body_only in cases():
        renders = renders_of(spec, body_only)
        runs = [cpu_us(renders, options.messages) for _ in range(options.repeats)]
        print(f"{label:40} {statistics.median(runs):>28.2f}")


if __name__ == "__main__":
    main()
