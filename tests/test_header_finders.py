"""Finding every measurement header of a message, wherever the platform left it (pure units)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pytest

from pytest_iotperf.bridge.topics import DeviceKeys
from pytest_iotperf.header import MessageView, PayloadTemplate, Telemetry
from pytest_iotperf.header_finders import ExtractError, HeaderFinder, find_headers, from_mapping

RUN = "run1"
HEADER = {"run_id": RUN, "device_id": "d1", "seq": 7, "intended_at": 1_000, "sent_at": 1_002}
EXPECTED = Telemetry(RUN, "d1", 7, 1_000, 1_002)
IOTHUB = {b"iothub-connection-device-id": b"hub-dev", b"x-opt-enqueued-time": 1}


def header(seq: int, device_id: str = "d1") -> dict[str, Any]:
    return {**HEADER, "seq": seq, "device_id": device_id}


def view(body: object, properties: Any = None, system: Any = None) -> MessageView:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return MessageView(raw, b"t", properties, system)


def test_the_flat_body_and_the_header_under_its_key() -> None:
    flat = PayloadTemplate(RUN, "d1", payload_bytes=200).render(7, 1_000, 1_002)
    assert find_headers(MessageView(flat)) == (EXPECTED,)
    assert find_headers(view({"temperature": 21.5, "_iotperf": HEADER})) == (EXPECTED,)
    # Not ours: junk, another shape, a wrong type, a negative seq, a bool for an int.
    for body in (b"", b"\xff\xfe", b"not json", b"7", {"_iotperf": {"run_id": RUN}}, {**HEADER, "seq": "7"}):
        assert find_headers(view(body)) == (None,), body
    assert find_headers(view({**HEADER, "seq": -1})) == (None,)
    assert find_headers(view({**HEADER, "sent_at": True})) == (None,)
    assert find_headers(MessageView(b"[" * 100_000)) == (None,)  # nesting too deep for json: not a crash


def test_a_dotted_header_key_reaches_into_an_envelope() -> None:
    finder = HeaderFinder(("meta", "trace"))
    assert finder(view({"meta": {"trace": HEADER, "schema": 2}, "temperature": 20})) == (EXPECTED,)
    assert finder(view(HEADER)) == (EXPECTED,)  # the devices' flat form still reads
    assert finder(view({"meta": {"other": 1}, **HEADER})) == (EXPECTED,)  # path absent: the object itself
    assert finder(view({"meta": {"trace": {"run_id": RUN}}})) == (None,)
    with pytest.raises(ValueError, match="header path"):
        HeaderFinder(("meta", ""))


def test_every_element_of_an_array_and_every_json_line() -> None:
    finder = HeaderFinder(("meta",))
    elements = [{"meta": header(0)}, header(1), {"meta": {"run_id": RUN}}, 5]
    assert finder(view(elements)) == (
        Telemetry(RUN, "d1", 0, 1_000, 1_002),
        Telemetry(RUN, "d1", 1, 1_000, 1_002),
        None,
        None,
    )
    assert finder(view([])) == ()
    lines = b"\n".join(json.dumps(h).encode() for h in (header(0), {"meta": header(1)})) + b"\n\r\n{broken\n[1]\n"
    assert [t.seq if t else None for t in finder(MessageView(lines))] == [0, 1, None, None]


def test_properties_carry_the_header_with_str_or_bytes_keys_and_values() -> None:
    text = {"run_id": RUN, "device_id": "d1", "seq": "7", "intended_at": "1000", "sent_at": "1002"}
    raw = {k.encode(): v.encode() for k, v in text.items()}
    body = b"\x00 the user's own bytes, not JSON"
    assert find_headers(view(body, text)) == (EXPECTED,)
    assert find_headers(view(body, raw)) == (EXPECTED,)
    assert find_headers(view(body, {**text, "seq": 7})) == (EXPECTED,)  # an int property (AMQP) is an int
    # The device from IoT Hub's annotation when the properties lack it; theirs wins otherwise.
    no_device = {k: v for k, v in raw.items() if k != b"device_id"}
    assert find_headers(view(body, no_device, IOTHUB)) == (EXPECTED._replace(device_id="hub-dev"),)
    assert find_headers(view(body, no_device)) == (None,)
    # Ints strictly: ASCII digits only.
    for bad in ("+7", " 7", "7.0", "-7", "", "\u0667", "1" * 30, b"\xff"):
        assert find_headers(view(body, {**text, "seq": bad})) == (None,), bad
    # Properties without a run_id are the platform's own: the body is looked at.
    assert find_headers(view(HEADER, {"source": "edge"})) == (EXPECTED,)


def test_a_body_without_device_takes_iothubs_sender() -> None:
    body = {k: v for k, v in HEADER.items() if k != "device_id"}
    assert find_headers(view(body, None, IOTHUB)) == (EXPECTED._replace(device_id="hub-dev"),)
    assert find_headers(view({"_iotperf": body}, None, {"iothub-connection-device-id": "s"}))[0] is not None
    assert find_headers(view(body)) == (None,)


class Hook:
    """A loaded extractor stand-in: records what it was given."""

    where = "pytest_iotperf_extract in /x/conftest.py"

    def __init__(self, result: Any = None, error: Exception | None = None) -> None:
        self.result, self.error = result, error
        self.calls: list[tuple[bytes, dict[str, Any]]] = []

    def __call__(self, body: bytes, properties: dict[str, Any]) -> Iterable[Any] | None:
        self.calls.append((body, properties))
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[no-any-return]


def test_the_hook_comes_first_and_none_means_not_mine() -> None:
    renamed = {"runId": RUN, "dev": "d1", "n": 7, "due": 1_000, "sent": 1_002}
    mine = Hook([{"run_id": RUN, "device_id": "d1", "seq": "7", "intended_at": 1_000, "sent_at": "1002"}, "junk"])
    finder = HeaderFinder(extractors=[Hook(None), mine])
    assert finder(view(renamed, {b"k": b"v"})) == (EXPECTED, None)
    assert mine.calls == [(json.dumps(renamed).encode(), {"k": "v"})]  # properties as str -> str
    # Every hook says "not mine": the built-in finders look.
    assert HeaderFinder(extractors=[Hook(None)])(view(HEADER)) == (EXPECTED,)
    # One header instead of an iterable, a Telemetry, and a header without device on IoT Hub.
    assert HeaderFinder(extractors=[Hook(EXPECTED)])(view(b"x")) == (EXPECTED,)
    no_device = {k: v for k, v in HEADER.items() if k != "device_id"}
    from_hub = HeaderFinder(extractors=[Hook([no_device])])(view(b"x", None, IOTHUB))
    assert from_hub == (EXPECTED._replace(device_id="hub-dev"),)
    assert HeaderFinder(extractors=[Hook([])])(view(HEADER)) == ()  # mine, and nothing of ours in it


def test_a_hook_that_raises_or_returns_nonsense_is_an_extract_error() -> None:
    with pytest.raises(ExtractError, match=r"pytest_iotperf_extract in /x/conftest.py raised KeyError: 'dev'"):
        HeaderFinder(extractors=[Hook(error=KeyError("dev"))])(view(b"x"))
    with pytest.raises(ExtractError, match="returned str, not an iterable of headers"):
        HeaderFinder(extractors=[Hook("run_id")])(view(b"x"))

    def failing() -> Iterable[dict[str, Any]]:
        yield HEADER
        raise RuntimeError("half way")

    with pytest.raises(ExtractError, match="RuntimeError: half way"):
        HeaderFinder(extractors=[Hook(failing())])(view(b"x"))


def test_from_mapping_refuses_missing_or_mistyped_fields() -> None:
    assert from_mapping(HEADER) == EXPECTED
    assert from_mapping({**HEADER, "run_id": 5}) is None
    assert from_mapping({k: v for k, v in HEADER.items() if k != "sent_at"}) is None


def test_the_bridge_finds_the_device_for_one_topic_for_the_fleet() -> None:
    keys = DeviceKeys("fleet/telemetry", ("meta", "trace"))
    assert keys.key_for("fleet/telemetry", b"", {"device_id": "d9"}) == ("d9", "properties")
    assert keys.key_for("fleet/telemetry", json.dumps({"meta": {"trace": HEADER}}).encode()) == ("d1", "payload")
    assert keys.key_for("fleet/telemetry", json.dumps(HEADER).encode()) == ("d1", "payload")
    assert keys.key_for("fleet/telemetry", b"[1]") == (None, "none")
    # The topic still wins when it names the device.
    assert DeviceKeys("d/{device_id}").key_for("d/x", b"", {"device_id": "y"}) == ("x", "topic")
    with pytest.raises(ValueError, match="at most once"):
        DeviceKeys("d/{device_id}/{device_id}")
