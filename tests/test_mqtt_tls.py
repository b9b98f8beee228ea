"""The device plane over mutual TLS, end to end: real device SDKs, a real broker, a real ``fleetjobs serve``.

Two deployments, each over both database backends:

* **mosquitto**: a Mosquitto process run with fleetjobs' own configuration (``write_mosquitto_config``, the code
  behind ``fleetjobs broker-config mosquitto``: mutual TLS, per-thing ACL) and a ``fleetjobs serve`` that joins it
  with ``--mqtt-url mqtts://localhost:PORT`` and the ``fleetjobs-service`` certificate;
* **embedded**: ``fleetjobs serve --mqtt-tls``, whose embedded broker uses the CA in its data dir and issues its
  own server and service certificates on start.

Devices connect with their thing certificate (CN = thing name) and run whole jobs: paho-mqtt on the raw topics,
``awsiotsdk``'s ``IotJobsClient`` (MQTT 3.1.1), ``IotJobsClientV2`` (MQTT 5: Mosquitto only, the embedded broker
speaks 3.1.1) and ``AWSIoTPythonSDK``'s ``AWSIoTMQTTThingJobsClient``. The isolation test shows, through the
whole system, that thing-a's certificate can neither read nor change thing-b's executions.

Every wait is bounded (``TIMEOUT``); nothing asserts on elapsed time. A missing ``mosquitto`` or SDK package
skips locally and fails with CI=true.
"""

from __future__ import annotations

import importlib
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from fleetjobs.config import Settings
from fleetjobs.security import certs
from fleetjobs.security.broker_config import write_mosquitto_config
from fleetjobs.server import embedded_broker
from tests.fleet import Fleet, thing_arn
from tests.harness import Server, free_port, in_ci, unique
from tests.mqtt_device import Device
from tests.test_broker_security import Mosquitto, broker_root, mosquitto_binary

TIMEOUT = 15.0  # seconds: the bound of every wait
ABSENCE = 1.0  # seconds: how long a negative check keeps listening after the positive control arrived
HOST = "localhost"  # the server certificates are for localhost and 127.0.0.1


def require(module: str) -> ModuleType:
    """Import an SDK the test needs: skip without it, except with CI=true (then fail)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if in_ci():
            pytest.fail(f"{module} is not installed and CI=true: refusing to skip ({e})")
        pytest.skip(f"{module} not installed")


# ------------------------------------------------------------------------------------ deployments


@dataclass
class Deployment:
    """A running fleetjobs whose devices connect over mutual TLS to ``port``."""

    name: str
    server: Server
    port: int
    ca: certs.CA
    device_dir: Path

    def device_cert(self, thing: str) -> tuple[Path, Path]:
        return certs.issue_device_cert(self.ca, thing, self.device_dir)

    @property
    def ca_file(self) -> str:
        return str(self.ca.cert_path)

    def fleet(self) -> Fleet:
        return Fleet(self.server.client("iot"))


class TlsDevice(Device):
    """``tests.mqtt_device.Device`` over TLS with a thing certificate (paho-mqtt, MQTT 3.1.1)."""

    def __init__(self, port: int, ca_file: str, cert: tuple[Path, Path], thing: str, subscribe: bool = True) -> None:
        self.thing = thing
        self.base = f"$aws/things/{thing}/jobs"
        self.messages = queue.Queue()
        self._responses = {}
        self._lock = threading.Lock()
        self._seen = []
        self._subacks: queue.Queue[list[Any]] = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=thing)
        self.client.tls_set(ca_certs=ca_file, certfile=str(cert[0]), keyfile=str(cert[1]))
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda _c, _u, _mid, codes, _p: self._subacks.put(list(codes))
        connected: queue.Queue[Any] = queue.Queue()
        self.client.on_connect = lambda _c, _u, _f, rc, _p: connected.put(rc)
        self.client.connect(HOST, port)
        self.client.loop_start()
        rc = connected.get(timeout=TIMEOUT)
        assert not rc.is_failure, f"{thing} could not connect: {rc}"
        if subscribe:
            self.subscribe(f"{self.base}/#")

    def subscribe(self, topic: str) -> list[Any]:
        self.client.subscribe(topic, qos=1)
        return self._subacks.get(timeout=TIMEOUT)

    def publish(self, topic: str, doc: dict[str, Any]) -> None:
        """Publish at QoS 1 and wait for the broker's PUBACK (sent once it has routed or dropped the message)."""
        info = self.client.publish(topic, json.dumps(doc).encode(), qos=1)
        info.wait_for_publish(timeout=TIMEOUT)
        assert info.is_published(), f"no PUBACK for {topic}"


