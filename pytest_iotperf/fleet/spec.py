"""What a fleet run needs to know, shared by the pytest side, the master and the workers.

Pure data: this module imports neither locust nor gevent, so the pytest
process can build a spec and the Locust processes can read it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pytest_iotperf.connection import Connection
from pytest_iotperf.fleet.identity_spec import IdentitySpec
from pytest_iotperf.message_spec import MessageSpec
from pytest_iotperf.stage_plan import StageSpec, single_stage

#: Golden-ratio step used to spread device phases evenly over one period
#: without knowing how many devices there are.
_GOLDEN = 0.6180339887498949


@dataclass(frozen=True)
class FleetSpec:
    """One run of the fleet. Travels as JSON to the master and on to every worker."""

    run_id: str
    devices: int
    rate: float  # messages per second per device
    duration_s: float
    ramp_up_s: float
    connection: Connection  # broker, TLS, user name, QoS; the password travels in the environment, never in a spec
    payload_bytes: int = 0
    topic_template: str = "devices/{device_id}/telemetry"
    expect_workers: int = 1
    timeline_slot_s: int = 1
    connect_budget_s: float = 20.0  # per device: how long it keeps retrying a refused connect
    clock_correction: bool = False  # shift each worker's times by its measured offset to the master
    # Surviving outages (issue 13): reconnect with jittered exponential backoff capped at reconnect_max_s,
    # keep up to offline_queue due messages while offline, and connect with a clean or persistent session.
    reconnect: bool = True
    reconnect_max_s: float = 30.0
    offline_queue: int = 1000
    clean_session: bool = True
    # A device offline longer than this counts in the workers' ``offline_over_budget``; the parent aborts
    # the run once more than half the fleet is (abort.py).
    outage_budget_s: float = 60.0
    # Issue 14: device names, numbers and where credentials come from (no secret: see identity_spec.py).
    identity: IdentitySpec = field(default_factory=IdentitySpec)
    # New connections per second for the whole fleet (each worker takes its share); None: as fast as they come.
    connect_rate: float | None = None
    # Issue 15: the payload (fixed, template or callable) and where the measurement header travels.
    message: MessageSpec = field(default_factory=MessageSpec)
    # MQTT 5: send the topic once per connection, then a topic alias.
    topic_alias: bool = False
    # Issue 16: when messages fall due (fleet/arrival.py): spread, aligned or poisson (seeded by message.seed).
    arrival: str = "spread"
    # Issue 16: the stages (stage_plan.py); empty: one stage of ``devices`` x ``rate`` for ``duration_s``.
    # With stages, ``devices`` is the most any stage has, ``duration_s`` their sum, ``rate`` the first's.
    stages: tuple[StageSpec, ...] = ()
    # The due-time grid of the by-slot accounting (stage_plan.due_slot_for); 0: the timeline's slot.
    due_slot_s: float = 0.0

    @property
    def stage_plan(self) -> tuple[StageSpec, ...]:
        """The stages, a run without any being one stage."""
        return self.stages or single_stage(self.devices, self.rate, self.duration_s, self.ramp_up_s)

    @property
    def due_slot_us(self) -> int:
        return round((self.due_slot_s or float(self.timeline_slot_s)) * 1_000_000)

    @property
    def qos(self) -> int:
        return self.connection.qos

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the form sent to the workers); :meth:`from_dict` reads it back."""
        data = asdict(self)
        data["connection"] = self.connection.to_dict()
        data["identity"] = self.identity.to_dict()
        data["message"] = self.message.to_dict()
        data["stages"] = [stage.to_dict() for stage in self.stages]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FleetSpec:
        identity = IdentitySpec.from_dict(data["identity"]) if data.get("identity") is not None else IdentitySpec()
        message = MessageSpec.from_dict(data["message"]) if data.get("message") is not None else MessageSpec()
        stages = tuple(StageSpec.from_dict(stage) for stage in data.get("stages") or ())
        return cls(
            **{
                **data,
                "connection": Connection.from_dict(data["connection"]),
                "identity": identity,
                "message": message,
                "stages": stages,
            }
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> FleetSpec:
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls, path: Path) -> FleetSpec:
        return cls.from_json(path.read_text())

    def topic_for(self, device_id: str) -> str:
        return self.topic_template.format(device_id=device_id, run_id=self.run_id)


def phase_of(n: int, rate: float) -> float:
    """Offset of device n's schedule within one period, spread evenly across device numbers.

    The golden-ratio sequence spreads any run of consecutive numbers almost
    uniformly, so the fleet publishes at a steady aggregate rate rather than in
    bursts, whichever worker each device lands on.
    """
    return (((n + 0.5) * _GOLDEN) % 1.0) / rate


def scheduled_count(phase_s: float, rate: float, duration_s: float) -> int:
    """Messages due in ``[0, duration)``: those with ``phase + k / rate < duration``."""
    if phase_s >= duration_s:
        return 0
    return math.ceil((duration_s - phase_s) * rate - 1e-9)

