"""Payload templates: generators' distributions and seeding, the file form, and errors that name the field."""

from __future__ import annotations

import itertools
import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest

from pytest_iotperf.fleet.naming import DeviceName
from pytest_iotperf.payloads import (
    Generator,
    PayloadError,
    choice,
    compile_template,
    counter,
    device_id,
    device_number,
    normal,
    now,
    payload_file,
    random_string,
    sine,
    to_file_form,
    uniform,
    walk,
)

T0_US = 1_764_198_351_123_456  # 2025-11-26T23:05:51.123456Z
DEVICE = DeviceName(7, "dev-7")


def bodies(template: Any, count: int, *, device: DeviceName = DEVICE, seed: int = 1) -> list[bytes]:
    render = compile_template(template, where="test").for_device(device, seed).render
    return [render(seq, T0_US + seq * 1_000_000, T0_US + seq * 1_000_000 + 250) for seq in range(count)]


def values(generator: Generator, count: int = 10_000, **kwargs: Any) -> list[Any]:
    return [json.loads(body)["v"] for body in bodies({"v": generator}, count, **kwargs)]


# -- distributions -------------------------------------------------------------------------------------------


def test_uniform_covers_its_range_with_the_right_mean_and_sd() -> None:
    drawn = values(uniform(15, 30))
    assert all(15 <= v <= 30 for v in drawn)
    assert statistics.fmean(drawn) == pytest.approx(22.5, abs=0.15)
    assert statistics.pstdev(drawn) == pytest.approx(15 / math.sqrt(12), rel=0.03)
    assert min(drawn) < 15.1 and max(drawn) > 29.9


def test_normal_has_its_mean_and_sd() -> None:
    drawn = values(normal(45, 5))
    assert statistics.fmean(drawn) == pytest.approx(45, abs=0.15)
    assert statistics.pstdev(drawn) == pytest.approx(5, rel=0.03)


def test_digits_round_the_text() -> None:
    texts = [json.loads(b)["v"] for b in bodies({"v": uniform(0, 1, digits=2)}, 200)]
    assert all(round(v, 2) == v for v in texts)
    whole = bodies({"v": normal(100, 10, digits=0)}, 50)
    assert all(isinstance(json.loads(b)["v"], int) for b in whole)  # "%.0f": a JSON integer


def test_walk_starts_at_start_moves_and_stays_within_bounds() -> None:
    drawn = values(walk(20, 0.5, 18, 22))
    assert drawn[0] == 20
    assert all(18 <= v <= 22 for v in drawn)
    assert all(abs(b - a) <= 0.5 + 1e-9 for a, b in itertools.pairwise(drawn))
    assert min(drawn) < 18.5 and max(drawn) > 21.5  # it reaches both ends over 10,000 steps
    wide = values(walk(0.5, 5, 0, 1), 2_000)  # a step wider than the range: reflected, then clamped
    assert all(0 <= v <= 1 for v in wide)


def test_choice_follows_its_weights_and_never_picks_a_zero_weight() -> None:
    drawn = values(choice(["ok", "warn", "fail", "never"], weights=[70, 20, 10, 0]))
    counts = {value: drawn.count(value) for value in ("ok", "warn", "fail", "never")}
    assert counts["never"] == 0
    assert counts["ok"] / 10_000 == pytest.approx(0.7, abs=0.02)
    assert counts["warn"] / 10_000 == pytest.approx(0.2, abs=0.02)
    assert counts["fail"] / 10_000 == pytest.approx(0.1, abs=0.015)
    unweighted = values(choice([1, {"a": [True, None]}]), 4_000)
    assert unweighted.count(1) / 4_000 == pytest.approx(0.5, abs=0.04)
    assert {"a": [True, None]} in unweighted


def test_sine_is_a_function_of_the_intended_time() -> None:
    drawn = values(sine(60, 2.5, 10), 120)
    for seq, value in enumerate(drawn):
        t_s = (T0_US + seq * 1_000_000) / 1e6
        assert value == pytest.approx(10 + 2.5 * math.sin(2 * math.pi * t_s / 60), abs=1e-6)


