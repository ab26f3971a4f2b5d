"""Stages of a run and the due-time grid every per-stage and per-window figure is accounted on (issue 16).

A run is a sequence of stages.  Stage ``i`` occupies the due-time interval
``[start_s, start_s + duration_s)`` after T0; devices ``0 .. devices-1`` (global
device numbers) publish in it at ``rate`` messages per second each.  A device
that a stage adds connects during that stage's ramp, the ``ramp_up_s`` seconds
*before* the stage starts (for the first stage: before T0, as a run without
stages does), so every stage's load is whole from its first instant; a device
a stage removes sends what fell due before the stage starts, then disconnects.
Each stage's due times start afresh at its start (phase, arrivals).

Every message is accounted by its due time on one grid: slot
``(intended_at_us - t0_us) // due_slot_us``.  Workers count sent messages by
slot, sinks count received messages and delays by slot; a stage or a window is
a run of whole slots, so its figures are exact merges and sum to the run's.
Pure: no locust, no gevent.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_iotperf.durations import format_duration, parse_duration, window_label

__all__ = [
    "Stage",
    "StageSpec",
    "auto_ramp_s",
    "device_life",
    "due_offset_us",
    "due_slot_for",
    "parse_stages",
    "plan_stages",
    "single_stage",
    "starts_dormant",
    "timeline_slot_for",
]

#: Finest grid the due-time accounting uses: finer boundaries are refused (histograms per slot).
MIN_DUE_SLOT_MS = 100
#: Most slots a run keeps (per slot: a histogram in every sink, a count in every worker).
MAX_DUE_SLOTS = 20_000

#: The automatic ramp: devices connect at most this many per second, over at least AUTO_RAMP_MIN_S.
#: (A floor, not a fixed second: ten devices need no second to connect, and every run pays the ramp.)
AUTO_RAMP_DEVICES_PER_S = 500.0
AUTO_RAMP_MIN_S = 0.25

_STAGE_TEXT = re.compile(r"^\s*(\d+)\s*(?:x\s*([0-9.]+))?\s*@\s*(\S+)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Stage:
    """One stage of ``iot_perf.run(stages=[...])``: ``Stage("2m", devices=3000, rate_per_device=2.0)``.

    ``duration`` is a duration (``"1m"``, ``"90s"``) or seconds; ``rate_per_device``
    defaults to the run's rate; ``ramp_up`` (duration) is how long before the stage
    its added devices connect (default: the run's ramp-up for the first stage; for a
    later one the added devices' share of the auto ramp-up / ``--iot-connect-rate``).
    """

    duration: str | float
    devices: int
    rate_per_device: float | None = None
    ramp_up: str | float | None = None

    def __str__(self) -> str:
        rate = "" if self.rate_per_device is None else f"x{self.rate_per_device:g}"
        duration = self.duration if isinstance(self.duration, str) else format_duration(float(self.duration))
        return f"{self.devices}{rate}@{duration}"


@dataclass(frozen=True)
class StageSpec:
    """A resolved stage: offsets from T0 in seconds, every default applied.  Travels in the FleetSpec."""

    start_s: float
    duration_s: float
    devices: int
    rate: float
    ramp_up_s: float

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    def label(self) -> str:
        """``[1m,3m) 3000 devices x 1/s``: how reports name a stage."""
        return f"{window_label(self.start_s, self.end_s)} {self.devices} devices x {self.rate:g}/s"

    def to_dict(self) -> dict[str, Any]:
        return {
            "start_s": self.start_s,
            "duration_s": self.duration_s,
            "devices": self.devices,
            "rate": self.rate,
            "ramp_up_s": self.ramp_up_s,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageSpec:
        return cls(
            float(data["start_s"]),
            float(data["duration_s"]),
            int(data["devices"]),
            float(data["rate"]),
            float(data["ramp_up_s"]),
        )


def parse_stages(text: str) -> tuple[Stage, ...]:
    """``"1000@1m,3000@2m,3000x2@1m"``: devices@duration, ``xR`` for a rate per device.

    Raises:
        ValueError: naming the part that is not ``N@D`` or ``NxR@D`` (N >= 1, D > 0, R > 0).
    """
    stages = []
    for part in text.split(","):
        match = _STAGE_TEXT.match(part)
        if match is None:
            raise ValueError(
                f"stage {part.strip()!r} is not devices@duration or devices x rate@duration "
                "(e.g. 1000@1m,3000@2m,3000x2@1m)"
            )
        devices, rate, duration = match.groups()
        try:
            if not parse_duration(duration) > 0:
                raise ValueError("a stage's duration must be longer than 0")
            rate_value = float(rate) if rate is not None else None
            if rate_value is not None and not (math.isfinite(rate_value) and rate_value > 0):
                raise ValueError("a stage's rate per device must be a number > 0")
            if int(devices) < 1:
                raise ValueError("a stage needs at least 1 device")
        except ValueError as exc:
            raise ValueError(f"stage {part.strip()!r}: {exc}") from None
        stages.append(Stage(duration, int(devices), rate_value))
    return tuple(stages)


def _seconds(value: str | float | None, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a duration, not {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"{what} must be a non-negative duration, not {value!r}")
        return seconds
    if isinstance(value, str):
        return parse_duration(value)
    raise ValueError(f"{what} must be a duration such as '1m' or seconds, not {value!r}")


def plan_stages(
    stages: Sequence[Stage],
    *,
    rate: float,
    first_ramp_up_s: float,
    connect_rate: float | None = None,
) -> tuple[StageSpec, ...]:
    """Resolve the stages of a run: start offsets, rates and ramps.

    Raises:
        ValueError: what is wrong, naming the stage (``stage 2 (3000@2m): ...``).
    """
    if not stages:
        raise ValueError("stages must name at least one stage")
    planned: list[StageSpec] = []
    start = 0.0
    previous_devices = 0
    previous_duration = math.inf
    for index, stage in enumerate(stages, 1):
        where = f"stage {index} ({stage})"
        if not isinstance(stage, Stage):
            raise ValueError(f"stage {index}: expected pytest_iotperf.Stage, got {stage!r}")
        if isinstance(stage.devices, bool) or not isinstance(stage.devices, int) or stage.devices < 1:
            raise ValueError(f"{where}: devices must be a whole number >= 1, not {stage.devices!r}")
        duration = _seconds(stage.duration, f"{where}: duration")
        if duration is None or duration <= 0:
            raise ValueError(f"{where}: duration must be longer than 0")
        stage_rate = rate if stage.rate_per_device is None else stage.rate_per_device
        if isinstance(stage_rate, bool) or not isinstance(stage_rate, (int, float)) or not stage_rate > 0:
            raise ValueError(f"{where}: rate_per_device must be a number > 0, not {stage.rate_per_device!r}")
        ramp = _seconds(stage.ramp_up, f"{where}: ramp_up")
        if index == 1:
            ramp = first_ramp_up_s if ramp is None else ramp
        else:
            added = max(0, stage.devices - previous_devices)
            if ramp is None:
                ramp = min(auto_ramp_s(added, connect_rate), previous_duration) if added else 0.0
            elif ramp > previous_duration:
                raise ValueError(
                    f"{where}: ramp_up {format_duration(ramp)} is longer than the stage before it "
                    f"({format_duration(previous_duration)}): its devices connect during that stage"
                )
        planned.append(StageSpec(start, duration, stage.devices, float(stage_rate), float(ramp)))
        start += duration
        previous_devices = stage.devices
        previous_duration = duration
    return tuple(planned)


def auto_ramp_s(devices: int, connect_rate: float | None = None) -> float:
    """The default ramp for ``devices`` new connections: 1 s per 500 (or per ``connect_rate``), >= 0.25 s."""
    automatic = max(AUTO_RAMP_MIN_S, devices / AUTO_RAMP_DEVICES_PER_S)
    return automatic if connect_rate is None else max(automatic, devices / connect_rate)


def single_stage(devices: int, rate: float, duration_s: float, ramp_up_s: float) -> tuple[StageSpec, ...]:
    """The one stage of a run without stages."""
    return (StageSpec(0.0, duration_s, devices, rate, ramp_up_s),)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def timeline_slot_for(duration_s: float) -> int:
    """Width of a timeline slot (s): per second for short runs, coarser for long ones; due slots are at most this."""
    if duration_s <= 600:
        return 1
    if duration_s <= 3600:
        return 10
    return 60


def due_slot_for(boundaries_s: Iterable[float], duration_s: float, default_s: float) -> float:
    """The due-time grid (seconds) that every boundary falls on: stage starts and window lengths.

    The largest common divisor (in whole ms) of the boundaries, at most ``default_s``
    (the timeline's slot). Raises ValueError when it would be finer than
    :data:`MIN_DUE_SLOT_MS` or give a run more than :data:`MAX_DUE_SLOTS` slots.
    """
    grain = _ms(default_s)
    for boundary in boundaries_s:
        ms = _ms(boundary)
        if ms > 0:
            grain = math.gcd(grain, ms)
    if grain < MIN_DUE_SLOT_MS:
        raise ValueError(
            f"stage and window boundaries must fall on a {MIN_DUE_SLOT_MS} ms grid "
            f"(they share only a {grain} ms one)"
        )
    if duration_s * 1000 / grain > MAX_DUE_SLOTS:
        raise ValueError(
            f"stage and window boundaries share a {format_duration(grain / 1000)} grid: "
            f"{math.ceil(duration_s * 1000 / grain)} slots over {format_duration(duration_s)} is more than "
            f"{MAX_DUE_SLOTS}; use rounder stage durations or windows"
        )
    return grain / 1000


def due_offset_us(offset_s: float) -> int:
    """A due offset from T0 in whole µs, rounded: ``intended_at_us = t0_us + due_offset_us(offset)``.

    Rounded (not truncated) so a due time that falls exactly on a slot boundary (aligned
    arrivals, stage starts) lands in the slot it starts, in every process.
    """
    return round(offset_s * 1_000_000)


def starts_dormant(index: int, plan: Sequence[StageSpec]) -> bool:
    """Device ``index`` (its place in the fleet) takes no part in the first stage: it connects at a later ramp."""
    return index >= plan[0].devices


def device_life(index: int, plan: Sequence[StageSpec]) -> tuple[tuple[float, bool, int], ...]:
    """When device ``index`` joins and leaves the run after T0: ``(offset_s, joins, stage index)``, in order.

    A stage that adds it: it joins during that stage's ramp, the added devices spread evenly
    over it (``start - ramp + ramp * (index - before) / added``).  A stage that drops it: it
    leaves at the stage's start (once what fell due before is sent).  Stage 0's devices
    connect before T0 (not listed).
    """
    events: list[tuple[float, bool, int]] = []
    for position in range(1, len(plan)):
        before, stage = plan[position - 1], plan[position]
        was, stays = index < before.devices, index < stage.devices
        if stays and not was:
            added = stage.devices - before.devices
            events.append(
                (stage.start_s - stage.ramp_up_s + stage.ramp_up_s * (index - before.devices) / added, True, position)
            )
        elif was and not stays:
            events.append((stage.start_s, False, position))
    return tuple(events)
