"""Job documents whose presigned URLs cannot be signed: refused at CreateJob when that is knowable,
and, when the artifact store fails at delivery, an error for that one job only (MQTT, both brokers,
and HTTPS, both databases).

A delivery failure is made real: the object is put in the server's local artifact store, then its
manifest is corrupted, so signing a URL for it fails (as a failing object store would) until the
manifest is restored.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetjobs.artifacts.local import MANIFEST, LocalStore
from tests.fleet import Fleet, thing_arn
from tests.harness import Server, unique
from tests.mqtt_device import Device
from tests.test_mqtt_broker_restart import Observer, broker_and_server

ROLE = {"roleArn": "arn:aws:iam::123456789012:role/JobsS3Read"}
S3 = "https://s3.amazonaws.com/fleetjobs/"


def presigned_doc(key: str) -> str:
    return json.dumps({"operation": "install", "url": f"${{aws:iot:s3-presigned-url:{S3}{key}}}"})


class BrokenArtifact:
    """An artifact in the server's local store whose manifest can be broken and restored."""

    def __init__(self, server: Server) -> None:
        self.key = f"fw/{unique('a')}.bin"
        LocalStore(server.data_dir, server.endpoint).put("fleetjobs", self.key, b"firmware")
        self.manifest = Path(server.data_dir) / "artifacts" / "fleetjobs" / self.key / MANIFEST
        self.good = self.manifest.read_text()

    def break_(self) -> None:
        self.manifest.write_text("{ not json")

    def repair(self) -> None:
        self.manifest.write_text(self.good)


@pytest.fixture
def artifact(mqtt_server: Server) -> Iterator[BrokenArtifact]:
    a = BrokenArtifact(mqtt_server)
    a.break_()
    yield a
    a.repair()


# -- CreateJob refuses what no delivery could ever sign ---------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"{S3}a//b", "cannot serve: invalid key 'a//b'"),
        (f"{S3}a/../b", "cannot serve: invalid key 'a/../b'"),
        (f"{S3}./a", "cannot serve: invalid key './a'"),
        (f"{S3}a/", "cannot serve: invalid key 'a/'"),
        (f"{S3}fw/.fj-manifest.json", "cannot serve: invalid key 'fw/.fj-manifest.json'"),
        ("https://s3.amazonaws.com/No_Such_Bucket/fw.bin", "cannot serve: invalid bucket name 'No_Such_Bucket'"),
        (f"{S3}{'k' * 1025}", "longer than S3's 1024 bytes"),
    ],
)
def test_create_job_refuses_a_presigned_url_that_can_never_be_served(iot, url: str, message: str) -> None:  # type: ignore[no-untyped-def]
    thing = unique("t")
    iot.create_thing(thingName=thing)
    job_id = unique("j")
    document = json.dumps({"url": f"${{aws:iot:s3-presigned-url:{url}}}"})
    with pytest.raises(iot.exceptions.InvalidRequestException, match=message.replace(".", r"\.")):
        iot.create_job(jobId=job_id, targets=[thing_arn(thing)], document=document, presignedUrlConfig=ROLE)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_job(jobId=job_id)
    # The same document with a key the store can serve is a job like any other.
    ok = json.dumps({"url": f"${{aws:iot:s3-presigned-url:{S3}fw/app.bin}}"})
    iot.create_job(jobId=job_id, targets=[thing_arn(thing)], document=ok, presignedUrlConfig=ROLE)


# -- a document that cannot be built at delivery fails only its own job ---------------------------------


def two_jobs(iot: Any, artifact: BrokenArtifact) -> tuple[str, str, str]:
    """A thing with the broken job at its head and a valid job queued behind it."""
    fleet = Fleet(iot)
    (thing,) = fleet.things(1)
    broken = fleet.job([thing_arn(thing)], document=presigned_doc(artifact.key), presignedUrlConfig=ROLE)
    time.sleep(0.01)  # queuedAt orders them: the broken one is $next
    valid = fleet.job([thing_arn(thing)])
    return thing, broken, valid