def test_counter_now_device_and_string_values() -> None:
    docs = [
        json.loads(b)
        for b in bodies(
            {
                "c": counter(100),
                "iso": now(),
                "ms": now("ms"),
                "us": now("us"),
                "s": now("s"),
                "id": device_id(),
                "n": device_number(),
                "r": random_string(12),
            },
            3,
        )
    ]
    sent_us = T0_US + 1_000_000 + 250  # the sent time of seq 1: what a device stamps
    assert [d["c"] for d in docs] == [100, 101, 102]
    assert docs[1]["iso"] == "2025-11-26T23:05:52.123Z"
    assert (docs[1]["ms"], docs[1]["us"], docs[1]["s"]) == (sent_us // 1000, sent_us, sent_us // 1_000_000)
    assert (docs[0]["id"], docs[0]["n"]) == ("dev-7", 7)
    assert all(len(d["r"]) == 12 and d["r"].isalnum() for d in docs)
    assert len({d["r"] for d in docs}) == 3


# -- seeding -------------------------------------------------------------------------------------------------

SENSORS = {"t": uniform(15, 30), "h": normal(45, 5), "w": walk(0, 1, -5, 5), "s": choice("abc"), "r": random_string(6)}


def test_the_same_seed_repeats_a_device_and_another_seed_does_not() -> None:
    assert bodies(SENSORS, 50, seed=42) == bodies(SENSORS, 50, seed=42)
    assert bodies(SENSORS, 50, seed=42) != bodies(SENSORS, 50, seed=43)


def test_devices_draw_from_streams_of_their_own() -> None:
    first = values(uniform(0, 1), 2_000, device=DeviceName(0, "d0"))
    second = values(uniform(0, 1), 2_000, device=DeviceName(1, "d1"))
    assert first != second
    assert abs(statistics.correlation(first, second)) < 0.1
    # A device's values do not depend on which other devices exist or render in between.
    template = compile_template({"v": uniform(0, 1)}, where="test")
    alone = template.for_device(DeviceName(1, "d1"), 1).render
    other = template.for_device(DeviceName(0, "d0"), 1).render
    interleaved = []
    for seq in range(5):
        other(seq, T0_US, T0_US)
        interleaved.append(alone(seq, T0_US, T0_US))
    assert [json.loads(b)["v"] for b in interleaved] == second[:5]


# -- file form ------------------------------------------------------------------------------------------------

DEVICE_TEMPLATE = {
    "deviceId": device_id(),
    "temperature": uniform(15, 30, digits=1),
    "humidity": normal(45, 5),
    "ts": now("iso"),
    "status": choice(["ok", "warn"], weights=[9, 1]),
    "sensors": [{"n": counter(), "phase": sine(10, 1)}, walk(1, 0.1, 0, 2)],
    "fw": "1.2.3",
    "tags": ["a", 1, None, True, 2.5],
}


def test_a_code_template_and_its_file_form_render_the_same_bytes() -> None:
    file_form = json.loads(json.dumps(to_file_form(DEVICE_TEMPLATE)))  # as it travels to the workers
    assert file_form["temperature"] == {"$uniform": {"lo": 15, "hi": 30, "digits": 1}}
    assert file_form["humidity"] == {"$normal": [45, 5]}
    assert file_form["status"] == {"$choice": {"values": ["ok", "warn"], "weights": [9, 1]}}
    assert bodies(file_form, 20) == bodies(DEVICE_TEMPLATE, 20)
    doc = json.loads(bodies(file_form, 1)[0])
    assert list(doc) == list(DEVICE_TEMPLATE)  # keys in the template's order
    assert doc["fw"] == "1.2.3" and doc["tags"] == ["a", 1, None, True, 2.5]


def test_file_forms_accept_lists_objects_and_single_arguments() -> None:
    same = [
        {"$uniform": [1, 2]},
        {"$uniform": {"lo": 1, "hi": 2}},
        {"$uniform": {"hi": 2, "lo": 1, "digits": None}},
    ]
    assert len({tuple(bodies({"v": form}, 5)) for form in same}) == 1
    assert bodies({"v": {"$now": "ms"}}, 1) == bodies({"v": {"$now": ["ms"]}}, 1)
    assert bodies({"v": {"$device_id": None}}, 1) == bodies({"v": {"$device_id": {}}}, 1) == [b'{"v":"dev-7"}']


def test_the_output_is_compact_json_as_written() -> None:
    (body,) = bodies({"unit": "°C", "pct": "5%d %s", "$$ref": 1, "nested": {"a": []}}, 1)
    assert body == '{"unit":"°C","pct":"5%d %s","$ref":1,"nested":{"a":[]}}'.encode()
    percent_id = DeviceName(1, "d%s")
    (body,) = bodies({"id": device_id(), "n": counter()}, 1, device=percent_id)
    assert body == b'{"id":"d%s","n":0}'


def test_payload_file_reads_json_and_names_what_is_wrong(tmp_path: Path) -> None:
    good = tmp_path / "t.json"
    good.write_text('{"deviceId": {"$device_id": []}, "t": {"$uniform": [15, 30]}}')
    assert payload_file(good) == {"deviceId": {"$device_id": []}, "t": {"$uniform": [15, 30]}}
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "t": {"$uniform": [15, 30]},\n  "h": \n}')
    with pytest.raises(PayloadError, match=r"bad\.json: not valid JSON: .* at line 4 column 1"):
        payload_file(bad)
    twice = tmp_path / "twice.json"
    twice.write_text('{"a": 1, "a": 2}')
    with pytest.raises(PayloadError, match=r"twice\.json: the key 'a' appears twice"):
        payload_file(twice)
    nan = tmp_path / "nan.json"
    nan.write_text('{"a": NaN}')
    with pytest.raises(PayloadError, match=r"nan\.json: NaN is not JSON"):
        payload_file(nan)
    with pytest.raises(PayloadError, match=r"missing\.json: cannot read it"):
        payload_file(tmp_path / "missing.json")


