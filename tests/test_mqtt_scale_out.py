"""Several fleetjobs instances share the device traffic of one Mosquitto.

Mosquitto never delivers ``$`` topics to shared subscriptions, so the broker written by
``write_mosquitto_config(..., shared_requests=True)`` (``broker-config mosquitto --shared-requests``)
carries a loopback bridge: it connects to the broker's own mutual-TLS listener with the
``fleetjobs-service`` certificate and copies ``$aws/things/<thing>/jobs/...`` to
``fleetjobs/requests/<thing>/jobs/...``; every ``fleetjobs serve --mqtt-shared-group G`` subscribes
``$share/G/fleetjobs/requests/#`` and answers on the device's own ``$aws/...`` topic.

What is shown, with the production config (mutual TLS, ACL), two ``fleetjobs serve`` processes over one
database and 24 paho devices, each with its own certificate:

* every request gets exactly one response: responses are counted per clientToken until each device's
  follow-up request has been answered and a settle period has passed, and the instances' debug logs
  hold one "handled request" line per request in all;
* both instances handled some of the requests;
* after one instance is killed (``kill -9``) the other serves all the rest;
* a device cannot inject requests for another thing through the bridge's topic tree.
"""

from __future__ import annotations

import json
import os
import pwd
import queue
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from fleetjobs.config import Settings
from fleetjobs.mqtt.gateway import request_topic, shared_filter
from fleetjobs.security import certs
from fleetjobs.security.broker_config import BrokerConfigError, write_mosquitto_config
from tests.fleet import Fleet, details, thing_arn
from tests.harness import Server, free_port, unique
from tests.test_broker_security import Mosquitto, broker_root, mosquitto_binary

DEVICES = 24
GROUP = "fleetjobs"
SETTLE = 1.0  # seconds to wait, after a device's follow-up was answered, for any late duplicate
HANDLED = re.compile(r"handled request \$aws/things/([^/\s]+)/jobs/(\S+) \(gateway")


class TlsDevice:
    """A device with its own certificate; keeps every response it gets, per clientToken."""

    def __init__(self, port: int, thing: str, ca: Path, cert: tuple[Path, Path]) -> None:
        self.thing = thing
        self.base = f"$aws/things/{thing}/jobs"
        self.responses: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        self._waiters: dict[str, queue.Queue[tuple[str, dict[str, Any]]]] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=thing)
        self.client.tls_set(ca_certs=str(ca), certfile=str(cert[0]), keyfile=str(cert[1]))
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a, **k: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(f"{self.base}/#", qos=1)
        if not subscribed.wait(10):
            raise TimeoutError("subscription not acknowledged")

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if not (msg.topic.endswith("/accepted") or msg.topic.endswith("/rejected")):
            return
        doc = json.loads(msg.payload)
        token = doc.get("clientToken")
        kind = msg.topic.rsplit("/", 1)[1]
        with self._lock:
            self.responses.setdefault(token, []).append((kind, doc))
            waiter = self._waiters.pop(token, None)
        if waiter is not None:
            waiter.put((kind, doc))

    def publish(self, topic: str, payload: dict[str, Any]) -> str:
        token = uuid.uuid4().hex
        body = json.dumps({**payload, "clientToken": token}).encode()
        self.client.publish(topic, body, qos=1).wait_for_publish(10)
        return token

    def request(self, suffix: str, payload: dict[str, Any] | None = None, timeout: float = 15) -> tuple[str, dict]:
        token = uuid.uuid4().hex
        waiter: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        with self._lock:
            self._waiters[token] = waiter
        body = json.dumps({**(payload or {}), "clientToken": token}).encode()
        self.client.publish(f"{self.base}/{suffix}", body, qos=1)
        try:
            return waiter.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"{self.thing}: no response to {suffix} within {timeout} s") from None

    def duplicates(self) -> dict[str, int]:
        with self._lock:
            return {t: len(r) for t, r in self.responses.items() if len(r) != 1}

    def close(self) -> None:
        self.client.disconnect()  # first: the network thread ends at once
        self.client.loop_stop()


@dataclass
class Cluster:
    broker: Mosquitto
    a: Server
    b: Server
    devices: list[TlsDevice]
    things: list[str]
    iot: Any


def handled(server: Server, things: set[str]) -> list[tuple[str, str]]:
    """(thing, request) per request this instance handled, from its debug log (the test's things only)."""
    return [m.groups() for m in HANDLED.finditer(server.log()) if m.group(1) in things]


