"""SLOs declared on the perf marker and on the command line gate the test (pytester, real tiny runs)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

RUN = 'iot_perf.run(devices=3, rate_per_device=2, duration="1s", drain="5s", workers=1)'
# The verdicts every run gets by default (pipeline.load_slos), after the test's own.
LOAD_CHECKS = ["connect_failures == 0", "unsent == 0", "lateness_p99_ms <= 50"]


def test_bad_slo_is_a_collection_error_naming_test_and_expression(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.perf(slo=["p95_delay_ms < 1000", "p95 << 3"])
        def test_gate(iot_perf):
            pass

        def test_plain():
            pass
        """
    )
    outcome = pytester.runpytest("-p", "no:cacheprovider")
    assert outcome.ret == pytest.ExitCode.INTERRUPTED
    outcome.stdout.fnmatch_lines(["*ERROR collecting*", "*test_gate*p95 << 3*"])
    outcome.assert_outcomes(errors=1)


@pytest.mark.parametrize(
    ("args", "env", "fragment"),
    [
        (["--iot-slo", "loss < 5 parsecs"], {}, "--iot-slo='loss < 5 parsecs' (command line)"),
        ([], {"IOTPERF_SLO": "p95_delay_ms < 10; bogus_ms < 3"}, "IOTPERF_SLO part ' bogus_ms < 3' (environment)"),
    ],
)
def test_bad_slo_option_is_a_usage_error_naming_its_source(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str], fragment: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    pytester.makepyfile("def test_nothing():\n    pass\n")
    outcome = pytester.runpytest("-p", "no:cacheprovider", *args)
    assert outcome.ret == pytest.ExitCode.USAGE_ERROR
    assert fragment in outcome.stderr.str()


def test_bad_ini_slo_names_the_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\niot_slo =\n    p95_delay_ms < 1000\n    lost <= 3ms\n")
    pytester.makepyfile("def test_nothing():\n    pass\n")
    outcome = pytester.runpytest("-p", "no:cacheprovider")
    assert outcome.ret == pytest.ExitCode.USAGE_ERROR
    assert "iot_slo line 'lost <= 3ms' (in tox.ini)" in outcome.stderr.str()


@pytest.mark.fleet
@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_slos_gate_the_test_listing_every_violation(pytester: pytest.Pytester, xdist: list[str]) -> None:
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.perf(slo=["loss < 1%", "p50_delay_ms < 60s", "throughput_per_s >= 1000000"])
        def test_met(iot_perf):
            result = {RUN}
            assert [v["passed"] for v in result.slos] == [True] * 7
            assert [v["slo"] for v in result.slos][4:] == {LOAD_CHECKS}

        @pytest.mark.perf(slo=["p50_delay_ms < 0.001", "throughput_per_s >= 1000000", "loss < 1%"])
        def test_violated(iot_perf):
            {RUN}
        """
    )
    # The CLI relaxes the throughput bound of both tests (same metric, same direction) and adds a max bound.
    outcome = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--junitxml=junit.xml",
        "--iot-slo",
        "throughput_per_s >= 1",
        "--iot-slo",
        "max_delay_ms < 60s",
        *xdist,
    )
    # pytest counts the two tests only; each SLO verdict is a junit testcase of its own (checked below).
    outcome.assert_outcomes(passed=1, failed=1)
    text = outcome.stdout.str()
    assert "[100%]" in text and "[200%]" not in text
    # The summary lists every verdict.
    outcome.stdout.fnmatch_lines(["*SLO FAIL *test_violated: p50_delay_ms < 0.001: measured*"])
    outcome.stdout.fnmatch_lines(["*SLO PASS *test_met: loss < 1%: measured 0.000%*"])
    assert "1 of 7 SLOs violated" in text
    assert "p50_delay_ms < 0.001: measured" in text
    assert "throughput_per_s >= 1000000" not in text  # replaced by the command line's bound
    cases = {case.get("name"): case for case in ET.parse(pytester.path / "junit.xml").iter("testcase")}
    met = {p.get("name"): p.get("value", "") for p in cases["test_met"].iter("property")}
    violated = {p.get("name"): p.get("value", "") for p in cases["test_violated"].iter("property")}
    assert met["iotperf.slo[loss < 1%]"].startswith("PASS measured 0.000%")
    assert met["iotperf.slo[throughput_per_s >= 1]"].startswith("PASS")
    assert met["iotperf.slo[max_delay_ms < 60s]"].startswith("PASS measured")
    assert violated["iotperf.slo[p50_delay_ms < 0.001]"].startswith("FAIL measured")
    assert violated["iotperf.slo[loss < 1%]"].startswith("PASS")
    per_case = {
        (c.get("classname", "").rsplit(".", 1)[-1], c.get("name")): c  # the same under xdist and serially
        for c in ET.parse(pytester.path / "junit.xml").iter("testcase")
    }
    failure = per_case[("test_violated", "slo[p50_delay_ms < 0.001]")].find("failure")
    assert failure is not None and "FAIL measured" in failure.get("message", "")
    assert per_case[("test_violated", "slo[loss < 1%]")].find("failure") is None
    assert per_case[("test_met", "slo[max_delay_ms < 60s]")].find("failure") is None
    assert per_case[("test_met", "slo[connect_failures == 0]")].find("failure") is None
    # 2 tests + 7 SLO cases each (4 + the 3 default load checks), written after the test they belong to;
    # the suite's counts include them.
    suite = ET.parse(pytester.path / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures")) == ("16", "2")
    names = [c.get("name") for c in suite.iter("testcase")]
    assert names.index("test_violated") < names.index("slo[p50_delay_ms < 0.001]")


@pytest.mark.fleet
def test_check_false_returns_the_verdicts_without_failing_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.perf(slo=["p50_delay_ms < 0.001", "loss < 1%"])
        def test_search(iot_perf):
            result = {RUN.replace("iot_perf.run(", "iot_perf.run(check=False, ")}
            assert [(v["slo"], v["passed"]) for v in result.slos] == [
                ("p50_delay_ms < 0.001", False), ("loss < 1%", True)
            ] + [(check, True) for check in {LOAD_CHECKS}]
            assert result.complete and result.sent > 0
        """
    )
    outcome = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--junitxml=junit.xml")
    outcome.assert_outcomes(passed=1)
    # The verdicts are still recorded: a failed SLO is a fact about the system, the test's outcome is the test's.
    cases = {c.get("name"): c for c in ET.parse(pytester.path / "junit.xml").iter("testcase")}
    assert cases["slo[p50_delay_ms < 0.001]"].find("failure") is not None
    assert cases["slo[loss < 1%]"].find("failure") is None
