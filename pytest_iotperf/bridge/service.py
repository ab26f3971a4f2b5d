"""The bridge as one object: producer check, forwarder, subscriber, ordered start and stop."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from azure.eventhub import EventData, EventHubProducerClient

from pytest_iotperf.bridge.eventhub_access import EventHubTarget, call_with_deadline, client_options
from pytest_iotperf.bridge.forwarder import Forwarder
from pytest_iotperf.bridge.spec import BridgeSpec
from pytest_iotperf.bridge.subscriber import MqttSubscriber, SubscribeError
from pytest_iotperf.bridge.topics import DeviceKeys
from pytest_iotperf.header import WARMUP_PAYLOAD
from pytest_iotperf.secrets import Scrubber, describe_error
from pytest_iotperf.wire_reports import BridgeProgress, BridgeReport

_FENCE_SHARE = 0.5  # at most this share of the stop time goes to the MQTT fence


class StartError(Exception):
    """The bridge could not start; the message names the endpoint, never a secret."""


class Bridge:
    """Subscribes on the broker and forwards every message to Event Hubs."""

    def __init__(self, spec: BridgeSpec, connection_string: str, target: EventHubTarget, scrubber: Scrubber) -> None:
        self.spec = spec
        self.target = target
        self.scrubber = scrubber
        self.partition_ids: list[str] = []
        self.stop_result = ""
        self.fence_result = ""
        self._management_hung = False
        self.producer = EventHubProducerClient.from_connection_string(
            connection_string, **client_options(dict(spec.client_options))
        )
        self.forwarder = Forwarder(
            self.producer,
            DeviceKeys(spec.topic_template, spec.header_path),
            scrubber,
            grouping=spec.grouping,
            linger_s=spec.linger_ms / 1000.0,
            max_flush_events=spec.max_flush_events,
            send_timeout_s=spec.send_timeout_s,
        )
        self.subscriber = MqttSubscriber(spec, self.forwarder.submit)

    def start(self) -> None:
        """Check the Event Hub answers with this key, start the sender, subscribe.

        Raises:
            StartError: the hub or the broker is unreachable or refused us.
        """
        deadline = time.monotonic() + self.spec.start_timeout_s
        try:
            properties = call_with_deadline(
                self.producer.get_eventhub_properties, self.spec.start_timeout_s, "Event Hubs management call"
            )
        except Exception as exc:
            self._management_hung = isinstance(exc, TimeoutError)
            raise StartError(
                f"Event Hub at {self.target.describe()} is unreachable or refused the connection: "
                f"{describe_error(exc, self.scrubber)}"
            ) from None
        self.partition_ids = [str(p) for p in properties.get("partition_ids", [])]
        try:
            self._open_partition_links(max(deadline - time.monotonic(), 1.0))
        except Exception as exc:
            raise StartError(
                f"Event Hub at {self.target.describe()} refused the warm-up send: {describe_error(exc, self.scrubber)}"
            ) from None
        self.forwarder.start(self.partition_ids)
        try:
            self.subscriber.start(max(deadline - time.monotonic(), 1.0))
        except SubscribeError as exc:
            raise StartError(str(exc)) from None

    def _open_partition_links(self, timeout_s: float) -> None:
        """Send one warm-up event to every partition, in parallel, before subscribing.

        The SDK opens a partition's link on its first send (~0.45 s each, one
        after another); without this the run's first messages would carry
        seconds of bridge start-up as delay.
        """

        def warm(partition_id: str) -> None:
            batch = self.producer.create_batch(partition_id=partition_id)
            batch.add(EventData(WARMUP_PAYLOAD))
            self.producer.send_batch(batch, timeout=timeout_s)

        with ThreadPoolExecutor(max_workers=max(len(self.partition_ids), 1)) as pool:
            for future in [pool.submit(warm, p) for p in self.partition_ids]:
                future.result(timeout=timeout_s)

    def stop(self, timeout_s: float) -> None:
        """Fence and unsubscribe, then flush the queue; everything within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        self.fence_result = self.subscriber.fence(timeout_s * _FENCE_SHARE)
        self.subscriber.stop()
        self.stop_result = self.forwarder.finish(deadline - time.monotonic())
        if self.stop_result == "flushed":
            # With a send still stuck (timeout), close() would wait for it: leave the client to process exit.
            self.producer.close()

    def close_after_failed_start(self) -> None:
        """Release what ``start`` opened (the process exits right after)."""
        self.subscriber.stop()
        if not self._management_hung:  # close() would wait for the hung call
            self.producer.close()

    def progress(self) -> BridgeProgress:
        """The figures of a ``progress`` event."""
        snap = self.forwarder.snapshot()
        return {
            "received": snap["received"],
            "forwarded": snap["forwarded"],
            "failed": snap["failed"],
            "unsent": snap["unsent"],
        }

    def report(self, stopped_by: str) -> BridgeReport:
        """The report: counts, failures by reason (scrubbed), how the stop went, what was forwarded where."""
        return {
            **self.forwarder.snapshot(),
            "stop": self.stop_result,
            "fence": self.fence_result,
            "errors": [self.scrubber(error) for error in self.subscriber.errors],
            "eventhub": self.target.describe(),
            "partition_ids": self.partition_ids,
            "broker": f"{self.spec.connection.host}:{self.spec.connection.port}",
            "topic_filter": self.spec.topic_filter,
            "stopped_by": stopped_by,
            "disconnects": self.subscriber.disconnects,
            "reconnects": self.subscriber.reconnects,
        }
