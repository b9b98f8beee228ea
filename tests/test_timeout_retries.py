"""Retry on TIMED_OUT / ALL without a job timeout (``timeoutConfig``).

The developer guide makes the job timeout a precondition for *in-progress* timeouts to happen,
not a rule of the request, and an execution also times out on the step timer a device sets with
``stepTimeoutInMinutes``.  So CreateJob, UpdateJob and CreateJobTemplate accept the combination,
and an execution that times out on its step timer is retried.

The server runs with ``--manual-clock``: time moves only through ``POST /_fleetjobs/clock``, whose
answer comes once the work due at the new time (here the step timer) is done.  The device acts
through the ``iot-jobs-data`` HTTPS API.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fleet import Fleet, thing_arn
from tests.harness import Server, unique

START_EPOCH = 1_800_000_000
MINUTE = 60


def advance(server: Server, seconds: float) -> None:
    req = urllib.request.Request(
        f"{server.endpoint}/_fleetjobs/clock",
        data=json.dumps({"advance": seconds}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 200


@pytest.fixture(scope="module")
def clock_server(backends) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    srv = backends.server(extra_args=["--manual-clock", str(START_EPOCH)]).start()
    yield srv
    srv.stop()


@pytest.fixture
def iot(clock_server: Server):  # type: ignore[no-untyped-def]
    return clock_server.client("iot")


@pytest.fixture
def device(clock_server: Server):  # type: ignore[no-untyped-def]
    return clock_server.client("iot-jobs-data")


def attempts(iot: Any, job_id: str, thing: str) -> list[tuple[int, int, str]]:
    """(executionNumber, retryAttempt, status) of every execution of the job on the thing."""
    out = iot.list_job_executions_for_thing(thingName=thing, jobId=job_id)["executionSummaries"]
    return sorted(
        (
            s["jobExecutionSummary"]["executionNumber"],
            s["jobExecutionSummary"].get("retryAttempt", 0),
            s["jobExecutionSummary"]["status"],
        )
        for s in out
    )


def retry(failure_type: str, n: int) -> dict[str, Any]:
    return {"criteriaList": [{"failureType": failure_type, "numberOfRetries": n}]}


@pytest.mark.parametrize("failure_type", ["TIMED_OUT", "ALL"])
def test_step_timer_timeout_is_retried_without_a_job_timeout(
    clock_server: Server, iot: Any, device: Any, failure_type: str
) -> None:
    (thing,) = Fleet(iot).things(1)
    job_id = unique("job")
    iot.create_job(
        jobId=job_id,
        targets=[thing_arn(thing)],
        document=json.dumps({"op": "x"}),
        jobExecutionsRetryConfig=retry(failure_type, 1),
    )
    job = iot.describe_job(jobId=job_id)["job"]
    assert job["jobExecutionsRetryConfig"] == retry(failure_type, 1)
    assert "inProgressTimeoutInMinutes" not in job.get("timeoutConfig", {})

    started = device.start_next_pending_job_execution(thingName=thing, stepTimeoutInMinutes=1)["execution"]
    assert started["jobId"] == job_id and started["executionNumber"] == 1
    assert started["approximateSecondsBeforeTimedOut"] == MINUTE
    advance(clock_server, MINUTE)
    assert attempts(iot, job_id, thing) == [(1, 0, "TIMED_OUT"), (2, 1, "QUEUED")]
    assert iot.describe_job(jobId=job_id)["job"]["status"] == "IN_PROGRESS"  # the retry is pending

    # The retry is the device's next job; with no timer of any kind it never times out.
    again = device.start_next_pending_job_execution(thingName=thing)["execution"]
    assert again["jobId"] == job_id and again["executionNumber"] == 2
    assert "approximateSecondsBeforeTimedOut" not in again
    advance(clock_server, 7 * 24 * 60 * MINUTE)
    assert attempts(iot, job_id, thing) == [(1, 0, "TIMED_OUT"), (2, 1, "IN_PROGRESS")]
    device.update_job_execution(jobId=job_id, thingName=thing, status="SUCCEEDED")
    assert iot.describe_job(jobId=job_id)["job"]["status"] == "COMPLETED"


def test_update_job_adds_a_timeout_retry_to_a_job_without_a_timeout(iot: Any) -> None:
    (thing,) = Fleet(iot).things(1)
    job_id = unique("job")
    iot.create_job(jobId=job_id, targets=[thing_arn(thing)], document=json.dumps({"op": "x"}))
    iot.update_job(jobId=job_id, jobExecutionsRetryConfig=retry("TIMED_OUT", 2))
    assert iot.describe_job(jobId=job_id)["job"]["jobExecutionsRetryConfig"] == retry("TIMED_OUT", 2)


@pytest.mark.parametrize("failure_type", ["TIMED_OUT", "ALL"])
def test_template_with_a_timeout_retry_and_no_timeout_is_created(iot: Any, failure_type: str) -> None:
    template_id = unique("tpl")
    iot.create_job_template(
        jobTemplateId=template_id,
        description="retries timeouts",
        document=json.dumps({"op": "x"}),
        jobExecutionsRetryConfig=retry(failure_type, 3),
    )
    d = iot.describe_job_template(jobTemplateId=template_id)
    assert d["jobExecutionsRetryConfig"] == retry(failure_type, 3)
    # A job made from it inherits the retry criterion.
    (thing,) = Fleet(iot).things(1)
    job_id = unique("job")
    iot.create_job(jobId=job_id, targets=[thing_arn(thing)], jobTemplateArn=d["jobTemplateArn"])
    assert iot.describe_job(jobId=job_id)["job"]["jobExecutionsRetryConfig"] == retry(failure_type, 3)
