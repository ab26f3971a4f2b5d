"""The plugin as a user meets it: options, ini keys, env vars, errors, marker, junit, JSON, summary.

Everything runs through ``pytester``.  Option, precedence and marker checks run
pytest in-process (no perf run starts).  The few real runs go through
``runpytest_subprocess`` because a run spawns a broker, a sink and Locust
processes; they are tiny (a handful of devices, 1 s of publishing, one Locust
worker) and several checks share one subprocess run to keep the file fast.
"""

from __future__ import annotations

import json
import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

OPTIONS = [
    "--iot-devices",
    "--iot-rate",
    "--iot-duration",
    "--iot-stages",
    "--iot-ramp-up",
    "--iot-workers",
    "--iot-broker",
    "--iot-username",
    "--iot-device-id",
    "--iot-device-offset",
    "--iot-client-id",
    "--iot-credentials",
    "--iot-sas-ttl",
    "--iot-property",
    "--iot-connect-rate",
    "--iot-qos",
    "--iot-payload-bytes",
    "--iot-topic",
    "--iot-arrival",
    "--iot-payload-file",
    "--iot-seed",
    "--iot-header",
    "--iot-header-key",
    "--iot-mqtt-version",
    "--iot-topic-alias",
    "--iot-transport",
    "--iot-ws-path",
    "--iot-sink",
    "--iot-sink-topic",
    "--iot-drain",
    "--iot-eventhub",
    "--iot-consumer-group",
    "--iot-eventhub-consumers",
    "--iot-eventhub-transport",
    "--iot-bridge",
    "--iot-master-bind",
    "--iot-expect-workers",
    "--iot-clock-correction",
    "--iot-no-reconnect",
    "--iot-reconnect-max",
    "--iot-offline-queue",
    "--iot-clean-session",
    "--iot-outage-budget",
    "--iot-allow-saturated",
    "--iot-tls-ca",
    "--iot-tls-cert",
    "--iot-tls-key",
    "--iot-tls-insecure",
    "--iot-influx-url",
    "--iot-influx-org",
    "--iot-influx-bucket",
    "--iot-report-dir",
    "--iot-slo",
]
# Per-invocation switches: command line only (--iot-no-abort also has IOTPERF_NO_ABORT and iot_abort,
# --iot-fresh-processes IOTPERF_FRESH_PROCESSES).
CLI_ONLY_OPTIONS = [
    "--iot-no-abort",
    "--iot-fresh-processes",
    "--iot-save-baseline",
    "--iot-compare",
    "--iot-compare-fail",
    "--iot-baseline-dir",
]
GROUP_TITLE = "IoT end-to-end load tests (pytest-iotperf):"
JUNIT_KEYS = ("run_id", "devices", "sent", "received", "loss", "p50_delay_ms", "p95_delay_ms", "p99_delay_ms")
SUBPROCESS_TIMEOUT_S = 180.0

# Real runs: tiny.  The drain ends as soon as everything sent has arrived, so a
# generous drain costs nothing on a healthy run and avoids a flaky loss on a busy box.
TINY_RUN = 'rate_per_device=1.0, duration="1s", drain="5s", workers=1'
# An address nothing listens on: if a settings check regressed and a run did
# start in-process, it would fail fast on the broker instead of running a fleet.
DEAD_BROKER = "mqtt://127.0.0.1:9"


@pytest.fixture(autouse=True)
def _no_iotperf_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The caller's IOTPERF_* variables must not leak into the runs under test."""
    for name in list(os.environ):
        if name.startswith("IOTPERF_"):
            monkeypatch.delenv(name)
    yield


def _output(result: pytest.RunResult) -> str:
    return "\n".join(result.outlines + result.errlines)


# -- helpers for the real runs -------------------------------------------------------


def _junit_properties(path: Path) -> dict[str, dict[str, str]]:
    """testcase name -> {property name: value}, as written to the junit XML file.

    Each SLO verdict's own testcase (``slo[...]``, also the default load checks') is left out:
    test_slo_gate checks those.
    """
    root = ET.parse(path).getroot()
    cases: dict[str, dict[str, str]] = {}
    for case in root.iter("testcase"):
        if re.match(r"(run\d+\.)?slo\[", str(case.get("name"))):
            continue
        props: dict[str, str] = {}
        for prop in case.iter("property"):
            name = prop.get("name")
            assert name is not None
            assert name not in props, f"property {name} written twice for {case.get('name')}"
            props[name] = prop.get("value", "")
        cases[str(case.get("name"))] = props
    return cases


