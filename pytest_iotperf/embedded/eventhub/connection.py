"""One client connection: SASL, then the AMQP connection/session/link state machine.

Link kinds, by what the client attaches:

* ``$cbs`` / ``$management`` request-response pairs (client sender + client receiver);
* producers: client sender with target ``<hub>`` or ``<hub>/Partitions/<n>``;
* consumers: client receiver with source ``<hub>/ConsumerGroups/<cg>/Partitions/<n>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from pytest_iotperf.embedded.eventhub import frames as F
from pytest_iotperf.embedded.eventhub.cbs import SasVerifier
from pytest_iotperf.embedded.eventhub.codec import (
    Array,
    Described,
    Symbol,
    Timestamp,
    UByte,
    UInt,
    ULong,
    UShort,
    encode_value,
)
from pytest_iotperf.embedded.eventhub.errors import AmqpDecodeError
from pytest_iotperf.embedded.eventhub.hub import EventHub, Partition, StartPosition, parse_selector
from pytest_iotperf.embedded.eventhub.management import handle_management
from pytest_iotperf.embedded.eventhub.message import (
    BATCH_FORMAT,
    delivery_annotations_section,
    parse_message,
    partition_key_of,
    stamp,
    unpack_batch,
)
from pytest_iotperf.embedded.eventhub.partition_key import partition_for_key

__all__ = ["AmqpConnection", "Namespace"]

_LOG = logging.getLogger(__name__)

MAX_FRAME_SIZE: Final = 256 * 1024
WINDOW: Final = 0x7FFFFFFF
PRODUCER_CREDIT: Final = 5000
EPOCH: Final = "com.microsoft:epoch"
RUNTIME_METRIC: Final = "com.microsoft:enable-receiver-runtime-metric"
SELECTOR_FILTER: Final = "apache.org:selector-filter:string"


@dataclass
class Namespace:
    """Everything the connections share: hubs, the SAS verifier, limits and active consumers."""

    hubs: dict[str, EventHub]
    verifier: SasVerifier
    max_message_size: int = 1024 * 1024
    # (hub, consumer group, partition) -> consumer links reading it, for epoch (owner level) enforcement.
    owners: dict[tuple[str, str, str], list[ConsumerLink]] = field(default_factory=dict)


def _error(condition: str, description: str) -> Described:
    return F.composite(F.ERROR, [Symbol(condition), description, None])


def _address(value: Any) -> str:
    """Return the entity path of an address: ``amqps://host:port/hub/...`` -> ``hub/...``."""
    text = value.decode("utf-8") if isinstance(value, bytes) else str(value or "")
    if "://" in text:
        text = text.split("://", 1)[1]
        text = text.split("/", 1)[1] if "/" in text else ""
    return text.strip("/")


def _symbols(value: Any) -> set[str]:
    if value is None:
        return set()
    items = value if isinstance(value, list) else [value]
    return {item.decode() if isinstance(item, bytes) else str(item) for item in items}


@dataclass
class Link:
    """State common to every attached link."""

    name: str
    remote_handle: int
    handle: int
    session: Session
    address: str


@dataclass
class ReceivingLink(Link):
    """A link the client sends on (producer, or the request half of $cbs/$management)."""

    kind: str = "producer"
    partition_id: str | None = None
    hub: EventHub | None = None
    credit: int = 0
    delivery_count: int = 0
    pending: bytearray = field(default_factory=bytearray)
    pending_first: F.Performative | None = None
    pending_size: int = 0


@dataclass
class SendingLink(Link):
    """A link the server sends on: the reply half of $cbs/$management."""

    delivery_count: int = 0
    credit: int = 0
    queue: list[bytes] = field(default_factory=list)

    def on_flow(self, flow: F.Performative) -> None:
        """Apply a flow frame from the client: credit = its delivery-count + link-credit - ours."""
        if flow[6] is not None:
            remote_count = flow[5] if flow[5] is not None else self.delivery_count
            self.credit = max(0, remote_count + flow[6] - self.delivery_count)

    def pump(self) -> None:
        """Send queued messages within the granted credit."""
        while self.queue and self.credit > 0:
            self.session.send_message(self, self.queue.pop(0))


