"""The Locust user class: one user is one device."""

from __future__ import annotations

from locust import User, constant, task

from pytest_iotperf.fleet.device import Device
from pytest_iotperf.fleet.worker_fleet import fleet_of


class DeviceUser(User):
    """Connects during the ramp, is published for on its schedule once the master says go, then idles.

    The user owns its device's connection; the publishing itself is driven by
    the worker's one scheduler (see ``WorkerFleet._run_schedules``).  The task
    returns after the schedule, so Locust can stop the user gracefully during
    ``wait()``; the device disconnects in ``on_stop``.
    """

    wait_time = constant(1.0)
    device: Device | None = None

    def on_start(self) -> None:
        fleet = fleet_of(self.environment)
        number = fleet.next_number()  # global, from the master; None: a lost worker's user re-dispatched here
        if number is None:
            return  # it idles: no device, no identity, no connection
        self.device = fleet.new_device(number)
        if fleet.starts_dormant(number):
            # A later stage's device: no socket until that stage's ramp (the worker's scheduler calls rejoin).
            fleet.dormant += 1
            fleet.device_settled()
            return
        self.device.connect()

    @task
    def live(self) -> None:
        """Stay connected while the worker's scheduler publishes this device's messages."""
        device = self.device
        if device is None or device.finished:
            return
        fleet_of(self.environment).schedules_done.wait()

    def on_stop(self) -> None:
        if self.device is not None:
            self.device.close()
