"""What stands between a device and its worker's fleet: a config value in, a read-only run view, events out.

A :class:`~pytest_iotperf.fleet.device.Device` knows nothing of the
``WorkerFleet``: it is given a :class:`DeviceConfig` (its schedule, topic,
QoS, payload size, connect budget, connection), reads the run's clock shift
and abort flag through a :class:`RunView`, and reports what happens to it
through :class:`DeviceEvents`.  So the schedule (later: rates per stage) and
reconnects have one owner, the device, and the fleet only counts.

Pure: imports neither locust nor gevent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pytest_iotperf.connection import Connection

if TYPE_CHECKING:
    from pytest_iotperf.fleet.device import Device
    from pytest_iotperf.fleet.spec import FleetSpec

__all__ = ["DeviceConfig", "DeviceEvents", "RunState", "RunView"]


@dataclass(frozen=True)
class DeviceConfig:
    """What every device of a run is told, once (shared by all devices of a worker)."""

    run_id: str
    rate: float  # messages per second per device
    duration_s: float  # the schedule ends this long after T0
    topic_template: str
    payload_bytes: int
    connect_budget_s: float  # how long a device keeps retrying a refused connect
    connection: Connection  # broker, TLS, QoS, keep-alive

    @classmethod
    def from_spec(cls, spec: FleetSpec) -> DeviceConfig:
        return cls(
            run_id=spec.run_id,
            rate=spec.rate,
            duration_s=spec.duration_s,
            topic_template=spec.topic_template,
            payload_bytes=spec.payload_bytes,
            connect_budget_s=spec.connect_budget_s,
            connection=spec.connection,
        )

    @property
    def qos(self) -> int:
        return self.connection.qos

    @property
    def keepalive_s(self) -> int:
        return self.connection.keepalive_s

    def topic_for(self, device_id: str) -> str:
        return self.topic_template.format(device_id=device_id, run_id=self.run_id)


class RunView(Protocol):
    """What a device reads about the run while its schedule runs (it never writes it)."""

    @property
    def record_shift_s(self) -> float:
        """Worker clock -> master clock: subtracted from every recorded time (0 without clock correction)."""
        ...

    @property
    def aborted(self) -> bool:
        """The run was aborted: publish nothing more."""
        ...


class RunState:
    """The fleet's side of :class:`RunView`: one per worker, written by the fleet only.

    Slots: the scheduler reads both on every message.
    """

    __slots__ = ("aborted", "record_shift_s")

    def __init__(self) -> None:
        self.record_shift_s = 0.0
        self.aborted = False


class DeviceEvents(Protocol):
    """What a device reports to whoever counts (the worker's fleet)."""

    def device_connected(self, device: Device, seconds: float) -> None:
        """Connected after ``seconds`` (retries included)."""

    def device_failed(self, device: Device, error: str) -> None:
        """Gave up connecting within the connect budget."""

    def connect_retried(self, error: str) -> None:
        """One connect attempt failed; the device retries."""

    def device_disconnected(self, device: Device, reason: str) -> None:
        """Lost its connection (or closed it after its schedule)."""

    def message_sent(self, due_us: int, sent_us: int) -> None:
        """Published a message due at ``due_us``, at ``sent_us`` (both on the master's clock when corrected)."""

    def publish_failed(self, reason: str) -> None:
        """A message due could not be published."""

    def device_finished(self, device: Device) -> None:
        """Its schedule is over (or was aborted)."""
