"""The embedded broker: ``$aws`` routing, MQTT ``$`` rules, persistent sessions, and mutual TLS with the per-thing ACL.

Clients are paho-mqtt (MQTT 3.1.1) in their own network threads; the broker runs in a background event loop. Every
wait for an expected message is bounded (5 s). "Must not arrive" checks use a sentinel instead of a sleep: the
forbidden message is sent first, then a permitted one on the same path; the broker handles a client's publishes in
order and queues broadcasts FIFO, so once the sentinel is in, the forbidden one would have been too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import queue
import socket
import ssl
import struct
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from fleetjobs.mqtt.embedded_broker import EmbeddedBroker, may_access

WAIT = 5.0
T = TypeVar("T")


# --------------------------------------------------------------------------------------------- broker in a thread


class BrokerThread:
    """Runs an EmbeddedBroker on its own event loop in a daemon thread, so blocking paho clients can talk to it."""

    def __init__(self, broker: EmbeddedBroker) -> None:
        self.broker = broker
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="embedded-broker", daemon=True)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def start(self) -> None:
        self._thread.start()
        self.run(self.broker.start())

    def stop(self) -> None:
        try:
            self.run(self.broker.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            self.loop.close()

    def session_state(self, client_id: str) -> str | None:
        """The broker-side state of a client's session ("connected", "disconnected") or None if there is none."""

        async def state() -> str | None:
            assert self.broker._broker is not None
            entry = self.broker._broker.sessions.get(client_id)
            return entry[0].transitions.state if entry else None

        return self.run(state())

    def wait_session_state(self, client_id: str, wanted: str) -> None:
        async def poll() -> None:
            async with asyncio.timeout(WAIT):
                while True:
                    assert self.broker._broker is not None
                    entry = self.broker._broker.sessions.get(client_id)
                    if entry and entry[0].transitions.state == wanted:
                        return
                    await asyncio.sleep(0.02)

        self.run(poll())


# --------------------------------------------------------------------------------------------------- paho clients


@dataclass(frozen=True)
class ClientTls:
    ca: Path
    cert: Path | None = None
    key: Path | None = None


class Client:
    """A paho MQTT 3.1.1 client with blocking, bounded helpers; received messages land in a queue."""

    def __init__(
        self,
        port: int,
        client_id: str,
        *,
        clean_session: bool = True,
        tls: ClientTls | None = None,
        will_topic: str | None = None,
        protocol: int = mqtt.MQTTv311,
    ) -> None:
        self.port = port
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._connack: queue.Queue[tuple[ReasonCode, bool]] = queue.Queue()
        self._subacks: dict[int, queue.Queue[list[ReasonCode]]] = {}
        self._lock = threading.Lock()
        kwargs: dict[str, Any] = {"client_id": client_id, "protocol": protocol}
        if protocol != mqtt.MQTTv5:
            kwargs["clean_session"] = clean_session
        self.paho = mqtt.Client(CallbackAPIVersion.VERSION2, **kwargs)
        if tls is not None:
            self.paho.tls_set(
                ca_certs=str(tls.ca),
                certfile=str(tls.cert) if tls.cert else None,
                keyfile=str(tls.key) if tls.key else None,
            )
        if will_topic is not None:
            self.paho.will_set(will_topic, b"gone", qos=1)
        self.paho.on_connect = self._on_connect
        self.paho.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.paho.on_subscribe = self._on_subscribe

    def _on_connect(self, _c: Any, _u: Any, flags: mqtt.ConnectFlags, reason: ReasonCode, _p: Any) -> None:
        self._connack.put((reason, flags.session_present))

    def _sub_queue(self, mid: int) -> queue.Queue[list[ReasonCode]]:
        with self._lock:
            return self._subacks.setdefault(mid, queue.Queue())

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, reasons: list[ReasonCode], _p: Any) -> None:
        self._sub_queue(mid).put(reasons)

    def connect(self) -> tuple[ReasonCode, bool]:
        """Connect and wait for CONNACK; returns (reason code, session present). Does not retry after a refusal."""
        self.paho.connect("127.0.0.1", self.port, keepalive=30)
        self.paho.loop_start()
        reason, present = self._connack.get(timeout=WAIT)
        if reason.is_failure:
            self.close()
        return reason, present

    def connected(self) -> Client:
        reason, _ = self.connect()
        assert not reason.is_failure, f"connect refused: {reason}"
        return self

    def subscribe(self, topic: str, qos: int = 1) -> int:
        """Subscribe and return the granted QoS (0x80 = refused)."""
        rc, mid = self.paho.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS and mid is not None
        (reason,) = self._sub_queue(mid).get(timeout=WAIT)
        return reason.value

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish and, for QoS 1, wait for the broker's PUBACK."""
        info = self.paho.publish(topic, payload, qos=qos)
        if qos:
            info.wait_for_publish(timeout=WAIT)
            assert info.is_published(), f"no PUBACK for {topic}"

    def expect(self) -> mqtt.MQTTMessage:
        try:
            return self.messages.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError("expected message did not arrive within 5 s") from None

    def expect_only(self, topic: str, payload: bytes) -> mqtt.MQTTMessage:
        """The next message must be exactly this one (anything forbidden sent earlier would be ahead of it)."""
        msg = self.expect()
        assert (msg.topic, msg.payload) == (topic, payload)
        return msg

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()


