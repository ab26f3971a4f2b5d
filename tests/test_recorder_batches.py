"""The sink's accounting of batched outputs and of the conftest hook; loading that hook in a sink process."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pytest_iotperf.connection import Connection
from pytest_iotperf.extract_hook import ExtractLoadError, extract_refs, load_extractors
from pytest_iotperf.header import WARMUP_PAYLOAD, MessageView
from pytest_iotperf.processes import Child, ChildExited, ProcessGroup
from pytest_iotperf.sinks.finding import finder_for
from pytest_iotperf.sinks.merge import merge_sink_reports
from pytest_iotperf.sinks.recorder import SinkRecorder

RUN = "run1"
T0 = 1_700_000_000_000_000


def header(seq: int, device_id: str = "d1", run_id: str = RUN) -> dict[str, Any]:
    return {"run_id": run_id, "device_id": device_id, "seq": seq, "intended_at": T0, "sent_at": T0}


def body(doc: object) -> MessageView:
    return MessageView(json.dumps(doc).encode())


def test_every_element_of_a_batch_is_accounted() -> None:
    recorder = SinkRecorder(RUN)
    assert recorder.record(body([header(s) for s in range(10)]), T0 + 5_000) == 10
    # A duplicate, another run's, junk and a new one in one array; JSON lines likewise.
    assert recorder.record(body([header(3), header(0, run_id="r2"), {"x": 1}, header(10)]), T0 + 7_000) == 1
    lines = b"\n".join(json.dumps(header(s, "d2")).encode() for s in range(5))
    assert recorder.record(MessageView(lines), T0 + 9_000) == 5
    # Messages without anything of ours count once, whatever their shape.
    for junk in (body([]), body([1, 2, 3]), MessageView(b"a\nb\nc"), body({"x": 1})):
        assert recorder.record(junk, T0) == 0
    recorder.record(MessageView(WARMUP_PAYLOAD), T0)
    assert (recorder.arrivals, recorder.received, recorder.ledger.duplicates) == (8, 16, 1)
    assert (recorder.batched, recorder.malformed, recorder.other_runs, recorder.warmups) == (19, 5, 1, 1)
    assert recorder.delay.count == 16 and recorder.delay.max_us == 9_000
    report = recorder.report("complete", [])
    assert (report["batched"], report["extract_errors"], report["errors"]) == (19, 0, [])
    merged = merge_sink_reports([report, SinkRecorder(RUN).report("complete", [])])
    assert (merged["batched"], merged["received"]) == (19, 16)


def write(path: Path, source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


RENAMING_CONFTEST = """
    import json

    from helper_module import FIELDS  # beside the conftest: importable as pytest's prepend mode makes it


    def pytest_iotperf_extract(body):
        doc = json.loads(body)
        if not isinstance(doc, dict) or "envelope" not in doc:
            return None
        if doc["envelope"].get("boom"):
            raise ValueError("the platform changed its envelope")
        return [{ours: doc["envelope"][theirs] for theirs, ours in FIELDS.items()}]
