"""A stand-in IoT platform for the Event Hubs path: MQTT in, a fixed hold, Event Hubs out, a known set dropped.

It subscribes to the devices' topic filter on the broker (paho 2.x) and
forwards every telemetry message unchanged to the hub with
``EventHubProducerClient`` (partition key = the device id, the service hashes
it), ``hold_s`` after it received it from MQTT.  Messages whose
``(device_id, seq)`` satisfy ``drop`` are never forwarded.  It keeps an exact
record of what it saw, dropped and forwarded, so a test compares the plugin's
figures with ground truth that does not come from the plugin.

Independent of the code under test on purpose: payloads are read with
``json`` (``run_id``, ``device_id``, ``seq``) and nothing is imported from
``pytest_iotperf``.

Threads (``relay_base.HoldingRelay``, which owns the MQTT side and the
accounting): paho's network loop receives and puts each message on a heap
ordered by due time; one forwarder thread waits for the earliest due time
(``Condition.wait``), takes every message due by then and sends them, one
keyed batch per device, so the hold does not grow with the number waiting.
``start()`` warms the producer's links first (the SDK opens each lazily,
~0.45 s apiece): one ``{"iotperf":"warmup"}`` event per partition, and one
keyed, for the link keyed sends use; the sinks skip that exact payload.

    with EventHubRelay("127.0.0.1", port, connection_string, input_filter="devices/+/telemetry",
                       hold_s=0.2, drop=lambda device_id, seq: seq % 10 == 3, run_id=run_id) as relay:
        ...
    relay.stats().dropped
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ClassVar, Self

from azure.eventhub import EventData, EventHubProducerClient
from relay_base import DropPredicate, Held, HoldingRelay, HoldingStats, Pair, never

__all__ = ["WARMUP_BODY", "DropPredicate", "EventHubRelay", "Pair", "RelayStats", "never"]

#: The body the plugin's sinks skip without counting it (written out here, not imported).
WARMUP_BODY = b'{"iotperf":"warmup"}'
_SEND_TIMEOUT_S = 10.0


@dataclass(frozen=True, kw_only=True)
class RelayStats(HoldingStats):
    """A consistent snapshot of what the relay did (taken under its lock).

    ``forwarded`` holds the distinct pairs the hub accepted (``send_batch`` returned).
    """

    sends: int  # send_batch calls that succeeded
    hold_min_s: float  # smallest MQTT receive -> send start of a forwarded message
    hold_max_s: float  # largest
    warmups: int  # warm-up events sent before the run


class EventHubRelay(HoldingRelay):
    """MQTT input filter -> fixed hold -> Event Hubs, dropping a deterministic set of messages."""

    thread_role: ClassVar[str] = "fwd"
    join_timeout_s: ClassVar[float | None] = _SEND_TIMEOUT_S + 5.0

    def __init__(
        self,
        host: str,
        port: int,
        connection_string: str,
        *,
        input_filter: str,
        hold_s: float,
        drop: DropPredicate = never,
        run_id: str | None = None,
        qos: int = 1,
        client_id: str | None = None,
    ) -> None:
        """Configure, without connecting.

        Args:
            connection_string: of the hub (a secret: kept out of every message).
            input_filter: MQTT filter the relay subscribes to.
            hold_s: how long each message is held, from the moment MQTT delivered it.
            drop: ``drop(device_id, seq)`` true means the message is not forwarded.
            run_id: when set, telemetry of other runs is counted and ignored.
            qos: QoS of the subscription.
        """
        if hold_s < 0:
            raise ValueError(f"hold_s must be >= 0, got {hold_s!r}")
        super().__init__(
            host,
            port,
            input_filter=input_filter,
            hold_s=hold_s,
            drop=drop,
            run_id=run_id,
            qos=qos,
            client_id=client_id or f"test-eh-relay-{uuid.uuid4().hex[:8]}",
        )
        self._connection_string = connection_string
        self._producer: EventHubProducerClient | None = None
        self._warmups = 0

    def start(self, timeout_s: float = 15.0) -> Self:
        """Open and warm the producer, start the forwarder, subscribe; returns once the SUBACK arrived."""
        return super().start(timeout_s)

    def stats(self) -> RelayStats:
        with self._cond:
            return self._snapshot(
                RelayStats,
                sends=self._deliveries,
                hold_min_s=self._hold_min,
                hold_max_s=self._hold_max,
                warmups=self._warmups,
            )

    # -- the producer ----------------------------------------------------------------

    def _open(self, timeout_s: float) -> None:
        self._producer = EventHubProducerClient.from_connection_string(
            self._connection_string, retry_total=1, auth_timeout=5
        )
        self._warm(self._producer, timeout_s)

    def _warm(self, producer: EventHubProducerClient, timeout_s: float) -> None:
        """Open every link the run will use before it starts, in parallel: each partition's, and the keyed one."""
        partition_ids = [str(p) for p in producer.get_partition_ids()]

        def warm(partition_id: str | None) -> None:
            if partition_id is None:
                batch = producer.create_batch(partition_key="iotperf-warmup")
            else:
                batch = producer.create_batch(partition_id=partition_id)
            batch.add(EventData(WARMUP_BODY))
            producer.send_batch(batch, timeout=timeout_s)

        targets: list[str | None] = [*partition_ids, None]
        with ThreadPoolExecutor(max_workers=len(targets)) as pool:
            for future in [pool.submit(warm, target) for target in targets]:
                future.result(timeout=timeout_s)
        self._warmups = len(targets)

    def _close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.close()

    def _batches(self, due: list[Held]) -> list[list[Held]]:
        """One keyed batch per device."""
        by_device: dict[str, list[Held]] = {}
        for item in due:
            by_device.setdefault(item.device_id, []).append(item)
        return list(by_device.values())

    def _deliver(self, batch: list[Held]) -> float:
        """Send one device's batch; the hold ends when the send starts."""
        producer = self._producer
        if producer is None:
            raise RuntimeError("the producer is closed")
        started = time.monotonic()
        events = producer.create_batch(partition_key=batch[0].device_id)
        for item in batch:
            events.add(EventData(item.payload))  # the body exactly as MQTT delivered it
        producer.send_batch(events, timeout=_SEND_TIMEOUT_S)
        return started

    def _redact(self, message: str) -> str:
        for part in self._connection_string.split(";"):
            name, _, value = part.partition("=")
            if name.strip().lower() == "sharedaccesskey" and value:
                message = message.replace(value, "***")
        return message
