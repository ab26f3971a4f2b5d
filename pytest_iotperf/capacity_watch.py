"""When to stop a capacity search's escalation run early: its live figures show the current stage breaking.

Pure: fed the run's progress snapshots (``PerfRun``'s: the fleet's ``sent`` and
``elapsed_s`` from the master, the sinks' ``received`` and worst ``p95_delay_ms``),
it answers with a reason to stop, or None.  Only a heuristic to spare the
system the stages past its knee: every verdict still comes from the stages'
exact figures after the run (``capacity_stages``), and a stage cut short that
passes on what ran is inconclusive and measured again (``capacity_search``).

A stage is taken as broken when, for ``SUSTAIN_S`` in a row (the master's clock):

- backlog: messages sent but not yet received exceed what the delay SLOs let be
  in flight at the current stage's offered rate: ``rate * (allowed delay + SKEW_S)``,
  the allowed delay being the largest upper bound of the delay SLOs (none: the
  drain time, what a message may take and still count as received).  ``SKEW_S``
  covers the two sides' figures being read up to a second or so apart;
- delay: the sinks' p95 so far is over the threshold of a delay SLO it bounds
  from below (``pNN_delay_ms`` with NN >= 95, ``max_delay_ms``; ``<`` / ``<=``);
- generator: the fleet has sent less than its schedule by more than ``SKEW_S``
  seconds of the current offered rate (it cannot keep up).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_iotperf.slo import Slo
from pytest_iotperf.stage_plan import StageSpec

__all__ = ["SKEW_S", "SUSTAIN_S", "EscalationWatch", "allowed_delay_s", "p95_bounds_ms"]

#: A breach must last this long (seconds of the run) before the run is stopped.
SUSTAIN_S = 2.0
#: How far apart the fleet's and the sinks' live counts are read (seen: about 0.5 s; worker status 0.5 s, progress 1 s).
SKEW_S = 1.0

_PERCENTILE = re.compile(r"p([0-9]+(?:\.[0-9]+)?)_delay_ms")
_DELAY = re.compile(r"(?:p[0-9.]+|max|mean)_delay_ms")


def allowed_delay_s(slos: Sequence[Slo], drain_s: float) -> float:
    """The longest delay the delay SLOs allow (``<`` / ``<=`` on a delay figure), in s; none: ``drain_s``."""
    bounds = [slo.threshold / 1000.0 for slo in slos if slo.op in ("<", "<=") and _DELAY.fullmatch(slo.metric)]
    return max(bounds) if bounds else drain_s


def p95_bounds_ms(slos: Sequence[Slo]) -> list[float]:
    """Thresholds (ms) a live p95 above which breaks an SLO: on pNN with NN >= 95, or on max_delay_ms."""
    out = []
    for slo in slos:
        if slo.op not in ("<", "<="):
            continue
        match = _PERCENTILE.fullmatch(slo.metric)
        if slo.metric == "max_delay_ms" or (match is not None and float(match.group(1)) >= 95):
            out.append(slo.threshold)
    return out


@dataclass
class EscalationWatch:
    """Feed it every progress snapshot of the escalation run; :meth:`observe` says when to stop it."""

    stages: Sequence[StageSpec]
    slos: Sequence[Slo]
    drain_s: float
    sustain_s: float = SUSTAIN_S
    skew_s: float = SKEW_S
    _since: dict[str, float] = field(default_factory=dict)  # breach kind -> run second it began
    stopped: str | None = None  # the reason given, once

    def stage_at(self, elapsed_s: float) -> int:
        """The index of the stage running ``elapsed_s`` after T0 (the last one past the end)."""
        for index, stage in enumerate(self.stages):
            if elapsed_s < stage.end_s:
                return index
        return len(self.stages) - 1

    def scheduled(self, elapsed_s: float) -> float:
        """Messages the fleet's schedule has due by ``elapsed_s`` after T0."""
        return sum(
            stage.devices * stage.rate * min(max(elapsed_s - stage.start_s, 0.0), stage.duration_s)
            for stage in self.stages
        )

    def breaches(self, snapshot: Mapping[str, Any]) -> dict[str, str]:
        """What in ``snapshot`` looks broken right now (kind -> why), sustained or not."""
        elapsed = snapshot.get("elapsed_s")
        if snapshot.get("phase") != "publishing" or not isinstance(elapsed, (int, float)):
            return {}
        stage = self.stages[self.stage_at(float(elapsed))]
        offered = stage.devices * stage.rate
        sent, received = int(snapshot.get("sent") or 0), int(snapshot.get("received") or 0)
        out: dict[str, str] = {}
        delay_s = allowed_delay_s(self.slos, self.drain_s)
        backlog_max = offered * (delay_s + self.skew_s)
        if sent - received > backlog_max:
            out["backlog"] = (
                f"{sent - received:,} messages sent but not received, over the {backlog_max:,.0f} the delay "
                f"SLOs allow in flight at {offered:,.0f} msg/s"
            )
        p95 = snapshot.get("p95_delay_ms")
        bounds = p95_bounds_ms(self.slos)
        if isinstance(p95, (int, float)) and bounds and p95 > min(bounds):
            out["delay"] = f"the sinks' p95 so far {p95:.1f} ms is over {min(bounds):g} ms"
        behind = self.scheduled(float(elapsed)) - sent
        if behind > offered * self.skew_s:
            out["generator"] = f"the fleet is {behind:,.0f} messages behind its schedule at {offered:,.0f} msg/s"
        return out

    def observe(self, snapshot: Mapping[str, Any]) -> str | None:
        """The reason to stop the run now (given once), or None: a breach has lasted ``sustain_s``."""
        if self.stopped is not None:
            return None
        elapsed = snapshot.get("elapsed_s")
        found = self.breaches(snapshot)
        if not isinstance(elapsed, (int, float)):
            return None
        for kind in list(self._since):
            if kind not in found:
                del self._since[kind]  # a breach must be uninterrupted
        for kind, why in found.items():
            began = self._since.setdefault(kind, float(elapsed))
            if float(elapsed) - began >= self.sustain_s:
                index = self.stage_at(float(elapsed))
                devices = self.stages[index].devices
                self.stopped = f"stage {index + 1} ({devices:,} devices) live: {why} for {self.sustain_s:g}s"
                return self.stopped
        return None
