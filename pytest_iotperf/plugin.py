"""pytest entry point (``pytest11``): options, ini keys, the ``perf`` marker, the fixture.

Kept thin on purpose: settings live in ``config``, session lifetime in
``session``, the fixture in ``fixture``, everything from a run to its
outputs in ``pipeline`` (no pytest there).  Nothing here imports locust.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytest_iotperf.baseline import BaselineSettings, BaselineStore, check_name, parse_margin
from pytest_iotperf.config import (
    SETTINGS,
    SLO_CLI,
    SLO_ENV,
    SLO_HELP,
    SLO_INI,
    SessionSettings,
    SloSettings,
    marker_slos,
    resolve,
    resolve_slos,
)
from pytest_iotperf.errors import ConfigError
from pytest_iotperf.fixture import IotPerf
from pytest_iotperf.pipeline import check_windows
from pytest_iotperf.process_guard import interrupt_on
from pytest_iotperf.session import IotPerfSession

session_key = pytest.StashKey[IotPerfSession]()
_restore_signals_key = pytest.StashKey[Callable[[], None]]()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    """``pytest_iotperf_extract``: a conftest finds the headers in what the platform reshaped (``hookspecs``)."""
    from pytest_iotperf import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("iotperf", "IoT end-to-end load tests (pytest-iotperf)")
    for setting in SETTINGS:
        help_text = f"{setting.help} [env {setting.env}, ini {setting.ini}]"
        if setting.flag:
            group.addoption(
                setting.cli,
                dest="iot_" + setting.name,
                action="store_const",
                const="true",
                default=None,
                help=help_text,
            )
        elif setting.repeatable:
            group.addoption(
                setting.cli,
                dest="iot_" + setting.name,
                metavar=setting.metavar,
                action="append",
                default=None,
                help=help_text,
            )
        else:
            group.addoption(
                setting.cli, dest="iot_" + setting.name, metavar=setting.metavar, default=None, help=help_text
            )
        parser.addini(setting.ini, help=setting.help, default="")
    group.addoption(
        SLO_CLI,
        dest="iot_slo",
        action="append",
        metavar="EXPR",
        default=None,
        help=f"{SLO_HELP} [env {SLO_ENV}, ini {SLO_INI}] (several: ';' in the env, one per line in the ini)",
    )
    parser.addini(SLO_INI, help="SLOs every perf test must meet unless its marker says otherwise", type="linelist")
    group.addoption(
        "--iot-no-abort",
        dest="iot_no_abort",
        action="store_true",
        default=False,
        help="run to the end even when an SLO can no longer be met (default: stop early, like k6 abortOnFail) "
        "[env IOTPERF_NO_ABORT=1, ini iot_abort = false]",
    )
    parser.addini("iot_abort", help="stop a run early when an SLO can no longer be met", type="bool", default=True)
    group.addoption(
        "--iot-fresh-processes",
        dest="iot_fresh_processes",
        action="store_true",
        default=False,
        help="start the Locust master, workers and sink afresh for every run (default: they stay up across "
        "the session's runs, saving their start-up) [env IOTPERF_FRESH_PROCESSES=1]",
    )
    group.addoption(
        "--iot-save-baseline",
        dest="iot_save_baseline",
        metavar="NAME",
        default=None,
        help="save each perf test's result as baseline NAME",
    )
    group.addoption(
        "--iot-compare",
        dest="iot_compare",
        metavar="NAME",
        default=None,
        help="compare each perf test's result with baseline NAME (shown in junit and the summary)",
    )
    group.addoption(
        "--iot-compare-fail",
        dest="iot_compare_fail",
        metavar="METRIC:MARGIN",
        action="append",
        default=None,
        help="fail a test whose METRIC got worse than the baseline by more than MARGIN "
        "(e.g. p95_delay_ms:10%%, loss:0.001; repeatable)",
    )
    group.addoption(
        "--iot-baseline-dir",
        dest="iot_baseline_dir",
        metavar="DIR",
        default=None,
        help="where baselines live (default: <rootdir>/.iotperf/baselines)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "perf: an IoT end-to-end load test using the iot_perf fixture (select with -m perf)",
    )
    settings = _resolve_settings(config)
    session = IotPerfSession(config, settings, _resolve_slos(config))
    session.baselines = _resolve_baselines(config)
    session.abort_early = not (
        config.getoption("iot_no_abort")
        or os.environ.get("IOTPERF_NO_ABORT", "").strip().lower() in ("1", "true", "yes")
        or not config.getini("iot_abort")
    )
    fresh_env = os.environ.get("IOTPERF_FRESH_PROCESSES", "").strip().lower() in ("1", "true", "yes")
    if fresh_env or config.getoption("iot_fresh_processes"):
        session.standing = None  # every run starts and stops its own master, workers and sink
    config.stash[session_key] = session
    config.pluginmanager.register(session, "iotperf-session")
    # SIGTERM (timeout, CI cancel, Kubernetes) and SIGHUP stop a run like Ctrl-C: children stopped, what was
    # measured written, exit code 2; by default they would end pytest at once and orphan the embedded broker.
    # On an xdist controller too: its workers then get the shutdown they get on Ctrl-C.
    config.stash[_restore_signals_key] = interrupt_on()


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    restore = config.stash.get(_restore_signals_key, None)
    if restore is not None:
        restore()


def _resolve_settings(config: pytest.Config) -> SessionSettings:
    ini_name = config.inipath.name if config.inipath else "the ini file"
    cli = {s.name: _cli_value(config.getoption("iot_" + s.name)) for s in SETTINGS}
    ini: dict[str, tuple[str, str] | None] = {}
    for setting in SETTINGS:
        raw = config.getini(setting.ini)
        ini[setting.name] = (str(raw), ini_name) if raw not in ("", None) else None
    try:
        return resolve(cli, os.environ, ini)
    except ConfigError as exc:
        if config.getoption("help", False):
            return resolve({}, {}, {})  # let --help show how to fix the bad value
        raise pytest.UsageError(str(exc)) from None


def _cli_value(raw: object) -> str | None:
    """A repeatable option's values arrive as a list: one per line, as an ini file would give them."""
    if isinstance(raw, list):
        return "\n".join(str(item) for item in raw)
    return None if raw is None else str(raw)


