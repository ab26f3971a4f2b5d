"""The child side of the JSON-lines protocol, the drain every sink ends with, and the sinks' message view."""

from __future__ import annotations

import io
import json
import threading
import time

import pytest
from azure.eventhub import EventData

from pytest_iotperf.child_protocol import EventWriter, Ticker, commands, scrubbing_event_writer
from pytest_iotperf.header import MessageView, PayloadTemplate, Telemetry
from pytest_iotperf.header_finders import find_headers
from pytest_iotperf.sinks.drain import COMPLETE, IDLE, STDIN_CLOSED, TIMEOUT, Drain, serve_drain
from pytest_iotperf.sinks.eventhub_sink import message_view
from pytest_iotperf.sinks.recorder import SinkRecorder


def test_events_are_json_lines_and_lose_the_secrets_they_were_given() -> None:
    out = io.StringIO()
    emit = EventWriter(out, scrub=lambda line: line.replace("hunter2", "***"))
    emit("error", message="broker said: bad password hunter2")
    emit("ready")
    assert [json.loads(line) for line in out.getvalue().splitlines()] == [
        {"event": "error", "message": "broker said: bad password ***"},
        {"event": "ready"},
    ]


def test_the_scrubbing_writer_removes_known_secrets_and_secret_shapes(capsys: pytest.CaptureFixture[str]) -> None:
    emit = scrubbing_event_writer("s3cret-pw", None, "")
    emit("error", message="refused s3cret-pw; Endpoint=sb://h/;SharedAccessKey=abc")
    line = capsys.readouterr().out
    assert "s3cret-pw" not in line and "abc" not in line and json.loads(line)["event"] == "error"


def test_commands_skip_lines_that_are_not_json_objects() -> None:
    stdin = io.StringIO('not json\n\n[1, 2]\n{"cmd": "drain", "expected": 0, "timeout_s": 1}\n')
    assert list(commands(stdin)) == [{"cmd": "drain", "expected": 0, "timeout_s": 1}]


def test_a_drain_ends_on_count_timeout_idle_or_stdin_closed() -> None:
    received = [0]
    drain = Drain(lambda: received[0])

    def serve(stdin: str) -> str:
        return serve_drain(commands(io.StringIO(stdin)), drain)

    assert serve('garbage\n{"cmd": "drain", "expected": 0, "timeout_s": 1}\n') == COMPLETE  # junk is skipped
    assert serve('{"cmd": "drain", "expected": 1, "timeout_s": 0.05}\n') == TIMEOUT
    assert serve('{"cmd": "drain", "expected": -1, "idle_s": 0.05}\n') == IDLE
    assert serve('{"cmd": "other"}\n') == STDIN_CLOSED


def test_an_arrival_wakes_a_waiting_drain_at_once() -> None:
    received = [0]
    drain = Drain(lambda: received[0])
    results: list[tuple[str, float]] = []

    def wait() -> None:
        started = time.monotonic()
        results.append((drain.wait(1000, 30.0), time.monotonic() - started))

    waiter = threading.Thread(target=wait)
    waiter.start()
    for _ in range(1000):  # the recording thread: count, then tell the drain
        received[0] += 1
        drain.arrived(received[0])
    waiter.join(10.0)
    assert results and results[0][0] == COMPLETE and results[0][1] < 10.0


def test_an_idle_drain_waits_while_messages_keep_coming() -> None:
    drain = Drain(lambda: 0)
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.01):
            drain.arrived(0)  # messages of another run: they arrive, the count stays

    feeder = threading.Thread(target=trickle)
    feeder.start()
    started = time.monotonic()
    try:
        assert drain.wait(-1, 0.3, idle_s=0.1) == TIMEOUT
    finally:
        stop.set()
        feeder.join()
    assert time.monotonic() - started >= 0.3


def test_the_ticker_ticks_until_stopped() -> None:
    ticks: list[int] = []
    ticker = Ticker(lambda: ticks.append(1), interval_s=0.01).start()
    time.sleep(0.1)
    ticker.stop()
    count = len(ticks)
    time.sleep(0.05)
    assert count >= 1 and len(ticks) == count


def test_a_decoder_may_find_the_header_outside_the_body() -> None:
    """The seam for a header in MQTT 5 user properties or an IoT Hub property bag."""

    def from_properties(message: MessageView) -> Telemetry | None:
        header = (message.properties or {}).get("iotperf")
        return find_headers(MessageView(header))[0] if isinstance(header, bytes) else None

    recorder = SinkRecorder("run1", find=lambda message: (from_properties(message),))
    header = PayloadTemplate("run1", "d1").render(0, 1_700_000_000_000_000, 1_700_000_000_000_000)
    recorder.record(MessageView(b"user payload", b"devices/d1", {"iotperf": header}), 1_700_000_000_002_000)
    recorder.record(MessageView(header), 1_700_000_000_002_000)  # a body header is not where this decoder looks
    assert (recorder.received, recorder.malformed) == (1, 1)
    assert recorder.delay.max_us == 2000


def test_an_event_hubs_event_keeps_its_properties_and_annotations() -> None:
    event = EventData(b'{"x": 1}')
    event.properties = {"iotperf": "1"}
    view = message_view(event)
    assert view.body == b'{"x": 1}' and view.topic is None
    assert view.properties == {"iotperf": "1"}
    assert view.system_properties is event.raw_amqp_message.annotations  # handed over, not copied
