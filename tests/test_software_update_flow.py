"""The seed's software-update flow, end to end (issue: documents, artifacts and trust).

Upload a firmware file to the artifact store, sign it, publish a package version whose
attributes hold the file's presigned-URL placeholder and its signature, and roll a job out to a
dynamic group selected by the ``$package`` shadow.  A device on the AWS IoT Device SDK v2 gets a
document with a working presigned URL, downloads the file, verifies the signature, reports
SUCCEEDED; its ``$package`` shadow then names the new version and it leaves the group.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from awscrt import mqtt as awscrt_mqtt
from awsiot import iotjobs

from fleetjobs.security.signing import verify
from tests.fleet import group_arn
from tests.harness import ACCOUNT, REGION, Server
from tests.test_device_sdk import TIMEOUT, connect

FLEETJOBS = str(Path(sys.executable).with_name("fleetjobs"))
ROLE = "arn:aws:iam::123456789012:role/JobsS3Read"


def run(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETJOBS_")}
    proc = subprocess.run([FLEETJOBS, *args], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture
def fleet_server(backends) -> Server:  # type: ignore[no-untyped-def]
    """A server of its own: indexing and package configuration are account-wide settings."""
    srv = backends.server().start()
    yield srv
    srv.stop()


def shadow_version(data: Any, thing: str, package: str) -> str | None:
    doc = json.loads(data.get_thing_shadow(thingName=thing, shadowName="$package")["payload"].read())
    return (doc["state"].get("reported", {}).get(package) or {}).get("version")


def members(iot: Any, group: str) -> list[str]:
    return sorted(iot.list_things_in_thing_group(thingGroupName=group)["things"])


def test_signed_firmware_reaches_the_devices_still_on_the_old_version(fleet_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    srv = fleet_server
    iot = srv.client("iot")
    data = srv.client("iot-data")
    suffix = uuid.uuid4().hex[:8]
    package = f"fw{suffix}"

    # 1. The firmware goes to the artifact store; it is signed with a key of our own.
    firmware = tmp_path / "firmware.bin"
    firmware.write_bytes(os.urandom(300_000))
    put = dict(
        line.split(": ", 1)
        for line in run("artifacts", "put", str(firmware), f"firmware/{package}.bin", "--data-dir", str(srv.data_dir))
        .strip()
        .splitlines()
    )
    url_placeholder = put["placeholder"]
    assert url_placeholder.startswith("${aws:iot:s3-presigned-url:https://s3.amazonaws.com/")
    run("keys", "init", "--out", str(tmp_path))
    signed = json.loads(
        run("sign", str(firmware), "--key", str(tmp_path / "signing.key"), "--cert", str(tmp_path / "signing.pem"))
    )

    # 2. The package version carries the URL placeholder and the signature; it is published.
    iot.create_package(packageName=package, description="pump firmware")
    iot.create_package_version(
        packageName=package,
        versionName="2.0",
        attributes={"url": url_placeholder, "signature": signed["signature"], "sha256": signed["sha256"]},
    )
    iot.update_package_version(packageName=package, versionName="2.0", action="PUBLISH")
    iot.update_package_configuration(versionUpdateByJobsConfig={"enabled": True, "roleArn": ROLE})

    # 3. Devices report what they run in the $package shadow; a dynamic group selects the old ones.
    iot.update_indexing_configuration(
        thingIndexingConfiguration={
            "thingIndexingMode": "REGISTRY_AND_SHADOW",
            "namedShadowIndexingMode": "ON",
            "filter": {"namedShadowNames": ["$package"]},
        }
    )
    old, other_old, current = (f"pump-{suffix}-{i}" for i in range(3))
    for thing, version in ((old, "1.0"), (other_old, "1.0"), (current, "2.0")):
        iot.create_thing(thingName=thing)
        payload = {"state": {"reported": {package: {"version": version}}}}
        data.update_thing_shadow(thingName=thing, shadowName="$package", payload=json.dumps(payload).encode())
    group = f"needs-{package}"
    iot.create_dynamic_thing_group(
        thingGroupName=group, queryString=f"shadow.name.$package.reported.{package}.version:1.0"
    )
    assert members(iot, group) == sorted([old, other_old])

    # 4. The job's document names the package version's attributes.
    version_arn = f"arn:aws:iot:{REGION}:{ACCOUNT}:package/{package}/version/2.0"
    document = {
        "operation": "install",
        "package": package,
        "url": f"${{aws:iot:package:{package}:version:2.0:attributes:url}}",
        "codesign": {
            "signature": f"${{aws:iot:package:{package}:version:2.0:attributes:signature}}",
            "sha256": f"${{aws:iot:package:{package}:version:2.0:attributes:sha256}}",
            "certificate": signed["certificate"],
        },
    }
    job_id = f"update-{package}"
    iot.create_job(
        jobId=job_id,
        targets=[group_arn(group)],
        document=json.dumps(document),
        destinationPackageVersions=[version_arn],
        presignedUrlConfig={"roleArn": ROLE, "expiresInSec": 300},
        targetSelection="CONTINUOUS",
    )
    stored = json.loads(iot.get_job_document(jobId=job_id)["document"])
    assert stored["url"] == url_placeholder  # signed only when a device is handed the document
    assert stored["codesign"]["signature"] == signed["signature"]
    as_given = json.loads(iot.get_job_document(jobId=job_id, beforeSubstitution=True)["document"])
    assert as_given["url"].startswith("${aws:iot:package:")

    # 5. A device on the AWS IoT Device SDK v2 runs it.
    connection = connect(srv.mqtt_port, old)
    jobs = iotjobs.IotJobsClient(connection)
    answers: queue.Queue[tuple[str, Any]] = queue.Queue()
    qos = awscrt_mqtt.QoS.AT_LEAST_ONCE
    try:
        for future, _ in (
            jobs.subscribe_to_start_next_pending_job_execution_accepted(
                iotjobs.StartNextPendingJobExecutionSubscriptionRequest(thing_name=old),
                qos,
                lambda r: answers.put(("started", r)),
            ),
            jobs.subscribe_to_update_job_execution_accepted(
                iotjobs.UpdateJobExecutionSubscriptionRequest(thing_name=old, job_id=job_id),
                qos,
                lambda r: answers.put(("updated", r)),
            ),
        ):
            future.result(TIMEOUT)
        jobs.publish_start_next_pending_job_execution(
            iotjobs.StartNextPendingJobExecutionRequest(thing_name=old, client_token="s1"), qos
        ).result(TIMEOUT)
        kind, started = answers.get(timeout=TIMEOUT)
        assert kind == "started" and started.execution.job_id == job_id
        received = started.execution.job_document
        url = received["url"]
        assert url.startswith(f"http://127.0.0.1:{srv.port}/_fleetjobs/artifacts/")
        with urllib.request.urlopen(url, timeout=10) as response:
            downloaded = response.read()
        assert downloaded == firmware.read_bytes()
        assert hashlib.sha256(downloaded).hexdigest() == received["codesign"]["sha256"]
        assert verify(downloaded, received["codesign"]["signature"], received["codesign"]["certificate"])
        tampered = bytes([downloaded[0] ^ 1]) + downloaded[1:]
        assert not verify(tampered, received["codesign"]["signature"], received["codesign"]["certificate"])
        jobs.publish_update_job_execution(
            iotjobs.UpdateJobExecutionRequest(thing_name=old, job_id=job_id, status="SUCCEEDED", client_token="u1"),
            qos,
        ).result(TIMEOUT)
        assert answers.get(timeout=TIMEOUT)[0] == "updated"
    finally:
        connection.disconnect().result(TIMEOUT)

    # 6. The shadow names the new version, so the device left the group; the other old one waits.
    assert shadow_version(data, old, package) == "2.0"
    assert members(iot, group) == [other_old]
    execution = iot.describe_job_execution(jobId=job_id, thingName=old)["execution"]
    assert execution["status"] == "SUCCEEDED"
    assert iot.describe_job_execution(jobId=job_id, thingName=other_old)["execution"]["status"] == "QUEUED"
    # Each delivery signs afresh, valid for presignedUrlConfig.expiresInSec from then.
    device = srv.client("iot-jobs-data")
    handed_at = time.time()
    other_doc = json.loads(device.describe_job_execution(thingName=other_old, jobId=job_id)["execution"]["jobDocument"])
    expires = int(parse_qs(urlsplit(other_doc["url"]).query)["X-Fleetjobs-Expires"][0])
    assert handed_at + 300 - 5 <= expires <= time.time() + 300 + 1
    with urllib.request.urlopen(other_doc["url"], timeout=10) as response:
        assert response.read() == firmware.read_bytes()


def test_a_document_naming_a_version_not_in_destination_package_versions_is_refused(fleet_server) -> None:  # type: ignore[no-untyped-def]
    iot = fleet_server.client("iot")
    package = f"p{uuid.uuid4().hex[:8]}"
    iot.create_package(packageName=package)
    for version in ("1.0", "2.0"):
        iot.create_package_version(packageName=package, versionName=version, attributes={"a": version})
        iot.update_package_version(packageName=package, versionName=version, action="PUBLISH")
    iot.create_thing(thingName=f"t-{package}")
    document = json.dumps({"a": f"${{aws:iot:package:{package}:version:2.0:attributes:a}}"})
    v1 = f"arn:aws:iot:{REGION}:{ACCOUNT}:package/{package}/version/1.0"
    with pytest.raises(iot.exceptions.InvalidRequestException, match=f"{package}:2.0"):
        iot.create_job(
            jobId=f"j-{package}",
            targets=[f"arn:aws:iot:{REGION}:{ACCOUNT}:thing/t-{package}"],
            document=document,
            destinationPackageVersions=[v1],
        )
    v2 = f"arn:aws:iot:{REGION}:{ACCOUNT}:package/{package}/version/2.0"
    iot.create_job(
        jobId=f"j-{package}",
        targets=[f"arn:aws:iot:{REGION}:{ACCOUNT}:thing/t-{package}"],
        document=document,
        destinationPackageVersions=[v2],
    )
    assert json.loads(iot.get_job_document(jobId=f"j-{package}")["document"]) == {"a": "2.0"}