@dataclass
class ConsumerLink(SendingLink):
    """A consumer: streams one partition's events from a cursor, within credit, as they arrive."""

    hub: EventHub | None = None
    partition: Partition | None = None
    consumer_group: str = "$Default"
    epoch: int | None = None
    cursor: int = 0
    metrics: bool = False
    drain: bool = False

    def on_flow(self, flow: F.Performative) -> None:
        """Apply credit, then deliver; honour drain by consuming the remaining credit."""
        super().on_flow(flow)
        self.drain = bool(flow[8])
        self.pump()

    def pump(self) -> None:
        """Deliver stored events from the cursor while there is credit."""
        partition = self.partition
        if partition is None or self.session.closed:
            return
        events = partition.events
        frames: list[bytes] = []  # every delivery of this pump goes out in one socket write
        while self.credit > 0 and self.cursor < len(events):
            event = events[self.cursor]
            self.cursor += 1
            middle = b""
            if self.metrics:
                last = events[-1]
                middle = delivery_annotations_section(
                    {
                        Symbol("last_enqueued_sequence_number"): last.sequence_number,
                        Symbol("last_enqueued_offset"): str(last.offset),
                        Symbol("last_enqueued_time_utc"): Timestamp(last.enqueued_time),
                        Symbol("runtime_info_retrieval_time_utc"): Timestamp(int(time.time() * 1000)),
                    }
                )
            self.session.send_message(self, event.header + middle + event.tail, tag=event.sequence_number, out=frames)
        if frames:
            self.session.connection.send(b"".join(frames))
        if self.drain and self.credit > 0:
            self.delivery_count += self.credit
            self.credit = 0
            self.drain = False
            self.session.send_link_flow(self, drain=True)


class Session:
    """One AMQP session: channel mapping, delivery ids and the links attached on it."""

    def __init__(self, connection: AmqpConnection, channel: int, remote_channel: int, next_incoming_id: int) -> None:
        self.connection = connection
        self.channel = channel
        self.remote_channel = remote_channel
        self.next_outgoing_id = 0
        self.next_incoming_id = next_incoming_id
        self.links: dict[int, Link] = {}  # by remote handle
        self.next_handle = 0
        self.closed = False

    def send_message(
        self, link: SendingLink, payload: bytes, tag: int | None = None, out: list[bytes] | None = None
    ) -> None:
        """Send one pre-settled delivery on ``link``, split into frames that fit the client's max frame size.

        With ``out``, the frames are appended there for the caller to write together.
        """
        delivery_id = self.next_outgoing_id
        self.next_outgoing_id = (self.next_outgoing_id + 1) & 0xFFFFFFFF
        link.delivery_count += 1
        link.credit -= 1
        delivery_tag = (delivery_id if tag is None else tag).to_bytes(8, "big")
        # Leave room for the frame header and the transfer performative itself.
        chunk = max(512, self.connection.remote_max_frame_size - 128)
        if len(payload) <= chunk:
            # The common case, one frame: the same bytes encode_frame writes, without the generic encoder.
            frame = F.single_transfer_frame(self.channel, link.handle, delivery_id, delivery_tag, payload)
            if out is None:
                self.connection.send(frame)
            else:
                out.append(frame)
            return
        start = 0
        first = True
        while True:
            part = payload[start : start + chunk]
            start += chunk
            more = start < len(payload)
            fields: list[Any] = [UInt(link.handle)]
            if first:
                fields += [UInt(delivery_id), delivery_tag, UInt(0), True, more]
            else:
                fields += [None, None, None, None, more]
            self.connection.send(F.encode_frame(self.channel, F.TRANSFER, fields, part))
            first = False
            if not more:
                return

    def send_link_flow(self, link: Link, drain: bool = False) -> None:
        """Send a flow frame for ``link`` (credit to a producer, or a drain acknowledgement)."""
        credit = link.credit if isinstance(link, ReceivingLink | SendingLink) else 0
        count = link.delivery_count if isinstance(link, ReceivingLink | SendingLink) else 0
        fields = [
            UInt(self.next_incoming_id),
            UInt(WINDOW),
            UInt(self.next_outgoing_id),
            UInt(WINDOW),
            UInt(link.handle),
            UInt(count),
            UInt(credit),
            None,
            drain,
        ]
        self.connection.send(F.encode_frame(self.channel, F.FLOW, fields))


