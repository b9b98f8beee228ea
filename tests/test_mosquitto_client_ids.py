"""Client ids on the Mosquitto that ``broker-config mosquitto`` sets up: nobody can take over another's session.

A real ``mosquitto -c CONF`` (written by ``write_mosquitto_config``, with the ``--shared-requests`` loopback bridge
so that its client ids are covered too) and paho-mqtt clients with fleetjobs certificates, MQTT 3.1.1 and 5. In MQTT
a CONNECT with a client id that is in use disconnects the connection holding it and resumes (or, with a clean
session, wipes) its session, so each test shows both halves: the impostor's CONNECT is refused (CONNACK failure), and
the client that owns the id is still connected on the same connection (no disconnect callback; it receives a marker
published after the refusal) or, when it was offline, gets its session back (session present, its queued message).

"Refused before anything happens to the victim" is observable without sleeping: Mosquitto handles packets one at a
time, so once the impostor has its CONNACK, a kicked victim would already have been disconnected before the marker
(published after that CONNACK) could reach it; the victim does not reconnect (``reconnect_on_failure=False``).
"""

from __future__ import annotations

import os
import pwd
import queue
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.enums import MQTTProtocolVersion

from fleetjobs.security import certs
from fleetjobs.security.broker_config import BrokerConfigError, write_mosquitto_config
from fleetjobs.security.mosquitto_plugin import PLUGIN_NAME
from tests.harness import free_port
from tests.test_broker_security import (
    PROTOCOLS,
    WAIT,
    Client,
    Mosquitto,
    broker_root,
    marker,
    mosquitto_binary,
)

GATEWAY_ID = "fleetjobs-gateway"  # fleetjobs serve's default --mqtt-client-id
BRIDGE_IDS = ("fleetjobs-requests", "fleetjobs-requests-local")  # the --shared-requests bridge's two ids


@dataclass
class Broker:
    mosquitto: Mosquitto
    ca_file: Path
    service: tuple[Path, Path]
    things: dict[str, tuple[Path, Path]]

    @property
    def port(self) -> int:
        return self.mosquitto.port


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    mosquitto_binary()
    root = broker_root()
    proc: Mosquitto | None = None
    try:
        data = root / "data"
        cdir = certs.certs_dir(data)
        ca = certs.init_ca(cdir)
        certs.issue_server_cert(ca, cdir)
        service = certs.issue_service_cert(ca, cdir)
        # "fleetjobs-gateway" passes the thing-name rule, so the CA can issue it: the broker must still refuse it.
        things = {t: certs.issue_device_cert(ca, t, root / "devices") for t in ("thing-a", "thing-b", GATEWAY_ID)}
        conf = write_mosquitto_config(data, free_port(), root / "mosquitto", bind="127.0.0.1", shared_requests=True)
        proc = Mosquitto(conf.conf_path, conf.port, ca.cert_path, service, root / "mosquitto.log").start()
        yield Broker(proc, ca.cert_path, service, things)
    finally:
        if proc is not None:
            proc.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def make(broker: Broker) -> Iterator[Any]:
    """``make(identity, client_id, protocol, clean=...)``: a client (not yet connected); all closed at the end."""
    made: list[Client] = []

    def new(identity: str, client_id: str, protocol: MQTTProtocolVersion, **kw: Any) -> Client:
        cert = broker.service if identity == certs.SERVICE_IDENTITY else broker.things[identity]
        c = Client(broker.port, broker.ca_file, cert, protocol, client_id=client_id, **kw)
        made.append(c)
        return c

    yield new
    for c in made:
        c.close()


def still_connected(victim: Client) -> bool:
    """No disconnect callback so far (every CONNACK was taken already; a disconnect would have put None)."""
    return victim.c.is_connected() and victim._connack.empty()


def track_session_present(client: Client) -> queue.Queue[bool]:
    """Record the CONNACK's session-present flag, in addition to what the Client helper records."""
    flags: queue.Queue[bool] = queue.Queue()

    def on_connect(_c: Any, _u: Any, f: Any, rc: Any, _p: Any) -> None:
        flags.put(bool(f.session_present))
        client._connack.put(rc)

    client.c.on_connect = on_connect
    return flags


def wipe(make: Any, identity: str, protocol: MQTTProtocolVersion) -> None:
    """End the identity's persistent session (a clean connect of its own), so later tests start afresh."""
    c = make(identity, identity, protocol, clean=True).connect()
    c.close()


# ------------------------------------------------------------------------------------------ devices


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("client_id", ["thing-b", "thing-a-2", ""])
def test_device_cannot_connect_with_another_client_id(make: Any, protocol: MQTTProtocolVersion, client_id: str) -> None:
    """thing-a's certificate with thing-b's id, a look-alike of its own, or none (the broker would pick one)."""
    b = make("thing-b", "thing-b", protocol).connect()
    assert b.subscribe("$aws/things/thing-b/jobs/notify") == 1
    impostor = make("thing-a", client_id, protocol)
    assert not impostor.try_connect()
    service = make(certs.SERVICE_IDENTITY, f"fleetjobs-{uuid.uuid4().hex[:6]}", protocol).connect()
    m = marker()
    service.publish("$aws/things/thing-b/jobs/notify", m)
    b.expect("$aws/things/thing-b/jobs/notify", m)
    assert still_connected(b)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("impostor_clean", [False, True], ids=["resume", "clean"])