def lists_only(notify: dict[str, Any], job_id: str) -> bool:
    """A notify whose pending list is exactly ``job_id``, queued."""
    jobs = notify.get("jobs") or {}
    return set(jobs) == {"QUEUED"} and [j["jobId"] for j in jobs["QUEUED"]] == [job_id]


def execution(iot: Any, job_id: str, thing: str) -> dict[str, Any]:
    return iot.describe_job_execution(jobId=job_id, thingName=thing)["execution"]


def test_mqtt_undeliverable_document_fails_only_its_own_job(mqtt_server, device_factory, artifact) -> None:  # type: ignore[no-untyped-def]
    iot = mqtt_server.client("iot")
    thing, broken, valid = two_jobs(iot, artifact)
    dev = device_factory(thing)
    # start-next names the broken job: InternalError for it, and nothing changed.
    kind, doc = dev.request("start-next")
    assert kind == "rejected" and doc["code"] == "InternalError", doc
    assert broken in doc["message"]
    assert execution(iot, broken, thing)["status"] == "QUEUED"
    kind, doc = dev.request(f"{broken}/get")
    assert kind == "rejected" and doc["code"] == "InternalError", doc
    kind, doc = dev.request(f"{broken}/get", {"includeJobDocument": False})
    assert kind == "accepted" and doc["execution"]["jobId"] == broken
    # The thing's other job and its listing are served as ever.
    kind, doc = dev.request("get")
    assert kind == "accepted"
    assert [j["jobId"] for j in doc["queuedJobs"]] == [broken, valid]
    kind, doc = dev.request(f"{valid}/get")
    assert kind == "accepted" and doc["execution"]["jobDocument"] == {"operation": "install", "version": "1.2.3"}
    kind, doc = dev.request(f"{valid}/update", {"status": "IN_PROGRESS"})
    assert kind == "accepted", doc
    kind, doc = dev.request("start-next")
    assert kind == "accepted" and doc["execution"]["jobId"] == valid
    # Finishing it makes the broken job $next: the update stands, its notify-next waits.
    kind, doc = dev.request(f"{valid}/update", {"status": "SUCCEEDED"})
    assert kind == "accepted", doc
    assert execution(iot, valid, thing)["status"] == "SUCCEEDED"
    dev.wait_for(lambda t, d: t.endswith("/notify") and lists_only(d, broken), 10)
    # Once the store can sign again the device is told of its next job, document and fresh URL.
    artifact.repair()
    _, nxt = dev.wait_for(lambda t, d: t.endswith("/notify-next") and d.get("execution", {}).get("jobId") == broken, 30)
    url = nxt["execution"]["jobDocument"]["url"]
    assert url.startswith(mqtt_server.endpoint) and "X-Fleetjobs-Signature=" in url
    kind, doc = dev.request("start-next")
    assert kind == "accepted" and doc["execution"]["jobId"] == broken


def test_mqtt_undeliverable_document_does_not_fail_the_batch(mqtt_server, device_factory, artifact) -> None:  # type: ignore[no-untyped-def]
    """Requests that arrive together with one needing the broken document (the server is paused
    while they are sent) are all answered, each as it would be alone."""
    iot = mqtt_server.client("iot")
    thing, broken, valid = two_jobs(iot, artifact)
    fleet = Fleet(iot)
    others = fleet.things(5)
    others_job = fleet.job([thing_arn(t) for t in others])
    dev = device_factory(thing)
    devices = [device_factory(t) for t in others]
    assert mqtt_server.proc is not None
    mqtt_server.proc.send_signal(signal.SIGSTOP)
    try:
        waits = [
            dev.send(f"{valid}/update", {"status": "IN_PROGRESS"}),
            dev.send(f"{valid}/update", {"status": "SUCCEEDED"}),
        ]
        waits += [d.send("start-next") for d in devices]
        waits.append(dev.send("start-next"))
    finally:
        mqtt_server.proc.send_signal(signal.SIGCONT)
    answers = [w(timeout=30) for w in waits]
    assert [k for k, _ in answers[:-1]] == ["accepted"] * (len(waits) - 1), answers
    assert [d["execution"]["jobId"] for _, d in answers[2:-1]] == [others_job] * len(others)
    kind, doc = answers[-1]
    assert kind == "rejected" and doc["code"] == "InternalError" and broken in doc["message"]
    assert execution(iot, valid, thing)["status"] == "SUCCEEDED"
    assert execution(iot, broken, thing)["status"] == "QUEUED"


