"""While PostgreSQL is unreachable, devices get no InternalError: an MQTT request stays with the
broker, unacknowledged and unanswered, and is answered once the database is back; an HTTPS request
gets the iot-jobs-data model's ServiceUnavailableException (503), which SDKs retry.

The outage is real: the test database stops accepting connections (``ALLOW_CONNECTIONS false``)
and the server's open connections are terminated; then connections are allowed again.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.fleet import Fleet, thing_arn
from tests.harness import Server, _pg_admin, unique
from tests.mqtt_device import Device

DEVICES = 6


@contextmanager
def database_down(server: Server) -> Iterator[None]:
    assert server.database_url is not None
    name = server.database_url.rsplit("/", 1)[1]
    _pg_admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
    try:
        _pg_admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        yield
    finally:
        _pg_admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")


@pytest.fixture(params=["embedded", "mosquitto"])
def pg_server(request: pytest.FixtureRequest, backends) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    if backends.kind != "postgres":
        pytest.skip("SQLite has no outage to test: it is a file of the server's own (PostgreSQL runs in CI)")
    env = {}
    if request.param == "mosquitto":
        port = request.getfixturevalue("private_mosquitto")
        env = {"FLEETJOBS_MQTT_URL": f"mqtt://127.0.0.1:{port}", "FLEETJOBS_MQTT_CLIENT_ID": unique("gw")}
    srv = backends.server(env=env).start()
    if request.param == "mosquitto":
        srv.mqtt_port = port
    yield srv
    srv.stop()


def test_requests_during_a_database_outage_are_answered_after_it(pg_server: Server) -> None:
    iot = pg_server.client("iot")
    data = pg_server.client("iot-jobs-data")
    fleet = Fleet(iot)
    things = fleet.things(DEVICES + 1)
    job_id = fleet.job([thing_arn(t) for t in things])
    devices = [Device("127.0.0.1", pg_server.mqtt_port, t) for t in things[:DEVICES]]
    try:
        for dev in devices:
            dev.until_answered()
        with database_down(pg_server):
            waits: list[Any] = []
            for dev in devices:
                waits.append(dev.send("start-next", {"statusDetails": {"step": "download"}}))
                waits.append(dev.send("get"))
            # HTTPS: the model's answer for a service that cannot serve now, not a 500.
            with pytest.raises(data.exceptions.ServiceUnavailableException, match="database") as e:
                data.start_next_pending_job_execution(thingName=things[DEVICES])
            assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
            # Nothing is answered while the database is away (an InternalError would be by now).
            time.sleep(2)
            early = []
            for w in waits:
                try:
                    early.append(w(timeout=0))
                except queue.Empty:
                    pass
            assert early == []
        answers = [w(timeout=60) for w in waits]
        for start, listing in zip(answers[::2], answers[1::2], strict=True):
            kind, doc = start
            assert kind == "accepted", doc
            assert doc["execution"]["jobId"] == job_id and doc["execution"]["status"] == "IN_PROGRESS"
            assert doc["execution"]["statusDetails"] == {"step": "download"}
            kind, doc = listing
            assert kind == "accepted", doc
            # The get was sent after the start-next and is applied after it, in order.
            assert [j["jobId"] for j in doc["inProgressJobs"]] == [job_id], doc
        for t in things[:DEVICES]:
            assert iot.describe_job_execution(jobId=job_id, thingName=t)["execution"]["status"] == "IN_PROGRESS"
        # The HTTPS request that was refused changed nothing and succeeds now.
        assert iot.describe_job_execution(jobId=job_id, thingName=things[DEVICES])["execution"]["status"] == "QUEUED"
        started = data.start_next_pending_job_execution(thingName=things[DEVICES])["execution"]
        assert started["jobId"] == job_id and started["status"] == "IN_PROGRESS"
    finally:
        for dev in devices:
            dev.close()
