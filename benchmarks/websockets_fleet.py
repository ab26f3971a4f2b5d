"""MQTT over WebSockets: one worker's fleet over ws vs over tcp, and the cost of the framing itself.

    python benchmarks/websockets_fleet.py                  # framing, then 5,000 devices x 1 msg/s QoS 1, ws and tcp
    python benchmarks/websockets_fleet.py --framing-only   # the per-message framing figures alone (seconds)
    python benchmarks/websockets_fleet.py --devices 2000 --duration 10

Framing: CPU us per message of a client writing a telemetry PUBLISH (160 bytes) and reading one PUBACK
(each its own frame, as at 1 msg/s per device), through paho's ``_WebsocketWrapper`` and through
``ws_client.WebSocketStream`` (a random mask per frame), over a socket pair; the plain socket (tcp) for
reference.

Fleet: embedded Mosquitto with its websockets listener (``EmbeddedBroker(websockets=True)``: the
WebSocket gateway child in front of it, as a cloud load balancer). One worker process publishes QoS 1
to the listener for the window; then the same fleet over tcp to Mosquitto directly, in the same run.
Prints lateness p50/p99/max, worker CPU % and CPU us per message, and the ws/tcp ratio of CPU per
message. Sustained: every device connected, every scheduled message sent, lateness p99 <= 10 ms.
Not a test: run by hand; the machine is shared, so read ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from paho.mqtt.client import _WebsocketWrapper

from pytest_iotperf.broker_endpoint import BrokerEndpoint
from pytest_iotperf.config import resolve
from pytest_iotperf.embedded.broker import EmbeddedBroker
from pytest_iotperf.mqtt_wire import PublishFramer
from pytest_iotperf.runner import PerfRun, RunFailed
from pytest_iotperf.ws_client import WebSocketStream
from pytest_iotperf.ws_frames import server_frame

sys.path.insert(0, str(Path(__file__).parent))
from fleet_scale import fleet_row, print_row, sustained

_PUBLISH = PublishFramer("devices/dev000001/telemetry", 1).frame(b"x" * 128, 7)  # ~160 bytes on the wire
_PUBACK = b"\x40\x02\x00\x07"
_PUBACK_FRAME = server_frame(_PUBACK)
_BATCH = 200


def _paho_wrapper(sock: socket.socket) -> Any:
    """paho's wrapper around a connected socket, without its handshake (the peer is ours)."""
    wrapper = object.__new__(_WebsocketWrapper)
    wrapper.__dict__.update(
        connected=True,
        _ssl=False,
        _host="127.0.0.1",
        _port=0,
        _socket=sock,
        _path="/mqtt",
        _sendbuffer=bytearray(),
        _readbuffer=bytearray(),
        _requested_size=0,
        _payload_head=0,
        _readbuffer_head=0,
    )
    return wrapper


def _drain(sock: socket.socket) -> None:
    while True:
        try:
            if not sock.recv(1 << 20):
                return
        except BlockingIOError:
            return