def wait_ready(dep: Deployment) -> Deployment:
    """Until the gateway answers a device's request through the TLS broker (at most TIMEOUT seconds)."""
    thing = unique("probe")
    cert = dep.device_cert(thing)
    deadline = time.monotonic() + TIMEOUT
    device = None
    try:
        while time.monotonic() < deadline:
            try:
                if device is None:
                    device = TlsDevice(dep.port, dep.ca_file, cert, thing)
                device.request("get", timeout=0.5)
                return dep
            except Exception:
                time.sleep(0.1)
        raise RuntimeError(f"{dep.name}: the MQTT gateway never answered over TLS:\n{dep.server.log()}")
    finally:
        if device is not None:
            device.close()


@pytest.fixture(scope="module")
def mosquitto_tls(backends: Any) -> Iterator[Deployment]:
    """Mosquitto with fleetjobs' own mutual-TLS + ACL config; ``fleetjobs serve --mqtt-url mqtts://...`` joins it."""
    mosquitto_binary()
    root = broker_root()  # the broker's user must be able to read its files: not under pytest's tmp_path
    broker = None
    try:
        data = root / "data"
        cdir = certs.certs_dir(data)
        ca = certs.init_ca(cdir)
        certs.issue_server_cert(ca, cdir)
        service = certs.issue_service_cert(ca, cdir)
        conf = write_mosquitto_config(data, free_port(), root / "mosquitto", bind="127.0.0.1")
        broker = Mosquitto(conf.conf_path, conf.port, ca.cert_path, service, root / "mosquitto.log").start()
        server = backends.server(
            env={
                "FLEETJOBS_MQTT_URL": f"mqtts://{HOST}:{conf.port}",
                "FLEETJOBS_MQTT_CA_FILE": str(ca.cert_path),
                "FLEETJOBS_MQTT_CERT_FILE": str(service[0]),
                "FLEETJOBS_MQTT_KEY_FILE": str(service[1]),
                "FLEETJOBS_MQTT_CLIENT_ID": unique("gw"),
            }
        ).start()
        try:
            yield wait_ready(Deployment("mosquitto", server, conf.port, ca, root / "devices"))
        except BaseException:
            print(broker.log())
            raise
        finally:
            server.stop()
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def embedded_tls(backends: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """``fleetjobs serve --mqtt-tls``: the embedded broker with the CA of its data dir."""
    data = tmp_path_factory.mktemp("embedded-tls") / "data"
    cdir = certs.certs_dir(data)
    ca = certs.init_ca(cdir)  # what 'fleetjobs certs init' does; the rest is issued by 'serve'
    server = backends.server(data_dir=data, extra_args=["--mqtt-tls"]).start()
    try:
        assert (cdir / "server.pem").exists() and (cdir / "fleetjobs-service.pem").exists()
        assert f"embedded broker mqtts://127.0.0.1:{server.mqtt_port}" in server.output()
        yield wait_ready(Deployment("embedded", server, server.mqtt_port, ca, data / "devices"))
    finally:
        server.stop()


@pytest.fixture(params=["mosquitto", "embedded"])
def deployment(request: pytest.FixtureRequest, backends: Any) -> Deployment:
    # ``backends`` is named so that pytest parametrizes this fixture over the database backends.
    return request.getfixturevalue(f"{request.param}_tls")


# ------------------------------------------------------------------------------------- helpers


def expect_completed(dep: Deployment, job_id: str, thing: str) -> None:
    iot = dep.server.client("iot")
    job = iot.describe_job(jobId=job_id)["job"]
    assert job["status"] == "COMPLETED", job
    assert job["jobProcessDetails"]["numberOfSucceededThings"] == 1
    execution = iot.describe_job_execution(jobId=job_id, thingName=thing)["execution"]
    assert execution["status"] == "SUCCEEDED"


class Events:
    """Callbacks of an SDK put (kind, value) here; ``expect`` fails on a rejection that arrives first."""

    def __init__(self) -> None:
        self.q: queue.Queue[tuple[str, Any]] = queue.Queue()

    def put(self, kind: str) -> Callable[..., None]:
        return lambda *args: self.q.put((kind, args[-1] if args else None))

    def expect(self, kind: str) -> Any:
        while True:
            got, value = self.q.get(timeout=TIMEOUT)
            if got == kind:
                return value
            assert "rejected" not in got, (got, value)


# ---------------------------------------------------------------------------------- paho, raw topics


def test_paho_device_runs_a_job(deployment: Deployment) -> None:
    fleet = deployment.fleet()
    thing = fleet.things(1)[0]
    device = TlsDevice(deployment.port, deployment.ca_file, deployment.device_cert(thing), thing)
    try:
        job_id = fleet.job([thing_arn(thing)], document=json.dumps({"operation": "install"}))
        _, notify = device.wait_for(lambda t, d: t.endswith("/notify-next") and "execution" in d, TIMEOUT)
        assert notify["execution"]["jobId"] == job_id
        assert notify["execution"]["jobDocument"] == {"operation": "install"}

        verdict, doc = device.request("start-next", {"stepTimeoutInMinutes": 5}, timeout=TIMEOUT)
        assert verdict == "accepted", doc
        assert doc["execution"]["status"] == "IN_PROGRESS" and doc["execution"]["versionNumber"] == 2

        verdict, doc = device.request(
            f"{job_id}/update",
            {"status": "IN_PROGRESS", "statusDetails": {"percent": "50"}, "expectedVersion": 2},
            timeout=TIMEOUT,
        )
        assert verdict == "accepted", doc

        verdict, doc = device.request(
            f"{job_id}/update", {"status": "SUCCEEDED", "includeJobExecutionState": True}, timeout=TIMEOUT
        )
        assert verdict == "accepted", doc
        assert doc["executionState"]["status"] == "SUCCEEDED" and doc["executionState"]["versionNumber"] == 4
        device.wait_for(lambda t, d: t.endswith("/notify-next") and "execution" not in d, TIMEOUT)
        expect_completed(deployment, job_id, thing)
    finally:
        device.close()


# ------------------------------------------------------------------------------------------- isolation


def test_a_thing_cannot_read_or_change_another_things_executions(deployment: Deployment) -> None:
    fleet = deployment.fleet()
    a_name, b_name = fleet.things(2)
    a = TlsDevice(deployment.port, deployment.ca_file, deployment.device_cert(a_name), a_name)
    b = TlsDevice(deployment.port, deployment.ca_file, deployment.device_cert(b_name), b_name)
    iot = deployment.server.client("iot")
    try:
        job_id = fleet.job([thing_arn(b_name)])
        b.wait_for(lambda t, d: t.endswith("/notify-next") and d.get("execution", {}).get("jobId") == job_id, TIMEOUT)
        # thing-a subscribes to thing-b's topics: Mosquitto grants it but never delivers; amqtt refuses it.
        a.subscribe(f"$aws/things/{b_name}/jobs/#")

        # Read: a get for thing-b's executions, published by thing-a.
        forged = f"forged-{uuid.uuid4().hex[:8]}"
        a.publish(f"$aws/things/{b_name}/jobs/get", {"clientToken": forged})
        # Change: thing-a tries to finish thing-b's execution.
        a.publish(
            f"$aws/things/{b_name}/jobs/{job_id}/update",
            {"status": "SUCCEEDED", "statusDetails": {"by": "thing-a"}, "clientToken": forged},
        )
        # Controls: both things' own requests are answered (so the gateway was up and reading).
        verdict, doc = a.request("get", timeout=TIMEOUT)
        assert verdict == "accepted" and doc["queuedJobs"] == [] and doc["inProgressJobs"] == []
        verdict, doc = b.request("get", timeout=TIMEOUT)
        assert verdict == "accepted" and [j["jobId"] for j in doc["queuedJobs"]] == [job_id]

        execution = iot.describe_job_execution(jobId=job_id, thingName=b_name)["execution"]
        assert execution["status"] == "QUEUED" and execution["versionNumber"] == 1
        assert "statusDetails" not in execution or execution["statusDetails"].get("detailsMap") in (None, {})

        # thing-b runs its job with expectedVersion at every step: had the forged update been applied at any
        # point, a version or a transition would be refused here.
        verdict, doc = b.request("start-next", timeout=TIMEOUT)
        assert verdict == "accepted" and doc["execution"]["jobId"] == job_id and doc["execution"]["versionNumber"] == 2
        verdict, doc = b.request(f"{job_id}/update", {"status": "IN_PROGRESS", "expectedVersion": 2}, timeout=TIMEOUT)
        assert verdict == "accepted", doc
        verdict, doc = b.request(
            f"{job_id}/update",
            {"status": "SUCCEEDED", "expectedVersion": 3, "statusDetails": {"by": "thing-b"}},
            timeout=TIMEOUT,
        )
        assert verdict == "accepted", doc
        execution = iot.describe_job_execution(jobId=job_id, thingName=b_name)["execution"]
        assert execution["versionNumber"] == 4 and execution["statusDetails"]["detailsMap"] == {"by": "thing-b"}

        # Nothing of thing-b's ever reached thing-a, and the forged requests were never answered (to anyone).
        def foreign(topic: str, doc: dict[str, Any]) -> bool:
            return topic.startswith(f"$aws/things/{b_name}/") or doc.get("clientToken") == forged

        with pytest.raises(TimeoutError):
            a.wait_for(foreign, ABSENCE)
        with pytest.raises(TimeoutError):
            b.wait_for(lambda t, d: d.get("clientToken") == forged, ABSENCE)
    finally:
        a.close()
        b.close()


# ------------------------------------------------------------------------------ awsiotsdk (MQTT 3.1.1)


def test_awsiotsdk_iot_jobs_client_runs_a_job(deployment: Deployment) -> None:
    require("awscrt")
    builder = require("awsiot.mqtt_connection_builder")
    iotjobs = require("awsiot.iotjobs")
    from awscrt import mqtt as awscrt_mqtt

    fleet = deployment.fleet()
    thing = fleet.things(1)[0]
    cert, key = deployment.device_cert(thing)
    connection = builder.mtls_from_path(
        endpoint=HOST,
        port=deployment.port,
        cert_filepath=str(cert),
        pri_key_filepath=str(key),
        ca_filepath=deployment.ca_file,
        client_id=thing,
        clean_session=True,
        keep_alive_secs=30,
    )
    connection.connect().result(TIMEOUT)
    jobs = iotjobs.IotJobsClient(connection)
    events = Events()
    qos = awscrt_mqtt.QoS.AT_LEAST_ONCE
    try:
        for future, _ in (
            jobs.subscribe_to_next_job_execution_changed_events(
                iotjobs.NextJobExecutionChangedSubscriptionRequest(thing_name=thing), qos, events.put("next")
            ),
            jobs.subscribe_to_start_next_pending_job_execution_accepted(
                iotjobs.StartNextPendingJobExecutionSubscriptionRequest(thing_name=thing), qos, events.put("started")
            ),
            jobs.subscribe_to_start_next_pending_job_execution_rejected(
                iotjobs.StartNextPendingJobExecutionSubscriptionRequest(thing_name=thing),
                qos,
                events.put("start-rejected"),
            ),
            jobs.subscribe_to_update_job_execution_accepted(
                iotjobs.UpdateJobExecutionSubscriptionRequest(thing_name=thing, job_id="+"), qos, events.put("updated")
            ),
            jobs.subscribe_to_update_job_execution_rejected(
                iotjobs.UpdateJobExecutionSubscriptionRequest(thing_name=thing, job_id="+"),
                qos,
                events.put("update-rejected"),
            ),
        ):
            future.result(TIMEOUT)

        job_id = fleet.job([thing_arn(thing)], document=json.dumps({"operation": "reboot"}))
        changed = events.expect("next")
        assert changed.execution.job_id == job_id and changed.execution.job_document == {"operation": "reboot"}

        jobs.publish_start_next_pending_job_execution(
            iotjobs.StartNextPendingJobExecutionRequest(thing_name=thing, client_token="c1", step_timeout_minutes=5),
            qos,
        ).result(TIMEOUT)
        started = events.expect("started")
        assert started.execution.job_id == job_id and started.execution.status == "IN_PROGRESS"
        assert started.client_token == "c1" and started.execution.version_number == 2

        jobs.publish_update_job_execution(
            iotjobs.UpdateJobExecutionRequest(
                thing_name=thing,
                job_id=job_id,
                status=iotjobs.JobStatus.IN_PROGRESS,
                status_details={"percent": "50"},
                expected_version=2,
                client_token="c2",
            ),
            qos,
        ).result(TIMEOUT)
        assert events.expect("updated").client_token == "c2"

        jobs.publish_update_job_execution(
            iotjobs.UpdateJobExecutionRequest(
                thing_name=thing,
                job_id=job_id,
                status=iotjobs.JobStatus.SUCCEEDED,
                expected_version=3,
                include_job_execution_state=True,
                client_token="c3",
            ),
            qos,
        ).result(TIMEOUT)
        done = events.expect("updated")
        assert done.execution_state.status == "SUCCEEDED" and done.execution_state.version_number == 4
        assert events.expect("next").execution is None  # nothing pending any more
        expect_completed(deployment, job_id, thing)
    finally:
        connection.disconnect().result(TIMEOUT)


# ---------------------------------------------------------------------------- awsiotsdk V2 (MQTT 5)


def test_awsiotsdk_iot_jobs_client_v2_runs_a_job_over_mqtt5(mosquitto_tls: Deployment) -> None:
    """MQTT 5 through Mosquitto (the embedded broker speaks MQTT 3.1.1 only)."""
    require("awscrt")
    builder = require("awsiot.mqtt5_client_builder")
    iotjobs = require("awsiot.iotjobs")
    import awsiot
    from awscrt import mqtt_request_response

    dep = mosquitto_tls
    fleet = dep.fleet()
    thing = fleet.things(1)[0]
    cert, key = dep.device_cert(thing)
    connected: queue.Queue[Any] = queue.Queue()
    client = builder.mtls_from_path(
        endpoint=HOST,
        port=dep.port,
        cert_filepath=str(cert),
        pri_key_filepath=str(key),
        ca_filepath=dep.ca_file,
        client_id=thing,
        on_lifecycle_connection_success=lambda event: connected.put(("ok", event)),
        on_lifecycle_connection_failure=lambda event: connected.put(("failed", event)),
        on_lifecycle_stopped=lambda event: stopped.set(),
    )
    stopped = threading.Event()
    client.start()
    try:
        outcome, event = connected.get(timeout=TIMEOUT)
        assert outcome == "ok", getattr(event, "exception", event)
        jobs = iotjobs.IotJobsClientV2(
            client,
            mqtt_request_response.ClientOptions(
                max_request_response_subscriptions=4, max_streaming_subscriptions=2, operation_timeout_in_seconds=15
            ),
        )
        events = Events()

        def status(e: Any) -> None:
            if e.type == mqtt_request_response.SubscriptionStatusEventType.SUBSCRIPTION_ESTABLISHED:
                events.q.put(("subscribed", e))

        stream = jobs.create_next_job_execution_changed_stream(
            iotjobs.NextJobExecutionChangedSubscriptionRequest(thing_name=thing),
            awsiot.ServiceStreamOptions(
                incoming_event_listener=events.put("next"), subscription_status_listener=status
            ),
        )
        stream.open()
        events.expect("subscribed")

        job_id = fleet.job([thing_arn(thing)], document=json.dumps({"operation": "mqtt5"}))
        changed = events.expect("next")
        assert changed.execution.job_id == job_id and changed.execution.job_document == {"operation": "mqtt5"}

        pending = jobs.get_pending_job_executions(iotjobs.GetPendingJobExecutionsRequest(thing_name=thing))
        assert [j.job_id for j in pending.result(TIMEOUT).queued_jobs] == [job_id]

        started = jobs.start_next_pending_job_execution(
            iotjobs.StartNextPendingJobExecutionRequest(thing_name=thing, step_timeout_minutes=5)
        ).result(TIMEOUT)
        assert started.execution.job_id == job_id and started.execution.status == "IN_PROGRESS"
        assert started.execution.version_number == 2

        jobs.update_job_execution(
            iotjobs.UpdateJobExecutionRequest(
                thing_name=thing,
                job_id=job_id,
                status=iotjobs.JobStatus.IN_PROGRESS,
                status_details={"percent": "50"},
                expected_version=2,
            )
        ).result(TIMEOUT)
        described = jobs.describe_job_execution(
            iotjobs.DescribeJobExecutionRequest(thing_name=thing, job_id=job_id)
        ).result(TIMEOUT)
        assert described.execution.status_details == {"percent": "50"}

        done = jobs.update_job_execution(
            iotjobs.UpdateJobExecutionRequest(
                thing_name=thing,
                job_id=job_id,
                status=iotjobs.JobStatus.SUCCEEDED,
                expected_version=3,
                include_job_execution_state=True,
            )
        ).result(TIMEOUT)
        assert done.execution_state.status == "SUCCEEDED" and done.execution_state.version_number == 4
        assert events.expect("next").execution is None
        expect_completed(dep, job_id, thing)

        # A rejection arrives as the SDK's V2ServiceException carrying the modeled error: the execution is final.
        with pytest.raises(Exception) as info:
            jobs.update_job_execution(
                iotjobs.UpdateJobExecutionRequest(thing_name=thing, job_id=job_id, status=iotjobs.JobStatus.FAILED)
            ).result(TIMEOUT)
        assert getattr(info.value, "modeled_error", None) is not None, info.value
        assert info.value.modeled_error.code == "InvalidStateTransition"
        assert info.value.modeled_error.execution_state.status == "SUCCEEDED"
    finally:
        # Wait until the client has really stopped rather than leaving awscrt to finalise a running
        # client at interpreter exit.
        client.stop()
        stopped.wait(TIMEOUT)


# ------------------------------------------------------------------------------------ AWSIoTPythonSDK


def test_awsiot_python_sdk_thing_jobs_client_runs_a_job(deployment: Deployment) -> None:
    mqttlib = require("AWSIoTPythonSDK.MQTTLib")
    manager = require("AWSIoTPythonSDK.core.jobs.thingJobManager")
    topic, reply, status = manager.jobExecutionTopicType, manager.jobExecutionTopicReplyType, manager.jobExecutionStatus

    fleet = deployment.fleet()
    thing = fleet.things(1)[0]
    cert, key = deployment.device_cert(thing)
    client_id = thing
    jobs = mqttlib.AWSIoTMQTTThingJobsClient(client_id, thing, QoS=1)
    jobs.configureEndpoint(HOST, deployment.port)
    jobs.configureCredentials(deployment.ca_file, str(key), str(cert))
    jobs.configureConnectDisconnectTimeout(10)
    jobs.configureMQTTOperationTimeout(10)
    events = Events()

    def on(kind: str) -> Callable[[Any, Any, Any], None]:
        return lambda _client, _userdata, message: events.q.put((kind, json.loads(message.payload)))

    assert jobs.connect(keepAliveIntervalSecond=30)
    try:
        assert jobs.createJobSubscription(on("next"), topic.JOB_NOTIFY_NEXT_TOPIC)
        assert jobs.createJobSubscription(on("started"), topic.JOB_START_NEXT_TOPIC, reply.JOB_ACCEPTED_REPLY_TYPE)
        assert jobs.createJobSubscription(
            on("start-rejected"), topic.JOB_START_NEXT_TOPIC, reply.JOB_REJECTED_REPLY_TYPE
        )
        assert jobs.createJobSubscription(on("updated"), topic.JOB_UPDATE_TOPIC, reply.JOB_ACCEPTED_REPLY_TYPE, "+")
        assert jobs.createJobSubscription(
            on("update-rejected"), topic.JOB_UPDATE_TOPIC, reply.JOB_REJECTED_REPLY_TYPE, "+"
        )

        job_id = fleet.job([thing_arn(thing)], document=json.dumps({"operation": "legacy-sdk"}))
        changed = events.expect("next")
        assert changed["execution"]["jobId"] == job_id
        assert changed["execution"]["jobDocument"] == {"operation": "legacy-sdk"}

        assert jobs.sendJobsStartNext(statusDetails={"step": "download"}, stepTimeoutInMinutes=5)
        started = events.expect("started")
        assert started["clientToken"] == client_id  # the SDK uses its client id as the token
        assert started["execution"]["jobId"] == job_id and started["execution"]["status"] == "IN_PROGRESS"
        assert started["execution"]["versionNumber"] == 2

        assert jobs.sendJobsUpdate(job_id, status.JOB_EXECUTION_IN_PROGRESS, {"step": "install"}, expectedVersion=2)
        events.expect("updated")
        assert jobs.sendJobsUpdate(
            job_id, status.JOB_EXECUTION_SUCCEEDED, {"step": "done"}, expectedVersion=3, includeJobExecutionState=True
        )
        done = events.expect("updated")
        assert done["executionState"]["status"] == "SUCCEEDED" and done["executionState"]["versionNumber"] == 4
        assert "execution" not in events.expect("next")
        expect_completed(deployment, job_id, thing)
    finally:
        jobs.disconnect()


# -------------------------------------------------------------- --mqtt-tls: setting, errors, certificates


def test_mqtt_tls_setting() -> None:
    assert Settings.load({}, env={}).mqtt_tls is False
    assert Settings.load({}, env={"FLEETJOBS_MQTT_TLS": "true"}).mqtt_tls is True
    assert Settings.load({"mqtt_tls": True}, env={"FLEETJOBS_MQTT_TLS": "false"}).mqtt_tls is True
    with pytest.raises(ValueError, match="mqtt_tls must be true or false"):
        Settings.load({}, env={"FLEETJOBS_MQTT_TLS": "sometimes"})
    # It is about the embedded broker: joining an external one over TLS is mqtts:// + the three files.
    with pytest.raises(ValueError, match="mqtts://"):
        Settings.load({"mqtt_tls": True, "mqtt_url": "mqtts://broker:8883"}, env={})
    with pytest.raises(ValueError, match="embedded broker"):
        Settings.load({"mqtt_tls": True, "embedded_broker": False}, env={})


def test_serve_mqtt_tls_without_a_ca_says_what_to_do(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETJOBS_")}
    r = subprocess.run(
        [sys.executable, "-m", "fleetjobs", "serve", "--mqtt-tls", "--data-dir", str(tmp_path), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert r.returncode == 1
    assert "fleetjobs certs init" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "fleetjobs", "serve", "--help"], capture_output=True, text=True, timeout=60, env=env
    )
    assert "--mqtt-tls" in r.stdout and "FLEETJOBS_MQTT_TLS" in r.stdout


def test_embedded_tls_certificates_are_issued_once_and_renewed_when_unusable(tmp_path: Path) -> None:
    from cryptography import x509

    settings = Settings.load({"data_dir": str(tmp_path), "mqtt_tls": True}, env={})
    cdir = certs.certs_dir(tmp_path)
    ca = certs.init_ca(cdir)
    broker = embedded_broker(settings)
    assert broker is not None and broker.tls
    server_pem = (cdir / "server.pem").read_bytes()
    assert broker.cert_file == str(cdir / "server.pem") and broker.ca_file == str(ca.cert_path)
    assert embedded_broker(settings) is not None
    assert (cdir / "server.pem").read_bytes() == server_pem  # still good: kept

    # An operator's certificate from 'fleetjobs certs server --host ...' is kept when it covers the gateway's
    # address, and otherwise reissued with its names plus the loopback ones.
    certs.issue_server_cert(ca, cdir, hosts=["mqtt.example.com"])
    embedded_broker(settings)
    cert = x509.load_pem_x509_certificate((cdir / "server.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mqtt.example.com", "localhost"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    operator_pem = (cdir / "server.pem").read_bytes()
    embedded_broker(settings)
    assert (cdir / "server.pem").read_bytes() == operator_pem

    # A new CA (certs init --force) makes the old certificate useless: a new one is issued from the new CA.
    new_ca = certs.init_ca(cdir, force=True)
    embedded_broker(settings)
    cert = x509.load_pem_x509_certificate((cdir / "server.pem").read_bytes())
    cert.verify_directly_issued_by(new_ca.cert)