class AmqpConnection:
    """Serves one TCP connection until the client closes it or the server stops."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        namespace: Namespace,
        on_close: Callable[[AmqpConnection], None],
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.namespace = namespace
        self.on_close = on_close
        self.sessions: dict[int, Session] = {}  # by remote channel
        self.remote_max_frame_size = 512
        self.authorized = False
        self.closed = False
        self._heartbeat: asyncio.Task[None] | None = None

    def send(self, data: bytes) -> None:
        """Queue bytes for the client (dropped once the connection is closed)."""
        if not self.closed:
            self.writer.write(data)

    async def serve(self) -> None:
        """Run the connection: protocol headers, SASL, then frames until close."""
        try:
            await self._handshake()
            while not self.closed:
                await self._read_frame()
                await self.writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except AmqpDecodeError as exc:
            _LOG.warning("closing AMQP connection: %s", exc)
            self.send(F.encode_frame(0, F.CLOSE, [_error("amqp:decode-error", str(exc))]))
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Forget every link and close the socket."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        for session in self.sessions.values():
            self._end_session(session)
        self.sessions.clear()
        self.closed = True
        with contextlib.suppress(Exception):
            self.writer.close()
        self.on_close(self)

    async def _handshake(self) -> None:
        header = await self.reader.readexactly(8)
        if header == F.SASL_HEADER:
            self.writer.write(F.SASL_HEADER)
            mechanisms = Array(0xA3, (Symbol("ANONYMOUS"), Symbol("MSSBCBS")))
            self.writer.write(F.encode_frame(0, F.SASL_MECHANISMS, [mechanisms], frame_type=F.FRAME_SASL))
            init = await self._read_body()
            if init.code != F.SASL_INIT:
                raise AmqpDecodeError("expected sasl-init")
            # Authorization happens per entity via $cbs put-token, so every mechanism is accepted here.
            self.writer.write(F.encode_frame(0, F.SASL_OUTCOME, [UByte(0)], frame_type=F.FRAME_SASL))
            header = await self.reader.readexactly(8)
        if header != F.AMQP_HEADER:
            self.writer.write(F.AMQP_HEADER)
            raise ConnectionError("unsupported protocol header")
        self.writer.write(F.AMQP_HEADER)

    async def _read_body(self) -> F.Performative:
        while True:
            size, doff, _, _ = F.frame_header(await self.reader.readexactly(8))
            if size < 8 or size > MAX_FRAME_SIZE + 1024:
                raise AmqpDecodeError(f"frame size {size} is out of range")
            rest = await self.reader.readexactly(size - 8)
            body = rest[doff * 4 - 8 :]
            if body:
                return F.parse_frame_body(body)

    async def _read_frame(self) -> None:
        size, doff, _, channel = F.frame_header(await self.reader.readexactly(8))
        if size < 8 or size > MAX_FRAME_SIZE + 1024:
            raise AmqpDecodeError(f"frame size {size} is out of range")
        rest = await self.reader.readexactly(size - 8)
        body = rest[doff * 4 - 8 :]
        if not body:
            return  # heartbeat
        self._dispatch(channel, F.parse_frame_body(body))

    def _dispatch(self, channel: int, frame: F.Performative) -> None:
        code = frame.code
        if code == F.OPEN:
            self._on_open(frame)
        elif code == F.CLOSE:
            self.send(F.encode_frame(0, F.CLOSE, []))
            self.closed = True
        elif code == F.BEGIN:
            self._on_begin(channel, frame)
        elif code == F.END:
            session = self.sessions.pop(channel, None)
            if session is not None:
                self._end_session(session)
                self.send(F.encode_frame(session.channel, F.END, []))
        else:
            session = self.sessions.get(channel)
            if session is None:
                # pyamqp may still detach links of a session it has just ended: nothing left to do.
                return
            if code == F.ATTACH:
                self._on_attach(session, frame)
            elif code == F.FLOW:
                self._on_flow(session, frame)
            elif code == F.TRANSFER:
                self._on_transfer(session, frame)
            elif code == F.DETACH:
                self._on_detach(session, frame)
            # Dispositions from the client only settle pre-settled deliveries: nothing to do.

    def _on_open(self, frame: F.Performative) -> None:
        self.remote_max_frame_size = int(frame[2]) if frame[2] is not None else 0xFFFFFFFF
        fields = [f"embedded-eventhub-{uuid.uuid4().hex[:8]}", None, UInt(MAX_FRAME_SIZE), UShort(65535)]
        self.send(F.encode_frame(0, F.OPEN, fields))
        if frame[4]:
            # The client closes connections that stay silent for its idle timeout: send heartbeats at half of it.
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat(int(frame[4]) / 2000))

    async def _beat(self, interval: float) -> None:
        while not self.closed:
            await asyncio.sleep(interval)
            self.send(b"\x00\x00\x00\x08\x02\x00\x00\x00")

    def _on_begin(self, channel: int, frame: F.Performative) -> None:
        local = 0
        used = {s.channel for s in self.sessions.values()}
        while local in used:
            local += 1
        session = Session(self, local, channel, int(frame[1] or 0))
        self.sessions[channel] = session
        fields = [UShort(channel), UInt(0), UInt(WINDOW), UInt(WINDOW), UInt(0xFFFF)]
        self.send(F.encode_frame(local, F.BEGIN, fields))

    def _end_session(self, session: Session) -> None:
        session.closed = True
        for link in list(session.links.values()):
            self._forget(link)
        session.links.clear()

    def _forget(self, link: Link) -> None:
        if isinstance(link, ConsumerLink) and link.partition is not None and link.hub is not None:
            link.partition.listeners.discard(link.pump)
            key = (link.hub.name, link.consumer_group, link.partition.partition_id)
            owners = self.namespace.owners.get(key, [])
            if link in owners:
                owners.remove(link)

    # -- attach -------------------------------------------------------------------------------------------------

    def _on_attach(self, session: Session, frame: F.Performative) -> None:
        name = frame[0].decode() if isinstance(frame[0], bytes) else str(frame[0])
        remote_handle = int(frame[1])
        client_is_receiver = bool(frame[2])
        source = F.described_fields(frame[5], F.SOURCE)
        target = F.described_fields(frame[6], F.TARGET)
        handle = session.next_handle
        session.next_handle += 1
        if client_is_receiver:
            address = _address(source[0] if source else None)
            link: Link = self._attach_sender(session, name, remote_handle, handle, address, source, frame)
        else:
            address = _address(target[0] if target else None)
            link = ReceivingLink(name, remote_handle, handle, session, address)
        session.links[remote_handle] = link
        error = self._classify(link, frame)
        offered = Array(0xA3, (Symbol(RUNTIME_METRIC),)) if getattr(link, "metrics", False) else None
        fields: list[Any] = [
            name,
            UInt(handle),
            not client_is_receiver,
            None,
            None,
            frame[5] if frame[5] is not None else F.composite(F.SOURCE, [name]),
            frame[6] if frame[6] is not None else F.composite(F.TARGET, [name]),
            None,
            None,
            UInt(0) if client_is_receiver else None,
            ULong(self.namespace.max_message_size),
            offered,
            None,
            None,
        ]
        self.send(F.encode_frame(session.channel, F.ATTACH, fields))
        if error is not None:
            # The SDK treats an attach without source/target as a protocol error, so refusals are an echoing
            # attach followed at once by a closing detach that carries the reason.
            self._detach(link, error)
            return
        if isinstance(link, ReceivingLink):
            link.credit = PRODUCER_CREDIT
            session.send_link_flow(link)
        elif isinstance(link, ConsumerLink):
            self._start_consumer(link)

    def _attach_sender(
        self,
        session: Session,
        name: str,
        remote_handle: int,
        handle: int,
        address: str,
        source: list[Any] | None,
        frame: F.Performative,
    ) -> Link:
        if address in ("$cbs", "$management") or "/" not in address:
            return SendingLink(name, remote_handle, handle, session, address)
        link = ConsumerLink(name, remote_handle, handle, session, address)
        link.metrics = RUNTIME_METRIC in _symbols(frame[12])
        properties = {str(k.decode() if isinstance(k, bytes) else k): v for k, v in (frame[13] or {}).items()}
        if properties.get(EPOCH) is not None:
            link.epoch = int(properties[EPOCH])
        return link

    def _classify(self, link: Link, frame: F.Performative) -> Described | None:
        """Resolve the entity a link names; return the error to refuse it with, or None."""
        if link.address in ("$cbs", "$management"):
            if isinstance(link, ReceivingLink):
                link.kind = link.address
            return None
        parts = link.address.split("/")
        hub = self.namespace.hubs.get(parts[0])
        if hub is None:
            return _error("amqp:not-found", f"The messaging entity '{parts[0]}' could not be found.")
        if not self.authorized:
            return _error("amqp:unauthorized-access", "Unauthorized access: no valid token was put on $cbs.")
        if isinstance(link, ReceivingLink):
            link.hub = hub
            if len(parts) == 1:
                return None
            if len(parts) == 3 and parts[1].lower() == "partitions" and parts[2] in hub.partitions:
                link.partition_id = parts[2]
                return None
            return _error("amqp:not-found", f"The messaging entity '{link.address}' could not be found.")
        if not isinstance(link, ConsumerLink):
            return _error("amqp:not-found", f"The messaging entity '{link.address}' could not be found.")
        if len(parts) != 5 or parts[1].lower() != "consumergroups" or parts[3].lower() != "partitions":
            return _error("amqp:not-found", f"The messaging entity '{link.address}' could not be found.")
        if parts[2] not in hub.consumer_groups:
            return _error("amqp:not-found", f"The consumer group '{parts[2]}' of '{hub.name}' could not be found.")
        partition = hub.partitions.get(parts[4])
        if partition is None:
            return _error("amqp:not-found", f"Partition '{parts[4]}' of '{hub.name}' could not be found.")
        link.hub, link.partition, link.consumer_group = hub, partition, parts[2]
        source = F.described_fields(frame[5], F.SOURCE) or []
        position: StartPosition | None = None
        filters = source[7] if len(source) > 7 else None
        for key, value in (filters or {}).items():
            text_key = key.decode() if isinstance(key, bytes) else str(key)
            described = value if isinstance(value, Described) else None
            if text_key == SELECTOR_FILTER or (described and str(described.descriptor) == SELECTOR_FILTER):
                expression = described.value if described else value
                expression = expression.decode() if isinstance(expression, bytes) else str(expression)
                try:
                    position = parse_selector(expression)
                except ValueError as exc:
                    return _error("amqp:invalid-field", str(exc))
        try:
            link.cursor = partition.start_index(position)
        except ValueError:
            return _error("amqp:invalid-field", "the selector filter value is not a number")
        return self._claim(link)

    def _claim(self, link: ConsumerLink) -> Described | None:
        """Apply owner-level (epoch) rules: a higher or equal epoch steals the partition from lower ones."""
        assert link.hub is not None and link.partition is not None
        key = (link.hub.name, link.consumer_group, link.partition.partition_id)
        owners = self.namespace.owners.setdefault(key, [])
        epochs = [o.epoch for o in owners if o.epoch is not None]
        if epochs and (link.epoch is None or link.epoch < max(epochs)):
            return _error(
                "amqp:link:stolen",
                f"Receiver with epoch {link.epoch} was refused: epoch {max(epochs)} owns the partition.",
            )
        if link.epoch is not None:
            for other in list(owners):
                description = f"Receiver stolen by a receiver with a higher epoch ({link.epoch})."
                other.session.connection._detach(other, _error("amqp:link:stolen", description))
        owners.append(link)
        return None

    def _start_consumer(self, link: ConsumerLink) -> None:
        assert link.partition is not None
        link.partition.listeners.add(link.pump)

    def _detach(self, link: Link, error: Described | None) -> None:
        session = link.session
        session.links.pop(link.remote_handle, None)
        self._forget(link)
        self.send(F.encode_frame(session.channel, F.DETACH, [UInt(link.handle), True, error]))

    def _on_detach(self, session: Session, frame: F.Performative) -> None:
        link = session.links.pop(int(frame[0]), None)
        if link is not None:
            self._forget(link)
            self.send(F.encode_frame(session.channel, F.DETACH, [UInt(link.handle), True]))

    # -- flow and transfer --------------------------------------------------------------------------------------

    def _on_flow(self, session: Session, frame: F.Performative) -> None:
        if frame[4] is None:
            return
        link = session.links.get(int(frame[4]))
        if isinstance(link, SendingLink):
            link.on_flow(frame)
            link.pump()
        elif link is not None and frame[9]:
            session.send_link_flow(link)

    def _on_transfer(self, session: Session, frame: F.Performative) -> None:
        link = session.links.get(int(frame[0]))
        if not isinstance(link, ReceivingLink):
            raise AmqpDecodeError("transfer on a handle that is not a receiving link")
        if link.pending_first is None:
            link.pending_first = frame
        link.pending_size += len(frame.payload)
        # Past the size limit only the size matters: stop buffering a message that will be rejected.
        if link.pending_size <= self.namespace.max_message_size:
            link.pending += frame.payload
        if frame[5]:  # more
            return
        first, payload, size = link.pending_first, bytes(link.pending), link.pending_size
        link.pending_first, link.pending, link.pending_size = None, bytearray(), 0
        if frame[9]:  # aborted
            return
        delivery_id = int(first[1]) if first[1] is not None else session.next_incoming_id
        session.next_incoming_id = (delivery_id + 1) & 0xFFFFFFFF
        link.delivery_count += 1
        link.credit -= 1
        state = self._deliver(link, int(first[3] or 0), payload, size)
        if not first[4]:  # unsettled: the client waits for our outcome
            fields = [True, UInt(delivery_id), None, True, state]
            self.send(F.encode_frame(session.channel, F.DISPOSITION, fields))
        if link.credit < PRODUCER_CREDIT // 2:
            link.credit = PRODUCER_CREDIT
            session.send_link_flow(link)

    def _deliver(self, link: ReceivingLink, message_format: int, payload: bytes, size: int) -> Described:
        accepted = F.composite(F.ACCEPTED, [])
        try:
            if link.kind == "$cbs":
                self._on_cbs(link, payload)
                return accepted
            if link.kind == "$management":
                self._on_management(link, payload)
                return accepted
            if size > self.namespace.max_message_size:
                limit = self.namespace.max_message_size
                return F.composite(
                    F.REJECTED,
                    [_error("amqp:link:message-size-exceeded", f"The message size {size} exceeds {limit} bytes.")],
                )
            self._enqueue(link, message_format, payload)
            return accepted
        except AmqpDecodeError as exc:
            return F.composite(F.REJECTED, [_error("amqp:decode-error", str(exc))])

    def _enqueue(self, link: ReceivingLink, message_format: int, payload: bytes) -> None:
        hub = link.hub
        assert hub is not None
        messages = unpack_batch(payload) if message_format == BATCH_FORMAT else [payload]
        parsed = [parse_message(m) for m in messages]
        # A batch carries its partition key on the envelope and on every inner message.
        key = partition_key_of(parse_message(payload)) if message_format == BATCH_FORMAT else None
        key = key or next((k for k in map(partition_key_of, parsed) if k), None)
        if link.partition_id is not None:
            partition_id = link.partition_id
        elif key is not None:
            partition_id = str(partition_for_key(key, hub.partition_count))
        else:
            partition_id = hub.next_round_robin()
        partition = hub.partitions[partition_id]
        now = int(time.time() * 1000)
        for message in parsed:
            annotations: dict[Symbol, Any] = {}
            event_key = partition_key_of(message)
            # Offsets and sequence numbers are known before the event is stored: compute them first.
            annotations[Symbol("x-opt-sequence-number")] = len(partition.events)
            annotations[Symbol("x-opt-offset")] = str(partition.next_offset)
            annotations[Symbol("x-opt-enqueued-time")] = Timestamp(max(partition.last_time, now))
            if event_key is not None:
                annotations[Symbol("x-opt-partition-key")] = event_key
            header, tail = stamp(message, annotations)
            partition.append(header, tail, now)
        partition.notify()

    # -- $cbs and $management -----------------------------------------------------------------------------------

    def _reply(self, link: ReceivingLink, request: Any, status: int, description: str, body: Any = None) -> None:
        properties = next((v for c, v in request.sections if c == 0x73), None) or []
        message_id = properties[0] if properties else None
        reply_to = properties[4] if len(properties) > 4 else None
        out = bytearray()
        encode_value(out, F.composite(0x73, [None, None, None, None, None, message_id]))
        encode_value(
            out,
            Described(ULong(0x74), {"status-code": status, "status-description": description}),
        )
        encode_value(out, Described(ULong(0x77), body))
        session = link.session
        wanted = {_address(reply_to), link.address} if reply_to else {link.address}
        for candidate in session.links.values():
            is_reply_link = isinstance(candidate, SendingLink) and not isinstance(candidate, ConsumerLink)
            if is_reply_link and candidate.address in wanted:
                assert isinstance(candidate, SendingLink)
                candidate.queue.append(bytes(out))
                candidate.pump()
                return
        _LOG.warning("no reply link for a %s request; the client will time out", link.address)

    def _on_cbs(self, link: ReceivingLink, payload: bytes) -> None:
        request = parse_message(payload)
        app = {str(k.decode() if isinstance(k, bytes) else k): v for k, v in _app_properties(request).items()}
        token = next((v for c, v in request.sections if c == 0x77), None)
        token_text = token.decode() if isinstance(token, bytes) else str(token or "")
        valid, reason = self.namespace.verifier.verify(token_text)
        operation = app.get("operation")
        operation = operation.decode() if isinstance(operation, bytes) else operation
        if operation != "put-token":
            self._reply(link, request, 400, f"unsupported $cbs operation {operation!r}")
            return
        if valid:
            self.authorized = True
            self._reply(link, request, 202, reason)
        else:
            self._reply(link, request, 401, f"InvalidSignature: {reason}")

    def _on_management(self, link: ReceivingLink, payload: bytes) -> None:
        request = parse_message(payload)
        if not self.authorized:
            self._reply(link, request, 401, "Unauthorized access: no valid token was put on $cbs.")
            return
        status, description, body = handle_management(_app_properties(request), self.namespace.hubs)
        self._reply(link, request, status, description, body)


def _app_properties(request: Any) -> dict[Any, Any]:
    value = next((v for c, v in request.sections if c == 0x74), None)
    return value if isinstance(value, dict) else {}