def test_https_undeliverable_document_fails_only_its_own_job(mqtt_server, artifact) -> None:  # type: ignore[no-untyped-def]
    iot = mqtt_server.client("iot")
    data = mqtt_server.client("iot-jobs-data")
    thing, broken, valid = two_jobs(iot, artifact)
    with pytest.raises(data.exceptions.ServiceUnavailableException, match=broken) as e:
        data.start_next_pending_job_execution(thingName=thing)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert execution(iot, broken, thing)["status"] == "QUEUED"
    with pytest.raises(data.exceptions.ServiceUnavailableException, match=broken):
        data.describe_job_execution(thingName=thing, jobId=broken)
    assert data.describe_job_execution(thingName=thing, jobId=broken, includeJobDocument=False)["execution"]
    pending = data.get_pending_job_executions(thingName=thing)
    assert [j["jobId"] for j in pending["queuedJobs"]] == [broken, valid]
    got = data.describe_job_execution(thingName=thing, jobId=valid)["execution"]
    assert json.loads(got["jobDocument"]) == {"operation": "install", "version": "1.2.3"}
    data.update_job_execution(thingName=thing, jobId=valid, status="IN_PROGRESS")
    assert data.start_next_pending_job_execution(thingName=thing)["execution"]["jobId"] == valid
    data.update_job_execution(thingName=thing, jobId=valid, status="SUCCEEDED")  # $next becomes the broken job
    assert execution(iot, valid, thing)["status"] == "SUCCEEDED"
    artifact.repair()
    started = data.start_next_pending_job_execution(thingName=thing)["execution"]
    assert started["jobId"] == broken and "X-Fleetjobs-Signature=" in json.loads(started["jobDocument"])["url"]


def test_undeliverable_document_holds_back_no_other_notice(backends, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The jobs are created while the broker hangs (SIGSTOP), so their notices wait and go out
    together once it resumes: the 20 other things are told of their job, the thing whose document
    cannot be built gets its listing and, once the store signs again, its notify-next."""
    _, port, broker, srv = broker_and_server(backends, tmp_path)
    observer = Observer(port)
    try:
        iot = srv.client("iot")
        artifact = BrokenArtifact(srv)
        artifact.break_()
        fleet = Fleet(iot)
        others = fleet.things(20)
        (thing,) = fleet.things(1, tag="x")
        dev = Device("127.0.0.1", port, thing)
        dev.until_answered()
        broker.send_signal(signal.SIGSTOP)
        try:
            broken = fleet.job([thing_arn(thing)], document=presigned_doc(artifact.key), presignedUrlConfig=ROLE)
            good = fleet.job([thing_arn(t) for t in others])
        finally:
            broker.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 60
        while observer.things_told_of(good) != set(others) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert observer.things_told_of(good) == set(others)
        dev.wait_for(lambda t, d: t.endswith("/notify") and lists_only(d, broken), 30)
        assert observer.things_told_of(broken) == set()
        artifact.repair()
        _, nxt = dev.wait_for(lambda t, d: t.endswith("/notify-next") and d.get("execution"), 30)
        assert nxt["execution"]["jobId"] == broken
        assert "X-Fleetjobs-Signature=" in nxt["execution"]["jobDocument"]["url"]
        dev.close()
    finally:
        observer.close()
        srv.stop()
        broker.terminate()
        broker.wait(timeout=10)
