"""DescribeEndpoint (JOBS_API.md §1.12): where devices connect, in AWS's form (a bare host).

``iot:Data`` / ``iot:Data-ATS`` (and no endpointType) answer the MQTT broker's host, ``iot:Jobs``
the device HTTPS API's; ``public_host`` overrides both.  ``iot:CredentialProvider``, which fleetjobs
does not have, and unknown types are InvalidRequestException.  A device that does what the SDK
samples do, connect to the answered address, reaches the service.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from fleetjobs.config import Settings
from tests.harness import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, Server, unique
from tests.mqtt_device import Device

DATA_TYPES = ("iot:Data-ATS", "iot:Data")


def endpoint(iot: Any, kind: str | None = None) -> str:
    kwargs = {"endpointType": kind} if kind is not None else {}
    return iot.describe_endpoint(**kwargs)["endpointAddress"]


@pytest.fixture(scope="module")
def apart(backends) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    """A server whose broker and HTTPS API are reached at different host names: the embedded broker
    listens on 127.0.0.2 (loopback, another address) and the public URL names ``localhost``."""
    srv = backends.server(env={"FLEETJOBS_MQTT_HOST": "127.0.0.2"})
    srv.env["FLEETJOBS_PUBLIC_URL"] = f"http://localhost:{srv.port}"
    srv.start()
    yield srv
    srv.stop()


def test_data_and_jobs_endpoints_follow_the_configuration(apart: Server) -> None:
    iot = apart.client("iot")
    for kind in (*DATA_TYPES, None):
        assert endpoint(iot, kind) == "127.0.0.2"
    assert endpoint(iot, "iot:Jobs") == "localhost"


def test_a_device_reaches_the_service_at_the_answered_addresses(apart: Server) -> None:
    iot = apart.client("iot")
    thing = unique("ep")
    iot.create_thing(thingName=thing)
    # MQTT, as the SDK samples connect: to the data endpoint (the port is the deployment's own).
    device = Device(endpoint(iot, "iot:Data-ATS"), apart.mqtt_port, thing)
    try:
        device.until_answered()
        answer, doc = device.request("get")
        assert answer == "accepted" and doc["queuedJobs"] == [] and doc["inProgressJobs"] == []
    finally:
        device.close()
    # HTTPS: the iot-jobs-data client pointed at the jobs endpoint.
    jobs = boto3.client(
        "iot-jobs-data",
        endpoint_url=f"http://{endpoint(iot, 'iot:Jobs')}:{apart.port}",
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )
    assert jobs.get_pending_job_executions(thingName=thing)["queuedJobs"] == []


def test_public_host_answers_every_endpoint(backends) -> None:  # type: ignore[no-untyped-def]
    srv = backends.server(env={"FLEETJOBS_PUBLIC_HOST": "iot.fleet.example"}).start()
    try:
        iot = srv.client("iot")
        for kind in (*DATA_TYPES, "iot:Jobs", None):
            assert endpoint(iot, kind) == "iot.fleet.example"
        out = srv.cli("iot", "describe-endpoint", "--endpoint-type", "iot:Data-ATS")
        assert out == {"endpointAddress": "iot.fleet.example"}
    finally:
        srv.stop()


def test_the_default_server_answers_loopback(iot: Any) -> None:
    for kind in (*DATA_TYPES, "iot:Jobs"):
        assert endpoint(iot, kind) == "127.0.0.1"


@pytest.mark.parametrize("kind", ["iot:CredentialProvider", "iot:Bogus", "iot:data-ats", "Data"])
def test_endpoint_types_fleetjobs_does_not_have_are_invalid_requests(iot: Any, kind: str) -> None:
    with pytest.raises(iot.exceptions.InvalidRequestException, match="not recognized") as e:
        iot.describe_endpoint(endpointType=kind)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


@pytest.mark.parametrize("host", ["iot.example.com", "10.0.0.7", "::1", "localhost"])
def test_public_host_accepts_host_names_and_addresses(host: str) -> None:
    assert Settings.load({}, env={"FLEETJOBS_PUBLIC_HOST": host}).public_host == host


@pytest.mark.parametrize(
    "bad", ["https://iot.example.com", "iot.example.com:8883", "iot.example.com/mqtt", "a b", "-x.example", ""]
)
def test_public_host_refuses_urls_ports_and_paths(bad: str) -> None:
    with pytest.raises(ValueError, match="public_host must be a host name or IP address"):
        Settings.load({"public_host": bad}, env={})