def test_offline_persistent_session_cannot_be_resumed_or_wiped_by_another_thing(
    make: Any, protocol: MQTTProtocolVersion, impostor_clean: bool
) -> None:
    """thing-b is away with a persistent session holding a queued notice; thing-a tries to resume or to wipe it."""
    b = make("thing-b", "thing-b", protocol, clean=False).connect()
    assert b.subscribe("$aws/things/thing-b/jobs/notify-next") == 1
    b.close()
    service = make(certs.SERVICE_IDENTITY, f"fleetjobs-{uuid.uuid4().hex[:6]}", protocol).connect()
    queued = marker()
    service.publish("$aws/things/thing-b/jobs/notify-next", queued)
    try:
        impostor = make("thing-a", "thing-b", protocol, clean=impostor_clean)
        assert not impostor.try_connect()

        b = make("thing-b", "thing-b", protocol, clean=False)
        present = track_session_present(b)
        b.connect()
        assert present.get(timeout=WAIT) is True
        b.expect("$aws/things/thing-b/jobs/notify-next", queued)
    finally:
        wipe(make, "thing-b", protocol)


# ---------------------------------------------------------------------------------- fleetjobs' own ids


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("identity", ["thing-a", GATEWAY_ID], ids=["other-thing", "thing-named-like-the-gateway"])
def test_gateway_client_id_is_reserved_to_the_service_certificate(
    make: Any, protocol: MQTTProtocolVersion, identity: str
) -> None:
    """The gateway's persistent session holds requests the broker acknowledged; no device may touch it."""
    gateway = make(certs.SERVICE_IDENTITY, GATEWAY_ID, protocol, clean=False).connect()
    try:
        assert gateway.subscribe("$aws/things/+/jobs/get") == 1
        for clean in (True, False):
            assert not make(identity, GATEWAY_ID, protocol, clean=clean).try_connect()
        a = make("thing-a", "thing-a", protocol).connect()
        a.publish("$aws/things/thing-a/jobs/get", '{"clientToken":"after"}')
        gateway.expect("$aws/things/thing-a/jobs/get", '{"clientToken":"after"}')
        assert still_connected(gateway)
    finally:
        gateway.close()
        wipe_gateway = make(certs.SERVICE_IDENTITY, GATEWAY_ID, protocol, clean=True).connect()
        wipe_gateway.close()


@pytest.mark.parametrize("client_id", BRIDGE_IDS)
def test_bridge_client_ids_are_reserved(broker: Broker, make: Any, client_id: str) -> None:
    """Neither side of the --shared-requests loopback bridge can be kicked off by a device."""
    protocol = MQTTProtocolVersion.MQTTv311
    service = make(certs.SERVICE_IDENTITY, f"fleetjobs-{uuid.uuid4().hex[:6]}", protocol).connect()
    assert service.subscribe("fleetjobs/requests/thing-a/jobs/get") == 1
    a = make("thing-a", "thing-a", protocol).connect()
    a.publish("$aws/things/thing-a/jobs/get", '{"clientToken":"before"}')
    service.expect("fleetjobs/requests/thing-a/jobs/get", '{"clientToken":"before"}')  # the bridge is up

    for clean in (True, False):
        assert not make("thing-a", client_id, protocol, clean=clean).try_connect()
    assert still_connected(a)
    a.publish("$aws/things/thing-a/jobs/get", '{"clientToken":"after"}')
    service.expect("fleetjobs/requests/thing-a/jobs/get", '{"clientToken":"after"}')
    # Mosquitto logs every takeover ("Client X already connected, closing old connection"): none happened.
    assert f"Client {client_id} already connected" not in broker.mosquitto.log()


# ------------------------------------------------------------------------------- the generated files


def test_config_loads_the_client_id_plugin_instead_of_use_identity_as_username(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ca = certs.init_ca(certs.certs_dir(data))
    certs.issue_server_cert(ca, certs.certs_dir(data))
    conf = write_mosquitto_config(data, 8883, tmp_path / "mq", user=pwd.getpwuid(os.geteuid()).pw_name)
    lines = conf.conf_path.read_text().splitlines()
    assert f"plugin {conf.directory / PLUGIN_NAME}" in lines
    assert "plugin_opt_service_identity fleetjobs-service" in lines
    assert "plugin_opt_reserved_prefix fleetjobs-" in lines
    # With use_identity_as_username Mosquitto 2.0 would skip the plugin's connect-time check altogether.
    assert not any(line.startswith("use_identity_as_username") for line in lines)
    plugin = conf.directory / PLUGIN_NAME
    assert plugin.stat().st_mode & 0o777 == 0o644
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(plugin)], capture_output=True, text=True)
    if symbols.returncode == 0:  # binutils present: the plugin exports Mosquitto's version-5 entry points
        for name in ("mosquitto_plugin_version", "mosquitto_plugin_init", "mosquitto_plugin_cleanup"):
            assert name in symbols.stdout


def test_config_is_not_written_without_a_compiler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No plugin, no config: a broker without the check would look just the same until someone used it."""
    data = tmp_path / "data"
    ca = certs.init_ca(certs.certs_dir(data))
    certs.issue_server_cert(ca, certs.certs_dir(data))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(BrokerConfigError, match="C compiler"):
        write_mosquitto_config(data, 8883, tmp_path / "mq", user=pwd.getpwuid(os.geteuid()).pw_name)
    assert not (tmp_path / "mq" / "mosquitto.conf").exists()
