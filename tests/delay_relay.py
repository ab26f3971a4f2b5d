"""A relay SUT that adds a delay only to the messages due in a known interval after T0.

``relay.MqttRelay`` holding each message ``delay_s`` (0 by default), except the
messages whose header says they were due in ``[t0 + from_s, t0 + until_s)``:
those are held ``slow_s``.  The interval is by due time (the header's
``intended_at``, epoch µs), so which messages are slowed does not depend on
when they happened to arrive.  T0 is given once the run announced it
(:meth:`DelayRelay.slow_during`); until then nothing is slowed.

Independent of the code under test on purpose: nothing is imported from
``pytest_iotperf``.
"""

from __future__ import annotations

import json
from typing import Any

import paho.mqtt.client as mqtt
from relay import MqttRelay


class DelayRelay(MqttRelay):
    """Input filter -> (``slow_s`` for messages due in the interval, else ``delay_s``) -> output topic."""

    def __init__(self, host: str, port: int, **kwargs: Any) -> None:
        super().__init__(host, port, **kwargs)
        self._base_hold_s = self.hold_s
        self._slow: tuple[int, int, float] | None = None  # (from, until) epoch µs of intended_at, hold

    def slow_during(self, t0: float, from_s: float, until_s: float, slow_s: float) -> None:
        """Hold ``slow_s`` every message due in ``[t0 + from_s, t0 + until_s)`` (``t0``: epoch s)."""
        t0_us = round(t0 * 1_000_000)
        self._slow = (t0_us + round(from_s * 1_000_000), t0_us + round(until_s * 1_000_000), slow_s)

    def _identify(self, message: mqtt.MQTTMessage) -> tuple[str, str, int] | None:
        # Called on the network thread just before the base reads ``hold_s`` for this message
        # (relay_base.HoldingRelay._on_message): set the hold this message gets.
        parsed = super()._identify(message)
        self.hold_s = self._base_hold_s
        slow = self._slow
        if parsed is not None and slow is not None:
            intended_at = json.loads(bytes(message.payload)).get("intended_at")
            if isinstance(intended_at, int) and slow[0] <= intended_at < slow[1]:
                self.hold_s = slow[2]
        return parsed
