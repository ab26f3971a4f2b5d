"""A LeanClient wired to one end of a socket pair: the test plays the broker on the other end."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from pytest_iotperf.lean_mqtt import LeanClient


@contextmanager
def wired_client(protocol: int = mqtt.MQTTv311) -> Iterator[tuple[LeanClient, socket.socket]]:
    """``(client, broker side)``; the client is as paho's connect leaves it, minus the handshake."""
    ours, broker_side = socket.socketpair()
    ours.setblocking(False)
    broker_side.settimeout(5)  # a missing reply fails the test instead of hanging it
    client = LeanClient(CallbackAPIVersion.VERSION2, client_id="dev", protocol=protocol)
    client._sock = ours
    try:
        yield client, broker_side
    finally:
        ours.close()
        broker_side.close()