def measure_framing(make: Callable[[socket.socket], Any], messages: int, puback: bytes) -> tuple[float, float]:
    """(us per PUBLISH written, us per PUBACK read) through the socket-like ``make`` builds."""
    client, server = socket.socketpair()
    try:
        for sock in (client, server):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        server.setblocking(False)
        stream = make(client)
        client.setblocking(False)
        send = stream.send
        spent = 0
        for _ in range(messages // _BATCH):
            start = time.thread_time_ns()
            for _ in range(_BATCH):
                if send(_PUBLISH) != len(_PUBLISH):
                    raise RuntimeError("partial write in the benchmark")
            spent += time.thread_time_ns() - start
            _drain(server)
        write_us = spent / 1000 / (messages // _BATCH * _BATCH)
        recv = stream.recv
        spent = 0
        for _ in range(messages):
            server.send(puback)
            start = time.thread_time_ns()
            data = recv(65536)
            spent += time.thread_time_ns() - start
            if len(data) != 4:
                raise RuntimeError(f"read {data!r}")
        return write_us, spent / 1000 / messages
    finally:
        client.close()
        server.close()


def framing(messages: int) -> None:
    print(f"framing: CPU us per message, {len(_PUBLISH)}-byte PUBLISH written, 4-byte PUBACK read, one frame each")
    rows: list[tuple[str, Callable[[socket.socket], Any], bytes]] = [
        ("plain socket (tcp)", lambda sock: sock, _PUBACK),
        ("paho _WebsocketWrapper", _paho_wrapper, _PUBACK_FRAME),
        ("ws_client.WebSocketStream", WebSocketStream, _PUBACK_FRAME),
    ]
    for name, make, puback in rows:
        write_us, read_us = measure_framing(make, messages, puback)
        total = write_us + read_us
        print(f"  {name:<26} write {write_us:6.2f}  read {read_us:6.2f}  total {total:6.2f} us", flush=True)


def _cpu_s(pids: dict[str, int]) -> dict[str, float]:
    times = {name: psutil.Process(pid).cpu_times() for name, pid in pids.items()}
    return {name: t.user + t.system for name, t in times.items()}


def measure(
    broker: BrokerEndpoint, transport: str, devices: int, duration_s: float, servers: dict[str, int]
) -> dict[str, Any]:
    """One run; ``servers`` (name -> pid: the broker, the gateway) get their CPU us per message sent too."""
    before = _cpu_s(servers)
    settings = resolve({}, {}, {}).for_run(
        {
            "devices": devices,
            "rate_per_device": 1.0,
            "duration": duration_s,
            "workers": 1,
            "qos": 1,
            "transport": transport,
        }
    )
    try:
        result = PerfRun(settings, broker, read_back=False).execute()
        error = None
    except RunFailed as failed:
        result, error = failed.result, str(failed)
    after = _cpu_s(servers)
    return {
        "servers_us_per_message": {
            name: 1e6 * (after[name] - before[name]) / max(result.sent, 1) for name in servers
        },
        **fleet_row(result, impl=f"pytest-iotperf over {transport}", qos=1, error=error),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=5000)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--framing-messages", type=int, default=20000)
    parser.add_argument("--framing-only", action="store_true")
    args = parser.parse_args()
    framing(args.framing_messages)
    if args.framing_only:
        return
    with EmbeddedBroker(prefer="mosquitto", websockets=True) as broker:
        endpoint = broker.endpoint
        assert endpoint.ws_port is not None
        # The websockets listener as the run's broker: the port clients connect to is the gateway's.
        ws_endpoint = dataclasses.replace(endpoint, port=endpoint.ws_port, transport="websockets")
        print(
            f"broker: {endpoint.description}, websockets at {ws_endpoint.url} (gateway); "
            f"{args.devices:,} devices x 1 msg/s QoS 1, window {args.duration:g} s, one worker; pid {os.getpid()}",
            flush=True,
        )
        assert broker.pid is not None and broker.websockets_pid is not None
        servers = {"mosquitto": broker.pid, "ws gateway": broker.websockets_pid}
        rows = [
            measure(ws_endpoint, "websockets", args.devices, args.duration, servers),
            measure(endpoint, "tcp", args.devices, args.duration, servers),
        ]
        for row in rows:
            print_row(row)
            shown = ", ".join(f"{name} {us:.1f}" for name, us in row["servers_us_per_message"].items())
            print(f"    server CPU us per message sent (whole run, connects included): {shown}", flush=True)
    ws, tcp = rows
    ratio = ws["cpu_us_per_message"] / tcp["cpu_us_per_message"] if tcp["cpu_us_per_message"] else float("nan")
    print(
        f"\nwebsockets: {'sustained' if sustained(ws) else 'NOT sustained'} "
        f"(lateness p99 {ws['lateness_p99_ms']:.2f} ms, limit 10 ms); CPU per message ws/tcp {ratio:.2f}x "
        f"({ws['cpu_us_per_message']:.1f} vs {tcp['cpu_us_per_message']:.1f} us)"
    )


if __name__ == "__main__":
    main()
