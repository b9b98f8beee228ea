"""Job executions: control-plane Describe/List/Cancel/Delete, with the force and expectedVersion
semantics of JOBS_API.md §4.8.  Executions are driven IN_PROGRESS by a device through the
``iot-jobs-data`` HTTPS API, as a real device would."""

from __future__ import annotations

import pytest

from tests.fleet import Fleet, details, executions, thing_arn
from tests.harness import unique


@pytest.fixture
def fleet(iot) -> Fleet:  # type: ignore[no-untyped-def]
    return Fleet(iot)


@pytest.fixture
def device(server):  # type: ignore[no-untyped-def]
    return server.client("iot-jobs-data")


def test_describe_job_execution_latest_and_by_number(iot, fleet: Fleet) -> None:
    t = fleet.things(1)
    job_id = fleet.job([thing_arn(t[0])])
    ex = iot.describe_job_execution(jobId=job_id, thingName=t[0])["execution"]
    assert ex["jobId"] == job_id and ex["status"] == "QUEUED"
    assert ex["thingArn"] == thing_arn(t[0])
    assert ex["executionNumber"] == 1 and ex["versionNumber"] == 1
    assert ex["forceCanceled"] is False
    assert "queuedAt" in ex and "lastUpdatedAt" in ex and "startedAt" not in ex
    same = iot.describe_job_execution(jobId=job_id, thingName=t[0], executionNumber=1)["execution"]
    assert same["executionNumber"] == 1
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_job_execution(jobId=job_id, thingName=t[0], executionNumber=2)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_job_execution(jobId=job_id, thingName=unique("ghost"))


def test_list_executions_for_job_status_filter_and_paginator(iot, fleet: Fleet) -> None:
    t = fleet.things(7)
    job_id = fleet.job([thing_arn(x) for x in t])
    iot.cancel_job_execution(jobId=job_id, thingName=t[3])
    pages = list(
        iot.get_paginator("list_job_executions_for_job").paginate(jobId=job_id, PaginationConfig={"PageSize": 3})
    )
    assert len(pages) == 3
    assert [len(p["executionSummaries"]) for p in pages] == [3, 3, 1]
    assert "nextToken" not in pages[-1]
    canceled = executions(iot, job_id, status="CANCELED")
    assert [s["thingArn"] for s in canceled] == [thing_arn(t[3])]
    assert len(executions(iot, job_id, status="QUEUED")) == 6
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.list_job_executions_for_job(jobId=unique("nope"))
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.list_job_executions_for_job(jobId=job_id, nextToken="not-a-token!")


def test_list_executions_for_thing(iot, fleet: Fleet) -> None:
    t = fleet.things(1)
    jobs = [fleet.job([thing_arn(t[0])]) for _ in range(3)]
    iot.cancel_job(jobId=jobs[1])
    pages = iot.get_paginator("list_job_executions_for_thing").paginate(
        thingName=t[0], PaginationConfig={"PageSize": 2}
    )
    listed = [s for p in pages for s in p["executionSummaries"]]
    assert [s["jobId"] for s in listed] == jobs
    assert listed[0]["jobExecutionSummary"]["retryAttempt"] == 0
    queued = iot.list_job_executions_for_thing(thingName=t[0], status="QUEUED")["executionSummaries"]
    assert [s["jobId"] for s in queued] == [jobs[0], jobs[2]]
    one = iot.list_job_executions_for_thing(thingName=t[0], jobId=jobs[2])["executionSummaries"]
    assert [s["jobId"] for s in one] == [jobs[2]]
    assert iot.list_job_executions_for_thing(thingName=unique("ghost"))["executionSummaries"] == []


def test_cancel_job_execution_rules(iot, iot_raw, device, fleet: Fleet) -> None:
    t = fleet.things(3)
    job_id = fleet.job([thing_arn(x) for x in t])
    # expectedVersion must match.
    with pytest.raises(iot.exceptions.VersionConflictException):
        iot.cancel_job_execution(jobId=job_id, thingName=t[0], expectedVersion=7)
    assert iot.describe_job_execution(jobId=job_id, thingName=t[0])["execution"]["status"] == "QUEUED"
    iot.cancel_job_execution(jobId=job_id, thingName=t[0], expectedVersion=1, statusDetails={"why": "operator"})
    ex = iot.describe_job_execution(jobId=job_id, thingName=t[0])["execution"]
    assert ex["status"] == "CANCELED" and ex["statusDetails"] == {"detailsMap": {"why": "operator"}}
    assert ex["versionNumber"] == 2 and ex["forceCanceled"] is False
    # Terminal: cannot be canceled again.
    with pytest.raises(iot.exceptions.InvalidStateTransitionException):
        iot.cancel_job_execution(jobId=job_id, thingName=t[0])
    # IN_PROGRESS needs force.
    device.start_next_pending_job_execution(thingName=t[1])
    with pytest.raises(iot.exceptions.InvalidStateTransitionException):
        iot.cancel_job_execution(jobId=job_id, thingName=t[1])
    assert iot.describe_job_execution(jobId=job_id, thingName=t[1])["execution"]["status"] == "IN_PROGRESS"
    iot.cancel_job_execution(jobId=job_id, thingName=t[1], force=True)
    ex = iot.describe_job_execution(jobId=job_id, thingName=t[1])["execution"]
    assert ex["status"] == "CANCELED" and ex["forceCanceled"] is True
    # A force-canceled execution can no longer be updated by the device.
    with pytest.raises(device.exceptions.InvalidStateTransitionException):
        device.update_job_execution(jobId=job_id, thingName=t[1], status="SUCCEEDED")
    # At most 10 statusDetails pairs.
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot_raw.cancel_job_execution(jobId=job_id, thingName=t[2], statusDetails={f"k{i}": "v" for i in range(11)})
    assert iot.describe_job_execution(jobId=job_id, thingName=t[2])["execution"]["status"] == "QUEUED"
    d = details(iot, job_id)
    assert d["numberOfCanceledThings"] == 2 and d["numberOfQueuedThings"] == 1 and d["numberOfInProgressThings"] == 0


