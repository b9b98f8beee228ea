"""The production broker setup: fleetjobs' CA, its certificates, and a real Mosquitto configured by it.

Certificates are made with the Python API (``fleetjobs.security.certs``) and with the CLI
(``python -m fleetjobs certs ...``); ``broker-config mosquitto`` writes the broker directory; a real
``mosquitto -c CONF`` process runs it, and paho-mqtt clients (MQTT 3.1.1 and 5) with the device and
service certificates show that mutual TLS admits only certificates of that CA and that the ACL keeps
every thing under ``$aws/things/<its own name>/`` while fleetjobs sees all of them.

Negative delivery checks ("thing-a never receives thing-b's message") do not just sleep: Mosquitto
handles packets one at a time and acknowledges a QoS 1 publish only after routing it, so once the
forbidden (or foreign) publish is acknowledged, a marker that the receiver *is* allowed to get is
published; messages to one client leave in order, so when the marker arrives with nothing before
it, nothing was delivered. Every wait is bounded (5 s).

Without a ``mosquitto`` binary the broker tests skip, except with CI=true, where they fail.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import pwd
import queue
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fleetjobs.security import certs
from fleetjobs.security.broker_config import (
    BrokerConfigError,
    render_acl,
    write_mosquitto_config,
)
from tests.harness import free_port, in_ci

WAIT = 5.0  # seconds: the bound of every wait for something that should (or should not) happen
PROTOCOLS = [
    pytest.param(MQTTProtocolVersion.MQTTv311, id="mqtt311"),
    pytest.param(MQTTProtocolVersion.MQTTv5, id="mqtt5"),
]
NOT_AUTHORIZED_V5 = 0x87
FAILURE_V311 = 0x80


def denied_code(protocol: MQTTProtocolVersion) -> int:
    """The SUBACK code of a refused subscription: 0x87 Not authorized (MQTT 5), 0x80 Failure (3.1.1)."""
    return NOT_AUTHORIZED_V5 if protocol == MQTTProtocolVersion.MQTTv5 else FAILURE_V311


IS_ROOT = os.geteuid() == 0


def mosquitto_binary() -> str:
    path = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None
    )
    if path is None:
        if in_ci():
            pytest.fail("mosquitto is not installed and CI=true: refusing to skip the broker tests")
        pytest.skip("mosquitto not installed")
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETJOBS_")}
    return subprocess.run(
        [sys.executable, "-m", "fleetjobs", *args], capture_output=True, text=True, timeout=60, env=env
    )


def broker_root() -> Path:
    """A scratch directory the broker's unprivileged user can pass through.

    pytest's tmp_path lives under a 0700 directory of the user running the tests; Mosquitto started
    as root drops to user ``mosquitto`` before opening its files and could not get there.
    """
    root = Path(tempfile.mkdtemp(prefix="fleetjobs-broker-test-"))
    root.chmod(0o711)
    return root


# ------------------------------------------------------------------------------------------- PKI


@dataclass
class Pki:
    data_dir: Path
    ca: certs.CA
    server: tuple[Path, Path]
    service: tuple[Path, Path]
    things: dict[str, tuple[Path, Path]]
    foreign: tuple[Path, Path]  # a "thing-a" certificate from another CA
    forged: tuple[Path, Path]  # "thing-b", signed with thing-a's key (chain: forged, thing-a)

    @property
    def ca_file(self) -> Path:
        return self.ca.cert_path


def make_pki(root: Path) -> Pki:
    data = root / "data"
    cdir = certs.certs_dir(data)
    ca = certs.init_ca(cdir)
    server = certs.issue_server_cert(ca, cdir)
    service = certs.issue_service_cert(ca, cdir)
    things = {t: certs.issue_device_cert(ca, t, certs.devices_dir(data)) for t in ("thing-a", "thing-b")}
    other = certs.init_ca(root / "other-ca")
    foreign = certs.issue_device_cert(other, "thing-a", root / "other-ca" / "devices")
    return Pki(data, ca, server, service, things, foreign, forge_with_device_key(root / "forged", things["thing-a"]))


def forge_with_device_key(out: Path, signer: tuple[Path, Path]) -> tuple[Path, Path]:
    """A "thing-b" certificate signed by thing-a's own key: what a device would try to impersonate another."""
    from cryptography.hazmat.primitives.asymmetric import ec

    signer_cert = x509.load_pem_x509_certificate(signer[0].read_bytes())
    signer_key = serialization.load_pem_private_key(signer[1].read_bytes(), password=None)
    assert isinstance(signer_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "thing-b")]))
        .issuer_name(signer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(signer_key, hashes.SHA256())
    )
    out.mkdir(parents=True, exist_ok=True)
    chain = cert.public_bytes(serialization.Encoding.PEM) + signer[0].read_bytes()
    (out / "thing-b.pem").write_bytes(chain)
    (out / "thing-b.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    return out / "thing-b.pem", out / "thing-b.key"


# ---------------------------------------------------------------------------------------- broker


@dataclass
class Mosquitto:
    """One ``mosquitto -c CONF`` process on a TLS port."""

    conf: Path
    port: int
    ca_file: Path
    probe: tuple[Path, Path]  # a client certificate for the readiness probe
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Mosquitto:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(self.conf)], stdout=log, stderr=log)
        self._wait_tls()
        return self

    def _wait_tls(self) -> None:
        """Until the port completes a TLS handshake (or mosquitto exits: fail with its log)."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(str(self.probe[0]), str(self.probe[1]))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"mosquitto exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    with ctx.wrap_socket(sock, server_hostname="127.0.0.1"):
                        return
            except OSError:
                time.sleep(0.05)
        pytest.fail(f"mosquitto did not accept TLS on port {self.port}:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()  # SIGTERM: mosquitto saves its persistence file, then exits
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Setup:
    pki: Pki
    broker: Mosquitto
    root: Path


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    """PKI via the Python API, config via ``write_mosquitto_config``, and a running mosquitto."""
    mosquitto_binary()
    root = broker_root()
    try:
        pki = make_pki(root)
        conf = write_mosquitto_config(pki.data_dir, free_port(), root / "mosquitto", bind="127.0.0.1")
        broker = Mosquitto(conf.conf_path, conf.port, pki.ca_file, pki.service, root / "mosquitto.log").start()
        try:
            yield Setup(pki, broker, root)
        finally:
            broker.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------------------- client


@dataclass
class Client:
    """A paho-mqtt client over TLS with a client certificate, with blocking, bounded helpers."""

    port: int
    ca_file: Path
    cert: tuple[Path, Path] | None
    protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311
    client_id: str = field(default_factory=lambda: f"c-{uuid.uuid4().hex[:10]}")
    clean: bool = True
    username: str | None = None
    messages: queue.Queue[mqtt.MQTTMessage] = field(default_factory=queue.Queue)
    _connack: queue.Queue[Any] = field(default_factory=queue.Queue)
    _subacks: dict[int, list[Any]] = field(default_factory=dict)
    _pubacks: dict[int, Any] = field(default_factory=dict)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        v5 = self.protocol == MQTTProtocolVersion.MQTTv5
        self.c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=self.protocol,
            clean_session=None if v5 else self.clean,
            reconnect_on_failure=False,
        )
        self.c.tls_set(
            ca_certs=str(self.ca_file),
            certfile=str(self.cert[0]) if self.cert else None,
            keyfile=str(self.cert[1]) if self.cert else None,
        )
        if self.username:
            self.c.username_pw_set(self.username)
        self.c.on_connect = lambda _c, _u, _f, rc, _p: self._connack.put(rc)
        self.c.on_disconnect = lambda _c, _u, _f, rc, _p: self._connack.put(None)
        self.c.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.c.on_subscribe = self._on_subscribe
        self.c.on_publish = self._on_publish

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, codes: list[Any], _p: Any) -> None:
        with self._cond:
            self._subacks[mid] = list(codes)
            self._cond.notify_all()

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: Any, _p: Any) -> None:
        with self._cond:
            self._pubacks[mid] = rc
            self._cond.notify_all()

    def try_connect(self) -> bool:
        """True once the broker accepted the connection (CONNACK success) within WAIT seconds."""
        kw: dict[str, Any] = {}
        if self.protocol == MQTTProtocolVersion.MQTTv5:
            kw["clean_start"] = self.clean
            if not self.clean:
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = 3600
                kw["properties"] = props
        try:
            self.c.connect("127.0.0.1", self.port, keepalive=30, **kw)
        except (ssl.SSLError, OSError):
            return False
        self.c.loop_start()
        try:
            rc = self._connack.get(timeout=WAIT)
        except queue.Empty:
            return False
        return rc is not None and not rc.is_failure

    def connect(self) -> Client:
        assert self.try_connect(), f"{self.client_id} could not connect"
        return self

    def subscribe(self, topic: str, qos: int = 1) -> int:
        """Subscribe and return the SUBACK's reason code / return code for the filter."""
        rc, mid = self.c.subscribe(topic, qos=qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS
        with self._cond:
            assert self._cond.wait_for(lambda: mid in self._subacks, timeout=WAIT), f"no SUBACK for {topic}"
            return int(self._subacks[mid][0].value)

    def publish(self, topic: str, payload: str, qos: int = 1) -> int | None:
        """Publish and wait for the PUBACK; its MQTT 5 reason code (None for 3.1.1 or QoS 0)."""
        info = self.c.publish(topic, payload, qos=qos)
        info.wait_for_publish(timeout=WAIT)
        assert info.is_published(), f"no PUBACK for {topic}"
        if qos == 0 or self.protocol != MQTTProtocolVersion.MQTTv5:
            return None
        with self._cond:
            self._cond.wait_for(lambda: info.mid in self._pubacks, timeout=WAIT)
            rc = self._pubacks.get(info.mid)
        return int(rc.value) if rc is not None else None

    def next_message(self) -> mqtt.MQTTMessage | None:
        try:
            return self.messages.get(timeout=WAIT)
        except queue.Empty:
            return None

    def expect(self, topic: str, payload: str) -> None:
        msg = self.next_message()
        assert msg is not None, f"{self.client_id}: nothing arrived within {WAIT} s (expected {topic})"
        assert (msg.topic, msg.payload.decode()) == (topic, payload)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def clients(setup: Setup) -> Iterator[Any]:
    """``clients(identity, protocol, **kw)`` makes a connected client; all are closed at the end."""
    made: list[Client] = []

    def make(identity: str, protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311, **kw: Any) -> Client:
        cert = setup.pki.service if identity == certs.SERVICE_IDENTITY else setup.pki.things[identity]
        if identity != certs.SERVICE_IDENTITY:
            kw.setdefault("client_id", identity)  # the broker admits a device only under its thing name
        c = Client(setup.broker.port, setup.pki.ca_file, cert, protocol, **kw)
        made.append(c)
        return c.connect()

    yield make
    for c in made:
        c.close()


def marker() -> str:
    return f"marker-{uuid.uuid4().hex[:8]}"


# ----------------------------------------------------------------------- certificates (no broker)


def test_ca_certificate(tmp_path: Path) -> None:
    ca = certs.init_ca(tmp_path / "certs", days=100)
    cert = x509.load_pem_x509_certificate(ca.cert_path.read_bytes())
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value.startswith("fleetjobs CA ")
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=100) + certs.BACKDATE
    assert cert.signature_hash_algorithm is not None and cert.signature_hash_algorithm.name == "sha256"
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert stat.S_IMODE(ca.key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(ca.cert_path.stat().st_mode) == 0o644
    assert certs.load_ca(tmp_path / "certs").cert == cert


def test_device_certificate(tmp_path: Path) -> None:
    ca = certs.init_ca(tmp_path / "certs")
    cert_path, key_path = certs.issue_device_cert(ca, "thing-a", tmp_path / "out", days=30)
    assert (cert_path.name, key_path.name) == ("thing-a.pem", "thing-a.key")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert cert.subject.rfc4514_string() == "CN=thing-a"
    assert cert.issuer == ca.cert.subject
    cert.verify_directly_issued_by(ca.cert)
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=30) + certs.BACKDATE
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert key.public_key() == cert.public_key()
    assert key_path.read_bytes().startswith(b"-----BEGIN EC PRIVATE KEY-----")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_path.stat().st_mode) == 0o644
    assert not list((tmp_path / "out").glob(".*.tmp"))  # atomic writes leave no temporary files