def _check_run_properties(props: dict[str, str], prefix: str, devices: int) -> None:
    """The junit properties of one run are present and consistent."""
    missing = [f"{prefix}{key}" for key in JUNIT_KEYS if f"{prefix}{key}" not in props]
    assert not missing, f"missing junit properties {missing}; got {sorted(props)}"
    assert re.fullmatch(r"[0-9a-f]{6,}", props[f"{prefix}run_id"]), props[f"{prefix}run_id"]
    assert int(props[f"{prefix}devices"]) == devices
    sent = int(props[f"{prefix}sent"])
    received = int(props[f"{prefix}received"])
    assert sent > 0
    assert received == sent
    assert float(props[f"{prefix}loss"]) == 0.0
    p50, p95, p99 = (float(props[f"{prefix}{key}"]) for key in ("p50_delay_ms", "p95_delay_ms", "p99_delay_ms"))
    assert all(math.isfinite(v) and v >= 0 for v in (p50, p95, p99)), (p50, p95, p99)
    assert p50 <= p95 <= p99


def _summary_rows(result: pytest.RunResult) -> dict[str, list[str]]:
    """The rows of the 'iotperf summary' table: label (node id, maybe '(runN)') -> cells."""
    lines = result.outlines
    starts = [i for i, line in enumerate(lines) if re.fullmatch(r"=+ iotperf summary =+", line)]
    assert len(starts) == 1, f"expected one 'iotperf summary' section:\n{_output(result)}"
    section = []
    for line in lines[starts[0] + 1 :]:
        if line.startswith("="):
            break
        section.append(line)
    assert section, "empty iotperf summary"
    assert re.match(r"test\s+devices\s+sent\s+received\s+lost\s+loss\b", section[0]), section[0]
    assert set(section[1].replace(" ", "")) == {"-"}, section[1]
    ncells = len(section[1].split()) - 1  # one dash run per column, the first is the label's
    rows: dict[str, list[str]] = {}
    for line in section[2:]:
        if line.startswith(("broker:", "WARNING ", "ERROR ")):
            break
        tokens = line.split()
        rows[" ".join(tokens[:-ncells])] = tokens[-ncells:]
    return rows


def _check_summary_row(rows: dict[str, list[str]], label: str, devices: int, sent: int, received: int) -> None:
    assert label in rows, f"{label!r} not in the iotperf summary rows {sorted(rows)}"
    assert [int(cell) for cell in rows[label][:3]] == [devices, sent, received]


# -- 1. options ---------------------------------------------------------------------


def test_help_lists_exactly_the_iot_options_in_their_group(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    assert result.ret == pytest.ExitCode.OK
    lines = result.outlines
    assert GROUP_TITLE in lines, f"no option group {GROUP_TITLE!r} in --help"
    start = lines.index(GROUP_TITLE) + 1
    end = next(i for i in range(start, len(lines)) if not lines[i].strip())
    group = lines[start:end]
    in_group = [m.group(1) for line in group if (m := re.match(r"  (--[a-z0-9-]+)", line))]
    assert in_group == OPTIONS + CLI_ONLY_OPTIONS
    everywhere = {m.group(1) for line in lines if (m := re.match(r"\s+(--iot-[a-z0-9-]+)", line))}
    assert everywhere == set(OPTIONS + CLI_ONLY_OPTIONS), "an --iot-* option lives outside the iotperf group"
    # every option names its environment variable and ini key in its help text
    text = " ".join(" ".join(group).split())
    for option in OPTIONS:
        name = option[len("--iot-") :].replace("-", "_")
        assert f"[env IOTPERF_{name.upper()}, ini iot_{name}]" in text
    ini_keys = {m.group(1) for line in lines if (m := re.match(r"  (iot_[a-z_]+) \((?:string|linelist)\)", line))}
    assert ini_keys == {"iot_" + o[len("--iot-") :].replace("-", "_") for o in OPTIONS}


# -- 2. bad values stop the session ---------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "ini", "expected"),
    [
        pytest.param(["--iot-devices=-3"], {}, None, ["--iot-devices=-3", "command line"], id="cli-devices"),
        pytest.param(["--iot-devices", "-3"], {}, None, ["--iot-devices=-3", "command line"], id="cli-devices-space"),
        pytest.param(["--iot-rate=abc"], {}, None, ["--iot-rate=abc", "command line", "'abc'"], id="cli-rate"),
        pytest.param(["--iot-broker=http://x"], {}, None, ["--iot-broker=http://x", "command line"], id="cli-broker"),
        pytest.param(
            ["--iot-topic=a/#"],
            {},
            None,
            ["--iot-topic=a/#", "command line", "wildcards"],
            id="cli-topic",
        ),
        pytest.param([], {"IOTPERF_QOS": "2"}, None, ["IOTPERF_QOS", "environment", "'2'"], id="env-qos"),
        pytest.param(
            [],
            {},
            ("tox.ini", "[pytest]\niot_duration = 5 parsecs\n"),
            ["iot_duration", "5 parsecs", "tox.ini"],
            id="tox-ini-duration",
        ),
        pytest.param(
            [],
            {},
            ("pyproject.toml", '[tool.pytest.ini_options]\niot_duration = "5 parsecs"\n'),
            ["iot_duration", "5 parsecs", "pyproject.toml"],
            id="pyproject-duration",
        ),
    ],
)
def test_bad_value_is_a_usage_error_naming_value_and_source(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: dict[str, str],
    ini: tuple[str, str] | None,
    expected: list[str],
) -> None:
    pytester.makepyfile(test_never_runs="def test_never_runs():\n    raise AssertionError('ran')\n")
    if ini is not None:
        pytester.makefile(Path(ini[0]).suffix, **{Path(ini[0]).stem: ini[1]})
        assert (pytester.path / ini[0]).is_file()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, _output(result)
    errors = [line for line in result.errlines if line.startswith("ERROR:")]
    assert len(errors) == 1, _output(result)
    for fragment in expected:
        assert fragment in errors[0]
    assert "test_never_runs" not in _output(result)


