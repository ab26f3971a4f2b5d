"""Per-stage and per-window figures of a run, from its due-time slots (issue 16; pure: no I/O, no pytest).

Every message is accounted in one due slot, ``(intended_at_us - t0_us) //
due_slot_us`` (``stage_plan``): the fleet counts what was sent and scheduled
per slot, the sinks count what arrived (distinct, new) and its delay
histogram per slot.  A window ``[start_s, end_s)`` of due time from T0 is the
merge of the slots that start in it: counts are summed and histograms merged,
so a window's percentiles are exact (never averaged), and windows (or stages)
that tile the run sum to the run's sent/received/lost.

A slot outside ``[0, duration)`` (a message due before T0, or after an early
stop) belongs to the first / last window that reaches the run's edge, so the
tiling stays exact.  ``received`` here counts every distinct message the sinks
saw, also those the ledger calls unexpected (seq at or above its device's sent
count): the per-slot figures sum to the run's exactly when ``unexpected == 0``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from pytest_iotperf.durations import window_label
from pytest_iotperf.metrics import DelayHistogram
from pytest_iotperf.stage_plan import StageSpec

__all__ = ["DueSlots", "StageFigures", "WindowFigures"]


def _ms(histogram: DelayHistogram, q: float) -> float:
    return histogram.percentile(q) / 1000.0 if histogram.count else math.nan


@dataclass(frozen=True, kw_only=True)
class WindowFigures:
    """A run's figures over ``[start_s, end_s)`` of due time from T0 (delays in ms, loss a fraction)."""

    start_s: float
    end_s: float
    label: str  # a window: "[3m,4m)"; a stage: "[1m,3m) 3000 devices x 1/s"
    sent: int
    received: int
    lost: int  # sent - received (exact; negative only when unexpected messages arrived)
    loss: float
    p50_delay_ms: float
    p90_delay_ms: float
    p95_delay_ms: float
    p99_delay_ms: float
    p999_delay_ms: float
    max_delay_ms: float
    mean_delay_ms: float
    throughput_per_s: float  # received per second of the window (its part within the run)
    scheduled: int
    delay_histogram: DelayHistogram = field(default_factory=DelayHistogram, repr=False, compare=False)

    def percentile(self, q: float) -> float:
        """Delay percentile ``q`` (0..100) in ms from the window's merged histogram; NaN with no data."""
        return _ms(self.delay_histogram, q)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, DelayHistogram):
                continue  # JSON stays small: the figures, not the buckets
            out[item.name] = None if isinstance(value, float) and not math.isfinite(value) else value
        return out


@dataclass(frozen=True, kw_only=True)
class StageFigures(WindowFigures):
    """One stage's figures (``result.stages[i]``): a window over the stage, plus its load and lateness."""

    devices: int
    rate: float
    duration_s: float
    lateness_p50_ms: float
    lateness_p99_ms: float

    def summary_text(self) -> str:
        """One line for the terminal summary and junit: ``[0s,1m) 1000 devices x 1/s: sent 60,000, ...``."""

        def ms(value: float) -> str:
            return "-" if math.isnan(value) else f"{value:.1f} ms"

        loss = f"{self.loss * 100:.3f}%"
        return (
            f"{self.label}: sent {self.sent:,}, received {self.received:,}, lost {self.lost:,} ({loss}), "
            f"p95 {ms(self.p95_delay_ms)}, p99 {ms(self.p99_delay_ms)}, lateness p99 {ms(self.lateness_p99_ms)}"
        )


