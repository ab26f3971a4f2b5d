"""The embedded IoT Hub's front: CPU per message of the hub process, PUBACK latency, delivery to a consumer.

    python benchmarks/iothub_front.py                                  # 5,700 devices at 5,700 msg/s, 20 s
    python benchmarks/iothub_front.py --devices 2000 --rates 1000,2000,5700 --duration 15
    python benchmarks/iothub_front.py --no-consumer

Three processes besides this one:
  hub       ``python -m pytest_iotperf.embedded.iothub`` (MQTT over TLS, built-in endpoint, registry);
  devices   N raw TLS MQTT 3.1.1 clients in ONE process (this file, ``--role devices``), each connected
            as IoT Hub wants (client id = device id, user name, a SAS token of the hub's device policy),
            publishing QoS 1 (or ``--qos 0``) telemetry (~150 bytes, default property bag) round-robin
            at the total rate; it times each PUBLISH -> PUBACK;
  consumer  the azure-eventhub SDK reading every partition of the built-in endpoint (``receive_batch``,
            one client and thread per partition), counting events.
Per step (a total rate held for ``--duration`` s after the devices connected): CPU µs per message of the
hub (psutil on the hub process / messages it stored in the window), of the devices and of the consumer
process, their sum (the chain), PUBACK p50/p99/max, and whether the consumer got everything (loss).

Not a test: run by hand. The machine is shared: read the numbers as a range, run twice.
Keys travel only in child environments and are never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import socket
import ssl
import subprocess
import sys
import threading
import time
from typing import Any

import psutil

from pytest_iotperf.iothub.connection_string import parse_iothub_connection_string
from pytest_iotperf.iothub.naming import telemetry_topic, username_for
from pytest_iotperf.iothub.sas import device_resource_uri, make_sas_token
from pytest_iotperf.mqtt_wire import PublishFramer
from pytest_iotperf.process_guard import raise_nofile_limit

READY_ENV = "IOTPERF_BENCH_HUB_READY"  # the hub's ready line (it holds keys): children only
PAYLOAD_BYTES = 150


def cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _string(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def connect_packet(client_id: str, username: str, password: str) -> bytes:
    variable = _string(b"MQTT") + bytes((4, 0xC2)) + (60).to_bytes(2, "big")  # user name, password, clean session
    payload = _string(client_id.encode()) + _string(username.encode()) + _string(password.encode())
    body = variable + payload
    length = bytearray()
    size = len(body)
    while True:
        byte, size = size & 0x7F, size >> 7
        length.append(byte | 0x80 if size else byte)
        if not size:
            break
    return b"\x10" + bytes(length) + body


# -- role: devices ------------------------------------------------------------------------------------------


class Devices:
    def __init__(self, ready: dict[str, Any], count: int, qos: int) -> None:
        self.ready = ready
        self.qos = qos
        hub = parse_iothub_connection_string(ready["hub_connection_string"])
        context = ssl.create_default_context(cafile=ready["ca_file"])
        self.sockets: list[ssl.SSLSocket] = []
        self.framers: list[PublishFramer] = []
        self.ids: list[str] = []
        expiry = int(time.time()) + 3600
        started = time.monotonic()
        for n in range(count):
            device_id = f"dev{n:06d}"
            token = make_sas_token(device_resource_uri(hub.host, device_id), hub.key, expiry, hub.policy)
            raw = socket.create_connection(("127.0.0.1", ready["port"]), timeout=30)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tls = context.wrap_socket(raw, server_hostname="127.0.0.1")
            tls.sendall(connect_packet(device_id, username_for(hub.host, device_id), token))
            connack = b""
            while len(connack) < 4:
                chunk = tls.recv(4 - len(connack))
                if not chunk:
                    raise SystemExit(f"{device_id}: the hub closed the connection before CONNACK")
                connack += chunk
            if connack[3] != 0:
                raise SystemExit(f"{device_id}: CONNACK {connack[3]}")
            tls.setblocking(False)
            self.sockets.append(tls)
            self.framers.append(PublishFramer(telemetry_topic(device_id), qos))
            self.ids.append(device_id)
        self.connect_s = time.monotonic() - started
        self.selector = selectors.DefaultSelector()
        for index, tls in enumerate(self.sockets):
            self.selector.register(tls, selectors.EVENT_READ, index)
        self.in_flight: list[dict[int, float]] = [{} for _ in range(count)]
        self.next_id = [1] * count
        self.latencies: list[float] = []
        self.buffers = [b""] * count
        self.errors = 0

    def _payload(self, index: int, seq: int) -> bytes:
        body = f'{{"device":"{self.ids[index]}","seq":{seq},"ts":{time.time_ns() // 1000},"pad":"'
        return (body + "x" * max(0, PAYLOAD_BYTES - len(body) - 2) + '"}').encode()

    def run(self, rate: float, duration: float) -> dict[str, Any]:
        count = len(self.sockets)
        self.latencies = []
        sent = 0
        cpu0 = own_cpu_s()
        start = time.monotonic()
        end = start + duration
        while True:
            now = time.monotonic()
            if now >= end:
                break
            due = int((now - start) * rate)
            while sent < due:
                index = sent % count
                packet_id = self.next_id[index]
                self.next_id[index] = packet_id % 65535 + 1
                packet = self.framers[index].frame(self._payload(index, sent), packet_id)
                try:
                    self.sockets[index].send(packet)
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError, OSError):
                    self.errors += 1
                else:
                    if self.qos:
                        self.in_flight[index][packet_id] = time.monotonic()
                sent += 1
            self._read(0.002)
        drain_until = time.monotonic() + 5
        while time.monotonic() < drain_until and any(self.in_flight):
            self._read(0.01)
        cpu = own_cpu_s() - cpu0
        unacked = sum(len(f) for f in self.in_flight)
        for flight in self.in_flight:
            flight.clear()
        latencies = sorted(self.latencies)
        return {
            "sent": sent,
            "acked": len(latencies),
            "unacked": unacked,
            "send_errors": self.errors,
            "cpu_s": cpu,
            "puback_p50_ms": _percentile(latencies, 0.50) * 1000,
            "puback_p99_ms": _percentile(latencies, 0.99) * 1000,
            "puback_max_ms": (latencies[-1] if latencies else float("nan")) * 1000,
        }

    def _read(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout):
            index = key.data
            tls = self.sockets[index]
            try:
                data = tls.recv(65536)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                continue
            if not data:
                raise SystemExit(f"{self.ids[index]}: the hub closed the connection")
            now = time.monotonic()
            data = self.buffers[index] + data
            flight = self.in_flight[index]
            pos = 0
            while len(data) - pos >= 4:
                if data[pos] == 0x40:
                    sent_at = flight.pop(int.from_bytes(data[pos + 2 : pos + 4], "big"), None)
                    if sent_at is not None:
                        self.latencies.append(now - sent_at)
                pos += 4
            self.buffers[index] = data[pos:]


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


def role_devices(args: argparse.Namespace) -> None:
    raise_nofile_limit()
    ready = json.loads(os.environ[READY_ENV])
    devices = Devices(ready, args.devices, args.qos)
    print(json.dumps({"event": "connected", "seconds": devices.connect_s}), flush=True)
    for line in sys.stdin:  # one command per step: {"rate": R, "duration": D}
        command = json.loads(line)
        print(json.dumps({"event": "step", **devices.run(command["rate"], command["duration"])}), flush=True)


# -- role: consumer -----------------------------------------------------------------------------------------


def role_consumer(_: argparse.Namespace) -> None:
    from azure.eventhub import EventHubConsumerClient

    ready = json.loads(os.environ[READY_ENV])
    connection_string = ready["eventhub_connection_string"]
    received = [0]
    lock = threading.Lock()
    clients: list[Any] = []

    def on_batch(_context: Any, events: list[Any]) -> None:
        with lock:
            received[0] += len(events)

    probe = EventHubConsumerClient.from_connection_string(connection_string, "$Default")
    with probe:
        partitions = probe.get_partition_ids()
    for partition in partitions:
        client = EventHubConsumerClient.from_connection_string(connection_string, "$Default")
        clients.append(client)
        kwargs = {
            "on_event_batch": on_batch,
            "partition_id": partition,
            "starting_position": "-1",
            "max_batch_size": 300,
            "max_wait_time": 0.2,
            "prefetch": 600,
        }
        threading.Thread(target=client.receive_batch, kwargs=kwargs, daemon=True).start()
    print(json.dumps({"event": "reading", "partitions": len(partitions)}), flush=True)
    for line in sys.stdin:  # any line: report
        del line
        with lock:
            count = received[0]
        print(json.dumps({"event": "count", "received": count}), flush=True)
    for client in clients:
        client.close()


# -- orchestration ------------------------------------------------------------------------------------------


class ChildLines:
    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.name = " ".join(command[1:4])
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.psutil = psutil.Process(self.process.pid)

    def say(self, document: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(document) + "\n")
        self.process.stdin.flush()

    def hear(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"{self.name} ended (exit {self.process.wait()})")
        document: dict[str, Any] = json.loads(line)
        return document

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=["main", "devices", "consumer"], default="main", help=argparse.SUPPRESS)
    parser.add_argument("--devices", type=int, default=5700)
    parser.add_argument("--rates", default="5700", help="total msg/s per step, comma separated")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per step")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--qos", type=int, choices=[0, 1], default=1, help="publish QoS (0: no PUBACKs)")
    parser.add_argument("--no-consumer", action="store_true")
    args = parser.parse_args()
    if args.role == "devices":
        role_devices(args)
        return
    if args.role == "consumer":
        role_consumer(args)
        return
    raise_nofile_limit()
    hub_command = [sys.executable, "-m", "pytest_iotperf.embedded.iothub", "--port", "0", "--hub", "bench"]
    hub_command += ["--partitions", str(args.partitions), "--exit-on-stdin-close"]
    hub = ChildLines(hub_command, dict(os.environ))
    ready = hub.hear()
    env = {**os.environ, READY_ENV: json.dumps(ready)}
    consumer = None
    if not args.no_consumer:
        consumer = ChildLines([sys.executable, __file__, "--role", "consumer"], env)
        consumer.hear()
    device_command = [sys.executable, __file__, "--role", "devices", "--devices", str(args.devices)]
    devices = ChildLines([*device_command, "--qos", str(args.qos)], env)
    connected = devices.hear()
    print(f"{args.devices} devices connected in {connected['seconds']:.1f} s", flush=True)
    header = (
        f"{'rate/s':>7} {'sent':>7} {'stored':>7} {'read':>7} {'loss':>6} {'hub µs':>7} {'dev µs':>7} "
        f"{'cons µs':>7} {'chain µs':>8} {'hub %':>6} {'PUBACK p50/p99/max ms':>22}"
    )
    print(header)
    try:
        for rate in (float(r) for r in args.rates.split(",")):
            hub.say({"cmd": "stats"})
            stored0 = hub.hear()["messages"]
            read0 = _read_count(consumer)
            hub_cpu0, consumer_cpu0 = cpu_s(hub.psutil), cpu_s(consumer.psutil) if consumer else 0.0
            devices.say({"rate": rate, "duration": args.duration})
            step = devices.hear()
            hub.say({"cmd": "stats"})
            stored = hub.hear()["messages"] - stored0
            read = _wait_read(consumer, read0, stored)
            hub_cpu = cpu_s(hub.psutil) - hub_cpu0
            consumer_cpu = (cpu_s(consumer.psutil) - consumer_cpu0) if consumer else 0.0
            per = max(stored, 1)
            hub_us, dev_us = hub_cpu / per * 1e6, step["cpu_s"] / per * 1e6
            cons_us = consumer_cpu / per * 1e6
            loss = "-" if consumer is None else f"{stored - read}"
            latency = f"{step['puback_p50_ms']:.1f}/{step['puback_p99_ms']:.1f}/{step['puback_max_ms']:.1f}"
            print(
                f"{rate:7.0f} {step['sent']:7d} {stored:7d} {read if consumer else '-':>7} {loss:>6} "
                f"{hub_us:7.1f} {dev_us:7.1f} {cons_us:7.1f} {hub_us + dev_us + cons_us:8.1f} "
                f"{100 * hub_cpu / args.duration:6.1f} {latency:>22}",
                flush=True,
            )
            if step["unacked"] or step["send_errors"]:
                print(f"        unacknowledged {step['unacked']}, send errors {step['send_errors']}")
    finally:
        devices.stop()
        if consumer is not None:
            consumer.stop()
        hub.stop()


def _read_count(consumer: ChildLines | None) -> int:
    if consumer is None:
        return 0
    consumer.say({})
    return int(consumer.hear()["received"])


def _wait_read(consumer: ChildLines | None, before: int, stored: int, timeout: float = 20.0) -> int:
    """Events the consumer read since ``before``, once it has all ``stored`` (or at the timeout)."""
    if consumer is None:
        return 0
    deadline = time.monotonic() + timeout
    read = _read_count(consumer) - before
    while read < stored and time.monotonic() < deadline:
        time.sleep(0.2)
        read = _read_count(consumer) - before
    return read


if __name__ == "__main__":
    main()