def _resolve_baselines(config: pytest.Config) -> BaselineSettings:
    save = config.getoption("iot_save_baseline")
    compare_name = config.getoption("iot_compare")
    margins_raw = config.getoption("iot_compare_fail") or []
    directory = config.getoption("iot_baseline_dir")
    try:
        if save is not None:
            check_name(save, f"--iot-save-baseline={save} (command line)")
        if compare_name is not None:
            check_name(compare_name, f"--iot-compare={compare_name} (command line)")
        margins = tuple(parse_margin(m, f"--iot-compare-fail={m} (command line)") for m in margins_raw)
        if margins and compare_name is None:
            raise ConfigError("--iot-compare-fail needs --iot-compare NAME (the baseline to compare with)")
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    root = Path(directory) if directory else config.rootpath / ".iotperf" / "baselines"
    return BaselineSettings(BaselineStore(root), save, compare_name, margins)


def _resolve_slos(config: pytest.Config) -> SloSettings:
    ini_lines = [line for line in config.getini(SLO_INI) if line.strip()]
    ini_name = config.inipath.name if config.inipath else "the ini file"
    try:
        return resolve_slos(config.getoption("iot_slo"), os.environ, (ini_lines, ini_name) if ini_lines else None)
    except ConfigError as exc:
        if config.getoption("help", False):
            return SloSettings()
        raise pytest.UsageError(str(exc)) from None


@pytest.hookimpl(wrapper=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> object:
    """Parse each perf test's SLOs at collection: a bad expression is a collection error naming test and SLO."""
    made = yield
    items = made if isinstance(made, list) else [made]
    for item in items:
        if not isinstance(item, pytest.Item):
            continue
        for marker in item.iter_markers("perf"):
            try:
                marker_slos(marker.kwargs.get("slo"), f"@pytest.mark.perf on {item.nodeid}")
            except ConfigError as exc:
                raise collector.CollectError(str(exc)) from None
    return made


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A windowed SLO longer than the session's duration could never judge a whole window: a usage error.

    Here rather than per item at collection, so it ends the session as one (a collection error otherwise).
    With stages set for the session the run's duration is theirs: checked before the run starts instead.
    """
    session = config.stash.get(session_key, None)
    if session is None:
        return
    values = session.settings.values
    if "stages" in values and values["stages"].value:
        return
    duration_s = float(session.settings["duration"])
    for item in items:
        for marker in item.iter_markers("perf"):
            where = f"@pytest.mark.perf on {item.nodeid}"
            try:
                check_windows(marker_slos(marker.kwargs.get("slo"), where), duration_s, "the session's --iot-duration")
            except ConfigError as exc:
                raise pytest.UsageError(f"{where}: {exc}") from None


def pytest_report_header(config: pytest.Config) -> str | None:
    session = config.stash.get(session_key, None)
    if session is None:
        return None
    settings = session.settings
    return f"iotperf: broker={settings.broker}, sink={settings.sink}, qos={settings.qos}"


@pytest.fixture
def iot_perf(request: pytest.FixtureRequest) -> Iterator[IotPerf]:
    """Runs a fleet of simulated MQTT devices and returns what was measured.

    ``result = iot_perf.run(devices=500, rate_per_device=1.0, duration="60s")``
    """
    perf = IotPerf(request.config.stash[session_key], request.node)
    yield perf
    perf.close()  # a run started and never waited for: its children go with the test