def test_server_and_service_certificates(tmp_path: Path) -> None:
    ca = certs.init_ca(tmp_path / "certs")
    default, _ = certs.issue_server_cert(ca, tmp_path / "default")
    cert = x509.load_pem_x509_certificate(default.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    cert.verify_directly_issued_by(ca.cert)

    named, _ = certs.issue_server_cert(
        ca, tmp_path / "named", hosts=["broker.example.com", "10.0.0.5"], ips=["::1", "192.0.2.7"]
    )
    cert = x509.load_pem_x509_certificate(named.read_bytes())
    assert cert.subject.rfc4514_string() == "CN=broker.example.com"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["broker.example.com"]
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address(a) for a in ("10.0.0.5", "::1", "192.0.2.7")
    }
    with pytest.raises(certs.CertificateError):
        certs.issue_server_cert(ca, tmp_path / "bad", ips=["not-an-ip"])

    service, _ = certs.issue_service_cert(ca, tmp_path / "svc")
    assert service.name == "fleetjobs-service.pem"
    cert = x509.load_pem_x509_certificate(service.read_bytes())
    assert cert.subject.rfc4514_string() == "CN=fleetjobs-service"
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]


def test_ca_is_not_overwritten(tmp_path: Path) -> None:
    first = certs.init_ca(tmp_path / "certs")
    before = first.key_path.read_bytes()
    with pytest.raises(certs.CAExistsError):
        certs.init_ca(tmp_path / "certs")
    assert first.key_path.read_bytes() == before
    replaced = certs.init_ca(tmp_path / "certs", force=True)
    assert replaced.key_path.read_bytes() != before


