"""JUnit: a run's figures as properties of its test, and one testcase per SLO verdict.

CI dashboards (GitLab, Jenkins, Azure DevOps) show testcases and ignore
``<properties>``, so every SLO verdict becomes a testcase of its own,
classname ``<module>.<test>``, name ``slo[<expression>]``.  They are written
into the XML that ``--junitxml`` produced, after pytest wrote it, so pytest
does not count them as tests: two perf tests print ``2 passed``, not ``6
passed``, and ``-n 2`` progress stays at 100 %.  The verdicts reach the
process that writes the XML (the xdist controller too) as user properties
of the test's reports.
"""

from __future__ import annotations

import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_iotperf.baseline import Comparison
from pytest_iotperf.capacity_result import CapacityResult
from pytest_iotperf.report.terminal import SUMMARY_KEYS, optional_summary
from pytest_iotperf.result import RunResult

PROPERTY_PREFIX = "iotperf."
_RUN_PREFIX = re.compile(r"(run\d+)\.(.*)", re.DOTALL)


def property_prefix(run_index: int) -> str:
    """``iotperf.`` for a test's first run, ``iotperf.run2.`` for its second, and so on."""
    return PROPERTY_PREFIX if run_index == 1 else f"{PROPERTY_PREFIX}run{run_index}."


def run_properties(result: RunResult, comparisons: Sequence[Comparison], run_index: int) -> list[tuple[str, Any]]:
    """The junit properties of one run: summary figures, warnings/errors, baseline comparison, SLO verdicts."""
    prefix = property_prefix(run_index)
    figures = result.to_dict()
    properties: list[tuple[str, Any]] = []
    for comparison in comparisons:
        properties.append((f"{prefix}compare[{comparison.metric}]", comparison.describe()))
    for key in SUMMARY_KEYS:
        value = figures.get(key)
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        properties.append((prefix + key, value))
    for key, value in optional_summary(figures):  # only when there is something to say
        properties.append((prefix + key, value))
    if len(result.stages) > 1:  # a run in stages: one line each (a run without stages is its own one stage)
        for number, stage in enumerate(result.stages, 1):
            properties.append((f"{prefix}stage[{number}]", stage.summary_text()))
    for key in ("warnings", "errors"):
        if figures[key]:
            properties.append((prefix + key, "; ".join(figures[key])))
    for verdict in result.slos:
        outcome = "PASS" if verdict["passed"] else "FAIL"
        # A windowed SLO's row names its failing windows: "FAIL 2 of 10 windows failed: [3m,4m) 1480 ms, ...".
        shown = verdict.get("verdict_text") or f"measured {verdict['measured_text']}"
        properties.append((f"{prefix}slo[{verdict['slo']}]", f"{outcome} {shown}"))
    return properties


def capacity_prefix(search_index: int) -> str:
    """``iotperf.capacity.`` for a test's first capacity search, ``iotperf.capacity2.`` for its second."""
    return f"{PROPERTY_PREFIX}capacity." if search_index == 1 else f"{PROPERTY_PREFIX}capacity{search_index}."


def capacity_properties(
    capacity: CapacityResult, comparisons: Sequence[Comparison], search_index: int
) -> list[tuple[str, Any]]:
    """The junit properties of a capacity search: what it found, why it stopped, every step, the comparison.

    No SLO testcases: a search's failing steps are how it finds the knee, not failures of the test.
    """
    prefix = capacity_prefix(search_index)
    properties: list[tuple[str, Any]] = [
        (f"{prefix}max_devices", capacity.max_devices),
        (f"{prefix}max_throughput_per_s", round(capacity.max_throughput_per_s, 3)),
        (f"{prefix}bound", capacity.bound),
        (f"{prefix}limiting_slo", capacity.limiting_slo),
        (f"{prefix}steps", capacity.steps_text()),
        (f"{prefix}runs", capacity.runs_text()),  # which steps were stages of the escalation run, which own runs
        (f"{prefix}hint", capacity.hint),
        (f"{prefix}search_s", round(capacity.search_s, 1)),
        (f"{prefix}summary", capacity.summary()),
    ]
    properties += [(f"{prefix}compare[{c.metric}]", c.describe()) for c in comparisons]
    return properties


