"""The per-SLO junit testcases are added to the XML pytest wrote, under their test (pure: no fleet)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pytest_iotperf.junit import add_slo_testcases, slo_cases, split_property

XML = """<?xml version="1.0" encoding="utf-8"?>
<testsuites name="pytest tests"><testsuite name="pytest" errors="0" failures="1" skipped="0" tests="3" time="1.0">
<testcase classname="{prefix}tests.test_gate" name="test_a[1-x]" time="0.5" />
<testcase classname="{prefix}tests.test_gate" name="test_b" time="0.5"><failure message="boom" /></testcase>
<testcase classname="{prefix}tests.test_gate" name="test_c" time="0.1" />
</testsuite></testsuites>
"""


def test_properties_name_run_and_key() -> None:
    assert split_property("iotperf.run2.slo[loss < 1%]") == ("run2", "slo[loss < 1%]")
    assert split_property("iotperf.slo[a.b < 1]") == ("", "slo[a.b < 1]")
    cases = slo_cases(
        "t.py::test_a",
        [
            ("iotperf.sent", 3),
            ("iotperf.slo[loss < 1%]", "PASS measured 0.000%"),
            ("iotperf.run2.slo[p95_delay_ms < 1]", "FAIL measured 3.0 ms"),
            ("mine", "slo[not ours]"),
        ],
    )
    assert [(c.name, c.expression, c.passed) for c in cases] == [
        ("slo[loss < 1%]", "loss < 1%", True),
        ("run2.slo[p95_delay_ms < 1]", "p95_delay_ms < 1", False),
    ]


@pytest.mark.parametrize("prefix", [None, "ci"])
def test_cases_follow_their_test_and_the_counts_include_them(tmp_path: Path, prefix: str | None) -> None:
    path = tmp_path / "junit.xml"
    path.write_text(XML.format(prefix=f"{prefix}." if prefix else ""))
    first, third = "tests/test_gate.py::test_a[1-x]", "tests/test_gate.py::test_c"
    cases = {
        first: slo_cases(
            first,
            [
                ("iotperf.slo[loss < 1%]", "PASS measured 0.000%"),
                ("iotperf.slo[p95_delay_ms < 1]", "FAIL measured 2 ms"),
            ],
        ),
        third: slo_cases(third, [("iotperf.slo[sent > 0]", "PASS measured 3")]),
    }
    assert add_slo_testcases(path, cases, prefix) == 3
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures")) == ("6", "2")
    order = [(c.get("classname"), c.get("name")) for c in suite.iter("testcase")]
    head = f"{prefix}." if prefix else ""
    assert order == [
        (f"{head}tests.test_gate", "test_a[1-x]"),
        (f"{head}tests.test_gate.test_a[1-x]", "slo[loss < 1%]"),
        (f"{head}tests.test_gate.test_a[1-x]", "slo[p95_delay_ms < 1]"),
        (f"{head}tests.test_gate", "test_b"),
        (f"{head}tests.test_gate", "test_c"),
        (f"{head}tests.test_gate.test_c", "slo[sent > 0]"),
    ]
    failing = next(c for c in suite.iter("testcase") if c.get("name") == "slo[p95_delay_ms < 1]").find("failure")
    assert failing is not None and failing.get("message") == "p95_delay_ms < 1: FAIL measured 2 ms"
    verdicts = [p.get("value") for p in suite.iter("property") if p.get("name") == "iotperf.verdict"]
    assert verdicts == ["PASS measured 0.000%", "FAIL measured 2 ms", "PASS measured 3"]


def test_nothing_to_add_leaves_the_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    path.write_text(XML.format(prefix=""))
    assert add_slo_testcases(path, {}) == 0
    assert add_slo_testcases(tmp_path / "missing.xml", {"t.py::t": slo_cases("t.py::t", [])}) == 0
    assert path.read_text() == XML.format(prefix="")