@pytest.mark.parametrize(
    "name", ["", "thing/a", "thing+", "#", "$aws", "thing a", "thing.a", "x" * 129, "thíng", "fleetjobs-service"]
)
def test_bad_thing_name(tmp_path: Path, name: str) -> None:
    ca = certs.init_ca(tmp_path / "certs")
    with pytest.raises(certs.InvalidThingName):
        certs.issue_device_cert(ca, name, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("name", ["a", "Thing_1:x-2", "x" * 128])
def test_good_thing_name(tmp_path: Path, name: str) -> None:
    ca = certs.init_ca(tmp_path / "certs")
    cert_path, _ = certs.issue_device_cert(ca, name, tmp_path / "out")
    with warnings.catch_warnings():  # cryptography warns when it parses a CN over RFC 5280's 64 characters
        warnings.simplefilter("ignore", UserWarning)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        assert cert.subject.rfc4514_string() == f"CN={name}"


def test_cli_certificates(tmp_path: Path) -> None:
    d = str(tmp_path / "data")
    r = run_cli("certs", "issue", "thing-a", "--data-dir", d)
    assert r.returncode != 0 and "certs init" in r.stderr
    assert run_cli("certs", "init", "--data-dir", d).returncode == 0
    ca_key = (tmp_path / "data/certs/ca.key").read_bytes()
    r = run_cli("certs", "init", "--data-dir", d)
    assert r.returncode != 0 and "already exists" in r.stderr
    assert (tmp_path / "data/certs/ca.key").read_bytes() == ca_key
    for bad in ("bad/name", "fleetjobs-service", "x" * 129):
        r = run_cli("certs", "issue", bad, "--data-dir", d)
        assert r.returncode != 0 and "thing name" in r.stderr, r.stderr
    r = run_cli("certs", "issue", "thing-a", "--data-dir", d, "--days", "10")
    assert r.returncode == 0, r.stderr
    cert = x509.load_pem_x509_certificate((tmp_path / "data/certs/devices/thing-a.pem").read_bytes())
    assert cert.subject.rfc4514_string() == "CN=thing-a"
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=10) + certs.BACKDATE
    r = run_cli("certs", "issue", "thing-b", "--data-dir", d, "--out", str(tmp_path / "elsewhere"))
    assert r.returncode == 0 and (tmp_path / "elsewhere/thing-b.key").exists()
    r = run_cli("certs", "server", "--data-dir", d, "--host", "mqtt.example.com", "--ip", "192.0.2.1")
    assert r.returncode == 0, r.stderr
    cert = x509.load_pem_x509_certificate((tmp_path / "data/certs/server.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mqtt.example.com"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.0.2.1")]
    assert run_cli("certs", "service", "--data-dir", d).returncode == 0
    assert (tmp_path / "data/certs/fleetjobs-service.pem").exists()
    r = run_cli("certs", "init", "--data-dir", d, "--force")
    assert r.returncode == 0 and (tmp_path / "data/certs/ca.key").read_bytes() != ca_key


# ---------------------------------------------------------------------- broker-config (no broker)


def test_acl_rules() -> None:
    lines = [ln.strip() for ln in render_acl().splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines == [
        "pattern readwrite $aws/things/%u/#",
        "user fleetjobs-service",
        "topic readwrite $aws/#",
        "topic readwrite fleetjobs/#",
        "topic read $SYS/#",
    ]


def test_broker_config_needs_server_certificate(tmp_path: Path) -> None:
    certs.init_ca(certs.certs_dir(tmp_path))
    with pytest.raises(BrokerConfigError, match="certs server"):
        write_mosquitto_config(tmp_path, 8883, tmp_path / "mq")


@pytest.mark.skipif(not IS_ROOT, reason="only root hands the files to the mosquitto user")
def test_broker_config_files_belong_to_broker_user() -> None:
    root = broker_root()
    try:
        ca = certs.init_ca(certs.certs_dir(root / "data"))
        certs.issue_server_cert(ca, certs.certs_dir(root / "data"))
        conf = write_mosquitto_config(root / "data", 8883, root / "mq", user="mosquitto")
        uid = pwd.getpwnam("mosquitto").pw_uid
        for p in (
            conf.directory,
            conf.directory / "data",
            conf.conf_path,
            conf.acl_path,
            conf.directory / "server.key",
            conf.directory / "fleetjobs_client_ids.so",
        ):
            assert p.stat().st_uid == uid, p
        assert stat.S_IMODE((conf.directory / "server.key").stat().st_mode) == 0o600
        assert not (conf.directory / "ca.key").exists()  # the CA key never goes to the broker
        text = conf.conf_path.read_text()
        for line in (
            "listener 8883",
            "user mosquitto",
            "require_certificate true",
            f"plugin {conf.directory}/fleetjobs_client_ids.so",
            "allow_anonymous false",
            "persistence true",
            f"persistence_location {conf.directory}/data/",
            f"acl_file {conf.acl_path}",
            f"keyfile {conf.directory}/server.key",
        ):
            assert line in text.splitlines(), line
        # A directory the broker's user cannot enter is refused now, not when mosquitto fails later.
        hidden = root / "private"
        hidden.mkdir(mode=0o700)
        with pytest.raises(BrokerConfigError, match="could not reach"):
            write_mosquitto_config(root / "data", 8883, hidden / "mq", user="mosquitto")
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------------------- against mosquitto


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_thing_uses_its_own_topics(clients: Any, protocol: MQTTProtocolVersion) -> None:
    a = clients("thing-a", protocol)
    assert a.subscribe("$aws/things/thing-a/jobs/#") == 1
    a.publish("$aws/things/thing-a/jobs/get", '{"clientToken":"1"}')
    a.expect("$aws/things/thing-a/jobs/get", '{"clientToken":"1"}')
    rc = a.publish("$aws/things/thing-a/jobs/job-1/update", '{"status":"IN_PROGRESS"}')
    assert rc in (None, 0)
    a.expect("$aws/things/thing-a/jobs/job-1/update", '{"status":"IN_PROGRESS"}')


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_thing_cannot_read_another_things_topics(clients: Any, protocol: MQTTProtocolVersion) -> None:
    a = clients("thing-a", protocol)
    b = clients("thing-b", protocol)
    service = clients(certs.SERVICE_IDENTITY, protocol)
    # A retained message on thing-b's topic must not reach thing-a when it subscribes either.
    retained = "$aws/things/thing-b/jobs/notify-next"
    service.c.publish(retained, '{"execution":{"jobId":"retained-for-b"}}', qos=1, retain=True).wait_for_publish(WAIT)
    try:
        for topic in ("$aws/things/thing-b/jobs/#", "$aws/things/thing-b/jobs/notify-next", "$aws/things/+/jobs/#"):
            # Mosquitto 2.0's acl_file does not check SUBSCRIBE (it grants it) but checks every delivery;
            # a broker that refuses the subscription outright is just as good.
            assert a.subscribe(topic) in (1, denied_code(protocol)), topic
        assert a.subscribe("#") == 1  # never matches $-topics at all
        assert a.subscribe("$aws/things/thing-a/jobs/notify") == 1

        b.publish("$aws/things/thing-b/jobs/get", '{"clientToken":"b"}')
        service.publish("$aws/things/thing-b/jobs/notify-next", '{"execution":{"jobId":"for-b"}}')
        service.publish("$aws/things/thing-b/jobs/job-1/update/accepted", '{"clientToken":"b"}')
        m = marker()
        service.publish("$aws/things/thing-a/jobs/notify", m)
        a.expect("$aws/things/thing-a/jobs/notify", m)  # its first message: nothing of thing-b's came before
    finally:
        service.c.publish(retained, b"", qos=1, retain=True).wait_for_publish(WAIT)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_thing_cannot_publish_to_another_thing(clients: Any, protocol: MQTTProtocolVersion) -> None:
    a = clients("thing-a", protocol)
    b = clients("thing-b", protocol)
    service = clients(certs.SERVICE_IDENTITY, protocol)
    assert b.subscribe("$aws/things/thing-b/jobs/#") == 1
    assert service.subscribe("$aws/things/+/jobs/#") == 1

    rc = a.publish("$aws/things/thing-b/jobs/get", '{"clientToken":"forged"}')
    if protocol == MQTTProtocolVersion.MQTTv5:
        assert rc == NOT_AUTHORIZED_V5
    rc = a.publish("$aws/things/thing-b/jobs/job-1/update", '{"status":"SUCCEEDED"}')
    a.publish("$aws/things/thing-a/jobs/get", '{"clientToken":"own"}')
    # Neither fleetjobs nor thing-b saw the forged requests: the first thing each gets is a later message.
    service.expect("$aws/things/thing-a/jobs/get", '{"clientToken":"own"}')
    m = marker()
    service.publish("$aws/things/thing-b/jobs/notify", m)
    b.expect("$aws/things/thing-b/jobs/notify", m)


def test_certificate_identity_wins_over_username(clients: Any) -> None:
    """A device cannot claim another thing's identity with the CONNECT username."""
    a = clients("thing-a", MQTTProtocolVersion.MQTTv5, username="thing-b")
    service = clients(certs.SERVICE_IDENTITY, MQTTProtocolVersion.MQTTv5)
    assert service.subscribe("$aws/things/+/jobs/#") == 1
    a.subscribe("$aws/things/thing-b/jobs/#")
    assert a.subscribe("$aws/things/thing-a/jobs/notify") == 1
    assert a.publish("$aws/things/thing-b/jobs/get", '{"clientToken":"as-b"}') == NOT_AUTHORIZED_V5
    assert a.publish("$aws/things/thing-a/jobs/get", '{"clientToken":"as-a"}') == 0
    service.expect("$aws/things/thing-a/jobs/get", '{"clientToken":"as-a"}')  # the forged one never came
    service.publish("$aws/things/thing-b/jobs/notify", '{"jobs":{}}')
    m = marker()
    service.publish("$aws/things/thing-a/jobs/notify", m)
    a.expect("$aws/things/thing-a/jobs/notify", m)


def test_service_may_hold_many_requests_unacknowledged(clients: Any) -> None:
    """fleetjobs acknowledges a request only once it has answered it, and answers the requests that
    arrived together as one batch: the broker must keep delivering while hundreds are unacknowledged
    (Mosquitto's default window is 20 messages, which would cap every batch at 20)."""
    service = clients(certs.SERVICE_IDENTITY)
    service.c.manual_ack_set(True)
    assert service.subscribe("$aws/things/thing-a/jobs/+/get") == 1
    a = clients("thing-a")
    for i in range(200):
        a.publish(f"$aws/things/thing-a/jobs/job-{i}/get", "{}")
    received: list[str] = []
    while len(received) < 200 and (message := service.next_message()) is not None:
        received.append(message.topic)
    assert received == [f"$aws/things/thing-a/jobs/job-{i}/get" for i in range(200)], (
        f"{len(received)} of 200 arrived without acknowledgements"
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_service_sees_every_thing(clients: Any, protocol: MQTTProtocolVersion) -> None:
    service = clients(certs.SERVICE_IDENTITY, protocol)
    a = clients("thing-a", protocol)
    b = clients("thing-b", protocol)
    assert service.subscribe("$aws/things/+/jobs/#") == 1
    a.publish("$aws/things/thing-a/jobs/get", '{"clientToken":"a"}')
    service.expect("$aws/things/thing-a/jobs/get", '{"clientToken":"a"}')
    b.publish("$aws/things/thing-b/jobs/start-next", '{"clientToken":"b"}')
    service.expect("$aws/things/thing-b/jobs/start-next", '{"clientToken":"b"}')
    # ... and answers each on the thing's own response topic.
    assert a.subscribe("$aws/things/thing-a/jobs/get/accepted") == 1
    service.publish("$aws/things/thing-a/jobs/get/accepted", '{"clientToken":"a"}')
    a.expect("$aws/things/thing-a/jobs/get/accepted", '{"clientToken":"a"}')
    service.expect("$aws/things/thing-a/jobs/get/accepted", '{"clientToken":"a"}')  # its own, via the wildcard
    assert service.subscribe("$aws/events/#") == 1


def test_longest_thing_name(setup: Setup, clients: Any) -> None:
    """A 128-character thing name (AWS's maximum, beyond RFC 5280's 64-character CN) works end to end."""
    name = "x" * 120 + ":long_-1"
    cert = certs.issue_device_cert(setup.pki.ca, name, setup.root / "long")
    device = Client(setup.broker.port, setup.pki.ca_file, cert, MQTTProtocolVersion.MQTTv5, client_id=name).connect()
    try:
        service = clients(certs.SERVICE_IDENTITY, MQTTProtocolVersion.MQTTv5)
        assert service.subscribe("$aws/things/+/jobs/#") == 1
        assert device.subscribe(f"$aws/things/{name}/jobs/notify-next") == 1
        assert device.publish("$aws/things/thing-a/jobs/get", "{}") == NOT_AUTHORIZED_V5
        assert device.publish(f"$aws/things/{name}/jobs/get", "{}") == 0
        service.expect(f"$aws/things/{name}/jobs/get", "{}")
        service.publish(f"$aws/things/{name}/jobs/notify-next", '{"timestamp":1}')
        device.expect(f"$aws/things/{name}/jobs/notify-next", '{"timestamp":1}')
    finally:
        device.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("who", ["no-certificate", "other-ca", "server-certificate", "forged-by-device"])
def test_only_fleetjobs_ca_clients_connect(setup: Setup, who: str, protocol: MQTTProtocolVersion) -> None:
    pki = setup.pki
    cert = {
        "no-certificate": None,
        "other-ca": pki.foreign,
        "server-certificate": pki.server,  # issued by the CA, but for servers only (EKU serverAuth)
        "forged-by-device": pki.forged,  # thing-a's key posing as a CA for "thing-b"
    }[who]
    # Each with the client id its CN would be allowed, so the refusal can only be about the certificate.
    client_id = {"other-ca": "thing-a", "forged-by-device": "thing-b"}.get(who, "thing-a")
    c = Client(setup.broker.port, pki.ca_file, cert, protocol, client_id=client_id)
    try:
        assert not c.try_connect()
    finally:
        c.close()
    # The same broker still admits a real device (the refusal was about the certificate).
    ok = Client(setup.broker.port, pki.ca_file, pki.things["thing-a"], protocol, client_id="thing-a")
    try:
        assert ok.try_connect()
    finally:
        ok.close()


# ----------------------------------------------------------------- the CLI end to end, and restarts


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_cli_setup_and_persistent_sessions_survive_broker_restart(protocol: MQTTProtocolVersion) -> None:
    """Everything through ``python -m fleetjobs``; queued QoS 1 requests outlive a broker restart."""
    mosquitto_binary()
    root = broker_root()
    broker: Mosquitto | None = None
    made: list[Client] = []
    try:
        d = str(root / "data")
        for args in (
            ("certs", "init"),
            ("certs", "server", "--host", "localhost", "--ip", "127.0.0.1"),
            ("certs", "service"),
            ("certs", "issue", "thing-a"),
            ("certs", "issue", "thing-b"),
        ):
            r = run_cli(*args, "--data-dir", d)
            assert r.returncode == 0, r.stderr
        port = free_port()
        r = run_cli("broker-config", "mosquitto", "--port", str(port), "--data-dir", d, "--out", str(root / "mq"))
        assert r.returncode == 0, r.stderr
        conf = root / "mq" / "mosquitto.conf"
        assert f"mosquitto -c {conf}" in r.stdout

        cdir = root / "data" / "certs"
        ca_file, service_cert = cdir / "ca.pem", (cdir / "fleetjobs-service.pem", cdir / "fleetjobs-service.key")
        things = {t: (cdir / "devices" / f"{t}.pem", cdir / "devices" / f"{t}.key") for t in ("thing-a", "thing-b")}
        broker = Mosquitto(conf, port, ca_file, service_cert, root / "mosquitto.log").start()

        def client(cert: tuple[Path, Path], **kw: Any) -> Client:
            c = Client(port, ca_file, cert, protocol, **kw)
            made.append(c)
            return c.connect()

        service_id = f"fleetjobs-{uuid.uuid4().hex[:8]}"
        service = client(service_cert, client_id=service_id, clean=False)
        assert service.subscribe("$aws/things/+/jobs/#") == 1
        service.close()  # fleetjobs goes away; its persistent session keeps collecting requests

        a = client(things["thing-a"], client_id="thing-a")
        b = client(things["thing-b"], client_id="thing-b")
        a.publish("$aws/things/thing-b/jobs/get", '{"clientToken":"forged"}')  # dropped by the ACL
        a.publish("$aws/things/thing-a/jobs/get", '{"clientToken":"a1"}')
        b.publish("$aws/things/thing-b/jobs/job-1/update", '{"clientToken":"b1"}')
        a.close()
        b.close()

        broker.stop()
        broker.start()

        service = client(service_cert, client_id=service_id, clean=False)
        got = sorted((m.topic, m.payload.decode()) for m in (service.next_message(), service.next_message()) if m)
        assert got == [
            ("$aws/things/thing-a/jobs/get", '{"clientToken":"a1"}'),
            ("$aws/things/thing-b/jobs/job-1/update", '{"clientToken":"b1"}'),
        ]
        # The subscription itself survived too: new requests arrive without subscribing again.
        a = client(things["thing-a"], client_id="thing-a")
        a.publish("$aws/things/thing-a/jobs/start-next", '{"clientToken":"a2"}')
        service.expect("$aws/things/thing-a/jobs/start-next", '{"clientToken":"a2"}')
    finally:
        for c in made:
            c.close()
        if broker is not None:
            broker.stop()
        shutil.rmtree(root, ignore_errors=True)
