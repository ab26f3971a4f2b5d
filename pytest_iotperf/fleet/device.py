"""One simulated device: a paho-mqtt client driven from greenlets.

No OS thread per client and no ``select()``: paho's own loops call
``select.select``, which caps a process at FD_SETSIZE (1,024) sockets.  Here
an io watcher on gevent's hub (epoll) calls ``loop_read`` when the socket is
readable; publishing writes a pre-framed PUBLISH straight to the socket from
the device's schedule (see ``lean_mqtt``), and ``loop_write`` only runs
when the kernel buffer was full.

Only imported inside Locust processes (gevent-patched); never by pytest.
"""

from __future__ import annotations

import contextlib
import random
import time
from typing import Any

import gevent
import gevent.event
from gevent.socket import wait_write
from paho.mqtt import client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from pytest_iotperf.fleet.device_config import DeviceConfig, DeviceEvents, RunView
from pytest_iotperf.fleet.identity import IdentityProvider
from pytest_iotperf.header import PayloadTemplate
from pytest_iotperf.lean_mqtt import LeanClient
from pytest_iotperf.mqtt_client import connect, make_client
from pytest_iotperf.mqtt_wire import PublishFramer

_SUCCESS = MQTTErrorCode.MQTT_ERR_SUCCESS
_CONNACK_TIMEOUT_S = 10.0


class Device:
    """A device's connection, schedule and counters.

    It owns its schedule; what it needs from the run comes in as a config
    value and a read-only view, what happens to it goes out as events.
    """

    def __init__(
        self,
        config: DeviceConfig,
        device_id: str,
        phase_s: float,
        *,
        events: DeviceEvents,
        run: RunView,
        identities: IdentityProvider,
    ) -> None:
        self.config = config
        self.device_id = device_id
        self.phase_s = phase_s
        self.topic = config.topic_for(device_id)
        self.template = PayloadTemplate(config.run_id, device_id, config.payload_bytes)
        self.framer = PublishFramer(self.topic, config.qos)
        self.sent = 0  # successful publishes; also the next seq
        self.connected = False
        self.finished = False
        self.last_error: str | None = None
        self._events = events
        self._run = run
        self._connack: gevent.event.AsyncResult = gevent.event.AsyncResult()
        self._reader: Any = None  # the hub's io watcher for our socket
        self._flusher: gevent.Greenlet | None = None
        self._period = 1.0 / config.rate
        self._qos = config.qos
        self._start = self._end = 0.0
        self._k = 0
        self.client = self._make_client(identities)

    def _make_client(self, identities: IdentityProvider) -> LeanClient:
        client = make_client(self.config.connection, identities.identity_for(self.device_id))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        return client

    # -- connection ---------------------------------------------------------------

    def connect(self) -> bool:
        """Connect, retrying refusals with jittered exponential backoff within the budget."""
        events = self._events
        deadline = time.monotonic() + self.config.connect_budget_s
        backoff = 0.05
        while True:
            started = time.monotonic()
            error = self._connect_once()
            if error is None:
                self.connected = True
                events.device_connected(self, time.monotonic() - started)
                return True
            self.last_error = error
            events.connect_retried(error)
            if time.monotonic() + backoff > deadline:
                events.device_failed(self, error)
                return False
            gevent.sleep(backoff * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, 2.0)

    def _connect_once(self) -> str | None:
        """One attempt; None on success, else why it failed."""
        self._connack = gevent.event.AsyncResult()
        try:
            rc = connect(self.client, self.config.connection)  # Nagle off: see LeanClient
        except OSError as exc:
            return f"{type(exc).__name__}: {exc.strerror or exc}"
        if rc != _SUCCESS:
            return mqtt.error_string(rc)
        self._start_reader()
        reason = self._connack.wait(_CONNACK_TIMEOUT_S)
        if reason == "ok":
            return None
        self._stop_reader()
        sock = self.client.socket()
        if sock is not None:
            sock.close()
        return str(reason) if reason is not None else f"no CONNACK within {_CONNACK_TIMEOUT_S:g}s"

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._connack.set("ok" if not reason.is_failure else f"connection refused: {reason}")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if self.connected:
            self.connected = False
            self._events.device_disconnected(self, str(reason))
        if not self._connack.ready():
            self._connack.set(f"disconnected before CONNACK: {reason}")

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

    # -- publishing ---------------------------------------------------------------

    def start_schedule(self, t0: float) -> float | None:
        """Arm the schedule: message k is due at ``t0 + phase + k / rate`` until the duration ends.

        Returns the first due time, or None when nothing falls inside the run.
        The worker's scheduler then calls :meth:`publish_due` at each due time.
        """
        self._start = t0 + self.phase_s
        self._end = t0 + self.config.duration_s
        self._k = 0
        if self._start >= self._end:
            self._finish()
            return None
        return self._start

    def publish_due(self, now: float) -> float | None:
        """Publish the message that is due (open model: whether or not earlier ones were acknowledged).

        ``seq`` counts successful publishes, so the messages a device sent are
        exactly seq 0 .. sent-1.  Returns the next due time, or None when done.
        """
        events = self._events
        run = self._run
        due = self._start + self._k * self._period
        shift = run.record_shift_s  # worker clock -> master clock, when correcting
        due_us = int((due - shift) * 1_000_000)
        now_us = int((now - shift) * 1_000_000)
        if self.connected:
            client = self.client
            payload = self.template.render(self.sent, due_us, now_us)
            packet = self.framer.frame(payload, client.packet_id() if self._qos else 0)
            rc = client.send_publish(packet, self._qos)
            if rc == _SUCCESS:
                self.sent += 1
                events.message_sent(due_us, now_us)
                if client.want_write() and self._flusher is None:
                    # The kernel buffer is full: write the rest out in the background,
                    # the scheduler must not wait on one device.
                    self._flusher = gevent.spawn(self._flush)
            else:
                events.publish_failed(mqtt.error_string(rc))
        else:
            events.publish_failed("not connected")
        self._k += 1
        following = self._start + self._k * self._period
        if following >= self._end or run.aborted:
            self._finish()
            return None
        return following

    def _finish(self) -> None:
        if not self.finished:
            self.finished = True
            self._events.device_finished(self)

    def _flush(self) -> None:
        """Wait until paho's queue is written out (the kernel buffer was full)."""
        client = self.client
        try:
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
        finally:
            self._flusher = None

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
        was_connected = self.connected
        self.connected = False
        if was_connected:
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