# -- 3. precedence, without real runs -------------------------------------------------


def test_precedence_cli_env_code_ini_default(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    # devices: everywhere; rate: env, code, ini; duration: code, ini; payload_bytes and broker: ini; qos: nowhere
    pytester.makeini(
        """
        [pytest]
        iot_devices = 4
        iot_rate = 0.4
        iot_duration = 4s
        iot_payload_bytes = 12
        iot_broker = mqtt://127.0.0.1:1883
        """
    )
    monkeypatch.setenv("IOTPERF_DEVICES", "6")
    monkeypatch.setenv("IOTPERF_RATE", "0.6")
    pytester.makepyfile(
        test_resolved="""
        import json
        from pathlib import Path

        def test_resolved(iot_perf):
            session_settings = iot_perf._session.settings
            run_settings = session_settings.for_run({"devices": 5, "rate_per_device": 0.5, "duration": "3s"})
            names = ("devices", "rate", "duration", "payload_bytes", "broker", "qos")
            Path(__file__).with_name("resolved.json").write_text(json.dumps({
                "values": {name: run_settings[name] for name in names},
                "sources": run_settings.sources(),
                "session_sources": {name: session_settings.source(name) for name in names},
            }))
        """
    )
    result = pytester.runpytest("--iot-devices=7")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["iotperf: broker=mqtt://127.0.0.1:1883, sink=mqtt, qos=1"])
    resolved = json.loads((pytester.path / "resolved.json").read_text())
    assert resolved["values"] == {
        "devices": 7,
        "rate": 0.6,
        "duration": 3.0,
        "payload_bytes": 12,
        "broker": "mqtt://127.0.0.1:1883",
        "qos": 1,
    }
    sources = resolved["sources"]
    assert {name: sources[name] for name in resolved["values"]} == {
        "devices": "command line",
        "rate": "environment",
        "duration": "test code",
        "payload_bytes": "ini",
        "broker": "ini",
        "qos": "default",
    }
    assert set(sources) >= {"devices", "rate", "duration", "report_dir", "drain", "topic"}
    # before the test code is applied, the session sees the ini value for duration
    assert resolved["session_sources"]["duration"] == "ini"


