"""Malformed PUBLISH topic names on the embedded broker of ``fleetjobs serve``: connection closed, nothing routed.

MQTT 3.1.1 says a server that receives a PUBLISH whose topic name is empty (§4.7.3, [MQTT-4.7.3-1]), not well-formed
UTF-8 ([MQTT-1.5.3-1]), contains U+0000 ([MQTT-1.5.3-2]) or a wildcard ([MQTT-3.3.2-2]) must close the network
connection. paho refuses to send most of these, so the packets are written by hand on a plain socket to the server's
embedded broker (plain TCP on 127.0.0.1, its default).

Each case sends, in one write, the malformed PUBLISH (QoS 1) and behind it a valid request on the same device's
topics. It then reads the socket to its end: the broker must close the connection without acknowledging either
(no PUBACK), so it stopped reading at the malformed packet. Afterwards a paho device on the same thing gets a fresh
request answered, which shows the server is still serving, and has received nothing of the two (no response to their
client tokens, no echo); a ``#`` subscriber received nothing either (amqtt used to route undecodable topics as the
text ``b'...'``), checked with a marker published after everything else: messages to one client leave in order.
"""

from __future__ import annotations

import json
import queue
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from tests.harness import Server, unique
from tests.mqtt_device import Device

WAIT = 5.0


def remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_string(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def connect_packet(client_id: str) -> bytes:
    body = mqtt_string(b"MQTT") + b"\x04" + b"\x02" + (30).to_bytes(2, "big") + mqtt_string(client_id.encode())
    return b"\x10" + remaining_length(len(body)) + body


def publish_packet(topic: bytes, payload: bytes, packet_id: int) -> bytes:
    """PUBLISH, QoS 1, with the topic bytes exactly as given."""
    body = mqtt_string(topic) + packet_id.to_bytes(2, "big") + payload
    return b"\x32" + remaining_length(len(body)) + body


def read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return data


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the broker sends until it closes the connection (fails if it is still open after WAIT s)."""
    received = b""
    sock.settimeout(WAIT)
    while True:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            return received
        except TimeoutError:
            pytest.fail(f"the broker kept the connection open (received {received!r})")
        if not chunk:
            return received
        received += chunk


class Watcher:
    """A paho client subscribed to ``#`` (every non-``$`` topic), keeping what it receives."""

    def __init__(self, port: int) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique("watch"))
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe("#", qos=1)
        assert subscribed.wait(WAIT), "no SUBACK"

    def first_message_is(self, topic: str, payload: bytes) -> None:
        msg = self.messages.get(timeout=WAIT)
        assert (msg.topic, msg.payload) == (topic, payload)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker_port(server: Server) -> int:
    """The shared server's embedded broker, once its gateway answers."""
    probe = Device("127.0.0.1", server.mqtt_port, unique("probe"))
    try:
        probe.until_answered()
    finally:
        probe.close()
    return server.mqtt_port


@pytest.fixture
def device(broker_port: int) -> Iterator[Device]:
    d = Device("127.0.0.1", broker_port, unique("topics"))
    yield d
    d.close()


@pytest.fixture
def watcher(broker_port: int) -> Iterator[Watcher]:
    w = Watcher(broker_port)
    yield w
    w.close()


BAD_TOPICS = {
    "empty": lambda base: b"",
    "nul": lambda base: base + b"/get\x00",
    "nul-alone": lambda base: b"\x00",
    "invalid-utf8-byte": lambda base: base + b"/\xff",
    "overlong-utf8": lambda base: base + b"\xc0\xafget",  # an overlong "/"
    "utf8-surrogate": lambda base: base + b"/get\xed\xa0\x80",  # U+D800, not a character
    "truncated-utf8": lambda base: base + b"/get\xe2\x82",
    "plus": lambda base: b"$aws/things/+/jobs/get",
    "hash": lambda base: base + b"/#",
    "plain-hash": lambda base: b"#",
}


@pytest.mark.parametrize("case", list(BAD_TOPICS))
def test_malformed_topic_name_closes_the_connection(
    broker_port: int, device: Device, watcher: Watcher, case: str
) -> None:
    base = device.base.encode()
    bad_token, next_token = f"bad-{uuid.uuid4().hex[:8]}", f"next-{uuid.uuid4().hex[:8]}"
    with socket.create_connection(("127.0.0.1", broker_port), timeout=WAIT) as sock:
        sock.sendall(connect_packet(unique("raw")))
        assert read_exactly(sock, 4) == b"\x20\x02\x00\x00"  # CONNACK, accepted
        # A valid request first: the hand-made packets are right, and the connection works until the bad one.
        first = json.dumps({"clientToken": f"ok-{uuid.uuid4().hex[:8]}"}).encode()
        sock.sendall(publish_packet(base + b"/get", first, 1))
        assert read_exactly(sock, 4) == b"\x40\x02\x00\x01"  # PUBACK 1
        _, answer = device.wait_for(lambda t, d: t == f"{device.base}/get/accepted", WAIT)
        assert answer["clientToken"] == json.loads(first)["clientToken"]

        bad = publish_packet(BAD_TOPICS[case](base), json.dumps({"clientToken": bad_token}).encode(), 2)
        behind = publish_packet(base + b"/get", json.dumps({"clientToken": next_token}).encode(), 3)
        sock.sendall(bad + behind)
        received = read_until_closed(sock)
    assert b"\x40\x02\x00\x02" not in received and b"\x40\x02\x00\x03" not in received, received

    # Still serving; and neither the malformed request nor the one behind it was handled or routed.
    kind, _ = device.request("get", timeout=WAIT)
    assert kind == "accepted"
    marker = uuid.uuid4().hex.encode()
    watcher.client.publish("fleetjobs-test/marker", marker, qos=1).wait_for_publish(WAIT)
    watcher.first_message_is("fleetjobs-test/marker", marker)
    seen: list[tuple[str, dict[str, Any]]] = device.drain()
    tokens = {doc.get("clientToken") for _, doc in seen if isinstance(doc, dict)}
    assert not tokens & {bad_token, next_token}, seen
