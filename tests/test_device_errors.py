"""The device-API rejections that need the server pushed: RequestThrottled / ThrottlingException,
TerminalStateReached / TerminalStateException and InternalError, over MQTT and HTTPS."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import botocore.exceptions
import pytest
from botocore.config import Config

from tests.fleet import Fleet, thing_arn
from tests.harness import Server

NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})


@pytest.fixture
def iot(mqtt_server):  # type: ignore[no-untyped-def]
    return mqtt_server.client("iot")


def test_a_thing_over_its_request_rate_is_throttled_and_others_are_not(iot, device_factory) -> None:  # type: ignore[no-untyped-def]
    fleet = Fleet(iot)
    noisy, quiet = fleet.things(2)
    fleet.job([thing_arn(noisy), thing_arn(quiet)])
    dev = device_factory(noisy)
    other = device_factory(quiet)
    # 100 requests at once: the default limit is 20/s with a burst of 40.
    waits = [dev.send("get") for _ in range(100)]
    answers = [w() for w in waits]
    throttled = [doc for kind, doc in answers if kind == "rejected"]
    accepted = [doc for kind, doc in answers if kind == "accepted"]
    assert throttled and accepted
    assert {d["code"] for d in throttled} == {"RequestThrottled"}
    assert all("clientToken" in d and "timestamp" in d for d in throttled)
    # Another thing is unaffected, and the noisy one recovers once its bucket refills.
    assert other.request("get")[0] == "accepted"
    time.sleep(1.0)
    assert dev.request("get")[0] == "accepted"


def test_https_device_api_throttles_with_throttling_exception(mqtt_server) -> None:  # type: ignore[no-untyped-def]
    iot = mqtt_server.client("iot")
    thing = Fleet(iot).things(1)[0]
    jobs_data = mqtt_server.client("iot-jobs-data", config=NO_RETRIES)
    codes = []
    for _ in range(60):
        try:
            jobs_data.get_pending_job_executions(thingName=thing)
            codes.append("ok")
        except botocore.exceptions.ClientError as e:
            codes.append(e.response["Error"]["Code"])
    assert "ok" in codes and "ThrottlingException" in codes
    assert set(codes) == {"ok", "ThrottlingException"}


def test_describing_an_execution_of_a_finished_job_is_terminal_state_reached(iot, device_factory, mqtt_server) -> None:  # type: ignore[no-untyped-def]
    fleet = Fleet(iot)
    done, busy = fleet.things(2)
    finished_job = fleet.job([thing_arn(done)])
    running_job = fleet.job([thing_arn(done), thing_arn(busy)])
    dev = device_factory(done)
    for job in (finished_job, running_job):
        assert dev.request(f"{job}/update", {"status": "SUCCEEDED"})[0] == "accepted"
    assert iot.describe_job(jobId=finished_job)["job"]["status"] == "COMPLETED"
    # The finished job: nothing is left to describe.
    kind, doc = dev.request(f"{finished_job}/get")
    assert kind == "rejected" and doc["code"] == "TerminalStateReached"
    jobs_data = mqtt_server.client("iot-jobs-data")
    with pytest.raises(jobs_data.exceptions.TerminalStateException):
        jobs_data.describe_job_execution(thingName=done, jobId=finished_job)
    # A job still running: the device may read its own final state.
    kind, doc = dev.request(f"{running_job}/get")
    assert kind == "accepted" and doc["execution"]["status"] == "SUCCEEDED"
    assert jobs_data.describe_job_execution(thingName=done, jobId=running_job)["execution"]["status"] == "SUCCEEDED"


def _execute_sql(server: Server, statements: list[str]) -> None:
    """Reach into the server's database the way an outage would (tests only)."""
    if server.database_url is None:
        db = sqlite3.connect(server.data_dir / "fleetjobs.db", timeout=30)
        try:
            for sql in statements:
                db.execute(sql)
            db.commit()
        finally:
            db.close()
        return
    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(server.database_url.replace("+asyncpg", ""))
        try:
            for sql in statements:
                await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


def _break_execution_updates(server: Server) -> None:
    if server.database_url is None:
        _execute_sql(
            server,
            [
                "CREATE TRIGGER test_outage BEFORE UPDATE ON job_executions "
                "BEGIN SELECT RAISE(ABORT, 'injected outage'); END"
            ],
        )
    else:
        _execute_sql(
            server,
            [
                "CREATE OR REPLACE FUNCTION test_outage() RETURNS trigger AS $$ "
                "BEGIN RAISE EXCEPTION 'injected outage'; END $$ LANGUAGE plpgsql",
                "CREATE TRIGGER test_outage BEFORE UPDATE ON job_executions "
                "FOR EACH ROW EXECUTE FUNCTION test_outage()",
            ],
        )


def _mend_execution_updates(server: Server) -> None:
    if server.database_url is None:
        _execute_sql(server, ["DROP TRIGGER test_outage"])
    else:
        _execute_sql(server, ["DROP TRIGGER test_outage ON job_executions", "DROP FUNCTION test_outage()"])


def test_a_database_failure_is_internal_error_and_changes_nothing(iot, device_factory, mqtt_server) -> None:  # type: ignore[no-untyped-def]
    fleet = Fleet(iot)
    thing = fleet.things(1)[0]
    job = fleet.job([thing_arn(thing)])
    dev = device_factory(thing)
    jobs_data = mqtt_server.client("iot-jobs-data", config=NO_RETRIES)
    _break_execution_updates(mqtt_server)
    try:
        kind, doc = dev.request("start-next", {"statusDetails": {"step": "1"}})
        assert kind == "rejected" and doc["code"] == "InternalError" and "clientToken" in doc
        with pytest.raises(jobs_data.exceptions.ServiceUnavailableException):
            jobs_data.update_job_execution(thingName=thing, jobId=job, status="IN_PROGRESS")
        execution = iot.describe_job_execution(jobId=job, thingName=thing)["execution"]
        assert execution["status"] == "QUEUED" and execution["versionNumber"] == 1
        assert iot.describe_job(jobId=job)["job"]["jobProcessDetails"]["numberOfInProgressThings"] == 0
    finally:
        _mend_execution_updates(mqtt_server)
    # The gateway kept serving: the same request now succeeds.
    kind, doc = dev.request("start-next", {"statusDetails": {"step": "1"}})
    assert kind == "accepted" and doc["execution"]["status"] == "IN_PROGRESS"


def test_malformed_requests_count_against_the_thing_rate(iot, device_factory) -> None:  # type: ignore[no-untyped-def]
    """Garbage is throttled like any request: 100 payloads that are not JSON, at once, from one thing
    (the default limit is 20/s with a burst of 40) are partly InvalidJson, the rest RequestThrottled."""
    (thing,) = Fleet(iot).things(1)
    dev = device_factory(thing)
    for _ in range(100):
        dev.client.publish(f"{dev.base}/get", b"{not json", qos=1)
    codes: list[str] = []
    deadline = time.monotonic() + 30
    while len(codes) < 100 and time.monotonic() < deadline:
        try:
            _, doc = dev.wait_for(lambda t, d: t.endswith("/get/rejected"), timeout=1)
            codes.append(doc["code"])
        except TimeoutError:
            continue
    assert len(codes) == 100
    assert set(codes) == {"InvalidJson", "RequestThrottled"}
    assert codes.count("InvalidJson") <= 60