@dataclass
class DueSlots:
    """A run's per-slot counts and delays; :meth:`window` merges any whole-slot interval."""

    slot_us: int
    duration_s: float
    sent: dict[int, int] = field(default_factory=dict)
    scheduled: dict[int, int] = field(default_factory=dict)
    delay: dict[int, DelayHistogram] = field(default_factory=dict)

    @property
    def slot_s(self) -> float:
        return self.slot_us / 1_000_000

    @classmethod
    def from_reports(
        cls, fleet: Mapping[str, Any], sink: Mapping[str, Any], slot_s: float, duration_s: float
    ) -> DueSlots:
        """From the fleet report's ``sent_by_due_slot`` / ``scheduled_by_due_slot`` and the sink's ``by_due``.

        A missing field (an older or failed process) is empty.
        """
        return cls(
            slot_us=round(slot_s * 1_000_000),
            duration_s=duration_s,
            sent={int(k): int(v) for k, v in (fleet.get("sent_by_due_slot") or {}).items()},
            scheduled={int(k): int(v) for k, v in (fleet.get("scheduled_by_due_slot") or {}).items()},
            delay={int(k): DelayHistogram.from_dict(v["delay"]) for k, v in (sink.get("by_due") or {}).items()},
        )

    def _slots_in(self, start_s: float, end_s: float) -> list[int]:
        """The slots of ``[start, end)``: those that start in it, and those past the run's edge it reaches.

        Looked up by index (a window's own slots, then the few outside the run), so judging every
        window of a long run stays linear in its slots.
        """
        start_us, end_us = round(start_s * 1_000_000), round(end_s * 1_000_000)
        duration_us = round(self.duration_s * 1_000_000)
        slot_us = self.slot_us
        slots = list(range(-(-start_us // slot_us), -(-end_us // slot_us)))  # slot * slot_us in [start, end)
        before = start_us <= 0 < end_us  # messages due before T0 count in the first window
        after = start_us < duration_us <= end_us  # those due after the run's end (an early stop) in the last
        if before or after:
            outside = {slot for counts in (self.sent, self.scheduled, self.delay) for slot in counts}
            for slot in sorted(outside):
                at = slot * slot_us
                if (before and at < 0) or (after and at >= duration_us and not start_us <= at < end_us):
                    slots.append(slot)
        return slots

    def window(self, start_s: float, end_s: float) -> WindowFigures:
        """The figures of ``[start_s, end_s)`` (seconds of due time from T0)."""
        return WindowFigures(
            start_s=start_s, end_s=end_s, label=window_label(start_s, end_s), **self._figures(start_s, end_s)
        )

    def stage(self, stage: StageSpec, lateness: DelayHistogram | None) -> StageFigures:
        """The figures of one stage (its window), with its fleet lateness."""
        late = lateness or DelayHistogram()
        return StageFigures(
            start_s=stage.start_s,
            end_s=stage.end_s,
            label=stage.label(),
            devices=stage.devices,
            rate=stage.rate,
            duration_s=stage.duration_s,
            lateness_p50_ms=_ms(late, 50),
            lateness_p99_ms=_ms(late, 99),
            **self._figures(stage.start_s, stage.end_s),
        )

    def _figures(self, start_s: float, end_s: float) -> dict[str, Any]:
        slots = self._slots_in(start_s, end_s)
        sent = sum(self.sent.get(slot, 0) for slot in slots)
        scheduled = sum(self.scheduled.get(slot, 0) for slot in slots)
        delay = DelayHistogram()
        for slot in slots:
            histogram = self.delay.get(slot)
            if histogram is not None:
                delay.merge(histogram)
        received = delay.count
        seconds = min(end_s, self.duration_s) - start_s
        return {
            "sent": sent,
            "received": received,
            "lost": sent - received,
            "loss": (sent - received) / sent if sent else 0.0,
            "p50_delay_ms": _ms(delay, 50),
            "p90_delay_ms": _ms(delay, 90),
            "p95_delay_ms": _ms(delay, 95),
            "p99_delay_ms": _ms(delay, 99),
            "p999_delay_ms": _ms(delay, 99.9),
            "max_delay_ms": delay.max_us / 1000.0 if delay.max_us is not None else math.nan,
            "mean_delay_ms": delay.mean_us / 1000.0 if delay.count else math.nan,
            "throughput_per_s": received / seconds if seconds > 0 else 0.0,
            "scheduled": scheduled,
            "delay_histogram": delay,
        }

    def stages(self, plan: Sequence[StageSpec], lateness: Sequence[DelayHistogram]) -> list[StageFigures]:
        """Every stage's figures; ``lateness[i]`` is stage i's fleet lateness (missing: no data)."""
        return [self.stage(stage, lateness[i] if i < len(lateness) else None) for i, stage in enumerate(plan)]
