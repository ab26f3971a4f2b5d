"""Bad input never crashes: option parsers raise ConfigError naming the source, sinks count junk and go on."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_iotperf.config import SETTINGS, resolve
from pytest_iotperf.errors import ConfigError
from pytest_iotperf.header import MessageView, PayloadTemplate
from pytest_iotperf.sinks.recorder import SinkRecorder

text = st.text(max_size=40) | st.sampled_from(["-1", "0", "1e309", "nan", "inf", "1m x", "mqtt://", "{device_id}"])


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from([s.name for s in SETTINGS]), raw=text, source=st.sampled_from(["cli", "env", "ini"]))
def test_any_option_value_is_accepted_or_rejected_with_its_source(name: str, raw: str, source: str) -> None:
    setting = next(s for s in SETTINGS if s.name == name)
    cli = {name: raw} if source == "cli" else {}
    env = {setting.env: raw} if source == "env" else {}
    ini = {name: (raw, "pytest.ini")} if source == "ini" else {}
    try:
        resolve(cli, env, ini)
    except ConfigError as exc:
        where = {"cli": setting.cli, "env": setting.env, "ini": setting.ini}[source]
        assert where in str(exc)


@settings(max_examples=200, deadline=None)
@given(raw=st.text(max_size=30) | st.integers() | st.floats() | st.booleans() | st.none())
def test_any_test_code_value_is_accepted_or_rejected_naming_the_call(raw: object) -> None:
    try:
        resolve({}, {}, {}).for_run({"devices": raw, "duration": raw})
    except ConfigError as exc:
        assert "iot_perf.run(" in str(exc) and "(test code)" in str(exc)


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=300))
def test_the_sink_counts_any_junk_and_never_crashes(payload: bytes) -> None:
    recorder = SinkRecorder("run1")
    recorder.record(MessageView(payload), 1_700_000_000_000_000)
    assert recorder.arrivals == 1 and recorder.received + recorder.malformed + recorder.other_runs <= 1


def test_the_sink_sorts_junk_from_telemetry() -> None:
    recorder = SinkRecorder("run1")
    good = PayloadTemplate("run1", "d1").render(0, 1_700_000_000_000_000, 1_700_000_000_000_010)
    samples = [
        good[: len(good) // 2],  # truncated
        PayloadTemplate("other", "d1").render(0, 1, 2),  # another run
        b"\x00" * 10,
        json.dumps({"run_id": "run1", "device_id": "d1", "seq": "7", "intended_at": 1, "sent_at": 1}).encode(),
        b'{"run_id":"run1","pad":"' + b"x" * 2_000_000 + b'"}',  # huge and not ours
        good,
    ]
    for payload in samples:
        recorder.record(MessageView(payload), 1_700_000_000_001_000)
    assert (recorder.received, recorder.other_runs, recorder.malformed, recorder.arrivals) == (1, 1, 4, 6)
    assert recorder.delay.count == 1 and recorder.delay.max_us == 1000