# -- errors name the field -------------------------------------------------------------------------------------

BAD_TEMPLATES = [
    ({"sensors": [{"temperature": {"$uniform": [15]}}]}, r'"sensors\[0\]\.temperature": \$uniform needs 2 numbers'),
    ({"t": {"$uniform": [30, 15]}}, r'"t": \$uniform: lo \(30\) is above hi \(15\)'),
    ({"t": {"$uniform": ["a", 1]}}, r'"t": \$uniform: lo must be a number, got "a"'),
    ({"t": {"$uniform": [1, True]}}, r'"t": \$uniform: hi must be a number, got true'),
    ({"t": {"$uniform": {"lo": 1}}}, r'"t": \$uniform needs .*\(no hi\)'),
    ({"t": {"$uniform": {"lo": 1, "hi": 2, "step": 3}}}, r'"t": \$uniform has no argument "step"'),
    ({"t": {"$uniform": [1, 2, 1.5]}}, r'"t": \$uniform: digits must be a whole number'),
    ({"h": {"$normal": [45, -1]}}, r'"h": \$normal: sd must be 0 or more, got -1'),
    ({"w": {"$walk": [30, 1, 0, 25]}}, r'"w": \$walk: start \(30\) must lie within'),
    ({"w": {"$walk": [1, -1, 0, 25]}}, r'"w": \$walk: step must be 0 or more'),
    ({"s": {"$sine": [0, 1]}}, r'"s": \$sine: period_s must be above 0'),
    ({"c": {"$choice": []}}, r'"c": \$choice: values must be a non-empty list'),
    ({"c": {"$choice": {"values": ["a", "b"], "weights": [1]}}}, r'"c": \$choice: weights must be a list of 2'),
    ({"c": {"$choice": {"values": ["a"], "weights": [-1]}}}, r'"c": \$choice: weights must be numbers, 0 or more'),
    ({"c": {"$choice": {"values": ["a", "b"], "weights": [0, 0]}}}, r'"c": \$choice: weights must not all be 0'),
    ({"c": {"$choice": [{"$uniform": [1, 2]}]}}, r'"c": \$choice: values\[0\]: values are constants'),
    ({"n": {"$counter": [1.5]}}, r'"n": \$counter: start must be a whole number'),
    ({"ts": {"$now": ["rfc"]}}, r'"ts": \$now: format must be one of "iso", "ms", "us", "s", got "rfc"'),
    ({"id": {"$device_id": [1]}}, r'"id": \$device_id needs no arguments'),
    ({"r": {"$random_string": [-1]}}, r'"r": \$random_string: n must be a whole number, 0 or more'),
    ({"t": {"$unifrom": [1, 2]}}, r'"t": \$unifrom is not a generator; did you mean \$uniform\?'),
    ({"t": {"$uniform": [1, 2], "unit": "C"}}, r'"t\["\$uniform"\]": a key starting with "\$" names a generator'),
    ({"a.b": [1, float("nan")]}, r'"\["a\.b"\]\[1\]": nan is not a JSON value'),
    ({"t": {1, 2}}, r'"t": set is not a JSON value'),
    ({"$uniform": [1]}, r"payload template: \$uniform needs 2 numbers"),
]