# ------------------------------------------------------------------------------------------------- plain fixtures


@pytest.fixture
def plain_broker() -> Iterator[BrokerThread]:
    thread = BrokerThread(EmbeddedBroker(port=0))
    thread.start()
    yield thread
    thread.stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    """Collects clients so they are closed even when a test fails."""
    made: list[Client] = []
    yield made
    for client in made:
        client.close()


def _client(made: list[Client], port: int, client_id: str, **kwargs: Any) -> Client:
    client = Client(port, client_id, **kwargs)
    made.append(client)
    return client


# ------------------------------------------------------------------------------------------------- plain TCP tests


def test_device_publish_to_dollar_aws_reaches_wildcard_subscriber_and_device_keeps_working(
    plain_broker: BrokerThread, clients: list[Client]
) -> None:
    port = plain_broker.broker.port
    service = _client(clients, port, "service").connected()
    assert service.subscribe("$aws/things/+/jobs/#") == 1
    device = _client(clients, port, "dev1").connected()
    device.subscribe("$aws/things/dev1/jobs/get/accepted")

    device.publish("$aws/things/dev1/jobs/get", b'{"clientToken":"1"}')
    msg = service.expect_only("$aws/things/dev1/jobs/get", b'{"clientToken":"1"}')
    assert msg.qos == 1

    # stock amqtt stops serving a client after its first `$` publish: the second one and the reply must still flow
    device.publish("$aws/things/dev1/jobs/get", b'{"clientToken":"2"}')
    service.expect_only("$aws/things/dev1/jobs/get", b'{"clientToken":"2"}')
    service.publish("$aws/things/dev1/jobs/get/accepted", b"{}")
    device.expect_only("$aws/things/dev1/jobs/get/accepted", b"{}")
    service.expect_only("$aws/things/dev1/jobs/get/accepted", b"{}")  # the service's own filter matches it too


def test_hash_subscription_does_not_match_dollar_topics(plain_broker: BrokerThread, clients: list[Client]) -> None:
    port = plain_broker.broker.port
    everything = _client(clients, port, "everything").connected()
    everything.subscribe("#")
    device = _client(clients, port, "dev1").connected()

    device.publish("$aws/things/dev1/jobs/get", b"dollar")
    device.publish("plain/topic", b"sentinel")
    everything.expect_only("plain/topic", b"sentinel")


def test_client_publish_to_sys_is_not_routed_and_client_keeps_working(
    plain_broker: BrokerThread, clients: list[Client]
) -> None:
    port = plain_broker.broker.port
    watcher = _client(clients, port, "watcher").connected()
    watcher.subscribe("$SYS/#")
    watcher.subscribe("$other/#")
    watcher.subscribe("$aws/things/dev1/#")
    device = _client(clients, port, "dev1").connected()

    device.publish("$SYS/x", b"forged")
    device.publish("$other/x", b"forged")
    device.publish("$aws/things/dev1/jobs/get", b"sentinel")
    watcher.expect_only("$aws/things/dev1/jobs/get", b"sentinel")
    assert watcher.messages.empty()


