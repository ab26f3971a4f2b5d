"""MQTT over WebSockets: the frames, the client stream under paho's queue, and the embedded websockets listener."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import psutil
import pytest
from paho.mqtt.enums import MQTTErrorCode

from pytest_iotperf.broker_endpoint import BrokerEndpoint, parse_broker_url, wait_for_mqtt
from pytest_iotperf.connection import Connection
from pytest_iotperf.embedded.broker import EmbeddedBroker, find_mosquitto
from pytest_iotperf.errors import BrokerError
from pytest_iotperf.lean_mqtt import LeanClient
from pytest_iotperf.mqtt_client import ClientIdentity, connect, make_client
from pytest_iotperf.mqtt_wire import PublishFramer
from pytest_iotperf.ws_client import WebSocketError, WebSocketStream
from pytest_iotperf.ws_frames import (
    CLOSE,
    PING,
    FrameDecoder,
    WebSocketProtocolError,
    accept_key,
    client_frame,
    server_frame,
)

OK = MQTTErrorCode.MQTT_ERR_SUCCESS
needs_mosquitto = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")


# -- frames -------------------------------------------------------------------------------


def test_accept_key_is_the_rfc_example() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536])
def test_frames_decode_to_their_payload_however_the_stream_is_cut(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    stream = client_frame(payload) + client_frame(b"tail") + client_frame(b"\x01", PING)
    for cut in sorted({1, 2, 3, 7, 130, len(stream) // 2, len(stream) - 1}):
        decoder = FrameDecoder(masked=True)
        first, controls_first = decoder.feed(stream[:cut])
        rest, controls_rest = decoder.feed(stream[cut:])
        assert first + rest == payload + b"tail"
        assert controls_first + controls_rest == [(PING, b"\x01")]
        assert decoder.buffered == 0
    served, _ = FrameDecoder(masked=False).feed(server_frame(payload))
    assert served == payload


def test_masking_is_checked_both_ways() -> None:
    keys = {client_frame(b"x")[2:6] for _ in range(50)}
    assert len(keys) == 50  # a fresh unpredictable key per frame (RFC 6455 5.3)
    with pytest.raises(WebSocketProtocolError, match="unmasked frame from a client"):
        FrameDecoder(masked=True).feed(server_frame(b"x"))
    with pytest.raises(WebSocketProtocolError, match="masked frame from the server"):
        FrameDecoder(masked=False).feed(client_frame(b"x"))


def test_broker_urls_may_be_websockets() -> None:
    endpoint = BrokerEndpoint.external("ws://broker.example:8080/mqtt")
    assert (endpoint.transport, endpoint.port, endpoint.ws_path, endpoint.tls) == ("websockets", 8080, "/mqtt", False)
    assert endpoint.listener_for("tcp") == ("websockets", 8080, "/mqtt")  # the URL says websockets
    assert endpoint.url == "ws://broker.example:8080/mqtt"
    secure = BrokerEndpoint.external("wss://hub.example")
    assert (secure.port, secure.tls, secure.ws_path) == (443, True, None)
    with pytest.raises(ValueError, match="unexpected path"):
        parse_broker_url("mqtt://broker.example/mqtt")
    assert BrokerEndpoint.external("iothub://hub.azure-devices.net").listener_for("websockets")[1] == 443
    embedded = BrokerEndpoint("127.0.0.1", 1883, False, "mosquitto", "mosquitto (embedded)")
    with pytest.raises(ValueError, match="without a websockets listener"):
        embedded.listener_for("websockets")


# -- the client stream under paho's queue ----------------------------------------------------


def _drain(peer: socket.socket, decoder: FrameDecoder) -> bytes:
    out = b""
    while True:
        try:
            data = peer.recv(1 << 16)
        except BlockingIOError:
            return out
        payload, _ = decoder.feed(data)
        out += payload


def test_a_backed_up_socket_loses_no_publish_and_splits_none() -> None:
    # paho's _WebsocketWrapper answers a partial write with 0, which paho's queue takes as
    # "written" and drops: a PUBLISH went missing under back-pressure.  Ours must deliver all.
    # TCP, not a socket pair: a Unix socket never takes part of a write.
    with socket.create_server(("127.0.0.1", 0)) as server:
        ours = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
    with ours, peer:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        peer.setblocking(False)
        client = make_client(Connection("127.0.0.1", 1, transport="websockets"), ClientIdentity("backed-up"))
        stream = WebSocketStream(ours)
        partial = 0
        send = stream.send

        def counting_send(data: bytes | bytearray) -> int:
            nonlocal partial
            try:
                written = send(data)
            except BlockingIOError:
                partial += 1
                raise
            partial += written < len(data)
            return written

        stream.send = counting_send  # type: ignore[method-assign]
        client._sock = stream
        ours.setblocking(False)
        framer = PublishFramer("devices/d1/telemetry", 1)
        sent = [framer.frame(b"%06d" % seq + b"x" * 300, client.packet_id()) for seq in range(200)]
        for packet in sent:
            assert client.send_publish(packet, 1) == OK
        assert client.want_write(), "the socket never backed up: the test proves nothing"
        decoder, received = FrameDecoder(masked=True), b""
        deadline = time.monotonic() + 10
        while (client.want_write() or len(received) < sum(map(len, sent))) and time.monotonic() < deadline:
            received += _drain(peer, decoder)
            assert client.loop_write() == OK
        assert received == b"".join(sent)
        assert client.unacked == len(sent)
        assert partial, "no write was partial: the test proves nothing"


def test_ping_is_answered_and_close_ends_the_stream() -> None:
    ours, peer = socket.socketpair()
    with ours, peer:
        stream = WebSocketStream(ours)
        peer.sendall(server_frame(b"\x40\x02\x00\x01") + server_frame(b"hi", PING) + server_frame(b"", CLOSE))
        assert stream.recv(65536) == b"\x40\x02\x00\x01"
        assert stream.pending()  # the close is still to be reported
        assert stream.recv(65536) == b""
        answers, controls = FrameDecoder(masked=True).feed(peer.recv(1024))
        assert answers == b"" and [opcode for opcode, _ in controls] == [0xA, CLOSE]


# -- against the embedded broker's websockets listener ----------------------------------------


@pytest.fixture(scope="module")
def ws_broker() -> Iterator[EmbeddedBroker]:
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed")
    with EmbeddedBroker(prefer="mosquitto", websockets=True) as broker:
        yield broker


def _ws_connection(broker: EmbeddedBroker, path: str = "/mqtt") -> Connection:
    endpoint = broker.endpoint
    assert endpoint.ws_port is not None and endpoint.ws_path == "/mqtt"
    return Connection(endpoint.host, endpoint.ws_port, transport="websockets", ws_path=path)


def _connected(connection: Connection, name: str) -> LeanClient:
    """A client driven from this thread (``loop``), as the fleet drives one from its hub: never from two threads."""
    client = make_client(connection, ClientIdentity(f"ws-{name}"))
    done = threading.Event()
    client.on_connect = lambda *_: done.set()
    assert connect(client, connection) == OK
    deadline = time.monotonic() + 5
    while not done.is_set():
        assert time.monotonic() < deadline, "no CONNACK over websockets"
        assert client.loop(timeout=0.1) == OK
    return client


@needs_mosquitto
def test_qos1_over_websockets_delivers_exact_payloads_and_every_puback(ws_broker: EmbeddedBroker) -> None:
    connection = _ws_connection(ws_broker)
    count = 500
    received: list[tuple[bytes, bytes]] = []
    all_in = threading.Event()

    def on_raw_message(topic: bytes, payload: bytes, properties: bytes | None = None) -> None:
        received.append((topic, payload))
        if len(received) == count:
            all_in.set()

    subscriber = make_client(connection, ClientIdentity("ws-sink"))
    subscriber.on_raw_message = on_raw_message
    subscribed = threading.Event()
    subscriber.on_subscribe = lambda *_: subscribed.set()
    subscriber.on_connect = lambda client, *_: client.subscribe("ws/#", qos=1)
    assert connect(subscriber, connection) == OK
    subscriber.loop_start()
    device = None
    try:
        assert subscribed.wait(5)
        device = _connected(connection, "device")
        ack_latency: dict[int, int] = {}
        device.ack_latency = ack_latency
        sock = device.socket()
        assert isinstance(sock, WebSocketStream)
        assert sock.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)  # Nagle off under the frames
        framer = PublishFramer("ws/d1", 1)
        payloads = [b"%d:" % seq + bytes(range(256))[: seq % 200] for seq in range(count)]
        for seq, payload in enumerate(payloads):
            assert device.send_publish(framer.frame(payload, device.packet_id()), 1) == OK
            if seq % 50 == 0:
                device.loop(timeout=0)
        deadline = time.monotonic() + 10
        while device.unacked and time.monotonic() < deadline:
            device.loop(timeout=0.05)
        assert device.unacked == 0
        assert all_in.wait(5)
        assert sum(ack_latency.values()) == count  # every PUBACK came back through the frames
        assert received == [(b"ws/d1", payload) for payload in payloads]
    finally:
        if device is not None:
            device.disconnect()
        subscriber.disconnect()
        subscriber.loop_stop()


@needs_mosquitto
def test_a_wrong_websocket_path_fails_clearly(ws_broker: EmbeddedBroker) -> None:
    connection = _ws_connection(ws_broker, path="/wrong")
    client = make_client(connection, ClientIdentity("ws-wrong-path"))
    with pytest.raises(WebSocketError, match=r"upgrade to /wrong refused: HTTP 404 .*--iot-ws-path"):
        connect(client, connection)
    with pytest.raises(BrokerError, match=r"404 Not Found.*--iot-ws-path"):
        wait_for_mqtt(connection, timeout=2)
    tcp_port = Connection("127.0.0.1", ws_broker.endpoint.port, transport="websockets")
    with pytest.raises(BrokerError, match="without an answer"):  # websockets to the TCP listener
        wait_for_mqtt(tcp_port, timeout=2)


@needs_mosquitto
def test_the_listener_survives_a_broker_restart_and_stops_with_it(no_child_left_behind: None) -> None:
    broker = EmbeddedBroker(prefer="mosquitto")
    broker.start()
    try:
        endpoint = broker.start_websockets()
        gateway = broker.websockets_pid
        assert broker.start_websockets() == endpoint and broker.websockets_pid == gateway  # once
        assert broker.restart().ws_port == endpoint.ws_port
        wait_for_mqtt(_ws_connection(broker), timeout=5)
    finally:
        broker.stop()
    assert gateway is not None and not psutil.pid_exists(gateway)
