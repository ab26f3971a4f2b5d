"""Abort early (k6's abortOnFail): stop a run as soon as an SLO can no longer be met.

Pure: the rule is derived from the test's SLOs and fed live progress figures.
A run is stopped when the messages already missing exceed the loss budget of
the whole planned run for ``grace_s`` in a row (missing-now includes messages
still in flight or reordered, so a short excess is tolerated), or when more
devices failed to connect than a ``connect_failures`` SLO allows.

A fleet that reconnects rides through a broker outage, so losing the broker
is not a reason to stop by itself; the run is stopped when more than half the
fleet has been offline for longer than the outage budget (the workers count
the devices whose current offline spell exceeds it: ``offline_over_budget``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pytest_iotperf.slo import Slo

_GRACE_S = 5.0


def _max_allowed(op: str, limit: float) -> int | None:
    """The largest whole count that still meets ``count <op> limit``; None for a lower bound."""
    if op == "<":
        return math.ceil(limit) - 1
    if op in ("<=", "=="):
        return math.floor(limit)
    return None


@dataclass(frozen=True)
class AbortRule:
    """When to give up on a run; built by :func:`abort_rule_for`."""

    max_missing: int | None = None
    missing_slo: str = ""
    max_connect_failures: int | None = None
    connect_slo: str = ""
    grace_s: float = _GRACE_S
    # Reconnecting fleets: give up once more than half of ``devices`` have been offline longer than this.
    outage_budget_s: float | None = None
    devices: int = 0


def with_outage_budget(rule: AbortRule | None, devices: int, outage_budget_s: float) -> AbortRule:
    """``rule`` (or no SLO budget at all) plus the outage budget of a fleet of ``devices`` that reconnects."""
    return replace(rule or AbortRule(), outage_budget_s=outage_budget_s, devices=devices)


def outage_reason(rule: AbortRule, progress: Mapping[str, Any]) -> str | None:
    """Why the run must stop because of an outage, or None: more than half the fleet offline past the budget."""
    if rule.outage_budget_s is None or rule.devices <= 0:
        return None
    over = int(progress.get("offline_over_budget") or 0)
    if 2 * over <= rule.devices:
        return None
    longest = float(progress.get("offline_longest_s") or 0.0)
    return (
        f"{over:,} of {rule.devices:,} devices offline for more than {rule.outage_budget_s:g}s "
        f"(longest {longest:.1f}s)"
    )


def abort_rule_for(slos: Sequence[Slo], planned_messages: int) -> AbortRule | None:
    """The tightest loss and connect budgets the SLOs set, or None when they set none."""
    max_missing: int | None = None
    missing_slo = ""
    max_connect: int | None = None
    connect_slo = ""
    for slo in slos:
        if slo.metric in ("loss", "lost"):
            limit = slo.threshold * planned_messages if slo.metric == "loss" else slo.threshold
            allowed = _max_allowed(slo.op, limit)
            if allowed is not None and (max_missing is None or allowed < max_missing):
                max_missing, missing_slo = max(allowed, 0), slo.text
        elif slo.metric == "connect_failures":
            allowed = _max_allowed(slo.op, slo.threshold)
            if allowed is not None and (max_connect is None or allowed < max_connect):
                max_connect, connect_slo = max(allowed, 0), slo.text
    if max_missing is None and max_connect is None:
        return None
    return AbortRule(max_missing, missing_slo, max_connect, connect_slo)


class AbortWatch:
    """Feeds progress snapshots to a rule; ``check`` returns the reason once the run must stop."""

    def __init__(self, rule: AbortRule, planned_messages: int) -> None:
        self.rule = rule
        self.planned = planned_messages
        self._over_since: float | None = None

    def check(self, progress: Mapping[str, Any], now: float | None = None) -> str | None:
        rule = self.rule
        now = time.monotonic() if now is None else now
        outage = outage_reason(rule, progress)
        if outage is not None:
            return outage
        failed = int(progress.get("connect_failed") or 0)
        if rule.max_connect_failures is not None and failed > rule.max_connect_failures:
            return f"{failed} devices failed to connect; {rule.connect_slo} can no longer be met"
        gaps = int(progress.get("gaps") or 0)
        if rule.max_missing is None or gaps <= rule.max_missing:
            self._over_since = None
            return None
        if self._over_since is None:
            self._over_since = now
        if now - self._over_since >= rule.grace_s:
            return (
                f"{gaps} messages missing for {rule.grace_s:g}s, more than the {rule.max_missing} that "
                f"{rule.missing_slo} allows for the {self.planned} planned messages"
            )
        return None