def test_persistent_session_gets_qos1_messages_published_while_offline(
    plain_broker: BrokerThread, clients: list[Client]
) -> None:
    port = plain_broker.broker.port
    service = _client(clients, port, "svc-persistent", clean_session=False)
    assert service.connect() == (ReasonCode(mqtt.PacketTypes.CONNACK, "Success"), False)
    assert service.subscribe("$aws/things/+/jobs/#") == 1
    service.close()
    plain_broker.wait_session_state("svc-persistent", "disconnected")

    device = _client(clients, port, "dev1").connected()
    for n in range(3):
        device.publish(f"$aws/things/dev1/jobs/job{n}/update", str(n).encode())

    again = _client(clients, port, "svc-persistent", clean_session=False)
    reason, session_present = again.connect()
    assert not reason.is_failure
    assert session_present
    received = [again.expect() for _ in range(3)]
    assert [(m.topic, m.payload, m.qos) for m in received] == [
        (f"$aws/things/dev1/jobs/job{n}/update", str(n).encode(), 1) for n in range(3)
    ]
    # the subscription survived too: new publishes flow without subscribing again
    device.publish("$aws/things/dev1/jobs/get", b"live")
    again.expect_only("$aws/things/dev1/jobs/get", b"live")


def test_clean_session_client_gets_nothing_queued(plain_broker: BrokerThread, clients: list[Client]) -> None:
    port = plain_broker.broker.port
    first = _client(clients, port, "svc-clean").connected()
    first.subscribe("$aws/things/+/jobs/#")
    first.close()
    plain_broker.wait_session_state("svc-clean", "disconnected")
    device = _client(clients, port, "dev1").connected()
    device.publish("$aws/things/dev1/jobs/get", b"while-away")

    again = _client(clients, port, "svc-clean")
    _reason, session_present = again.connect()
    assert not session_present
    again.subscribe("$aws/things/+/jobs/#")
    device.publish("$aws/things/dev1/jobs/get", b"sentinel")
    again.expect_only("$aws/things/dev1/jobs/get", b"sentinel")


def test_new_client_does_not_get_retained_messages_of_filters_it_never_subscribed(
    plain_broker: BrokerThread, clients: list[Client]
) -> None:
    """amqtt 0.12.1 sends every connecting client the retained messages of all filters anyone subscribed to."""
    port = plain_broker.broker.port
    other = _client(clients, port, "other").connected()
    other.subscribe("$aws/things/dev2/#")
    publisher = _client(clients, port, "publisher").connected()
    publisher.paho.publish("$aws/things/dev2/shadow", b"retained", qos=1, retain=True).wait_for_publish(WAIT)
    other.expect_only("$aws/things/dev2/shadow", b"retained")

    newcomer = _client(clients, port, "newcomer").connected()
    newcomer.subscribe("$aws/things/dev1/#")
    publisher.publish("$aws/things/dev1/jobs/notify", b"sentinel")
    newcomer.expect_only("$aws/things/dev1/jobs/notify", b"sentinel")


def test_mqtt5_clients_are_refused(plain_broker: BrokerThread, clients: list[Client]) -> None:
    """amqtt implements MQTT 3.1.1 only; MQTT 5 devices need an external broker (Mosquitto)."""
    client = _client(clients, plain_broker.broker.port, "v5", protocol=mqtt.MQTTv5)
    reason, _ = client.connect()
    assert reason.is_failure


def test_acl_rule() -> None:
    assert may_access("thing-a", "$aws/things/thing-a/jobs/get")
    assert may_access("thing-a", "$aws/things/thing-a/jobs/#")
    assert may_access("thing-a", "$aws/things/thing-a/#")
    assert not may_access("thing-a", "$aws/things/thing-a")
    assert not may_access("thing-a", "$aws/things/thing-ab/jobs/get")
    assert not may_access("thing-a", "$aws/things/+/jobs/get")
    assert not may_access("thing-a", "$aws/things/#")
    assert not may_access("thing-a", "#")
    assert not may_access("thing-a", "$aws/events/job/j1/completed")
    assert may_access("fleetjobs-service", "$aws/things/+/jobs/#")
    assert may_access("fleetjobs-service", "$aws/#")
    assert not may_access("fleetjobs-service", "$SYS/x")
    assert not may_access("fleetjobs-service", "#")


def test_partial_tls_settings_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        EmbeddedBroker(port=0, ca_file=tmp_path / "ca.pem")


