"""Baselines (pytest-benchmark style): save a run's figures under a name, compare later runs against it.

    pytest -m perf --iot-save-baseline main
    pytest -m perf --iot-compare main --iot-compare-fail p95_delay_ms:10% --iot-compare-fail loss:0.05

Saved results live in ``<rootdir>/.iotperf/baselines/<name>/<test id>.json`` (the JSON result of
each run).  A margin is relative (``10%``: more than 10 % worse fails) or absolute in the metric's
unit (``p95_delay_ms:5``: more than 5 ms worse fails).  "Worse" follows the metric: higher is worse
for delays, loss and counts of trouble; lower is worse for throughput and received.

A capacity search (``iot_perf.find_capacity()``) is saved and compared the same way, in
``<test id>.capacity.json``: its metrics are :data:`CAPACITY_METRICS` (``max_devices``,
``max_throughput_per_s``; lower is worse), so ``--iot-compare-fail max_devices:10%`` fails a
search that found more than 10 % fewer devices than the baseline.  A margin on a run metric is
not applied to a search, nor a capacity margin to a run.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_iotperf.errors import ConfigError
from pytest_iotperf.files import write_json_atomically
from pytest_iotperf.report.json_report import result_path, write_result
from pytest_iotperf.result import RunResult
from pytest_iotperf.slo import METRICS

#: What a capacity search is compared on (``CapacityResult`` figures).
CAPACITY_METRICS = ("max_devices", "max_throughput_per_s")
#: Metrics where a larger value is better; for every other one a smaller value is better.
HIGHER_IS_BETTER = frozenset({"throughput_per_s", "received", "sent", "connected", *CAPACITY_METRICS})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_name(name: str, where: str) -> str:
    if not _NAME.fullmatch(name):
        raise ConfigError(f"{where}: a baseline name is letters, digits, '.', '_' or '-', got {name!r}")
    return name


@dataclass(frozen=True)
class Margin:
    """How much worse than the baseline a metric may get: ``relative`` (fraction) or ``absolute``."""

    metric: str
    amount: float
    relative: bool
    text: str


def parse_margin(text: str, where: str) -> Margin:
    """``p95_delay_ms:10%`` or ``loss:0.001``; the metric must be a numeric RunResult figure or a capacity metric."""
    metric, sep, amount = text.partition(":")
    metric, amount = metric.strip(), amount.strip()
    if not sep or not metric or not amount:
        raise ConfigError(f"{where}: expected METRIC:MARGIN such as p95_delay_ms:10%, got {text!r}")
    if metric not in METRICS and metric not in CAPACITY_METRICS:
        known = ", ".join([*sorted(METRICS)[:8], *CAPACITY_METRICS])
        raise ConfigError(f"{where}: unknown metric {metric!r} (known: {known}, ...)")
    relative = amount.endswith("%")
    try:
        value = float(amount[:-1] if relative else amount)
    except ValueError:
        raise ConfigError(f"{where}: the margin of {metric} must be a number or a percentage, got {amount!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{where}: the margin of {metric} must be >= 0, got {amount!r}")
    return Margin(metric, value / 100 if relative else value, relative, f"{metric}:{amount}")


@dataclass(frozen=True)
class Comparison:
    """One metric, now vs the baseline."""

    metric: str
    baseline: float
    current: float
    margin: Margin | None

    @property
    def change(self) -> float:
        """Relative change (0.25 = 25 % higher); NaN when the baseline is 0 or missing."""
        if not math.isfinite(self.baseline) or self.baseline == 0:
            return math.nan
        return (self.current - self.baseline) / abs(self.baseline)

    @property
    def regressed(self) -> bool:
        if self.margin is None or not (math.isfinite(self.baseline) and math.isfinite(self.current)):
            return False
        worse_by = self.current - self.baseline
        if self.metric in HIGHER_IS_BETTER:
            worse_by = -worse_by
        limit = self.margin.amount * abs(self.baseline) if self.margin.relative else self.margin.amount
        return worse_by > limit

    def describe(self) -> str:
        change = "n/a" if math.isnan(self.change) else f"{self.change:+.1%}"
        verdict = ""
        if self.margin is not None:
            verdict = f" -> {'REGRESSED' if self.regressed else 'ok'} (margin {self.margin.text})"
        return f"{self.metric}: baseline {self.baseline:g}, now {self.current:g} ({change}){verdict}"


#: Compared (and shown) even without a margin.
DEFAULT_METRICS = ("p50_delay_ms", "p95_delay_ms", "p99_delay_ms", "loss", "throughput_per_s", "lateness_p99_ms")


@dataclass(frozen=True)
class BaselineSettings:
    """What the command line asked for: save under a name, compare with a name, margins."""

    store: BaselineStore
    save: str | None = None
    compare_with: str | None = None
    margins: tuple[Margin, ...] = ()


class BaselineStore:
    """Reads and writes saved results under ``root / name``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, name: str, test_id: str, run_index: int) -> Path:
        return result_path(self.root / name, test_id, run_index)

    def save(self, name: str, test_id: str, run_index: int, result: RunResult) -> Path:
        path = self.path(name, test_id, run_index)
        write_result(result, path)
        return path

    def load(self, name: str, test_id: str, run_index: int) -> dict[str, Any] | None:
        return _read_json(self.path(name, test_id, run_index))

    def capacity_path(self, name: str, test_id: str, search_index: int) -> Path:
        return result_path(self.root / name, capacity_name(test_id), search_index)

    def save_capacity(self, name: str, test_id: str, search_index: int, capacity: Mapping[str, Any]) -> Path:
        """Save a capacity search (``CapacityResult.to_dict()``) under baseline ``name``."""
        path = self.capacity_path(name, test_id, search_index)
        write_json_atomically(path, dict(capacity), indent=2, allow_nan=False)
        return path

    def load_capacity(self, name: str, test_id: str, search_index: int) -> dict[str, Any] | None:
        return _read_json(self.capacity_path(name, test_id, search_index))


def capacity_name(test_id: str) -> str:
    """The name a test's capacity search is stored under (beside its runs): ``<test id>.capacity``."""
    return f"{test_id}.capacity"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def compare(baseline: Mapping[str, Any], current: Mapping[str, Any], margins: Sequence[Margin]) -> list[Comparison]:
    """Comparisons for the default metrics plus every run metric with a margin (capacity margins are
    :func:`compare_capacity`'s)."""
    by_metric = {m.metric: m for m in margins if m.metric not in CAPACITY_METRICS}
    metrics = list(dict.fromkeys([*DEFAULT_METRICS, *by_metric]))
    out = []
    for metric in metrics:
        out.append(
            Comparison(metric, _number(baseline.get(metric)), _number(current.get(metric)), by_metric.get(metric))
        )
    return out


def compare_capacity(
    baseline: Mapping[str, Any], current: Mapping[str, Any], margins: Sequence[Margin]
) -> list[Comparison]:
    """A capacity search against its baseline: :data:`CAPACITY_METRICS`, with their margins."""
    by_metric = {m.metric: m for m in margins if m.metric in CAPACITY_METRICS}
    return [
        Comparison(metric, _number(baseline.get(metric)), _number(current.get(metric)), by_metric.get(metric))
        for metric in CAPACITY_METRICS
    ]


def _number(value: object) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return math.nan