def split_property(name: str) -> tuple[str, str]:
    """``iotperf.run2.sent`` -> (``run2``, ``sent``); ``iotperf.slo[loss < 0.1%]`` -> ("", ``slo[loss < 0.1%]``)."""
    name = name.removeprefix(PROPERTY_PREFIX)
    match = _RUN_PREFIX.fullmatch(name)
    return (match.group(1), match.group(2)) if match else ("", name)


@dataclass(frozen=True)
class SloCase:
    """One SLO verdict of one test, as its own junit testcase."""

    nodeid: str  # the perf test's node id
    name: str  # ``slo[<expression>]``, ``run2.slo[<expression>]`` for a second run
    verdict: str  # ``PASS measured 1.8 ms`` / ``FAIL measured 1234.5 ms``

    @property
    def passed(self) -> bool:
        return self.verdict.startswith("PASS")

    @property
    def expression(self) -> str:
        return self.name[self.name.index("slo[") + 4 : -1]


def slo_cases(nodeid: str, user_properties: Iterable[tuple[str, object]]) -> list[SloCase]:
    """The SLO verdicts a perf test recorded in its properties."""
    cases = []
    for name, value in user_properties:
        if not name.startswith(PROPERTY_PREFIX):
            continue
        run, key = split_property(name)
        if key.startswith("slo["):
            cases.append(SloCase(nodeid, f"{run}.{key}" if run else key, str(value)))
    return cases


def junit_path(option_value: str | None) -> Path | None:
    """The file ``--junitxml`` writes, resolved the way pytest resolves it (at configure time)."""
    if not option_value:
        return None
    return Path(os.path.normpath(os.path.abspath(os.path.expanduser(os.path.expandvars(option_value)))))


def _mangle(nodeid: str, prefix: str | None) -> tuple[str, str]:
    """(classname, name) of a test's testcase, as pytest's junitxml derives them from the node id."""
    try:  # pytest's own rule, so the SLO cases always sit under their test
        from _pytest.junitxml import mangle_test_address

        names = list(mangle_test_address(nodeid))
    except ImportError:  # pragma: no cover - a pytest that moved it; the documented rule
        path, bracket, params = nodeid.partition("[")
        names = path.split("::")
        names[0] = re.sub(r"\.py$", "", names[0].replace("/", "."))
        names[-1] += bracket + params
    classnames = names[:-1]
    if prefix:
        classnames.insert(0, prefix)
    return ".".join(classnames), names[-1]


def add_slo_testcases(xml_path: Path, cases: Mapping[str, Sequence[SloCase]], prefix: str | None = None) -> int:
    """Insert each test's SLO testcases right after its own testcase; return how many were added.

    The suite's ``tests`` and ``failures`` attributes count them, so the file
    stays consistent for readers that trust the attributes.
    """
    if not any(cases.values()) or not xml_path.is_file():
        return 0
    tree = ET.parse(xml_path)
    root = tree.getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return 0
    added = failed = 0
    for nodeid, test_cases in cases.items():
        classname, name = _mangle(nodeid, prefix)
        position = len(suite)
        for index, element in enumerate(suite):
            if element.tag == "testcase" and element.get("classname") == classname and element.get("name") == name:
                position = index + 1
                break
        for case in test_cases:
            suite.insert(position, _testcase(case, f"{classname}.{name}"))
            position += 1
            added += 1
            failed += not case.passed
    for element in {root, suite}:
        for attribute, extra in (("tests", added), ("failures", failed)):
            if element.get(attribute) is not None:
                element.set(attribute, str(int(element.get(attribute) or 0) + extra))
    tree.write(xml_path, encoding="utf-8", xml_declaration=True)
    return added


def _testcase(case: SloCase, classname: str) -> ET.Element:
    element = ET.Element("testcase", classname=classname, name=case.name, time="0.000")
    properties = ET.SubElement(element, "properties")
    ET.SubElement(properties, "property", name="iotperf.verdict", value=case.verdict)
    if not case.passed:
        failure = ET.SubElement(element, "failure", message=f"{case.expression}: {case.verdict}")
        failure.text = f"SLO {case.expression} of {case.nodeid}: {case.verdict}"
    return element
