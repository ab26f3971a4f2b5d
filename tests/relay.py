"""A small MQTT relay that stands in for a system under test in integration tests.

It subscribes to an input filter (``in/+/telemetry``), and republishes every
message to an output topic (``out/<device_id>/telemetry``) a fixed delay after
it received it.  Messages whose ``(device_id, seq)`` satisfy a ``drop``
predicate are never forwarded.  It keeps an exact record of what it saw,
dropped and forwarded, so a test can compare the plugin's figures with ground
truth that does not come from the plugin.

Independent of the code under test on purpose: payloads are read with
``json`` directly (``run_id``, ``device_id``, ``seq``), nothing is imported from
``pytest_iotperf``.

Threads (``relay_base.HoldingRelay``, which owns the MQTT side and the
accounting): paho's network loop (``loop_start``) receives, and one scheduler
thread holds a heap of messages ordered by due time and publishes each when it
is due (``Condition.wait`` with the time left until the earliest one), so the
added delay does not depend on how many messages are waiting.  ``stop()``
disconnects and joins both.

    with MqttRelay("127.0.0.1", port, input_filter="in/+/telemetry",
                   output_template="out/{device_id}/telemetry", delay_s=0.05,
                   drop=lambda device_id, seq: seq % 10 == 3) as relay:
        ...
    relay.stats().dropped
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

import paho.mqtt.client as mqtt
from relay_base import DropPredicate, Held, HoldingRelay, HoldingStats, Pair, never

__all__ = ["DropPredicate", "MqttRelay", "Pair", "RelayStats", "never"]


@dataclass(frozen=True, kw_only=True)
class RelayStats(HoldingStats):
    """A consistent snapshot of what the relay did (taken under its lock).

    ``forwarded`` holds the distinct pairs whose publish was handed to the client.
    """

    publishes: int  # publish calls made (a duplicate input is forwarded again)
    acked: int  # publishes the client reported complete (PUBACK for QoS 1)
    added_delay_min_s: float  # smallest actual receive -> publish time of a forwarded message
    added_delay_max_s: float  # largest


class MqttRelay(HoldingRelay):
    """Input filter -> fixed delay -> output topic, dropping a deterministic set of messages."""

    thread_role: ClassVar[str] = "scheduler"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        input_filter: str,
        output_template: str,
        delay_s: float,
        drop: DropPredicate = never,
        run_id: str | None = None,
        qos: int = 1,
        client_id: str | None = None,
    ) -> None:
        """Configure, without connecting.

        Args:
            input_filter: MQTT filter the relay subscribes to.
            output_template: output topic; ``{device_id}`` is filled from the payload.
            delay_s: added delay, measured from the moment a message was received.
            drop: ``drop(device_id, seq)`` true means the message is not forwarded.
            run_id: when set, telemetry of other runs is counted and ignored.
            qos: QoS of the subscription and of the republished messages.
        """
        if delay_s < 0:
            raise ValueError(f"delay_s must be >= 0, got {delay_s!r}")
        super().__init__(
            host,
            port,
            input_filter=input_filter,
            hold_s=delay_s,
            drop=drop,
            run_id=run_id,
            qos=qos,
            client_id=client_id or f"test-relay-{uuid.uuid4().hex[:8]}",
        )
        self.output_template = output_template
        self.ready = self.subscribed  # the same Event: set on a successful SUBACK
        self._acked = 0

    @property
    def delay_s(self) -> float:
        """The added delay (the base's ``hold_s``)."""
        return self.hold_s

    @delay_s.setter
    def delay_s(self, value: float) -> None:
        self.hold_s = value

    def stats(self) -> RelayStats:
        with self._cond:
            return self._snapshot(
                RelayStats,
                publishes=self._deliveries,
                acked=self._acked,
                added_delay_min_s=self._hold_min,
                added_delay_max_s=self._hold_max,
            )

    def _deliver(self, batch: list[Held]) -> float:
        """Publish the message (``_batches`` gives one at a time); the delay ends once the client has it."""
        client = self._client
        if client is None:
            raise RuntimeError("the relay is stopped")
        for item in batch:
            topic = self.output_template.format(device_id=item.device_id)
            info = client.publish(topic, item.payload, qos=self.qos)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise RuntimeError(f"relay publish to {topic!r} failed: {mqtt.error_string(info.rc)}")
        return time.monotonic()

    def _settled(self) -> bool:
        return self._acked >= self._deliveries  # every publish completed by the client

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._cond:
            self._acked += 1
            self._cond.notify_all()
