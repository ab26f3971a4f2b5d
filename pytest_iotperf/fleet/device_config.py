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

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from pytest_iotperf.connection import Connection
from pytest_iotperf.message_spec import MessageSpec

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
    # After an unexpected disconnect: reconnect (backoff capped at reconnect_max_s), keep up to
    # offline_queue due messages meanwhile; clean_session False keeps the broker's session.
    reconnect: bool = True
    reconnect_max_s: float = 30.0
    offline_queue: int = 1000
    clean_session: bool = True
    message: MessageSpec = field(default_factory=MessageSpec)  # the payload and where the header goes
    topic_alias: bool = False  # MQTT 5: the topic once per connection, then its alias

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
            reconnect=spec.reconnect,
            reconnect_max_s=spec.reconnect_max_s,
            offline_queue=spec.offline_queue,
            clean_session=spec.clean_session,
            message=spec.message,
            topic_alias=spec.topic_alias,
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

    def now(self) -> float:
        """This worker's clock, the one the schedule runs on (epoch seconds)."""
        ...


class RunState:
    """The fleet's side of :class:`RunView`: one per worker, written by the fleet only.

    Slots: the scheduler reads both on every message.
    """

    __slots__ = ("aborted", "record_shift_s", "test_clock_shift_s")

    def __init__(self, test_clock_shift_s: float = 0.0) -> None:
        self.record_shift_s = 0.0
        self.aborted = False
        self.test_clock_shift_s = test_clock_shift_s  # tests only: a worker whose clock is off

    def now(self) -> float:
        return time.time() + self.test_clock_shift_s


class DeviceEvents(Protocol):
    """What a device reports to whoever counts (the worker's fleet)."""

    def device_connected(self, device: Device, seconds: float) -> None:
        """Connected after ``seconds`` (retries included)."""

    def device_failed(self, device: Device, error: str) -> None:
        """Gave up connecting within the connect budget."""

    def connect_retried(self, error: str) -> None:
        """One connect attempt failed; the device retries."""

    def connect_attempted(self) -> None:
        """A connect attempt goes out now (the first, a retry, a reconnect or a renewal), past the rate limit."""

    def token_renewed(self, device: Device) -> None:
        """Hung up and connected again with fresh credentials before they expired (not a disconnect)."""

    def device_disconnected(self, device: Device, reason: str) -> None:
        """Lost its connection unexpectedly (a device closing it itself is not reported).

        ``device.offline_since`` is set when this opens an offline spell (its schedule still runs).
        """

    def device_reconnected(self, device: Device, offline_s: float) -> None:
        """Connected again (CONNACK) ``offline_s`` after the disconnect."""

    def device_rejoined(self, device: Device, seconds: float) -> None:
        """Connected again for a stage that takes it back, after leaving an earlier one (stages)."""

    def rejoin_failed(self, device: Device, error: str) -> None:
        """Could not connect again for a stage that takes it back, within the connect budget."""

    def device_left(self, device: Device) -> None:
        """Hung up cleanly because a stage drops it (stages): planned, not a disconnect."""

    def device_gave_up(self, device: Device, offline_s: float) -> None:
        """Its schedule ended while offline for ``offline_s``: no more tries (its offline queue stays unsent)."""

    def message_dropped_offline(self) -> None:
        """A message fell due while offline and the offline queue was full: dropped, never sent."""

    def message_resent(self) -> None:
        """An unacknowledged QoS 1 message was sent again after a reconnect."""

    def message_sent(self, due_us: int, sent_us: int) -> None:
        """Published a message due at ``due_us``, at ``sent_us`` (both on the master's clock when corrected)."""

    def queued_message_sent(self, due_us: int, sent_us: int) -> None:
        """Published a message from the offline queue after a reconnect (late for the outage, not the generator)."""

    def publish_failed(self, reason: str) -> None:
        """A message due could not be published."""

    def publish_refused(self, reason: str) -> None:
        """MQTT 5: the broker's PUBACK refused a message (``"0x97 quota exceeded"``); it was sent all the same."""

    def device_finished(self, device: Device) -> None:
        """Its schedule is over (or was aborted)."""
