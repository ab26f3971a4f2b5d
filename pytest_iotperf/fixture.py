"""The ``iot_perf`` fixture: runs through the pipeline, turns its verdicts into a test outcome and junit rows."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_iotperf.config import marker_slos
from pytest_iotperf.errors import ConfigError, IotPerfError
from pytest_iotperf.junit import run_properties
from pytest_iotperf.pipeline import RunOutcome
from pytest_iotperf.result import RunResult
from pytest_iotperf.session import IotPerfSession
from pytest_iotperf.slo import Slo, merge_slos


class IotPerf:
    """The ``iot_perf`` fixture: ``result = iot_perf.run(devices=..., rate_per_device=..., duration=...)``."""

    def __init__(self, session: IotPerfSession, item: pytest.Item) -> None:
        self._session = session
        self._item = item
        self.results: list[RunResult] = []
        self.outcomes: list[RunOutcome] = []

    def run(self, *, check: bool = True, **settings: Any) -> RunResult:
        """Run the fleet once and return what was measured, with every SLO's verdict in ``result.slos``.

        Keyword arguments (``devices``, ``rate_per_device``, ``duration``,
        ``ramp_up``, ``workers``, ``qos``, ``payload_bytes``, ``topic``,
        ``sink``, ``sink_topic``, ``drain``, ``broker``, ``username``,
        ``eventhub``, ``eventhub_consumers``, ``bridge``) take precedence over
        the ini file; the command line and the environment override them.

        ``check=True`` (the default) fails the test when an SLO is violated, a
        metric regressed against the compared baseline, or the run broke
        halfway.  ``check=False`` returns the result either way (a run that
        broke has ``result.complete == False`` and says why in
        ``result.errors``), so a test can decide for itself; the junit rows,
        reports and exports are written as with ``check=True``.  A run that
        measured nothing at all (bad settings, unreachable broker) fails the
        test in both cases.
        """
        config_error: str | None = None
        try:
            run_settings = self._session.settings.for_run(settings)
        except ConfigError as exc:
            config_error = str(exc)
        if config_error is not None:
            pytest.fail(config_error, pytrace=False)
        failure: str | None = None
        progress = self._session.progress_reporter()
        try:
            broker = self._session.broker_for(run_settings.broker)
            eventhub = self._session.eventhub_for(run_settings.eventhub) if run_settings.sink == "eventhub" else None
            pipeline = self._session.pipeline(progress)
            outcome = pipeline.run(
                run_settings,
                broker,
                slos=self.slos(),
                name=self._item.nodeid,
                run_index=len(self.results) + 1,
                eventhub=eventhub,
                broker_warnings=self._session.broker_warnings,
            )
        except IotPerfError as exc:
            failure = str(exc)
        finally:
            progress.close()
        if failure is not None:
            # Outside the except block: no "during handling of the above exception" noise.
            pytest.fail(failure, pytrace=False)
        self._record(outcome)
        if check and not outcome.passed:
            pytest.fail(outcome.failure_message(), pytrace=False)
        return outcome.result

    def slos(self) -> list[Slo]:
        """This test's SLOs: ini defaults, its perf markers (outermost first), then env and CLI overrides."""
        from_markers: list[Slo] = []
        for marker in reversed(list(self._item.iter_markers("perf"))):
            from_markers = merge_slos(from_markers, marker_slos(marker.kwargs.get("slo"), self._item.nodeid))
        return self._session.slos.for_test(tuple(from_markers))

    def _record(self, outcome: RunOutcome) -> None:
        self.outcomes.append(outcome)
        self.results.append(outcome.result)
        self._item.user_properties.extend(run_properties(outcome.result, outcome.comparisons, len(self.results)))
