"""What timing every PUBACK costs a publisher: the lean client's QoS 1 path with the timing off and on.

    python benchmarks/puback_timing.py [--clients 200] [--rounds 100] [--repeats 7]

Each round, every client writes one framed PUBLISH to a socket pair, the other
end reads it and answers its PUBACK, and the client reads that (``loop_read``):
the device side of a message minus the scheduler, plus the broker side's two
syscalls.  Prints CPU µs per message, best and median of the repeats, untimed
and timed (``LeanClient.ack_latency`` set), interleaved so drift hits both.
Measured 2026-12-03 on the shared 2-core machine, three runs: +0.5 to +0.65 µs
a message (10.6 -> 11.3 best), against 60-80 µs per message of a whole worker
(``benchmarks/fleet_scale.py --sizes 8000 --qos 1``: indistinguishable there,
75-83 µs/msg either way, interleaved, within its noise).
Not a test: run it by hand on a quiet machine.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import time

from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from pytest_iotperf.lean_mqtt import LeanClient
from pytest_iotperf.mqtt_wire import PublishFramer


def per_message_us(clients: int, rounds: int, timed: bool) -> float:
    counts: dict[int, int] | None = {} if timed else None
    pairs: list[tuple[socket.socket, socket.socket]] = []
    lean: list[LeanClient] = []
    for _ in range(clients):
        ours, broker = socket.socketpair()
        ours.setblocking(False)
        broker.setblocking(False)
        client = LeanClient(CallbackAPIVersion.VERSION2, client_id="dev", protocol=mqtt.MQTTv311)
        client._sock = ours  # what paho's connect leaves behind, minus the handshake
        client.ack_latency = counts
        pairs.append((ours, broker))
        lean.append(client)
    framer = PublishFramer("devices/dev000001/messages/events/", 1)
    payload = b"x" * 120
    started = time.process_time()
    for _ in range(rounds):
        for client, (_, broker) in zip(lean, pairs, strict=True):
            packet_id = client.packet_id()
            client.send_publish(framer.frame(payload, packet_id), 1, packet_id)
            broker.recv(4096)
            broker.send(b"\x40\x02" + packet_id.to_bytes(2, "big"))
            client.loop_read()
    cpu_s = time.process_time() - started
    for ours, broker in pairs:
        ours.close()
        broker.close()
    return cpu_s / (clients * rounds) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    results: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for timed in (False, True):
            results[timed].append(per_message_us(args.clients, args.rounds, timed))
    for timed, label in ((False, "untimed"), (True, "timed")):
        values = results[timed]
        print(f"{label:8s} {min(values):6.2f} us/msg best  {statistics.median(values):6.2f} median")
    best = min(results[True]) - min(results[False])
    print(f"PUBACK timing costs {best:+.2f} us per message (best against best)")


if __name__ == "__main__":
    main()