@pytest.mark.parametrize(("template", "message"), BAD_TEMPLATES)
def test_a_bad_template_is_refused_naming_the_field_and_the_source(template: Any, message: str) -> None:
    with pytest.raises(PayloadError, match=r"^--iot-payload-file=t\.json \(command line\): .*" + message):
        compile_template(template, where="--iot-payload-file=t.json (command line)")


def test_payload_error_is_a_value_error() -> None:
    assert issubclass(PayloadError, ValueError)


def test_to_file_form_refuses_what_cannot_travel() -> None:
    with pytest.raises(PayloadError, match=r'payload field "a\.b\[0\]": object is not a JSON value'):
        to_file_form({"a": {"b": [object()]}})
    with pytest.raises(PayloadError, match=r'payload field "a": keys must be strings, got 1'):
        to_file_form({"a": {1: 2}})


# -- the header in the body -------------------------------------------------------------------------------------


def render_with_header(template: Any, key: str) -> dict[str, Any]:
    compiled = compile_template(template, where="test").with_header(tuple(key.split(".")), "run-1")
    doc: dict[str, Any] = json.loads(compiled.for_device(DEVICE, 1).render(3, T0_US, T0_US + 9))
    return doc


HEADER = {"run_id": "run-1", "device_id": "dev-7", "seq": 3, "intended_at": T0_US, "sent_at": T0_US + 9}


def test_the_header_goes_at_its_key_creating_or_entering_objects() -> None:
    assert render_with_header({"t": 1}, "_iotperf") == {"t": 1, "_iotperf": HEADER}
    assert render_with_header({"t": 1}, "meta.trace") == {"t": 1, "meta": {"trace": HEADER}}
    inside = render_with_header({"meta": {"fw": "1.0"}, "t": 2}, "meta.trace")
    assert inside == {"meta": {"fw": "1.0", "trace": HEADER}, "t": 2}
    assert render_with_header({}, "a.b.c") == {"a": {"b": {"c": HEADER}}}


@pytest.mark.parametrize(
    ("template", "key", "message"),
    [
        ([1, 2], "_iotperf", r"payload template: is a list, but the measurement header .* --iot-header properties"),
        ({"$uniform": [1, 2]}, "_iotperf", r"payload template: is the generator \$uniform, but"),
        ({"_iotperf": 1}, "_iotperf", r'"_iotperf": exists already, and the header key \'_iotperf\' would overwrite'),
        ({"meta": {"trace": 1}}, "meta.trace", r'"meta\.trace": exists already'),
        ({"meta": "x"}, "meta.trace", r'"meta": is the constant "x", so the header key \'meta\.trace\' cannot go'),
        ({"meta": {"$choice": [1]}}, "meta.trace", r'"meta": is the generator \$choice, so'),
        ({"meta": [{}]}, "meta.trace", r'"meta": is a list, so'),
    ],
)
def test_the_header_never_replaces_a_field(template: Any, key: str, message: str) -> None:
    with pytest.raises(PayloadError, match=r"^test: .*" + message):
        render_with_header(template, key)