"""


def test_a_conftest_hook_is_loaded_by_file_and_accounted(tmp_path: Path) -> None:
    fields = {"r": "run_id", "d": "device_id", "n": "seq", "i": "intended_at", "s": "sent_at"}
    write(tmp_path / "helper_module.py", f"FIELDS = {fields!r}\n")
    conftest = write(tmp_path / "conftest.py", RENAMING_CONFTEST)
    ref = {"path": str(conftest), "function": "pytest_iotperf_extract"}
    recorder = SinkRecorder(RUN, find=finder_for({"run_id": RUN, "extract": [ref]}))
    envelope = {"r": RUN, "d": "d1", "i": T0, "s": T0}
    assert recorder.record(body({"envelope": {**envelope, "n": 0}}), T0 + 1_000) == 1
    assert recorder.record(body(header(1)), T0 + 1_000) == 1  # not the hook's: the built-in finders
    for seq in (2, 3):
        assert recorder.record(body({"envelope": {**envelope, "n": seq, "boom": True}}), T0) == 0
    assert (recorder.received, recorder.extract_errors, recorder.malformed) == (2, 2, 0)
    (error,) = recorder.report("complete", [])["errors"]
    assert error == (
        f"pytest_iotperf_extract in {conftest} raised ValueError: the platform changed its envelope "
        "(2 message(s) not accounted)"
    )


def test_a_hook_in_a_package_may_import_relatively(tmp_path: Path) -> None:
    write(tmp_path / "suite" / "__init__.py", "")
    write(tmp_path / "suite" / "shapes.py", "def headers(body):\n    return []\n")
    conftest = write(tmp_path / "suite" / "conftest.py", "from .shapes import headers as pytest_iotperf_extract\n")
    (extractor,) = load_extractors([{"path": str(conftest), "function": "pytest_iotperf_extract"}])
    assert extractor(b"x", {}) == [] and str(conftest) in extractor.where


@pytest.mark.parametrize(
    ("source", "function", "message"),
    [
        ("import no_such_module_here\n", "pytest_iotperf_extract", "ModuleNotFoundError: No module named"),
        ("raise SystemExit(3)\n", "pytest_iotperf_extract", "SystemExit: 3"),
        ("x = 1\n", "pytest_iotperf_extract", "defines no function pytest_iotperf_extract"),
        ("def f(body, item):\n    pass\n", "f", "takes item: the hook passes only body and properties"),
    ],
)
def test_a_hook_that_cannot_be_loaded_names_its_file(tmp_path: Path, source: str, function: str, message: str) -> None:
    conftest = write(tmp_path / "conftest.py", source)
    with pytest.raises(ExtractLoadError, match=message) as failure:
        load_extractors([{"path": str(conftest), "function": function}])
    assert str(conftest) in str(failure.value)
    with pytest.raises(ExtractLoadError, match="no such file"):
        load_extractors([{"path": str(tmp_path / "gone.py"), "function": "f"}])


def test_the_implementations_are_named_in_call_order() -> None:
    class Impl:
        def __init__(self, function: Any, wrapper: bool = False) -> None:
            self.function, self.hookwrapper, self.wrapper = function, False, wrapper

    class Caller:
        def get_hookimpls(self) -> list[Impl]:  # pluggy lists them in reverse call order
            return [Impl(write), Impl(header), Impl(body, wrapper=True)]

    refs = extract_refs(Caller())
    assert [r["function"] for r in refs] == ["header", "write"]
    assert {r["path"] for r in refs} == {str(Path(__file__).resolve())}

    class NotAFunction:
        def get_hookimpls(self) -> list[Impl]:
            return [Impl(lambda body: None)]

    with pytest.raises(ValueError, match="module-level function"):
        extract_refs(NotAFunction())


def test_pytest_registers_the_hook_and_lists_a_conftests_implementation(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("def pytest_iotperf_extract(body, properties):\n    return None\n")
    pytester.makepyfile(
        """
        from pytest_iotperf.extract_hook import extract_refs

        def test_refs(request):
            refs = extract_refs(request.node.ihook.pytest_iotperf_extract)
            assert [r["function"] for r in refs] == ["pytest_iotperf_extract"]
            assert refs[0]["path"].endswith("conftest.py")
        """
    )
    pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_a_sink_whose_hook_does_not_import_fails_to_start_naming_it(tmp_path: Path) -> None:
    conftest = write(tmp_path / "conftest.py", "import no_such_module_here\n")
    spec = {
        "run_id": RUN,
        "connection": Connection("127.0.0.1", 9, qos=1).to_dict(),  # never reached: the hook fails first
        "topic_filter": "out/#",
        "extract": [{"path": str(conftest), "function": "pytest_iotperf_extract"}],
    }
    spec_path = tmp_path / "sink-spec.json"
    spec_path.write_text(json.dumps(spec))
    args = [str(spec_path), str(tmp_path / "report.json")]
    with ProcessGroup() as group:
        sink = group.add(Child.python_module("mqtt sink", "pytest_iotperf.sinks.mqtt_sink", args, tmp_path / "log"))
        with pytest.raises(ChildExited, match=r"cannot load pytest_iotperf_extract in .*conftest.py: ModuleNotFound"):
            sink.wait_for("ready", 20.0)
