"""A Locust worker's side of a fleet run: its devices, counters and messages to the master.

Messages (Locust's own channel, ``register_message`` / ``send_message``; the
master's side is ``master.py``):

master -> worker
    ``iotperf_spec``       the FleetSpec as a dict (``FleetSpec.to_dict``), sent before any user is spawned;
                           answered with ``iotperf_spec_checked``
    ``iotperf_clock_ping`` ``{"t1": master time}``: one NTP-style round trip, answered at once with
                           ``iotperf_clock_pong``; once every device connected, the master sends 8 per
                           worker, one at a time, then ``iotperf_prepare``
    ``iotperf_prepare``    every device connected: do the slow once-only work now, answer ``iotperf_prepared``
    ``iotperf_go``         ``{"t0": epoch seconds, "offsets": {worker client id: seconds}, "correct": bool}``:
                           every device starts its schedule at T0 (on the master's clock when correcting)
    ``iotperf_abort``      ``{"reason": str}``: stop publishing now and report
    ``iotperf_stop``       ``{"duration_s": seconds after T0}``: the parent ended the steady state early; no
                           message due from then on is sent or counted as scheduled
    ``iotperf_numbers``    ``{"ranges": [[start, stop], ...], "asked": k}``: device numbers, the answer to
                           ``iotperf_need_numbers`` (fewer than asked: the master has none left; see numbering.py)
worker -> master
    ``iotperf_spec_checked`` ``{"error": None or why}``: whether this worker can build the spec's messages
                           (a payload callable imports here); the master starts no device before all answered
    ``iotperf_need_numbers`` ``{"count": k}``: device numbers for the users Locust gave this worker
    ``iotperf_status``     counters every half second (connect progress, sent so far, devices offline, devices
                           ``dormant`` until a later stage: settled for the master's connect phase)
    ``iotperf_clock_pong`` ``{"t1", "t2", "t3"}``: the ping's time, and this worker's clock when it
                           received it and when it answered
    ``iotperf_prepared``   ``{"worker_index": n}``: the full GC and ``gc.freeze()`` are done
    ``iotperf_report``     the complete hand-off once every device finished its schedule:
                           exact per-device sent counts, lateness histogram, errors

No Locust request event is fired per message (each costs ~23 us); counts and
histograms stay here and travel once.  Per message the worker counts: lateness,
sent per timeline slot and per due slot (the issue 16 grid from T0), and the
10 ms bucket of its send time (a run-length count: the busiest 32 buckets are
kept for the herd check).  Scheduled per due slot is a replay at the end
(``arrival.scheduled_by_slot``), not counted as the schedule walks.

Stages: the scheduler loop (``_run_schedules``) also runs the stages' events
in time order: a stage's start (lateness is counted per stage), devices joining
during its ramp, devices leaving at its start; a run without stages has none.
Only imported inside Locust processes.
"""

from __future__ import annotations

import gc
import heapq
import os
import resource
import socket
import time
import weakref
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import IO, TYPE_CHECKING, Any

import gevent
import gevent.event

from pytest_iotperf.fleet.arrival import Arrivals, StagedArrivals, arrivals_for, scheduled_by_slot
from pytest_iotperf.fleet.clock import TEST_CLOCK_SHIFT_ENV
from pytest_iotperf.fleet.connect_limiter import ConnectLimiter, worker_share
from pytest_iotperf.fleet.credentials import load_credentials
from pytest_iotperf.fleet.device import Device
from pytest_iotperf.fleet.device_config import DeviceConfig, RunState
from pytest_iotperf.fleet.identity import IdentityProvider, provider_for
from pytest_iotperf.fleet.naming import DeviceNaming
from pytest_iotperf.fleet.outgoing import MessageRenderers
from pytest_iotperf.fleet.spec import FleetSpec
from pytest_iotperf.fleet.worker_numbers import NumberSupply
from pytest_iotperf.metrics import DelayHistogram
from pytest_iotperf.process_guard import raise_nofile_limit
from pytest_iotperf.stage_plan import device_life, starts_dormant
from pytest_iotperf.wire_reports import WorkerReport

if TYPE_CHECKING:
    from locust.env import Environment
    from locust.runners import WorkerRunner

