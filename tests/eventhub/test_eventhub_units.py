"""Unit tests of the codec, SAS verification and selector parsing, using pyamqp only as a reference."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from azure.eventhub._pyamqp._decode import decode_payload
from azure.eventhub._pyamqp._encode import encode_payload
from azure.eventhub._pyamqp.message import Message, Properties
from azure.eventhub._pyamqp.utils import generate_sas_token as _untyped_sas_token

from pytest_iotperf.embedded.eventhub.cbs import SasVerifier
from pytest_iotperf.embedded.eventhub.codec import Symbol, Timestamp, UInt, decode, encode
from pytest_iotperf.embedded.eventhub.hub import parse_selector
from pytest_iotperf.embedded.eventhub.message import parse_message, stamp

# pyamqp leaves this helper unannotated: its documented signature (audience, policy, key, expiry) -> token.
generate_sas_token: Callable[[str, str, str, int], str] = _untyped_sas_token


def test_codec_round_trip() -> None:
    value = {Symbol("a"): [1, -2, 3.5, "x" * 300, b"\x00\x01", None, True, UInt(7), Timestamp(5)], "u": uuid.uuid4()}
    assert decode(encode(value)) == value


def test_stamped_message_decodes_in_pyamqp_with_user_sections_intact() -> None:
    out = bytearray()
    encode_payload(
        out, Message(data=[b"payload"], properties=Properties(message_id="m1"), application_properties={"k": 1})
    )
    header, tail = stamp(parse_message(bytes(out)), {Symbol("x-opt-offset"): "42"})
    decoded = decode_payload(memoryview(header + tail))
    assert decoded.message_annotations == {b"x-opt-offset": b"42"}
    assert decoded.data == [b"payload"] and decoded.application_properties == {b"k": 1}
    assert decoded.properties is not None and decoded.properties.message_id == b"m1"


def test_sas_verification() -> None:
    verifier = SasVerifier("policy", "c2VjcmV0")
    good = generate_sas_token("sb://127.0.0.1:1/hub", "policy", "c2VjcmV0", int(time.time()) + 60)
    assert verifier.verify(good)[0]
    assert not verifier.verify(generate_sas_token("sb://127.0.0.1:1/hub", "policy", "other", int(time.time()) + 60))[0]
    assert not verifier.verify(generate_sas_token("sb://x/hub", "policy", "c2VjcmV0", int(time.time()) - 5))[0]
    assert "c2VjcmV0" not in repr(verifier)


def test_selector_parsing() -> None:
    position = parse_selector("amqp.annotation.x-opt-sequence-number >= '12'")
    assert (position.field, position.operator, position.value) == ("x-opt-sequence-number", ">=", "12")
    assert parse_selector("amqp.annotation.x-opt-offset > '@latest'").value == "@latest"
