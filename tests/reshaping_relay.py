"""A test relay that reshapes telemetry like a real platform: renames, wraps, batches, or carries properties.

It reads the devices' messages on an input filter (``relay_base.HoldingRelay``:
hold each one ``hold_s`` from its arrival, leave out the pairs ``drop`` names),
and writes to one output topic for the whole fleet:

* ``reshaped_platform.reshape`` / ``frame``: the header renamed in an
  envelope or kept under ``meta.trace``, ``batch_size`` readings per output
  message as a JSON array or JSON lines (``single``: one per message);
* ``properties=True`` (MQTT 5): the body exactly as it came and the device's
  user properties (the header) passed on unchanged, one message per reading.

Pairs that ``duplicate`` names go out twice (in the same output message for a
batch).  It records, per forwarded pair, the wall-clock time its output was
handed to the client, so a test can bound the delay a sink must measure:
``intended_at`` -> that time, plus the relay -> sink leg.

Batches are formed in due order; a batch is written once it holds
``batch_size`` readings, so a reading waits at least ``hold_s`` and at most
until its batch fills.  :meth:`flush` writes the last, partial batch.

Independent of the code under test on purpose: nothing is imported from
``pytest_iotperf``.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from relay_base import DropPredicate, Held, HoldingRelay, HoldingStats, Pair, never
from reshaped_platform import Framing, Naming, frame, reshape

HEADER_KEY = "_iotperf"


@dataclass(frozen=True, kw_only=True)
class ReshapingStats(HoldingStats):
    """What the relay did (a snapshot taken under its lock)."""

    messages: int  # output messages handed to the client
    acked: int  # of those, completed by the client (PUBACK at QoS 1)
    elements: int  # readings in them, duplicates included
    duplicated: frozenset[Pair]  # pairs written twice
    due_by_pair: dict[Pair, int]  # the intended_at the device gave each forwarded pair (epoch us)
    written_by_pair: dict[Pair, int]  # when the relay handed the pair's (last) output to the client (epoch us)


class ReshapingRelay(HoldingRelay):
    """Input filter -> hold -> reshaped (and batched) output on one topic."""

    thread_role: ClassVar[str] = "reshaper"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        input_filter: str,
        output_topic: str,
        hold_s: float,
        naming: Naming = "renamed",
        framing: Framing = "single",
        batch_size: int = 10,
        properties: bool = False,
        drop: DropPredicate = never,
        duplicate: DropPredicate = never,
        run_id: str | None = None,
        qos: int = 1,
    ) -> None:
        super().__init__(
            host,
            port,
            input_filter=input_filter,
            hold_s=hold_s,
            drop=drop,
            run_id=run_id,
            qos=qos,
            client_id=f"test-reshaper-{uuid.uuid4().hex[:8]}",
        )
        if properties and framing != "single":
            raise ValueError("a header in properties travels with one reading per message")
        self.output_topic = output_topic
        self.naming: Naming = naming
        self.framing: Framing = framing
        self.batch_size = batch_size if framing != "single" else 1
        self.properties = properties
        self.duplicate = duplicate
        self._buffer: list[Held] = []
        self._buffer_lock = threading.Lock()
        self._flushing = False  # after flush(): every due reading is written at once, batch full or not
        self._messages = 0
        self._acked = 0
        self._elements = 0
        self._duplicated: set[Pair] = set()
        self._due: dict[Pair, int] = {}
        self._written: dict[Pair, int] = {}

    @property
    def mqtt_protocol(self) -> MQTTProtocolVersion:  # type: ignore[override]  # per instance: MQTT 5 for properties
        return MQTTProtocolVersion.MQTTv5 if self.properties else MQTTProtocolVersion.MQTTv311

    def stats(self) -> ReshapingStats:
        with self._cond:
            return self._snapshot(
                ReshapingStats,
                messages=self._messages,
                acked=self._acked,
                elements=self._elements,
                duplicated=frozenset(self._duplicated),
                due_by_pair=dict(self._due),
                written_by_pair=dict(self._written),
            )

    def flush(self, timeout_s: float = 10.0) -> None:
        """Once every reading received is due, write the partial batch left (and any reading after it at once)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._heap:  # still held: they fill batches as usual
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(self._heap)} reading(s) still held after {timeout_s:g}s")
                self._cond.wait(min(remaining, 0.01))  # nothing notifies when a reading only joins the buffer
        with self._buffer_lock:
            self._flushing = True
            rest, self._buffer = self._buffer, []
        if rest:
            self._deliver_batch(rest)

    # -- HoldingRelay hooks ---------------------------------------------------------------

    def _identify(self, message: mqtt.MQTTMessage) -> tuple[str, str, int] | None:
        if self.properties:
            header = dict(getattr(message.properties, "UserProperty", None) or [])
            seq = header.get("seq", "")
            if "device_id" not in header or not seq.isdigit():
                return None
            return header.get("run_id", ""), header["device_id"], int(seq)
        found = _body_header(bytes(message.payload))
        if found is None:
            return None
        return str(found.get("run_id", "")), found["device_id"], found["seq"]

    def _batches(self, due: list[Held]) -> list[list[Held]]:
        with self._buffer_lock:
            self._buffer.extend(due)
            size = self.batch_size
            full = len(self._buffer) if self._flushing else len(self._buffer) - len(self._buffer) % size
            ready, self._buffer = self._buffer[:full], self._buffer[full:]
        return [ready[i : i + size] for i in range(0, len(ready), size)]

    def _deliver(self, batch: list[Held]) -> float:
        client = self._client
        if client is None:
            raise RuntimeError("the relay is stopped")
        # Taken before the first publish: a sink may read the output before publish() returns.
        written_us = time.time_ns() // 1000
        copies = [item for held in batch for item in [held] * (2 if self.duplicate(held.device_id, held.seq) else 1)]
        outputs: list[tuple[bytes, Properties | None]]
        if self.properties:
            outputs = [(item.payload, _republished(item.properties)) for item in copies]
        else:
            elements = [_reshaped(item.payload, self.naming) for item in copies]
            if self.framing == "single":
                outputs = [(frame([element], "single"), None) for element in elements]
            else:
                outputs = [(frame(elements, self.framing), None)]
        for body, properties in outputs:
            info = client.publish(self.output_topic, body, qos=self.qos, properties=properties)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise RuntimeError(f"relay publish failed: {mqtt.error_string(info.rc)}")
        with self._cond:
            self._messages += len(outputs)
            self._elements += len(copies)
            for item in batch:
                pair = (item.device_id, item.seq)
                self._written[pair] = written_us
                self._due[pair] = _intended_at(item)
                if self.duplicate(*pair):
                    self._duplicated.add(pair)
        return time.monotonic()

    def _settled(self) -> bool:
        return self._acked >= self._messages and not self._buffer

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._cond:
            self._acked += 1
            self._cond.notify_all()


def _body_header(payload: bytes) -> dict[str, Any] | None:
    """The device's header: under ``_iotperf`` or flat; None when the body holds none."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    header = doc.get(HEADER_KEY, doc)
    if isinstance(header, dict) and isinstance(header.get("device_id"), str) and type(header.get("seq")) is int:
        return header
    return None


def _reshaped(payload: bytes, naming: Naming) -> dict[str, Any]:
    doc = json.loads(payload)
    header = doc.pop(HEADER_KEY, None)
    if header is None:  # the flat form: all of it is the header
        header, doc = doc, {}
    return reshape(header, doc, naming)


def _intended_at(item: Held) -> int:
    if item.properties is not None:
        return int(dict(getattr(item.properties, "UserProperty", None) or [])["intended_at"])
    header = _body_header(item.payload)
    assert header is not None  # it was identified from the same body
    return int(header["intended_at"])


def _republished(incoming: Any) -> Properties:
    """The user properties as they came (paho gives incoming ones back as a list of pairs)."""
    outgoing = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    outgoing.UserProperty = list(getattr(incoming, "UserProperty", None) or [])
    return outgoing