def wait_for(predicate: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def cluster(backends) -> Iterator[Cluster]:  # type: ignore[no-untyped-def]
    mosquitto_binary()
    root = broker_root()
    servers: list[Server] = []
    devices: list[TlsDevice] = []
    broker: Mosquitto | None = None
    try:
        data = root / "pki"
        cdir = certs.certs_dir(data)
        ca = certs.init_ca(cdir)
        certs.issue_server_cert(ca, cdir)
        service = certs.issue_service_cert(ca, cdir)
        conf = write_mosquitto_config(data, free_port(), root / "mosquitto", bind="127.0.0.1", shared_requests=True)
        broker = Mosquitto(conf.conf_path, conf.port, ca.cert_path, service, root / "mosquitto.log").start()
        wait_for(lambda: "New bridge connected" in broker.log(), "the loopback bridge to connect")

        def env() -> dict[str, str]:
            return {
                "FLEETJOBS_MQTT_URL": f"mqtts://127.0.0.1:{conf.port}",
                "FLEETJOBS_MQTT_CA_FILE": str(ca.cert_path),
                "FLEETJOBS_MQTT_CERT_FILE": str(service[0]),
                "FLEETJOBS_MQTT_KEY_FILE": str(service[1]),
                "FLEETJOBS_MQTT_CLIENT_ID": unique("gw"),
                "FLEETJOBS_MQTT_SHARED_GROUP": GROUP,
                "FLEETJOBS_LOG_LEVEL": "debug",
            }

        a = backends.server(env=env()).start()
        servers.append(a)
        b = Server(data_dir=a.data_dir, database_url=a.database_url, env=env()).start()
        servers.append(b)
        backends._servers.append(b)
        for s in (a, b):
            wait_for(lambda s=s: f"subscribed to $share/{GROUP}/fleetjobs/requests/#" in s.log(), "a gateway")

        iot = a.client("iot")
        things = Fleet(iot).things(DEVICES)
        devices_dir = certs.devices_dir(data)
        with ThreadPoolExecutor(8) as pool:
            devices = list(
                pool.map(
                    lambda t: TlsDevice(conf.port, t, ca.cert_path, certs.issue_device_cert(ca, t, devices_dir)),
                    things,
                )
            )
        yield Cluster(broker, a, b, devices, things, iot)
    finally:
        for d in devices:
            d.close()
        for s in servers:
            s.stop()
        if broker is not None:
            broker.stop()
        shutil.rmtree(root, ignore_errors=True)


def run_all(devices: list[TlsDevice], step: Any) -> list[Any]:
    with ThreadPoolExecutor(len(devices)) as pool:
        return list(pool.map(step, devices))


def settle(devices: list[TlsDevice]) -> None:
    """Bound the wait for late duplicates: each device's follow-up is answered, then SETTLE more."""
    for kind, _ in run_all(devices, lambda d: d.request("get")):
        assert kind == "accepted"
    time.sleep(SETTLE)


def test_every_request_is_answered_once_and_both_instances_share_them(cluster: Cluster) -> None:
    fleet = Fleet(cluster.iot)
    job_id = fleet.job([thing_arn(t) for t in cluster.things])

    def workflow(d: TlsDevice) -> None:
        kind, doc = d.request("start-next", {"statusDetails": {"step": "download"}})
        assert kind == "accepted", doc
        assert doc["execution"]["jobId"] == job_id and doc["execution"]["status"] == "IN_PROGRESS"
        version = doc["execution"]["versionNumber"]
        kind, doc = d.request(f"{job_id}/update", {"status": "SUCCEEDED", "expectedVersion": version})
        assert kind == "accepted", doc

    run_all(cluster.devices, workflow)
    settle(cluster.devices)

    for d in cluster.devices:
        assert d.duplicates() == {}, f"{d.thing} got more than one response to a request"
    assert details(cluster.iot, job_id)["numberOfSucceededThings"] == DEVICES
    assert cluster.iot.describe_job(jobId=job_id)["job"]["status"] == "COMPLETED"

    names = set(cluster.things)
    by_a, by_b = handled(cluster.a, names), handled(cluster.b, names)
    # 3 requests per device (start-next, update, follow-up get), each handled by exactly one instance.
    assert len(by_a) + len(by_b) == 3 * DEVICES, (len(by_a), len(by_b))
    assert by_a and by_b, f"one instance handled everything: {len(by_a)} / {len(by_b)}"


def test_a_device_cannot_inject_requests_through_the_bridge_topics(cluster: Cluster) -> None:
    attacker, victim = cluster.devices[0], cluster.devices[1]
    fleet = Fleet(cluster.iot)
    job_id = fleet.job([thing_arn(victim.thing)])
    # The ACL gives devices nothing under fleetjobs/: the publish is dropped, never bridged or handled.
    attacker.publish(f"fleetjobs/requests/{victim.thing}/jobs/start-next", {})
    attacker.publish(f"$aws/things/{victim.thing}/jobs/start-next", {})
    settle([attacker, victim])
    execution = cluster.iot.describe_job_execution(jobId=job_id, thingName=victim.thing)["execution"]
    assert execution["status"] == "QUEUED"
    cluster.iot.cancel_job(jobId=job_id, force=True)


def test_the_survivor_serves_everything_after_an_instance_is_killed(cluster: Cluster) -> None:
    fleet = Fleet(cluster.iot)
    job_id = fleet.job([thing_arn(t) for t in cluster.things])
    names = set(cluster.things)

    versions = {}
    started = run_all(cluster.devices, lambda d: d.request("start-next"))
    for d, (kind, doc) in zip(cluster.devices, started, strict=True):
        assert kind == "accepted", doc
        versions[d.thing] = doc["execution"]["versionNumber"]

    # Mid-way: kill one instance. Its clean MQTT session (shared mode) ends with its connection, so
    # the broker hands the group's every later message to the other one.
    cluster.b.stop(kill=True)

    def finish(d: TlsDevice) -> None:
        kind, doc = d.request(f"{job_id}/update", {"status": "SUCCEEDED", "expectedVersion": versions[d.thing]})
        assert kind == "accepted", doc

    run_all(cluster.devices, finish)
    settle(cluster.devices)
    for d in cluster.devices:
        assert d.duplicates() == {}, f"{d.thing} got more than one response to a request"
    assert cluster.iot.describe_job(jobId=job_id)["job"]["status"] == "COMPLETED"
    assert details(cluster.iot, job_id)["numberOfSucceededThings"] == DEVICES
    # Every update (all sent after the kill) was handled by the survivor, once.
    updates = f"{job_id}/update"
    assert [r for _, r in handled(cluster.a, names)].count(updates) == DEVICES
    assert [r for _, r in handled(cluster.b, names)].count(updates) == 0


# ------------------------------------------------------------------------ config, without processes


def test_the_bridge_is_only_written_when_asked(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ca = certs.init_ca(certs.certs_dir(data))
    certs.issue_server_cert(ca, certs.certs_dir(data))
    user = pwd.getpwuid(os.geteuid()).pw_name
    plain = write_mosquitto_config(data, 8883, tmp_path / "plain", user=user)
    assert "connection " not in plain.conf_path.read_text()
    with pytest.raises(BrokerConfigError, match="certs service"):
        write_mosquitto_config(data, 8883, tmp_path / "shared", user=user, shared_requests=True)
    certs.issue_service_cert(ca, certs.certs_dir(data))
    shared = write_mosquitto_config(data, 8883, tmp_path / "shared", user=user, shared_requests=True)
    text = shared.conf_path.read_text()
    assert "address 127.0.0.1:8883\n" in text and "bridge_insecure" not in text
    assert "\ntopic +/jobs/# in 1 fleetjobs/requests/ $aws/things/\n" in text
    assert (tmp_path / "shared" / "fleetjobs-service.key").stat().st_mode & 0o777 == 0o600
    # A server certificate that does not name the loopback address: the chain is still checked.
    certs.issue_server_cert(ca, certs.certs_dir(data), hosts=["broker.example.com"])
    other = write_mosquitto_config(data, 8883, tmp_path / "other", user=user, shared_requests=True)
    assert "\nbridge_insecure true\n" in other.conf_path.read_text()


def test_shared_group_settings() -> None:
    env = {"FLEETJOBS_MQTT_URL": "mqtts://broker:8883", "FLEETJOBS_MQTT_SHARED_GROUP": "g1"}
    assert Settings.load({}, env).mqtt_shared_group == "g1"
    with pytest.raises(ValueError, match="mqtt_url"):
        Settings.load({"mqtt_shared_group": "g1"}, {})
    with pytest.raises(ValueError, match="must not contain"):
        Settings.load({"mqtt_shared_group": "a/b"}, env)
    assert shared_filter("g1") == "$share/g1/fleetjobs/requests/#"
    assert request_topic("fleetjobs/requests/t1/jobs/j1/update") == "$aws/things/t1/jobs/j1/update"
    assert request_topic("$aws/things/t1/jobs/get") is None