def test_cancel_job_force_cancels_in_progress_and_plain_cancel_lets_them_finish(iot, device, fleet: Fleet) -> None:
    t = fleet.things(2)
    plain = fleet.job([thing_arn(x) for x in t])
    device.start_next_pending_job_execution(thingName=t[0])
    iot.cancel_job(jobId=plain)
    assert iot.describe_job_execution(jobId=plain, thingName=t[0])["execution"]["status"] == "IN_PROGRESS"
    assert iot.describe_job_execution(jobId=plain, thingName=t[1])["execution"]["status"] == "CANCELED"
    # The device may still finish after a non-forced cancel.
    device.update_job_execution(jobId=plain, thingName=t[0], status="SUCCEEDED")
    d = details(iot, plain)
    assert d["numberOfSucceededThings"] == 1 and d["numberOfCanceledThings"] == 1
    assert iot.describe_job(jobId=plain)["job"]["status"] == "CANCELED"

    forced = fleet.job([thing_arn(x) for x in t])
    device.start_next_pending_job_execution(thingName=t[0])
    iot.cancel_job(jobId=forced, force=True)
    job = iot.describe_job(jobId=forced)["job"]
    assert job["forceCanceled"] is True and job["status"] == "CANCELED"
    assert job["jobProcessDetails"]["numberOfCanceledThings"] == 2
    ex = iot.describe_job_execution(jobId=forced, thingName=t[0])["execution"]
    assert ex["status"] == "CANCELED" and ex["forceCanceled"] is True
    with pytest.raises(device.exceptions.InvalidStateTransitionException):
        device.update_job_execution(jobId=forced, thingName=t[0], status="SUCCEEDED")


def test_delete_job_execution_rules(iot, device, fleet: Fleet) -> None:
    t = fleet.things(3)
    job_id = fleet.job([thing_arn(x) for x in t])
    with pytest.raises(iot.exceptions.InvalidStateTransitionException):
        iot.delete_job_execution(jobId=job_id, thingName=t[0], executionNumber=1)
    iot.cancel_job_execution(jobId=job_id, thingName=t[0])
    iot.delete_job_execution(jobId=job_id, thingName=t[0], executionNumber=1)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_job_execution(jobId=job_id, thingName=t[0])
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.delete_job_execution(jobId=job_id, thingName=t[0], executionNumber=1)
    # IN_PROGRESS with force: the device then gets ResourceNotFound.
    device.start_next_pending_job_execution(thingName=t[1])
    iot.delete_job_execution(jobId=job_id, thingName=t[1], executionNumber=1, force=True)
    with pytest.raises(device.exceptions.ResourceNotFoundException):
        device.update_job_execution(jobId=job_id, thingName=t[1], status="SUCCEEDED")
    d = details(iot, job_id)
    assert d["numberOfCanceledThings"] == 0 and d["numberOfInProgressThings"] == 0 and d["numberOfQueuedThings"] == 1
    assert len(executions(iot, job_id)) == 1


def test_device_https_workflow_completes_job(iot, device, fleet: Fleet) -> None:
    t = fleet.things(2)
    job_id = fleet.job([thing_arn(x) for x in t], timeoutConfig={"inProgressTimeoutInMinutes": 10})
    pending = device.get_pending_job_executions(thingName=t[0])
    assert [j["jobId"] for j in pending["queuedJobs"]] == [job_id] and pending["inProgressJobs"] == []
    started = device.start_next_pending_job_execution(thingName=t[0], statusDetails={"step": "download"})
    ex = started["execution"]
    assert ex["jobId"] == job_id and ex["status"] == "IN_PROGRESS" and ex["versionNumber"] == 2
    assert ex["statusDetails"] == {"step": "download"} and '"operation"' in ex["jobDocument"]
    assert 0 < ex["approximateSecondsBeforeTimedOut"] <= 600
    # expectedVersion mismatch is refused and changes nothing.
    with pytest.raises(device.exceptions.ClientError):
        device.update_job_execution(jobId=job_id, thingName=t[0], status="SUCCEEDED", expectedVersion=1)
    out = device.update_job_execution(
        jobId=job_id, thingName=t[0], status="SUCCEEDED", expectedVersion=2, includeJobExecutionState=True
    )
    assert out["executionState"] == {"status": "SUCCEEDED", "versionNumber": 3, "statusDetails": {"step": "download"}}
    with pytest.raises(device.exceptions.InvalidStateTransitionException):
        device.update_job_execution(jobId=job_id, thingName=t[0], status="IN_PROGRESS")
    device.update_job_execution(jobId=job_id, thingName=t[1], status="REJECTED")
    job = iot.describe_job(jobId=job_id)["job"]
    assert job["status"] == "COMPLETED"
    assert job["jobProcessDetails"]["numberOfSucceededThings"] == 1
    assert job["jobProcessDetails"]["numberOfRejectedThings"] == 1
    assert device.start_next_pending_job_execution(thingName=t[0]).get("execution") is None