# --------------------------------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    clients: dict[str, tuple[Path, Path]]

    def tls(self, name: str) -> ClientTls:
        cert, key = self.clients[name]
        return ClientTls(self.ca, cert, key)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path.with_suffix(".crt"), path.with_suffix(".key")


def _issue(
    cn: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway CA, a server certificate for 127.0.0.1, and client certificates whose CN is the identity."""
    root = tmp_path_factory.mktemp("pki")
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleetjobs test CA")])
    ca_cert = _issue("fleetjobs test CA", ca_key, ca_name, ca_key, ca=True)
    ca_path, _ = _write(root / "ca", ca_cert, ca_key)
    server_key = _key()
    server_cert, server_key_path = _write(
        root / "server", _issue("localhost", server_key, ca_name, ca_key, server=True), server_key
    )
    issued: dict[str, tuple[Path, Path]] = {}
    for name in ("thing-a", "thing-b", "fleetjobs-service"):
        key = _key()
        issued[name] = _write(root / name, _issue(name, key, ca_name, ca_key), key)
    # a certificate for "thing-b" that the broker's CA did not sign
    rogue_key = _key()
    rogue_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rogue CA")])
    issued["rogue-thing-b"] = _write(root / "rogue", _issue("thing-b", rogue_key, rogue_name, rogue_key), rogue_key)
    return Pki(ca_path, server_cert, server_key_path, issued)


@pytest.fixture
def tls_broker(pki: Pki) -> Iterator[BrokerThread]:
    broker = EmbeddedBroker(port=0, ca_file=pki.ca, cert_file=pki.server_cert, key_file=pki.server_key)
    assert broker.tls
    thread = BrokerThread(broker)
    thread.start()
    yield thread
    thread.stop()


def _raw_connect(port: int, context: ssl.SSLContext) -> bytes:
    """Open TLS, send an MQTT 3.1.1 CONNECT, return what the broker answers (b"" if it hangs up)."""
    client_id = b"raw"
    variable = b"\x00\x04MQTT\x04\x02\x00\x1e"
    payload = struct.pack("!H", len(client_id)) + client_id
    packet = b"\x10" + bytes([len(variable) + len(payload)]) + variable + payload
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(packet)
                return tls.recv(4)
        except (ssl.SSLError, ConnectionError):
            return b""


# -------------------------------------------------------------------------------------------------- mutual TLS tests


def test_service_identity_may_subscribe_to_all_things(
    tls_broker: BrokerThread, pki: Pki, clients: list[Client]
) -> None:
    port = tls_broker.broker.port
    service = _client(clients, port, "svc", tls=pki.tls("fleetjobs-service")).connected()
    assert service.subscribe("$aws/things/+/jobs/#") == 1
    device = _client(clients, port, "thing-a", tls=pki.tls("thing-a")).connected()
    device.publish("$aws/things/thing-a/jobs/start-next", b"{}")
    service.expect_only("$aws/things/thing-a/jobs/start-next", b"{}")


def test_thing_can_use_its_own_topics(tls_broker: BrokerThread, pki: Pki, clients: list[Client]) -> None:
    port = tls_broker.broker.port
    service = _client(clients, port, "svc", tls=pki.tls("fleetjobs-service")).connected()
    service.subscribe("$aws/things/+/jobs/#")
    thing_a = _client(clients, port, "thing-a", tls=pki.tls("thing-a")).connected()
    assert thing_a.subscribe("$aws/things/thing-a/jobs/notify-next") == 1

    thing_a.publish("$aws/things/thing-a/jobs/get", b"req")
    service.expect_only("$aws/things/thing-a/jobs/get", b"req")
    service.publish("$aws/things/thing-a/jobs/notify-next", b"next")
    thing_a.expect_only("$aws/things/thing-a/jobs/notify-next", b"next")


def test_thing_cannot_subscribe_to_or_receive_another_things_topics(
    tls_broker: BrokerThread, pki: Pki, clients: list[Client]
) -> None:
    port = tls_broker.broker.port
    thing_a = _client(clients, port, "thing-a", tls=pki.tls("thing-a")).connected()
    assert thing_a.subscribe("$aws/things/thing-b/jobs/#") == 0x80
    assert thing_a.subscribe("$aws/things/+/jobs/#") == 0x80
    assert thing_a.subscribe("#") == 0x80
    assert thing_a.subscribe("$aws/#") == 0x80
    assert thing_a.subscribe("$aws/things/thing-a/jobs/#") == 1

    service = _client(clients, port, "svc", tls=pki.tls("fleetjobs-service")).connected()
    service.publish("$aws/things/thing-b/jobs/notify-next", b"for-b")
    service.publish("$aws/things/thing-a/jobs/notify-next", b"sentinel")
    thing_a.expect_only("$aws/things/thing-a/jobs/notify-next", b"sentinel")


def test_thing_cannot_publish_into_another_things_topics(
    tls_broker: BrokerThread, pki: Pki, clients: list[Client]
) -> None:
    port = tls_broker.broker.port
    service = _client(clients, port, "svc", tls=pki.tls("fleetjobs-service")).connected()
    service.subscribe("$aws/things/+/jobs/#")
    thing_b = _client(clients, port, "thing-b", tls=pki.tls("thing-b")).connected()
    thing_b.subscribe("$aws/things/thing-b/jobs/#")
    thing_a = _client(clients, port, "thing-a", tls=pki.tls("thing-a")).connected()

    thing_a.publish("$aws/things/thing-b/jobs/job1/update", b'{"status":"SUCCEEDED"}')
    thing_a.publish("$aws/things/thing-a/jobs/get", b"sentinel")
    service.expect_only("$aws/things/thing-a/jobs/get", b"sentinel")
    service.publish("$aws/things/thing-b/jobs/notify", b"sentinel-b")
    thing_b.expect_only("$aws/things/thing-b/jobs/notify", b"sentinel-b")


def test_client_without_certificate_cannot_connect(tls_broker: BrokerThread, pki: Pki) -> None:
    context = ssl.create_default_context(cafile=str(pki.ca))
    assert _raw_connect(tls_broker.broker.port, context) == b""


def test_client_with_certificate_from_another_ca_cannot_connect(tls_broker: BrokerThread, pki: Pki) -> None:
    context = ssl.create_default_context(cafile=str(pki.ca))
    cert, key = pki.clients["rogue-thing-b"]
    context.load_cert_chain(cert, key)
    assert _raw_connect(tls_broker.broker.port, context) == b""


def test_client_with_certificate_gets_connack(tls_broker: BrokerThread, pki: Pki) -> None:
    """The positive control for the two raw tests above: same CONNECT, valid certificate, CONNACK accepted."""
    context = ssl.create_default_context(cafile=str(pki.ca))
    cert, key = pki.clients["thing-a"]
    context.load_cert_chain(cert, key)
    assert _raw_connect(tls_broker.broker.port, context) == b"\x20\x02\x00\x00"


def test_thing_cannot_take_over_another_things_session(
    tls_broker: BrokerThread, pki: Pki, clients: list[Client]
) -> None:
    port = tls_broker.broker.port
    thing_a = _client(clients, port, "shared-id", clean_session=False, tls=pki.tls("thing-a")).connected()
    thing_a.subscribe("$aws/things/thing-a/jobs/#")

    for clean in (False, True):
        intruder = _client(clients, port, "shared-id", clean_session=clean, tls=pki.tls("thing-b"))
        reason, _ = intruder.connect()
        assert reason.is_failure
    assert tls_broker.session_state("shared-id") == "connected"

    service = _client(clients, port, "svc", tls=pki.tls("fleetjobs-service")).connected()
    service.publish("$aws/things/thing-a/jobs/notify", b"still-mine")
    thing_a.expect_only("$aws/things/thing-a/jobs/notify", b"still-mine")


def test_thing_cannot_plant_a_will_in_another_things_topics(
    tls_broker: BrokerThread, pki: Pki, clients: list[Client]
) -> None:
    client = _client(
        clients, tls_broker.broker.port, "thing-a", tls=pki.tls("thing-a"), will_topic="$aws/things/thing-b/jobs/x"
    )
    reason, _ = client.connect()
    assert reason.is_failure
    own = _client(
        clients, tls_broker.broker.port, "thing-a", tls=pki.tls("thing-a"), will_topic="$aws/things/thing-a/gone"
    )
    reason, _ = own.connect()
    assert not reason.is_failure