_STATUS_INTERVAL_S = 0.5
_STATUS_MIN_GAP_S = 0.02
_ACK_WAIT_S = 5.0
_MAX_DISTINCT_ERRORS = 20
_YIELD_EVERY = 64
_NUMBER_WAIT_S = 30.0  # the master answers a request for device numbers at once; this is for a lost master
_LEAVE_ACK_WAIT_S = 2.0  # a device a stage drops waits this long at most for its QoS 1 acks, then hangs up
#: The herd check: messages sent per 10 ms of send time from T0 (aligned arrivals fall due on its edges);
#: each worker keeps its busiest buckets only.
_SEND_BUCKET_US = 10_000
_BUSIEST_KEPT = 32
_NO_BUCKET = -(1 << 62)

_fleets: weakref.WeakKeyDictionary[Environment, WorkerFleet] = weakref.WeakKeyDictionary()


def fleet_of(environment: Environment) -> WorkerFleet:
    """The fleet state of this worker, once the master has sent the spec."""
    try:
        return _fleets[environment]
    except KeyError:
        raise RuntimeError("no iotperf spec received from the master before users were spawned") from None


class WorkerFleet:
    """Everything one worker process knows about the run.

    It is its devices' ``DeviceEvents`` (it counts what they report) and
    writes the ``RunState`` they read; devices never see the fleet itself.
    """

    def __init__(
        self,
        spec: FleetSpec,
        runner: WorkerRunner,
        identities: IdentityProvider | None = None,
        renderers: MessageRenderers | None = None,
    ) -> None:
        self.spec = spec
        # The run's payload, compiled or imported once for every device of this worker.
        self.renderers = renderers if renderers is not None else MessageRenderers(spec.message, spec.run_id)
        self.runner = runner
        self.worker_index = max(0, int(runner.worker_index))
        self.device_config = DeviceConfig.from_spec(spec)
        self.run_state = RunState(float(os.environ.get(TEST_CLOCK_SHIFT_ENV, "0") or 0))
        # Read once for both: device ids (its device_id column) and credentials.
        rows = load_credentials(spec.identity.credentials_file) if spec.identity.credentials_file else None
        self.naming = DeviceNaming(spec.identity, spec.run_id, rows)
        self.identities = identities or provider_for(spec, credentials=rows)
        self.numbers = NumberSupply(runner)
        self.redispatched = 0  # users that got no device number (a lost worker's, re-dispatched): never connect
        self._failure_keys: dict[str, str] = {}  # connect failure reason -> its error line (naming a device)
        self.devices: list[Device] = []
        self.connected = 0  # connected now
        self.connected_ever = 0  # connected at least once
        self.connect_failed = 0
        self.connect_retries = 0
        self.disconnects = 0  # unexpected ones; sum of disconnect_reasons
        self.disconnect_reasons: Counter[str] = Counter()
        self.reconnects = 0
        self.reconnect_latency = DelayHistogram()  # disconnect -> CONNACK again, µs
        self.reconnect_timeline: Counter[int] = Counter()  # reconnects per 100 ms (epoch s * 10, timeline clock)
        self.offline_device_s = 0.0  # closed offline spells: until the reconnect, or the schedule's end
        self.dropped_offline = 0
        self.resent = 0
        self.sas_renewals = 0  # hung up and connected again with a fresh token before it expired
        self.connect_timeline: Counter[int] = Counter()  # connect attempts per 100 ms (epoch s * 10, timeline clock)
        # QoS 1 publish write -> PUBACK, µs.  The devices' clients count into _puback_counts (a plain dict:
        # ~60 ns a message against ~700 for DelayHistogram.record); it is folded in here off the hot path.
        self.puback_latency = DelayHistogram()
        self._puback_counts: dict[int, int] | None = {} if spec.qos > 0 else None
        # This worker's share of --iot-connect-rate: Locust spreads users evenly, so the share is even too.
        share = worker_share(spec.connect_rate, spec.expect_workers)
        self.connect_limiter = ConnectLimiter(share, sleep=gevent.sleep) if share is not None else None
        # Devices offline now after having connected -> time.monotonic() of the disconnect. Insertion order
        # is disconnect order, so the first entries are the longest offline (status() stops early).
        self._offline: dict[Device, float] = {}
        self.finished = 0
        self.sent = 0
        self.publish_errors = 0
        self.publish_errors_by_reason: Counter[str] = Counter()  # MQTT 5 PUBACK refusals: "0x87 not authorized"
        self.errors: Counter[str] = Counter()
        # Stages (issue 16): the plan (one stage without stages), lateness per stage (the scheduler points
        # ``lateness`` at the current stage's histogram when the stage starts: nothing more per message).
        self.plan = spec.stage_plan
        self.staged = bool(spec.stages)
        self.stage_lateness = [DelayHistogram() for _ in self.plan]
        self.lateness = self.stage_lateness[0]
        self.dormant = 0  # spawned for a later stage: no connection before its ramp
        self.stage_joins = 0  # connected at a later stage's ramp (first time, or again after leaving)
        self.stage_leaves = 0  # hung up cleanly because a stage dropped them
        self.sent_by_due_slot: Counter[int] = Counter()  # due slot from T0 (the contract's grid) -> sent
        self._t0_us = 0
        self._due_slot_us = spec.due_slot_us
        # Sent per 10 ms of send time, counted as a run (the sends of a worker come in time order): the
        # bucket being counted, its count, and the busiest buckets closed so far (bucket -> sent).
        self._send_bucket = _NO_BUCKET
        self._send_bucket_sent = 0
        self.busiest_10ms: dict[int, int] = {}
        self.connect_latency = DelayHistogram()
        self.sent_timeline: Counter[int] = Counter()
        self.connected_timeline: Counter[int] = Counter()  # slot -> devices connected at its end
        self._sampler: gevent.Greenlet | None = None
        self.go = gevent.event.Event()
        self.connected_at_go = 0
        self.first_drop_at: float | None = None
        self.schedules_done = gevent.event.Event()
        self.t0 = 0.0
        self.abort_reason: str | None = None
        self.stop_s: float | None = None  # seconds after T0 at which a stop request ended the schedule
        self._never_connected: list[Device] = []  # gave up connecting: their messages count as connect failures
        self._stopped = gevent.event.Event()
        self._schedule_t0 = 0.0  # T0 on this worker's clock (shifted when correcting)
        self._cpu_at_go = 0.0
        self._rss_before_devices = current_rss_bytes()
        self._reported = False
        self._slot_us = spec.timeline_slot_s * 1_000_000
        # Set when every device of this worker settled before the go (connected, gave up or dormant): the
        # master learns it from the next status, which then goes at once instead of up to 0.5 s later.
        self._status_wake = gevent.event.Event()
        self._status_greenlet = gevent.spawn(self._status_loop)
        self._keepalive_greenlet = gevent.spawn(self._keepalive_loop)

    # -- called by devices ------------------------------------------------------

    def next_number(self) -> int | None:
        """A global device number for a new user; None: it runs no device (counted as re-dispatched)."""
        try:
            number = self.numbers.take(_NUMBER_WAIT_S)
        except TimeoutError as exc:
            self.connect_failed += 1
            self._error(f"connect failed: {exc}")
            return None
        if number is None:
            self.redispatched += 1
        return number

    def index_of(self, n: int) -> int:
        """Device number ``n``'s place in the fleet: what the stages count (``index < stage.devices``)."""
        return n - self.spec.identity.device_offset

    def starts_dormant(self, n: int) -> bool:
        """Device ``n`` takes no part in the first stage: spawned now, it connects at a later stage's ramp."""
        return self.staged and starts_dormant(self.index_of(n), self.plan)

    def new_device(self, n: int) -> Device:
        name = self.naming.name(n)
        spec = self.spec
        arrivals: Arrivals = (
            StagedArrivals(spec.arrival, n, self.index_of(n), self.plan, spec.message.seed)
            if self.staged
            else arrivals_for(spec.arrival, n, spec.rate, spec.message.seed)
        )
        device = Device(
            self.device_config,
            name,
            arrivals,
            events=self,
            run=self.run_state,
            identities=self.identities,
            limiter=self.connect_limiter,
            message=self.renderers.for_device(name, self.spec.payload_bytes),
        )
        device.client.ack_latency = self._puback_counts
        self.devices.append(device)
        return device

    @property
    def aborted(self) -> bool:
        return self.run_state.aborted

    def device_connected(self, device: Device, seconds: float) -> None:
        self.connected += 1
        self.connected_ever += 1
        self.connect_latency.record(int(seconds * 1_000_000))
        if self.staged and self.go.is_set():
            self.stage_joins += 1  # a device dormant until a later stage's ramp
        self.device_settled()

    def device_settled(self) -> None:
        """A device connected, gave up or went dormant: before the go, the last one sends a status now."""
        if not self.go.is_set() and self.connected + self.connect_failed + self.dormant >= len(self.devices):
            self._status_wake.set()

    def device_failed(self, device: Device, error: str) -> None:
        self.connect_failed += 1
        self._never_connected.append(device)
        # Named by the first device it happened to (device ids are not secrets; credentials never reach errors).
        key = self._failure_keys.get(error)
        if key is None:
            key = self._failure_keys[error] = f"connect failed: {device.device_id}: {error}"
        self._error(key)
        self.device_settled()

    def connect_attempted(self) -> None:
        self.connect_timeline[int((self.now() - self.run_state.record_shift_s) * 10)] += 1

    def token_renewed(self, device: Device) -> None:
        self.sas_renewals += 1

    def connect_retried(self, error: str) -> None:
        self.connect_retries += 1

    def device_disconnected(self, device: Device, reason: str) -> None:
        self.connected -= 1
        self.disconnects += 1
        if reason in self.disconnect_reasons or len(self.disconnect_reasons) < _MAX_DISTINCT_ERRORS:
            self.disconnect_reasons[reason] += 1
        else:
            self.disconnect_reasons["other"] += 1
        if device.offline_since is not None:
            self._offline[device] = device.offline_since
        if not device.finished:
            if self.first_drop_at is None and self.go.is_set():
                self.first_drop_at = time.time()
            if not self.spec.reconnect:
                # Reconnecting, a drop is a measured event (disconnect_reasons, reconnects), not a broken run.
                self._error(f"disconnected during the run: {reason}")

    def device_reconnected(self, device: Device, offline_s: float) -> None:
        self.connected += 1
        self.reconnects += 1
        self.reconnect_latency.record(int(offline_s * 1_000_000))
        self.reconnect_timeline[int((self.now() - self.run_state.record_shift_s) * 10)] += 1
        self._offline_ended(device, offline_s)

    def device_gave_up(self, device: Device, offline_s: float) -> None:
        self._offline_ended(device, offline_s)

    def device_rejoined(self, device: Device, seconds: float) -> None:
        self.connected += 1
        self.stage_joins += 1
        self.connect_latency.record(int(seconds * 1_000_000))

    def rejoin_failed(self, device: Device, error: str) -> None:
        self._error(f"connect failed again for a later stage: {error}")

    def device_left(self, device: Device) -> None:
        self.connected -= 1
        self.stage_leaves += 1

    def _offline_ended(self, device: Device, offline_s: float) -> None:
        self._offline.pop(device, None)
        self.offline_device_s += offline_s

    def message_dropped_offline(self) -> None:
        self.dropped_offline += 1

    def message_resent(self) -> None:
        self.resent += 1

    def message_sent(self, due_us: int, sent_us: int) -> None:
        self.lateness.record(sent_us - due_us)
        self._count_sent(due_us, sent_us)

    def queued_message_sent(self, due_us: int, sent_us: int) -> None:
        # Not in lateness: that is the generator keeping its schedule (saturation); the outage
        # shows in the sink's delays, measured from the same due time.
        self._count_sent(due_us, sent_us)

    def _count_sent(self, due_us: int, sent_us: int) -> None:
        """One message sent: counted by its due time (timeline slot, due slot) and in its 10 ms of send time."""
        self.sent += 1
        self.sent_timeline[due_us // self._slot_us] += 1
        self.sent_by_due_slot[(due_us - self._t0_us) // self._due_slot_us] += 1
        bucket = (sent_us - self._t0_us) // _SEND_BUCKET_US
        if bucket == self._send_bucket:
            self._send_bucket_sent += 1
        else:
            self._next_send_bucket(bucket)

    def _next_send_bucket(self, bucket: int) -> None:
        """Close the 10 ms bucket counted so far (kept if among the busiest), start counting ``bucket``.

        Off the hot path: at most once per 10 ms of sending.  A send from another greenlet
        (an offline queue's flush) may interleave an older bucket: counted again as a bucket
        of its own, the merge adds both up by key.
        """
        closed, sent = self._send_bucket, self._send_bucket_sent
        if sent:
            busiest = self.busiest_10ms
            sent += busiest.pop(closed, 0)
            if len(busiest) < _BUSIEST_KEPT:
                busiest[closed] = sent
            else:
                quietest = min(busiest, key=busiest.__getitem__)
                if sent > busiest[quietest]:
                    del busiest[quietest]
                    busiest[closed] = sent
        self._send_bucket, self._send_bucket_sent = bucket, (0 if bucket == _NO_BUCKET else 1)

    def publish_failed(self, reason: str) -> None:
        self.publish_errors += 1
        self._error(f"publish failed: {reason}")

    def publish_refused(self, reason: str) -> None:
        # Sent already (it left the device); the broker would not take it.  PUBACK reason codes are few.
        self.publish_errors += 1
        self.publish_errors_by_reason[reason] += 1
        self._error(f"publish refused by the broker: {reason}")

    def device_finished(self, device: Device) -> None:
        self.finished += 1

    def _error(self, message: str) -> None:
        if message in self.errors or len(self.errors) < _MAX_DISTINCT_ERRORS:
            self.errors[message] += 1

    # -- called on master messages ------------------------------------------------

    def on_prepare(self) -> None:
        """Every device connected: get the slow things done before T0 is set, then tell the master."""
        # Tens of thousands of long-lived client objects make every full GC
        # pass a stall of hundreds of ms; freezing them keeps later passes
        # small.  The collection itself takes that long once, so it runs here,
        # not after the go (it would make the first second of the schedule late).
        gc.collect()
        gc.freeze()
        self.runner.send_message("iotperf_prepared", {"worker_index": self.worker_index})

    def now(self) -> float:
        """This worker's clock (shifted in tests by $IOTPERF_TEST_CLOCK_SHIFT_S)."""
        return self.run_state.now()

    def on_go(self, t0: float, offset_s: float = 0.0, correct: bool = False) -> None:
        """Start the schedule at master time ``t0``.

        Without correction T0 is read on this worker's clock as it is (what a
        plain distributed Locust run does).  With it, the schedule runs at the
        master's T0 and every recorded time is converted to master time, so a
        wrong worker clock does not leak into the delays.
        """
        shift = offset_s if correct else 0.0
        self.run_state.record_shift_s = shift
        self.connected_at_go = self.connected
        self.t0 = t0
        self._cpu_at_go = time.process_time()
        self._schedule_t0 = t0 + shift
        self._t0_us = round(t0 * 1_000_000)  # the master's T0: the origin of every due time accounted
        self.go.set()
        gevent.spawn(self._run_schedules, t0 + shift)
        self._sampler = gevent.spawn(self._sample_connected, t0)
        gevent.spawn(self._report_when_finished)

    def _armed_schedules(self, t0: float) -> list[tuple[float, int, Device]]:
        """Every device's schedule started at ``t0`` (this worker's clock): the scheduler's heap of due times."""
        heap: list[tuple[float, int, Device]] = []
        t0_us = self._t0_us
        for index, device in enumerate(self.devices):
            due = device.start_schedule(t0, t0_us)
            if due is not None:
                heap.append((due, index, device))
        heapq.heapify(heap)
        return heap

    def _stage_events(self, t0: float) -> list[tuple[float, int, int, Callable[[], None]]]:
        """What happens at stage boundaries, in time order: ``(at, order, tie, action)``.

        A stage's start points ``lateness`` at its histogram (order 0: before anything else due
        then); each device a stage adds joins at its moment of the stage's ramp; each device it
        drops leaves at its start (order 1: after every message due before the start was sent).
        """
        events: list[tuple[float, int, int, Callable[[], None]]] = []
        for position, stage in enumerate(self.plan[1:], 1):
            events.append((t0 + stage.start_s, 0, position, partial(self._enter_stage, position)))
        for tie, device in enumerate(self.devices):
            for offset_s, joins, _ in device_life(self.index_of(device.name.n), self.plan):
                action = device.rejoin if joins else partial(device.leave, _LEAVE_ACK_WAIT_S)
                events.append((t0 + offset_s, 1, tie, action))
        events.sort(key=lambda event: event[:3])
        return events

    def _enter_stage(self, position: int) -> None:
        self.lateness = self.stage_lateness[position]

    def _run_schedules(self, t0: float) -> None:
        """One scheduler for every device of this worker: a heap of due times, and the stages' events.

        A sleeping greenlet per device would cost a timer and two switches per
        message; walking a heap publishes every due message in one pass and
        sleeps only when nothing is due.  In a run in stages, the stages' events
        (:meth:`_stage_events`) run in time order with the messages: an event
        runs once every message due before it was published, so a device a stage
        drops leaves after its last message due before the stage.  Without stages
        there are none, and a message costs one more comparison than the heap walk.
        """
        heap = self._armed_schedules(t0)
        events = self._stage_events(t0) if self.staged else []
        pending = len(events)
        upcoming = 0
        published = 0
        while heap or upcoming < pending:
            if upcoming < pending and (not heap or events[upcoming][0] <= heap[0][0]):
                at = events[upcoming][0]
                if self.stop_s is not None and at >= t0 + self.stop_s:
                    upcoming = pending  # the run ends before: no device joins or leaves any more
                    continue
                now = self.now()
                if at > now:
                    self._wait(at - now)
                    continue
                events[upcoming][3]()
                upcoming += 1
                continue
            due, index, device = heap[0]
            if self.stop_s is not None and due >= t0 + self.stop_s:
                heapq.heappop(heap)
                device.end_schedule()
                continue
            now = self.now()
            if due > now:
                self._wait(due - now)
                continue
            following = device.publish_due(now)
            if following is None:
                heapq.heappop(heap)
            else:
                heapq.heapreplace(heap, (following, index, device))
            published += 1
            if published % _YIELD_EVERY == 0:
                gevent.sleep(0)  # let readers take acks and keep-alives when we run behind
        self.schedules_done.set()

    def _wait(self, seconds: float) -> None:
        if self.stop_s is None:
            self._stopped.wait(seconds)  # a stop request may end the schedule before then
        else:
            gevent.sleep(seconds)

    def _sample_connected(self, t0: float) -> None:
        """Devices connected at the end of each timeline slot (slots on the master's clock, like sent_timeline).

        One wake-up per slot; the last slot is sampled when the schedules end.
        """
        slot_s = self.spec.timeline_slot_s
        shift = self.run_state.record_shift_s
        end = t0 + self.spec.duration_s
        slot = int(t0 // slot_s)
        while True:
            slot_end = min((slot + 1) * slot_s, end)
            wait = slot_end - (self.now() - shift)
            done = self.schedules_done.wait(wait) if wait > 0 else self.schedules_done.is_set()
            self.connected_timeline[slot] = self.connected
            if done or slot_end >= end:
                return
            slot += 1

    def on_stop(self, duration_s: float) -> None:
        """End every schedule at T0 + ``duration_s``: messages due before it are sent, later ones never fall due.

        Heard late (past that instant), the schedule ends now instead: what was sent stays counted, and
        ``scheduled`` counts exactly the messages due before the end this worker applied.
        """
        if self.stop_s is not None or not self.go.is_set():
            return
        self.stop_s = min(max(duration_s, self.now() - self._schedule_t0), self.spec.duration_s)
        self._stopped.set()

    def on_abort(self, reason: str) -> None:
        self.run_state.aborted = True
        self.abort_reason = reason
        if not self.go.is_set():
            self.on_go(time.time())

    # -- reporting -----------------------------------------------------------------

    def _keepalive_loop(self) -> None:
        # One sweep for all devices instead of a timer per device.
        interval = max(1.0, self.spec.connection.keepalive_s / 4)
        while True:
            gevent.sleep(interval)
            for index, device in enumerate(list(self.devices)):
                device.keep_alive()
                if index % _YIELD_EVERY == _YIELD_EVERY - 1:
                    # A whole sweep over 20,000 clients takes ~90 ms; in one piece it
                    # made every message due meanwhile that late.
                    gevent.sleep(0)

    def _fold_puback_latency(self, chunk: int | None = None) -> None:
        """Move the clients' PUBACK counts into the histogram; yield every ``chunk`` values (None: never).

        ``popitem`` takes each value out as it is recorded, so a fold interrupted
        by a yield loses nothing and a second fold meanwhile takes the rest.
        """
        counts = self._puback_counts
        record = self.puback_latency.record
        done = 0
        while counts:
            latency_us, n = counts.popitem()
            record(latency_us, n)
            done += 1
            if chunk is not None and done % chunk == 0:
                gevent.sleep(0)

    def _status_loop(self) -> None:
        while not self._reported:
            self._fold_puback_latency(chunk=1024)
            self.runner.send_message("iotperf_status", self.status())
            gevent.sleep(_STATUS_MIN_GAP_S)  # however often woken: at most ~50 statuses a second
            self._status_wake.wait(_STATUS_INTERVAL_S - _STATUS_MIN_GAP_S)
            self._status_wake.clear()

    def status(self) -> dict[str, Any]:
        first_error = next(iter(self.errors), None)
        offline, over_budget, longest_s = self.offline_now()
        return {
            "worker_index": self.worker_index,
            "devices": len(self.devices),
            "connected": self.connected,
            "connect_failed": self.connect_failed,
            "sent": self.sent,
            "publish_errors": self.publish_errors,
            "first_error": first_error,
            "redispatched": self.redispatched,
            **self.numbers.status(),
            "connected_at_go": self.connected_at_go,
            "dormant": self.dormant,
            "finished": self.finished,
            "offline": offline,
            "offline_over_budget": over_budget,
            "offline_longest_s": longest_s,
        }

    def offline_now(self) -> tuple[int, int, float]:
        """Devices offline now, how many of them for longer than the outage budget, and the longest spell (s)."""
        offline = self._offline
        if not offline:
            return 0, 0, 0.0
        now = time.monotonic()
        budget_s = self.spec.outage_budget_s
        over_budget = 0
        for since in offline.values():  # oldest first: stop at the first within the budget
            if now - since <= budget_s:
                break
            over_budget += 1
        return len(offline), over_budget, now - next(iter(offline.values()))

    def _report_when_finished(self) -> None:
        # Devices finish on their own when the schedule ends; the hand-off is
        # complete (every device counted), not timed.
        while self.finished < len(self.devices):
            gevent.sleep(0.05)
        cpu_s = time.process_time() - self._cpu_at_go
        wall_s = max(time.time() - self.t0, 1e-9)
        if self.spec.qos > 0:
            # An offline device does not wait (nothing can be acknowledged); devices stop reconnecting
            # when their schedule ends, so none comes back meanwhile.
            waiters = [gevent.spawn(d.wait_acknowledged, _ACK_WAIT_S) for d in self.devices]
            gevent.joinall(waiters, timeout=_ACK_WAIT_S + 1)
        if self._sampler is not None:
            self._sampler.join(timeout=1.0)
        self._reported = True
        self.runner.send_message("iotperf_report", dict(self.report(cpu_s, wall_s)))

    def _scheduled(self, devices: list[Device]) -> Counter[int]:
        """Messages due to ``devices`` per due slot, within the run or until the stop (a replay of their
        staged arrivals: the same in every process)."""
        spec = self.spec
        numbers = [(d.name.n, self.index_of(d.name.n)) for d in devices]
        return scheduled_by_slot(
            spec.arrival, numbers, self.plan, self._due_slot_us, spec.message.seed, stop_s=self.stop_s
        )

    def report(self, cpu_s: float, wall_s: float) -> WorkerReport:
        spec = self.spec
        scheduled_by_due_slot = self._scheduled(self.devices)
        scheduled = sum(scheduled_by_due_slot.values())
        never_connected = sum(self._scheduled(self._never_connected).values())
        self._fold_puback_latency()  # all of it, the final ack wait's PUBACKs too
        self._next_send_bucket(_NO_BUCKET)  # the last 10 ms bucket counted
        lateness = DelayHistogram()
        for stage_lateness in self.stage_lateness:
            lateness.merge(stage_lateness)
        return {
            "worker_index": self.worker_index,
            "pid": os.getpid(),
            "devices": len(self.devices),
            "connected_at_go": self.connected_ever,
            "connect_failed": self.connect_failed,
            "connect_retries": self.connect_retries,
            "disconnects": self.disconnects,
            "scheduled": scheduled,
            "scheduled_never_connected": never_connected,
            "sent": self.sent,
            "sent_by_device": {d.device_id: d.sent for d in self.devices},
            "publish_errors": self.publish_errors,
            "publish_errors_by_reason": dict(self.publish_errors_by_reason),
            "errors": dict(self.errors),
            "lateness": lateness.to_dict(),
            "connect_latency": self.connect_latency.to_dict(),
            "sent_timeline": {str(slot * spec.timeline_slot_s): n for slot, n in self.sent_timeline.items()},
            "cpu_s": cpu_s,
            "wall_s": wall_s,
            "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "rss_bytes": current_rss_bytes(),
            "rss_before_devices_bytes": self._rss_before_devices,
            "aborted": self.aborted,
            "first_drop_at": self.first_drop_at,
            "abort_reason": self.abort_reason,
            "reconnects": self.reconnects,
            "dropped_offline": self.dropped_offline,
            "resent": self.resent,
            "disconnect_reasons": dict(self.disconnect_reasons),
            "reconnect_latency": self.reconnect_latency.to_dict(),
            "offline_device_s": self.offline_device_s,
            "connected_timeline": {str(slot * spec.timeline_slot_s): n for slot, n in self.connected_timeline.items()},
            "reconnect_timeline": {str(bucket): n for bucket, n in self.reconnect_timeline.items()},
            "sas_renewals": self.sas_renewals,
            "puback_latency": self.puback_latency.to_dict(),
            "connect_timeline": {str(bucket): n for bucket, n in self.connect_timeline.items()},
            "redispatched": self.redispatched,
            "dormant": self.dormant,
            "stage_joins": self.stage_joins,
            "stage_leaves": self.stage_leaves,
            "sent_by_due_slot": {str(slot): n for slot, n in sorted(self.sent_by_due_slot.items())},
            "scheduled_by_due_slot": {str(slot): n for slot, n in sorted(scheduled_by_due_slot.items())},
            "stage_lateness": [histogram.to_dict() for histogram in self.stage_lateness],
            "busiest_10ms": {str(bucket): n for bucket, n in self.busiest_10ms.items()},
        }


def _open_statm() -> IO[str] | None:
    try:
        return open("/proc/self/statm")  # kept open for the process's life
    except OSError:
        return None


# Opened once: at 20,000 sockets the process may have no descriptor left to open it later.
_STATM = _open_statm()


def current_rss_bytes() -> int:
    """Resident memory now (Linux /proc; 0 where unavailable)."""
    if _STATM is None:
        return 0
    try:
        _STATM.seek(0)
        return int(_STATM.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def retire_fleet(environment: Environment) -> None:
    """Forget this worker's last run before the next (a standing worker serves a session's runs).

    Its devices were closed when Locust stopped their users; its own loops end here, and the objects
    the last ``on_prepare`` froze become collectable again (the next prepare freezes the new run's).
    """
    old = _fleets.pop(environment, None)
    if old is None:
        return
    gevent.killall([old._status_greenlet, old._keepalive_greenlet], block=False)
    for device in old.devices:
        device.close()  # normally closed already (DeviceUser.on_stop); safe to call twice
    gc.unfreeze()


def install_worker(environment: Environment) -> None:
    """Register the worker's message handlers on a WorkerRunner."""
    runner = environment.runner
    assert runner is not None

    def on_spec(msg: Any, **_: Any) -> None:
        spec = FleetSpec.from_dict(msg.data)
        error: str | None = None
        retire_fleet(environment)  # a standing worker's last run: its devices were closed when its users stopped
        try:
            # Before any device starts: a payload callable must import here (this may be another machine).
            renderers = MessageRenderers(spec.message, spec.run_id)
        except Exception as exc:  # the worker's reason goes back to the master, naming the worker
            error = f"worker {getattr(runner, 'worker_index', '?')} on {socket.gethostname()}: {exc}"
        else:
            _fleets[environment] = WorkerFleet(spec, runner, renderers=renderers)  # type: ignore[arg-type]
        runner.send_message("iotperf_spec_checked", {"error": error})

    def on_prepare(msg: Any, **_: Any) -> None:
        fleet_of(environment).on_prepare()

    def on_go(msg: Any, **_: Any) -> None:
        offsets = msg.data.get("offsets") or {}
        offset = float(offsets.get(getattr(runner, "client_id", ""), 0.0))
        fleet_of(environment).on_go(float(msg.data["t0"]), offset, bool(msg.data.get("correct")))

    def on_clock_ping(msg: Any, **_: Any) -> None:
        fleet = _fleets.get(environment)
        received = fleet.now() if fleet is not None else time.time()
        runner.send_message(
            "iotperf_clock_pong", {"t1": msg.data["t1"], "t2": received, "t3": fleet.now() if fleet else time.time()}
        )

    def on_stop(msg: Any, **_: Any) -> None:
        fleet = _fleets.get(environment)
        if fleet is not None:
            fleet.on_stop(float(msg.data["duration_s"]))

    def on_abort(msg: Any, **_: Any) -> None:
        fleet = _fleets.get(environment)
        if fleet is not None:
            fleet.on_abort(str(msg.data.get("reason", "aborted")))

    def on_numbers(msg: Any, **_: Any) -> None:
        fleet_of(environment).numbers.on_numbers(msg.data)

    runner.register_message("iotperf_spec", on_spec)
    runner.register_message("iotperf_prepare", on_prepare)
    runner.register_message("iotperf_go", on_go)
    runner.register_message("iotperf_clock_ping", on_clock_ping)
    runner.register_message("iotperf_abort", on_abort)
    runner.register_message("iotperf_stop", on_stop)
    runner.register_message("iotperf_numbers", on_numbers)
    # The master sends the spec only after this: a spec that arrives before the handlers are
    # registered is dropped by Locust ("Unknown message type"), and no device could start.
    # With the open-files limit its devices' sockets count against: the master checks its share before spawning.
    runner.send_message("iotperf_installed", {"nofile": raise_nofile_limit()})