def test_env_beats_ini_and_code_beats_default_without_cli(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Drop the top source and the next one must win: the order is a chain, not "CLI or nothing"."""
    pytester.makeini("[pytest]\niot_devices = 4\n")
    monkeypatch.setenv("IOTPERF_DEVICES", "6")
    pytester.makepyfile(
        test_resolved="""
        import json
        from pathlib import Path

        def test_resolved(iot_perf):
            settings = iot_perf._session.settings.for_run({"devices": 5, "qos": 0})
            out = {name: [settings[name], settings.sources()[name]] for name in ("devices", "qos")}
            Path(__file__).with_name("resolved.json").write_text(json.dumps(out))
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    assert json.loads((pytester.path / "resolved.json").read_text()) == {
        "devices": [6, "environment"],
        "qos": [0, "test code"],
    }


def test_bad_test_code_fails_the_test_not_the_session(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_code=f"""
        def test_bad_value(iot_perf):
            iot_perf.run(devices=-1, broker={DEAD_BROKER!r})

        def test_unknown_keyword(iot_perf):
            iot_perf.run(devicez=3, broker={DEAD_BROKER!r})

        def test_bad_value_in_for_run(iot_perf):
            iot_perf._session.settings.for_run({{"devices": -1}})

        def test_unaffected(iot_perf):
            assert iot_perf.results == []
        """
    )
    reprec = pytester.inline_run()
    reprec.assertoutcome(passed=1, failed=3)
    assert reprec.ret == pytest.ExitCode.TESTS_FAILED
    failures = {report.nodeid.split("::")[-1]: report.longreprtext for report in reprec.getfailures()}
    assert set(failures) == {"test_bad_value", "test_unknown_keyword", "test_bad_value_in_for_run"}
    assert "iot_perf.run(devices=-1) (test code)" in failures["test_bad_value"]
    assert "unknown keyword" in failures["test_unknown_keyword"]
    assert "devicez" in failures["test_unknown_keyword"]
    assert "ConfigError" in failures["test_bad_value_in_for_run"]
    assert "iot_perf.run(devices=-1) (test code)" in failures["test_bad_value_in_for_run"]
    # iot_perf.run() fails with the message alone, not a traceback into the plugin
    for name in ("test_bad_value", "test_unknown_keyword"):
        assert "config.py" not in failures[name], failures[name]
        # no perf run was attempted: the dead broker would have produced a connection error
        assert "cannot reach" not in failures[name]


# -- 4. the perf marker ---------------------------------------------------------------


def test_perf_marker_is_registered_and_selects(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_marks="""
        import pytest

        @pytest.mark.perf
        def test_load(iot_perf):
            assert iot_perf.results == []

        def test_plain():
            pass
        """
    )
    result = pytester.runpytest("--strict-markers", "-m", "perf", "-v")
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines(["*test_marks.py::test_load PASSED*"])
    result.stdout.no_fnmatch_line("*test_plain*")

    result = pytester.runpytest("--strict-markers", "-m", "not perf", "-v")
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines(["*test_marks.py::test_plain PASSED*"])

    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.perf: *iot_perf*"])


def test_strict_markers_is_in_force_for_the_marker_check(pytester: pytest.Pytester) -> None:
    """Control for the test above: an unregistered marker does fail under --strict-markers."""
    pytester.makepyfile(
        test_marks="""
        import pytest

        @pytest.mark.perff
        def test_typo():
            pass
        """
    )
    result = pytester.runpytest("--strict-markers")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*'perff' not found in `markers` configuration option*"])


# -- 5. real runs ---------------------------------------------------------------------


@pytest.mark.fleet
def test_real_run_junit_json_summary_cli_override_and_second_run(pytester: pytest.Pytester) -> None:
    """One subprocess, one test, two runs: junit properties, JSON files, summary, CLI over test code."""
    pytester.makepyfile(
        test_fleet=f"""
        import json
        from pathlib import Path

        import pytest

        @pytest.mark.perf
        def test_two_runs(iot_perf):
            first = iot_perf.run(devices=3, {TINY_RUN})
            second = iot_perf.run(devices=3, {TINY_RUN})
            seen = [
                {{"run_id": r.run_id, "devices": r.devices, "sent": r.sent, "received": r.received,
                  "sources": r.sources}}
                for r in (first, second)
            ]
            Path(__file__).with_name("seen.json").write_text(json.dumps({{
                "runs": seen, "results": [r.run_id for r in iot_perf.results]}}))
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider",
        "--junitxml=junit.xml",
        "--iot-devices", "7",
        "--iot-report-dir", "reports",
        timeout=SUBPROCESS_TIMEOUT_S,
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.OK, _output(result)
    result.assert_outcomes(passed=1)

    # what the test code got back: the command line beat devices=3
    seen = json.loads((pytester.path / "seen.json").read_text())
    first, second = seen["runs"]
    assert first["devices"] == second["devices"] == 7
    assert first["sources"]["devices"] == "command line"
    assert first["sources"]["rate"] == "test code"
    assert first["run_id"] != second["run_id"]
    assert seen["results"] == [first["run_id"], second["run_id"]]

    # junit (default junit_family): both runs' properties on the one testcase
    cases = _junit_properties(pytester.path / "junit.xml")
    assert set(cases) == {"test_two_runs"}
    props = cases["test_two_runs"]
    _check_run_properties(props, "iotperf.", devices=7)
    _check_run_properties(props, "iotperf.run2.", devices=7)
    assert props["iotperf.run_id"] == first["run_id"]
    assert props["iotperf.run2.run_id"] == second["run_id"]
    assert int(props["iotperf.sent"]) == first["sent"]
    assert int(props["iotperf.run2.received"]) == second["received"]

    # JSON: <id>.json and <id>.run2.json, same figures, provenance recorded (each with its HTML page beside it)
    names = sorted(p.name for p in (pytester.path / "reports").iterdir())
    files = [name for name in names if name.endswith(".json")]
    assert sorted(name[: -len(".html")] for name in names if name.endswith(".html")) == [f[:-5] for f in files]
    assert len(files) == 2, files
    run2_name = next((name for name in files if name.endswith(".run2.json")), None)
    assert run2_name is not None, files
    stem = run2_name[: -len(".run2.json")]
    assert files == sorted([f"{stem}.json", run2_name])
    assert re.search(r"test_fleet.*test_two_runs", stem), stem
    reports = [json.loads((pytester.path / "reports" / name).read_text()) for name in (f"{stem}.json", run2_name)]
    for report, run in zip(reports, (first, second), strict=True):
        assert report["run_id"] == run["run_id"]
        assert report["devices"] == 7
        assert report["sent"] == run["sent"] == report["received"]
        assert report["sources"]["devices"] == "command line"
        assert report["sources"]["duration"] == "test code"
        assert report["settings"]["devices"] == 7

    # terminal summary: the node id with its figures, and the second run labelled
    rows = _summary_rows(result)
    _check_summary_row(rows, "test_fleet.py::test_two_runs", 7, first["sent"], first["received"])
    _check_summary_row(rows, "test_fleet.py::test_two_runs (run2)", 7, second["sent"], second["received"])
    assert len(rows) == 2, rows


@pytest.mark.fleet
def test_real_runs_under_xdist_keep_their_properties(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two perf tests on two xdist workers: each testcase carries its own run's properties."""
    for name in list(os.environ):  # this file may itself run under xdist
        if name.startswith("PYTEST_XDIST_"):
            monkeypatch.delenv(name)
    pytester.makepyfile(
        test_fleet=f"""
        import os

        import pytest

        @pytest.mark.perf
        def test_fleet_a(iot_perf, request):
            request.node.user_properties.append(("xdist_worker", os.environ.get("PYTEST_XDIST_WORKER", "")))
            iot_perf.run(devices=2, {TINY_RUN})

        @pytest.mark.perf
        def test_fleet_b(iot_perf, request):
            request.node.user_properties.append(("xdist_worker", os.environ.get("PYTEST_XDIST_WORKER", "")))
            iot_perf.run(devices=3, {TINY_RUN})
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider",
        "-n", "2",
        "--junitxml=junit.xml",
        "--iot-report-dir", "reports",
        timeout=SUBPROCESS_TIMEOUT_S,
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.OK, _output(result)
    result.assert_outcomes(passed=2)

    cases = _junit_properties(pytester.path / "junit.xml")
    assert set(cases) == {"test_fleet_a", "test_fleet_b"}
    # Each test's default load checks come back from the xdist workers as their own testcases too.
    checks = [c.get("name") for c in ET.parse(pytester.path / "junit.xml").iter("testcase")]
    assert checks.count("slo[connect_failures == 0]") == checks.count("slo[unsent == 0]") == 2, checks
    for name, devices in (("test_fleet_a", 2), ("test_fleet_b", 3)):
        assert cases[name]["xdist_worker"].startswith("gw"), "the test did not run on an xdist worker"
        _check_run_properties(cases[name], "iotperf.", devices=devices)
        assert not any(key.startswith("iotperf.run2.") for key in cases[name])
    assert cases["test_fleet_a"]["iotperf.run_id"] != cases["test_fleet_b"]["iotperf.run_id"]

    reports = [json.loads(p.read_text()) for p in sorted((pytester.path / "reports").glob("*.json"))]
    assert sorted(r["run_id"] for r in reports) == sorted(cases[n]["iotperf.run_id"] for n in cases)

    # the controller's summary is built from the workers' reports
    rows = _summary_rows(result)
    assert set(rows) == {"test_fleet.py::test_fleet_a", "test_fleet.py::test_fleet_b"}
    for name, devices in (("test_fleet_a", 2), ("test_fleet_b", 3)):
        props = cases[name]
        _check_summary_row(
            rows, f"test_fleet.py::{name}", devices, int(props["iotperf.sent"]), int(props["iotperf.received"])
        )
