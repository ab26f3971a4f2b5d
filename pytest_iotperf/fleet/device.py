"""One simulated device: a paho-mqtt client driven from greenlets.

No OS thread per client and no ``select()``: paho's own loops call
``select.select``, which caps a process at FD_SETSIZE (1,024) sockets.  Here
an io watcher on gevent's hub (epoll) calls ``loop_read`` when the socket is
readable; publishing writes a pre-framed PUBLISH straight to the socket from
the device's schedule (see ``lean_mqtt``), and ``loop_write`` only runs
when the kernel buffer was full.

Surviving outages (issue 13): after an unexpected disconnect the device's own
greenlet reconnects with backoff (:meth:`Device._stay_connected`), while the
worker's scheduler keeps calling :meth:`Device.publish_due`: what falls due
meanwhile waits in a bounded offline queue of due times and is published in
order after the CONNACK, behind the QoS 1 messages that were never
acknowledged.  A message takes its ``seq`` only when it is sent, so what the
queue drops never leaves a gap the sink would count as lost.

Credentials that expire (IoT Hub SAS tokens, issue 14): at each connect the
device schedules a renewal at a random 75-90 % of the token's remaining life
(devices connected together renew spread out), then hangs up cleanly and
connects again with a fresh identity, through the same machinery as an
outage: what falls due meanwhile queues, what was not acknowledged is sent
again.  A renewal is counted as such (``token_renewed``), not as a disconnect;
only a renewal that cannot connect becomes an outage.

Stages (issue 16): a device a stage drops sends what fell due before the
stage, waits (briefly) for its acks and hangs up cleanly (:meth:`Device.leave`,
reported as ``device_left``, never as a disconnect); a stage that takes it (back)
connects it during that stage's ramp (:meth:`Device.rejoin`: same number, id and
identity), queueing what falls due meanwhile as after an outage.

Every connect attempt (the first, retries, reconnects, renewals, rejoins) waits on the
worker's :class:`~pytest_iotperf.fleet.connect_limiter.ConnectLimiter` when
``--iot-connect-rate`` is set.

Only imported inside Locust processes (gevent-patched); never by pytest.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import gevent
import gevent.event
from gevent.socket import wait_write
from paho.mqtt import client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from pytest_iotperf.fleet.arrival import Arrivals
from pytest_iotperf.fleet.device_config import DeviceConfig, DeviceEvents, RunView
from pytest_iotperf.fleet.drop_reason import drop_reason
from pytest_iotperf.fleet.identity import IdentityError, IdentityProvider
from pytest_iotperf.fleet.naming import DeviceName
from pytest_iotperf.fleet.outgoing import MessageRenderer, renderer_for
from pytest_iotperf.iothub.property_framer import PropertyBagFramer
from pytest_iotperf.lean_mqtt import LeanClient, puback_reason
from pytest_iotperf.mqtt_client import ClientIdentity, connect, make_client
from pytest_iotperf.mqtt_wire import PublishFramer, PublishFramerV5, retransmission

if TYPE_CHECKING:
    from pytest_iotperf.fleet.connect_limiter import ConnectLimiter

_SUCCESS = MQTTErrorCode.MQTT_ERR_SUCCESS
#: What ``_publish`` returns when the payload could not be rendered (already counted as a publish error).
_PAYLOAD_FAILED = MQTTErrorCode.MQTT_ERR_PAYLOAD_SIZE
#: CONNACK refusals no retry can fix: unsupported protocol version, client id not valid, bad user name or
#: password, not authorized (MQTT 3.1.1 return codes 1, 2, 4, 5 as paho maps them, and MQTT 5's own), and
#: MQTT 5's malformed packet, protocol error, banned, bad authentication method, topic name invalid, packet
#: too large, payload format invalid, retain / QoS not supported (of the will) and server moved: each says
#: the same CONNECT will be refused again.  Retried: unspecified (0x80) and implementation specific (0x83)
#: errors, server unavailable (0x88) or busy (0x89), quota (0x97) or connection rate (0x9F) exceeded, use
#: another server (0x9C: a temporary redirect paho does not follow).
_REFUSED_FOR_GOOD = frozenset(
    {0x81, 0x82, 0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C, 0x90, 0x95, 0x99, 0x9A, 0x9B, 0x9D}
)
_CONNACK_TIMEOUT_S = 10.0
#: The first reconnect try comes within this long; each failed try doubles the window, up to reconnect_max_s.
_FIRST_RETRY_S = 0.1
#: After a reconnect, yield to the hub every this many messages sent again (the scheduler must not wait on us).
_FLUSH_YIELD_EVERY = 32
#: A token is renewed at a random point in this part of its remaining life (spread, never all at once).
_RENEW_AT = (0.75, 0.9)
#: ... but never later than this long before the expiry.
_RENEW_MARGIN_S = 1.0
#: Before hanging up to renew, wait this long at most for the acks of what is in flight (fewer resends).
_RENEW_ACK_WAIT_S = 2.0


class Device:
    """A device's connection, schedule and counters.

    It owns its schedule; what it needs from the run comes in as a config
    value and a read-only view, what happens to it goes out as events.
    """

    def __init__(
        self,
        config: DeviceConfig,
        name: DeviceName,
        arrivals: Arrivals,
        *,
        events: DeviceEvents,
        run: RunView,
        identities: IdentityProvider,
        limiter: ConnectLimiter | None = None,
        message: MessageRenderer | None = None,
    ) -> None:
        self.config = config
        self.name = name
        self.device_id = device_id = name.device_id
        self.topic = config.topic_for(device_id)
        # The body (fixed JSON, template or callable) and the header's properties when it travels outside it.
        # The worker hands over one prepared for it (the payload compiled or imported once per process).
        self.message = (
            message if message is not None else renderer_for(config.message, config.run_id, name, config.payload_bytes)
        )
        self.framer = framer_for(config, self.topic, self.message.content_type)
        self._render_body = self.message.render_body
        self.sent = 0  # successful publishes; also the next seq
        self.connected = False
        self.finished = False  # schedule over and nothing left to send: counted by the fleet
        self.last_error: str | None = None
        #: time.monotonic() of the disconnect that opened the current offline spell, else None.
        self.offline_since: float | None = None
        self._events = events
        self._run = run
        self._connack: gevent.event.AsyncResult = gevent.event.AsyncResult()
        self._reader: Any = None  # the hub's io watcher for our socket
        self._flusher: gevent.Greenlet | None = None
        self._arrivals = arrivals  # when its messages fall due: offsets from T0 (fleet/arrival.py)
        self._offset = 0.0  # the due offset of message k
        self._qos = config.qos
        self._start = 0.0  # T0 on this worker's clock: the schedule runs on it
        self._t0_us = 0  # T0 on the master's clock, whole µs: a message's intended_at is t0_us + its offset
        self._duration_s = config.duration_s  # offsets from here on are past the run
        self._k = 0
        self._ever_connected = False
        # Stages (issue 16): bumped by rejoin(), so a leave() still waiting for acks knows it was overtaken.
        self._life = 0
        self._schedule_over = False
        self._closing = False
        self._session_present = False
        self._refused_for_good = False  # the last CONNACK refused us for a reason a retry cannot fix
        # Created on the first outage only: 20,000 idle devices should not carry a deque and an event each.
        self._queue: deque[int] | None = None  # due times (µs, as recorded) of messages waiting for the connection
        self._reconnector: gevent.Greenlet | None = None  # reconnects, resends and flushes the queue
        self._wake: gevent.event.Event | None = None  # set to cut a backoff sleep short (schedule over, close)
        self._identities = identities
        #: When the credentials of the current connection stop working (epoch s; None: never).
        self.expires_at: float | None = None
        self._limiter = limiter  # the worker's share of --iot-connect-rate, shared by its devices
        self._renewal_timer: Any = None  # the hub's timer for the next token renewal (expiring credentials only)
        self.client = self._make_client(identities)

    def _make_client(self, identities: IdentityProvider) -> LeanClient:
        # The client id and TLS context are fixed per client; credentials are set again at every connect.
        try:
            identity = identities.identity_for(self.name)
        except IdentityError:
            identity = ClientIdentity(self.device_id)  # each connect asks again and fails naming why
        client = make_client(self.config.connection, identity, clean_session=self.config.clean_session)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish_refused = self._on_publish_refused
        return client

    # -- connection ---------------------------------------------------------------

    def connect(self) -> bool:
        """Connect, retrying refusals with jittered exponential backoff within the budget.

        The first connect of a device reports ``device_connected`` / ``device_failed``; a
        stage taking it back after it left reports ``device_rejoined`` / ``rejoin_failed``.
        """
        events = self._events
        again = self._ever_connected
        deadline = time.monotonic() + self.config.connect_budget_s
        backoff = 0.05
        while True:
            started = time.monotonic()
            error = self._connect_once()
            if error is None:
                self.connected = True
                self._ever_connected = True
                if again:
                    events.device_rejoined(self, time.monotonic() - started)
                else:
                    events.device_connected(self, time.monotonic() - started)
                return True
            self.last_error = error
            if self._refused_for_good:
                # Wrong credentials stay wrong: fail now, so a bad key fails the run in seconds, not the budget.
                self._connect_failed(error, again)
                return False
            events.connect_retried(error)
            if time.monotonic() + backoff > deadline:
                self._connect_failed(error, again)
                return False
            gevent.sleep(backoff * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, 2.0)

    def _connect_failed(self, error: str, again: bool) -> None:
        if again:
            self._events.rejoin_failed(self, error)
        else:
            self._events.device_failed(self, error)

    def _connect_once(self) -> str | None:
        """One attempt; None on success, else why it failed."""
        self._connack = gevent.event.AsyncResult()
        self._refused_for_good = False
        try:
            # Fresh credentials at every connect: a SAS token may have expired since the last one.
            identity = self._identities.identity_for(self.name)
        except IdentityError as exc:
            return str(exc)
        if identity.username is not None:
            self.client.username_pw_set(identity.username, identity.password)
        self.expires_at = identity.expires_at
        if self._limiter is not None:
            self._limiter.wait()
        self._events.connect_attempted()
        try:
            rc = connect(self.client, self.config.connection)  # Nagle off: see LeanClient
        except OSError as exc:
            return f"{type(exc).__name__}: {exc.strerror or exc}"
        if rc != _SUCCESS:
            return mqtt.error_string(rc)
        self._start_reader()
        reason = self._connack.wait(_CONNACK_TIMEOUT_S)
        if reason == "ok" and self.client.socket() is not None:
            if self.expires_at is not None:
                self._schedule_renewal()
            return None
        if reason == "ok":
            return "disconnected right after CONNACK"
        self._stop_reader()
        sock = self.client.socket()
        if sock is not None:
            sock.close()
        return str(reason) if reason is not None else f"no CONNACK within {_CONNACK_TIMEOUT_S:g}s"

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._session_present = bool(getattr(flags, "session_present", False))
        self._refused_for_good = reason.is_failure and reason.value in _REFUSED_FOR_GOOD
        framer = self.framer
        if isinstance(framer, PublishFramerV5):
            # A new connection knows no alias; a broker without Topic Alias Maximum takes none at all.
            framer.reset(alias_allowed=getattr(props, "TopicAliasMaximum", 0) >= 1)
        self._connack.set("ok" if not reason.is_failure else f"connection refused: {reason}")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        """paho lost the connection (read error, write error, keep-alive) or we closed it.

        Called from the hub's read callback or from whichever greenlet wrote: it
        must not block, so the reconnect runs in the device's own greenlet.
        """
        if self.connected:
            self.connected = False
            self._stop_reader()  # its descriptor is closed; a new socket may get the same number
            cause = drop_reason(self.client.lost_reason, str(reason), self.expires_at, time.time())
            if not self._schedule_over:
                self.offline_since = time.monotonic()
            self._events.device_disconnected(self, cause)
            if self.config.reconnect and not self._schedule_over and not self._closing and self._reconnector is None:
                self._reconnector = gevent.spawn(self._stay_connected)
        if not self._connack.ready():
            self._connack.set(f"disconnected before CONNACK: {reason}")

    # -- surviving an outage ------------------------------------------------------

    def _stay_connected(self) -> None:
        """Reconnect, resend what was not acknowledged, publish the offline queue; again if the connection drops."""
        try:
            while self._reconnect() and not (self._resend_inflight() and self._flush_queue()):
                pass
        finally:
            self._reconnector = None
            if self._schedule_over:  # it ended meanwhile: this greenlet owed the device's finish
                self._give_up_if_offline()
                self._done()

    def _reconnect(self) -> bool:
        """Connect again with jittered exponential backoff; False once the schedule is over (or on close).

        Full jitter: each try waits uniformly in [0, window], the window doubling
        from 100 ms up to reconnect_max_s.  Devices dropped together spread their
        tries evenly over the whole window at every round, so they do not come
        back in waves, and the first try comes within 100 ms.
        """
        if self.connected:
            return True
        if self._wake is None:
            self._wake = gevent.event.Event()
        cap = self.config.reconnect_max_s
        attempt = 0
        while not (self._schedule_over or self._closing):
            window = min(cap, _FIRST_RETRY_S * (1 << min(attempt, 30)))
            if self._wake.wait(random.uniform(0.0, window)):
                break
            error = self._connect_once()
            if error is None:
                self.connected = True
                since = self.offline_since
                self.offline_since = None
                self._events.device_reconnected(self, time.monotonic() - since if since is not None else 0.0)
                return True
            self.last_error = error
            attempt += 1
        return False

    def _resend_inflight(self) -> bool:
        """QoS 1 messages sent but never acknowledged go out again; False if the connection dropped meanwhile.

        The broker kept our session (clean_session false and CONNACK's session-present
        flag): the same packet with DUP set.  Otherwise a new session knows none of
        the ids: the same message under a new id, DUP clear.  Counted as resent, not sent.
        """
        client = self.client
        pending = client.take_inflight()
        same_session = not self.config.clean_session and self._session_present
        # MQTT 5: a packet that carried only its topic alias gets the topic back (the alias died with its connection).
        framer = self.framer
        resend = framer.retransmission if isinstance(framer, PublishFramerV5) else retransmission
        for index, (packet_id, packet) in enumerate(pending):
            if not self.connected:
                client.inflight.update(pending[index:])  # for the next reconnect
                return False
            if same_session:
                again, again_id = resend(packet), packet_id
            else:
                again_id = client.packet_id()
                again = resend(packet, again_id)
            if client.send_publish(again, 1, again_id) != _SUCCESS:
                client.inflight.update(pending[index:])
                return False
            self._events.message_resent()
            if not self._drain_and_yield(index + 1):
                return False
        return self.connected

    def _flush_queue(self) -> bool:
        """Publish what fell due while offline, oldest first; False if the connection dropped meanwhile.

        ``intended_at`` is the schedule's due time, so the outage shows as delay.
        The scheduler keeps appending while this runs, so order is kept.
        """
        queue = self._queue
        run = self._run
        sent = 0
        while queue:
            if not self.connected:
                return False
            now_us = int((run.now() - run.record_shift_s) * 1_000_000)
            rc = self._publish(queue[0], now_us, queued=True)
            if rc != _SUCCESS and rc != _PAYLOAD_FAILED:  # a payload failure is counted and the message dropped
                return False  # the message stays first in the queue
            queue.popleft()
            sent += 1
            if not self._drain_and_yield(sent):
                return False
        return self.connected

    def _drain_and_yield(self, sent: int) -> bool:
        """Between messages sent from this greenlet: wait for the kernel buffer when full, yield now and then."""
        if self.client.want_write():
            self._write_out()
        elif sent % _FLUSH_YIELD_EVERY == 0:
            gevent.sleep(0)
        return self.connected

    def _enqueue(self, due_us: int) -> None:
        """Keep a message due while offline; with the queue full it is dropped (the newest: paho's default too)."""
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        if len(queue) < self.config.offline_queue:
            queue.append(due_us)
        else:
            self._events.message_dropped_offline()

    def _give_up_if_offline(self) -> None:
        since = self.offline_since
        if since is not None and not self.connected:
            self.offline_since = None
            self._events.device_gave_up(self, time.monotonic() - since)

    @property
    def queued(self) -> int:
        """Messages due while offline that are still waiting to be sent."""
        return len(self._queue) if self._queue else 0

    def _start_reader(self) -> None:
        """Read from the hub's epoll loop: a persistent io watcher, no greenlet per device.

        The callback runs in the hub; the client's loop_read only does non-blocking
        recv calls and our callbacks never block, so nothing here switches.
        """
        sock = self.client.socket()
        if sock is None:
            return
        watcher = gevent.get_hub().loop.io(sock.fileno(), 1)
        watcher.start(self._on_readable)
        self._reader = watcher

    def _on_readable(self) -> None:
        try:
            rc = self.client.loop_read()
        except Exception as exc:  # a hub callback must never raise
            rc = MQTTErrorCode.MQTT_ERR_UNKNOWN
            self.last_error = f"{type(exc).__name__}: {exc}"
        if rc != _SUCCESS or self.client.socket() is None:
            self._stop_reader()

    def keep_alive(self) -> None:
        """Send PINGREQ when due and notice a silent broker (paho's loop_misc)."""
        if self.client.socket() is not None and self.client.loop_misc() != _SUCCESS:
            self._stop_reader()

    def _stop_reader(self) -> None:
        if self._reader is not None:
            self._reader.stop()
            self._reader.close()
        self._reader = None

    # -- renewing expiring credentials ---------------------------------------------

    def _schedule_renewal(self) -> None:
        """Renew at a random 75-90 % of the remaining life of the credentials just connected with."""
        self._cancel_renewal()
        assert self.expires_at is not None
        remaining = self.expires_at - time.time()
        # Keep a margin of a second at least: a busy worker's timer fires late, and the hub closes the
        # connection at the expiry second (short tokens would otherwise be renewed a few 100 ms before it).
        latest = remaining - max(_RENEW_MARGIN_S, remaining * (1.0 - _RENEW_AT[1]))
        delay = max(0.0, min(remaining * random.uniform(*_RENEW_AT), latest))
        timer = gevent.get_hub().loop.timer(delay)  # a timer, not a sleeping greenlet per device
        timer.start(self._renewal_due)
        self._renewal_timer = timer

    def _cancel_renewal(self) -> None:
        timer = self._renewal_timer
        if timer is not None:
            self._renewal_timer = None
            timer.stop()
            timer.close()

    def _renewal_due(self) -> None:
        """The timer's callback runs in the hub, which must not block: the renewal runs in a greenlet."""
        self._cancel_renewal()
        if self.connected and self._reconnector is None and not (self._schedule_over or self._closing):
            self._reconnector = gevent.spawn(self._renew)

    def _renew(self) -> None:
        """Hang up cleanly and connect again with a fresh identity; the schedule keeps running meanwhile.

        Runs as the device's reconnector, so messages falling due queue up and
        are sent after the new CONNACK, behind the unacknowledged ones.  If the
        new connection fails the renewal becomes an outage: counted as a
        disconnect, retried with backoff like any other.
        """
        try:
            # Nothing new goes out meanwhile (it queues): let what is in flight be acknowledged first, so
            # little is sent twice; never so long that the credentials expire first.
            remaining_s = (self.expires_at or 0.0) - time.time()
            self.wait_acknowledged(min(_RENEW_ACK_WAIT_S, max(0.0, remaining_s / 2)))
            if self.connected and not self._closing:  # else: it dropped meanwhile, an outage like any other
                self._hang_up()
                error = self._connect_once()
                if error is None:
                    self.connected = True
                    self._events.token_renewed(self)
                else:
                    self.last_error = error
                    if not self._schedule_over:
                        self.offline_since = time.monotonic()
                    self._events.device_disconnected(self, f"token renewal failed: {error}")
        except BaseException:  # killed by close()
            self._reconnector = None
            raise
        if self.connected or self.config.reconnect:
            self._stay_connected()  # resend, flush the queue; reconnect with backoff if offline
        else:
            self._reconnector = None
            if self._schedule_over:
                self._give_up_if_offline()
                self._done()

    def _hang_up(self) -> None:
        """Our own clean close (DISCONNECT, then the socket): not reported as a disconnect."""
        self.connected = False  # first: _on_disconnect then knows it was not lost
        try:
            self.client.disconnect()
            self._flush()
        except OSError:
            pass
        self._stop_reader()
        sock = self.client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    # -- publishing ---------------------------------------------------------------

    def start_schedule(self, t0: float, t0_us: int | None = None) -> float | None:
        """Arm the schedule: message k is due at T0 + its arrival offset (``t0 + phase + k / rate`` when
        spread) while the offset is inside the run (compared as offsets: what the workers' replay counts).

        ``t0``: T0 on this worker's clock (the schedule runs on it); ``t0_us``: T0 on the master's
        clock in whole µs (default: ``t0``'s), from which every intended time is accounted.
        Returns the first due time, or None when nothing falls inside the run.
        The worker's scheduler then calls :meth:`publish_due` at each due time.
        """
        self._start = t0
        self._t0_us = round(t0 * 1_000_000) if t0_us is None else t0_us
        self._duration_s = self.config.duration_s
        self._k = 0
        self._offset = offset = self._arrivals.first()
        if offset >= self._duration_s:
            self._finish()
            return None
        return t0 + offset

    def publish_due(self, now: float) -> float | None:
        """Publish the message that is due (open model: whether or not earlier ones were acknowledged).

        ``seq`` counts successful publishes, so the messages a device sent are
        exactly seq 0 .. sent-1.  Returns the next due time, or None when done.
        """
        events = self._events
        run = self._run
        # The due-time grid (stage_plan.due_offset_us, inlined): T0 on the master's clock + the offset, rounded,
        # so every process accounts this message in the same due slot.
        due_us = self._t0_us + round(self._offset * 1_000_000)
        now_us = int((now - run.record_shift_s) * 1_000_000)  # worker clock -> master clock, when correcting
        if self.connected and self._reconnector is None:
            rc = self._publish(due_us, now_us)
            if rc == _SUCCESS:
                if self.client.want_write() and self._flusher is None:
                    # The kernel buffer is full: write the rest out in the background,
                    # the scheduler must not wait on one device.
                    self._flusher = gevent.spawn(self._flush)
            elif rc == _PAYLOAD_FAILED:
                pass  # counted as a publish error, naming the payload's exception
            elif self._reconnector is not None:
                self._enqueue(due_us)  # this write found the connection gone: send it after the reconnect
            else:
                events.publish_failed(mqtt.error_string(rc))
        elif self._reconnector is not None:
            self._enqueue(due_us)  # offline, reconnecting, or still sending what queued up meanwhile
        else:
            events.publish_failed("not connected")
        self._k += 1
        self._offset = offset = self._arrivals.after(self._offset, self._k)
        if offset >= self._duration_s or run.aborted:
            self._finish()
            return None
        return self._start + offset

    # -- stages: joining and leaving the run --------------------------------------------

    def rejoin(self) -> None:
        """A stage takes this device (back) in: connect now, during its ramp; what falls due meanwhile queues.

        The first connect of a device that started dormant, or a connect again after :meth:`leave`;
        same number, id and identity.  Nothing to do when it is connected (a leave still waiting for
        its acks gives up) or already connecting.
        """
        self._life += 1
        if self.connected or self._reconnector is not None or self._closing or self._schedule_over:
            return
        self._reconnector = gevent.spawn(self._rejoin)

    def _rejoin(self) -> None:
        try:
            if self.connect():
                # The unacknowledged messages of the last spell, then what fell due while connecting;
                # a drop meanwhile is an outage like any other.
                while not (self._resend_inflight() and self._flush_queue()):
                    if not (self.config.reconnect and self._reconnect()):
                        break
            elif self._queue:
                for _ in range(len(self._queue)):
                    self._events.publish_failed("not connected")  # never sent: the sink counts them lost
                self._queue.clear()
        finally:
            self._reconnector = None
            if self._schedule_over:
                self._give_up_if_offline()
                self._done()

    def leave(self, ack_wait_s: float) -> None:
        """A stage drops this device: once what it sent is acknowledged (at most ``ack_wait_s``), it hangs
        up cleanly (DISCONNECT).  Not a disconnect: reported as ``device_left``.

        Called when every message due to it before the stage's start was published.  Still sending
        what queued up during an outage, it finishes that first (within the same wait).
        """
        gevent.spawn(self._leave, ack_wait_s, self._life)

    def _leave(self, ack_wait_s: float, life: int) -> None:
        deadline = time.monotonic() + ack_wait_s
        reconnector = self._reconnector
        if reconnector is not None:
            reconnector.join(timeout=ack_wait_s)
        if self.connected and self._reconnector is None:
            self.wait_acknowledged(max(0.0, deadline - time.monotonic()))
        # Taken back meanwhile (rejoin), closed, or still offline: stay as it is.
        if life == self._life and self.connected and self._reconnector is None and not self._closing:
            self._cancel_renewal()
            self._hang_up()
            self._events.device_left(self)

    def end_schedule(self) -> None:
        """The run was stopped before this device's next message fell due: its schedule ends here."""
        self._finish()

    def _publish(self, due_us: int, now_us: int, queued: bool = False) -> MQTTErrorCode:
        """Send the next seq now; counted as sent when the write succeeded."""
        client = self.client
        packet_id = client.packet_id() if self._qos else 0
        render_body = self._render_body
        try:
            if render_body is not None:  # the header in the body (the default): one call, no properties
                packet = self.framer.frame(render_body(self.sent, due_us, now_us), packet_id)
            else:
                body, properties = self.message.render(self.sent, due_us, now_us)
                packet = self.framer.frame(body, packet_id, properties)
        except Exception as exc:  # a user's payload callable raised: this message is not sent, the run goes on
            self._events.publish_failed(f"payload: {type(exc).__name__}: {exc}")
            return _PAYLOAD_FAILED
        rc = client.send_publish(packet, self._qos, packet_id)
        if rc == _SUCCESS:
            self.sent += 1
            if queued:
                self._events.queued_message_sent(due_us, now_us)
            else:
                self._events.message_sent(due_us, now_us)
        return rc

    def _on_publish_refused(self, reason_code: int) -> None:
        """MQTT 5: a PUBACK refused a message (already counted as sent: it left the device)."""
        self._events.publish_refused(puback_reason(reason_code))

    def _finish(self) -> None:
        """The schedule is over (or aborted): the device is done once nothing is left to do."""
        self._schedule_over = True
        self._cancel_renewal()
        if self._reconnector is not None:
            # Offline: stop trying now (the queue stays unsent).  Online and flushing the
            # queue: let it finish.  Either way that greenlet calls _done.
            if not self.connected and self._wake is not None:
                self._wake.set()
            return
        self._give_up_if_offline()
        self._done()

    def _done(self) -> None:
        if not self.finished:
            self.finished = True
            self._events.device_finished(self)

    def _flush(self) -> None:
        """Wait until paho's queue is written out (the kernel buffer was full)."""
        try:
            self._write_out()
        finally:
            self._flusher = None

    def _write_out(self) -> None:
        client = self.client
        while client.want_write():
            sock = client.socket()
            if sock is None:
                return
            try:
                wait_write(sock.fileno(), timeout=5.0)
            except (TimeoutError, OSError):
                return
            if client.loop_write() != _SUCCESS:
                return

    def wait_acknowledged(self, timeout_s: float) -> bool:
        """QoS 1: wait until the broker acknowledged every message sent."""
        deadline = time.monotonic() + timeout_s
        while self.client.unacked and self.connected:
            if time.monotonic() >= deadline:
                return False
            gevent.sleep(0.02)
        return True

    def close(self) -> None:
        """Disconnect cleanly (DISCONNECT, then close); safe to call twice."""
        self._closing = True
        self._cancel_renewal()
        reconnector = self._reconnector
        if reconnector is not None:
            if self._wake is not None:
                self._wake.set()
            reconnector.kill(timeout=1.0)  # mid-connect: GreenletExit at its next wait
        if self.connected:
            self._hang_up()
        self.connected = False
        self._stop_reader()
        sock = self.client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()


def framer_for(
    config: DeviceConfig, topic: str, content_type: str | None = "application/json"
) -> PublishFramer | PublishFramerV5 | PropertyBagFramer:
    """How a device frames its PUBLISH packets: MQTT 5 with its properties, IoT Hub's property bag, or 3.1.1.

    The header in properties over MQTT 3.1.1 is IoT Hub's property bag (the run refused any other broker).
    """
    if config.connection.protocol_version == "5":
        # The topic alias, when asked for, is reset at every connect.
        return PublishFramerV5(topic, config.qos, content_type=content_type, topic_alias=config.topic_alias)
    if config.message.header == "properties":
        return PropertyBagFramer(topic, config.qos)
    return PublishFramer(topic, config.qos)
