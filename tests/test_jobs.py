"""Jobs through boto3 over real HTTP (JOBS_API.md §1.1, §3, §4.1, §4.4, §4.8)."""

from __future__ import annotations

import json
import time

import pytest

from tests.fleet import DOC, Fleet, details, executions, group_arn, thing_arn, thing_names
from tests.harness import unique


@pytest.fixture
def fleet(iot) -> Fleet:  # type: ignore[no-untyped-def]
    return Fleet(iot)


def test_create_job_fans_out_in_target_order_with_nested_groups_and_no_duplicates(iot, fleet: Fleet) -> None:
    a = fleet.things(3, "a")
    b = fleet.things(2, "b")
    solo = fleet.things(1, "s")
    parent = fleet.group("parent", a)
    fleet.group("child", b, parent=parent)
    # `a[0]` is targeted twice: directly (first) and through the parent group.
    job_id = fleet.job([thing_arn(a[0]), group_arn(parent), thing_arn(solo[0])])
    listed = executions(iot, job_id)
    assert thing_names(listed) == [a[0], a[1], a[2], *b, solo[0]]
    assert {s["jobExecutionSummary"]["status"] for s in listed} == {"QUEUED"}
    assert all(s["jobExecutionSummary"]["executionNumber"] == 1 for s in listed)
    d = details(iot, job_id)
    assert d["numberOfQueuedThings"] == 6
    assert d["numberOfInProgressThings"] == 0 and d["numberOfSucceededThings"] == 0
    assert iot.describe_job(jobId=job_id)["job"]["status"] == "IN_PROGRESS"


def test_create_job_returns_arn_and_description(iot, fleet: Fleet) -> None:
    t = fleet.things(1)
    job_id = unique("job")
    out = iot.create_job(jobId=job_id, targets=[thing_arn(t[0])], document=DOC, description="fw 1.2.3")
    assert out["jobArn"] == f"arn:aws:iot:us-east-1:123456789012:job/{job_id}"
    assert out["jobId"] == job_id and out["description"] == "fw 1.2.3"


def test_every_create_job_field_is_stored_and_described(iot, fleet: Fleet) -> None:
    t = fleet.things(1)
    job_id = unique("job")
    config = {
        "description": "all fields",
        "presignedUrlConfig": {"roleArn": "arn:aws:iam::123456789012:role/JobsS3Read", "expiresInSec": 600},
        "targetSelection": "CONTINUOUS",
        "jobExecutionsRolloutConfig": {
            "maximumPerMinute": 500,
            "exponentialRate": {
                "baseRatePerMinute": 50,
                "incrementFactor": 2.0,
                "rateIncreaseCriteria": {"numberOfNotifiedThings": 1000},
            },
        },
        "abortConfig": {
            "criteriaList": [
                {
                    "failureType": "FAILED",
                    "action": "CANCEL",
                    "thresholdPercentage": 20.5,
                    "minNumberOfExecutedThings": 10,
                }
            ]
        },
        "timeoutConfig": {"inProgressTimeoutInMinutes": 100},
        "jobExecutionsRetryConfig": {"criteriaList": [{"failureType": "FAILED", "numberOfRetries": 3}]},
        "namespaceId": "ns1",
        "tags": [{"Key": "team", "Value": "firmware"}],
    }
    iot.create_job(jobId=job_id, targets=[thing_arn(t[0])], document=DOC, **config)
    job = iot.describe_job(jobId=job_id)["job"]
    for key in (
        "description",
        "presignedUrlConfig",
        "targetSelection",
        "jobExecutionsRolloutConfig",
        "abortConfig",
        "timeoutConfig",
        "jobExecutionsRetryConfig",
        "namespaceId",
    ):
        assert job[key] == config[key], key
    assert job["targets"] == [thing_arn(t[0])]
    assert job["jobArn"].endswith(f":job/{job_id}")
    assert job["forceCanceled"] is False
    assert isinstance(job["isConcurrent"], bool)
    assert abs(job["createdAt"].timestamp() - time.time()) < 300
    assert iot.get_job_document(jobId=job_id)["document"] == DOC


def test_scheduled_job_waits_with_processing_targets(iot, fleet: Fleet) -> None:
    t = fleet.things(2)
    start = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() + 3 * 3600))
    end = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() + 6 * 3600))
    sched = {"startTime": start, "endTime": end, "endBehavior": "CANCEL"}
    job_id = fleet.job([thing_arn(x) for x in t], schedulingConfig=sched)
    job = iot.describe_job(jobId=job_id)["job"]
    assert job["status"] == "SCHEDULED"
    assert job["schedulingConfig"]["endBehavior"] == "CANCEL"
    assert job["jobProcessDetails"]["processingTargets"] == [thing_arn(x) for x in t]
    assert executions(iot, job_id) == []


def test_duplicate_job_id_is_refused_and_original_kept(iot, fleet: Fleet) -> None:
    t = fleet.things(2)
    job_id = fleet.job([thing_arn(t[0])])
    with pytest.raises(iot.exceptions.ResourceAlreadyExistsException):
        iot.create_job(jobId=job_id, targets=[thing_arn(t[1])], document='{"other": 1}')
    assert iot.get_job_document(jobId=job_id)["document"] == DOC
    assert thing_names(executions(iot, job_id)) == [t[0]]


def test_unknown_targets_are_refused_and_nothing_created(iot, fleet: Fleet) -> None:
    job_id = unique("job")
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.create_job(jobId=job_id, targets=[thing_arn(unique("ghost"))], document=DOC)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.create_job(jobId=job_id, targets=[group_arn(unique("ghost"))], document=DOC)
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.create_job(jobId=job_id, targets=["arn:aws:iot:us-east-1:123456789012:policy/p"], document=DOC)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_job(jobId=job_id)


def test_create_job_input_validation(iot_raw, fleet: Fleet) -> None:
    iot = iot_raw
    t = thing_arn(fleet.things(1)[0])
    bad = [
        {"jobId": "bad/id", "targets": [t], "document": DOC},
        {"jobId": "x" * 65, "targets": [t], "document": DOC},
        {"jobId": unique("j"), "targets": [], "document": DOC},
        {"jobId": unique("j"), "targets": [t]},  # neither document nor documentSource
        {"jobId": unique("j"), "targets": [t], "document": DOC, "documentSource": "https://s3.amazonaws.com/b/k"},
        {"jobId": unique("j"), "targets": [t], "document": "x" * 32769},
        {"jobId": unique("j"), "targets": [t], "document": DOC, "targetSelection": "SOMETIMES"},
        {"jobId": unique("j"), "targets": [t], "document": DOC, "timeoutConfig": {"inProgressTimeoutInMinutes": 0}},
        {"jobId": unique("j"), "targets": [t], "document": DOC, "presignedUrlConfig": {"expiresInSec": 59}},
        {"jobId": unique("j"), "targets": [t], "document": DOC, "description": "bad\u0007control"},
        {
            "jobId": unique("j"),
            "targets": [t],
            "document": DOC,
            "jobExecutionsRetryConfig": {"criteriaList": [{"failureType": "REJECTED", "numberOfRetries": 1}]},
        },
    ]
    for params in bad:
        with pytest.raises(iot.exceptions.InvalidRequestException):
            iot.create_job(**params)
        if "/" not in params["jobId"] and len(params["jobId"]) <= 64:
            with pytest.raises(iot.exceptions.ResourceNotFoundException):
                iot.describe_job(jobId=params["jobId"])


def test_too_many_targets(iot_raw, fleet: Fleet) -> None:
    targets = [thing_arn(f"{fleet.prefix}-{i}") for i in range(101)]
    with pytest.raises((iot_raw.exceptions.LimitExceededException, iot_raw.exceptions.InvalidRequestException)):
        iot_raw.create_job(jobId=unique("j"), targets=targets, document=DOC)


def test_list_jobs_filters_and_paginates(iot, fleet: Fleet) -> None:
    t = fleet.things(2)
    g = fleet.group("g", t)
    gid = iot.describe_thing_group(thingGroupName=g)["thingGroupId"]
    on_group = [fleet.job([group_arn(g)]) for _ in range(3)]
    continuous = fleet.job([group_arn(g)], targetSelection="CONTINUOUS")
    namespaced = fleet.job([thing_arn(t[0])], namespaceId="greengrass")
    canceled = fleet.job([thing_arn(t[1])])
    iot.cancel_job(jobId=canceled)

    def ids(**kw) -> list[str]:  # type: ignore[no-untyped-def]
        pages = iot.get_paginator("list_jobs").paginate(**kw, PaginationConfig={"PageSize": 2})
        return [j["jobId"] for p in pages for j in p["jobs"]]

    assert set(ids(thingGroupName=g)) == {*on_group, continuous}
    assert set(ids(thingGroupId=gid)) == {*on_group, continuous}
    assert continuous in ids(targetSelection="CONTINUOUS") and on_group[0] not in ids(targetSelection="CONTINUOUS")
    assert namespaced in ids(namespaceId="greengrass") and on_group[0] not in ids(namespaceId="greengrass")
    assert canceled in ids(status="CANCELED") and canceled not in ids(status="IN_PROGRESS")
    every = ids()
    assert len(every) == len(set(every))  # the paginator saw every job once
    summary = next(j for p in iot.get_paginator("list_jobs").paginate(thingGroupName=g) for j in p["jobs"])
    assert summary["thingGroupId"] == gid and summary["jobArn"].endswith(summary["jobId"])


def test_get_job_document_and_not_found(iot, fleet: Fleet) -> None:
    t = fleet.things(1)
    doc = json.dumps({"steps": [{"action": "reboot"}]})
    job_id = fleet.job([thing_arn(t[0])], document=doc)
    assert iot.get_job_document(jobId=job_id)["document"] == doc
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.get_job_document(jobId=unique("nope"))


def test_cancel_job_cancels_queued_executions_with_reason(iot, fleet: Fleet) -> None:
    t = fleet.things(3)
    job_id = fleet.job([thing_arn(x) for x in t])
    out = iot.cancel_job(jobId=job_id, reasonCode="BAD_FIRMWARE", comment="rollback")
    assert out["jobId"] == job_id
    job = iot.describe_job(jobId=job_id)["job"]
    assert job["status"] == "CANCELED" and job["reasonCode"] == "BAD_FIRMWARE" and job["comment"] == "rollback"
    assert job["forceCanceled"] is False
    assert job["jobProcessDetails"]["numberOfCanceledThings"] == 3
    assert job["jobProcessDetails"]["numberOfQueuedThings"] == 0
    assert {s["jobExecutionSummary"]["status"] for s in executions(iot, job_id)} == {"CANCELED"}
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.cancel_job(jobId=job_id)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.cancel_job(jobId=unique("nope"))


def test_update_job_changes_mutable_fields_only(iot, iot_raw, fleet: Fleet) -> None:
    t = fleet.things(1)
    job_id = fleet.job([thing_arn(t[0])], description="before")
    iot.update_job(
        jobId=job_id,
        description="after",
        jobExecutionsRolloutConfig={"maximumPerMinute": 42},
        abortConfig={
            "criteriaList": [
                {"failureType": "ALL", "action": "CANCEL", "thresholdPercentage": 50, "minNumberOfExecutedThings": 5}
            ]
        },
        timeoutConfig={"inProgressTimeoutInMinutes": 30},
        jobExecutionsRetryConfig={"criteriaList": [{"failureType": "ALL", "numberOfRetries": 2}]},
        presignedUrlConfig={"expiresInSec": 120},
    )
    job = iot.describe_job(jobId=job_id)["job"]
    assert job["description"] == "after"
    assert job["jobExecutionsRolloutConfig"] == {"maximumPerMinute": 42}
    assert job["timeoutConfig"] == {"inProgressTimeoutInMinutes": 30}
    assert job["presignedUrlConfig"] == {"expiresInSec": 120}
    assert job["abortConfig"]["criteriaList"][0]["failureType"] == "ALL"
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot_raw.update_job(jobId=job_id, jobExecutionsRolloutConfig={"maximumPerMinute": 0})
    assert iot.describe_job(jobId=job_id)["job"]["jobExecutionsRolloutConfig"] == {"maximumPerMinute": 42}
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.update_job(jobId=unique("nope"), description="x")
    iot.cancel_job(jobId=job_id)
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.update_job(jobId=job_id, description="too late")


def test_delete_job_requires_force_unless_terminal_then_id_is_reusable(iot, fleet: Fleet) -> None:
    t = fleet.things(2)
    job_id = fleet.job([thing_arn(x) for x in t])
    with pytest.raises(iot.exceptions.InvalidStateTransitionException):
        iot.delete_job(jobId=job_id)
    assert iot.describe_job(jobId=job_id)["job"]["status"] == "IN_PROGRESS"
    iot.delete_job(jobId=job_id, force=True)
    status = _wait_deleted(iot, job_id)
    assert status == "gone"
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_job_execution(jobId=job_id, thingName=t[0])
    # After deletion completes the id may be reused.
    fleet.job([thing_arn(t[0])], jobId=job_id)
    assert thing_names(executions(iot, job_id)) == [t[0]]
    iot.cancel_job(jobId=job_id)
    iot.delete_job(jobId=job_id)  # terminal: no force needed
    assert _wait_deleted(iot, job_id) == "gone"
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.delete_job(jobId=job_id)


def _wait_deleted(iot, job_id: str) -> str:  # type: ignore[no-untyped-def]
    for _ in range(200):
        try:
            status = iot.describe_job(jobId=job_id)["job"]["status"]
        except iot.exceptions.ResourceNotFoundException:
            return "gone"
        assert status == "DELETION_IN_PROGRESS"
        try:
            iot.delete_job(jobId=job_id, force=True)
        except iot.exceptions.InvalidStateTransitionException:
            pass  # deleting a job that is already being deleted is an error
        except iot.exceptions.ResourceNotFoundException:
            return "gone"
        time.sleep(0.05)
    return status


def test_associate_targets_with_continuous_job(iot, fleet: Fleet) -> None:
    first = fleet.things(2, "a")
    later = fleet.things(2, "b")
    g1 = fleet.group("g1", first)
    g2 = fleet.group("g2", later)
    job_id = fleet.job([group_arn(g1)], targetSelection="CONTINUOUS")
    out = iot.associate_targets_with_job(jobId=job_id, targets=[group_arn(g2)], comment="more")
    assert out["jobId"] == job_id
    assert set(thing_names(executions(iot, job_id))) == {*first, *later}
    assert iot.describe_job(jobId=job_id)["job"]["targets"] == [group_arn(g1), group_arn(g2)]
    assert details(iot, job_id)["numberOfQueuedThings"] == 4
    # Associating again creates no duplicate executions.
    iot.associate_targets_with_job(jobId=job_id, targets=[group_arn(g2)])
    assert len(executions(iot, job_id)) == 4

    snapshot = fleet.job([group_arn(g1)])
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.associate_targets_with_job(jobId=snapshot, targets=[group_arn(g2)])
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.associate_targets_with_job(jobId=unique("nope"), targets=[group_arn(g2)])


def test_snapshot_job_completes_when_last_execution_ends(iot, fleet: Fleet) -> None:
    t = fleet.things(2)
    job_id = fleet.job([thing_arn(x) for x in t])
    iot.cancel_job_execution(jobId=job_id, thingName=t[0])
    assert iot.describe_job(jobId=job_id)["job"]["status"] == "IN_PROGRESS"
    iot.cancel_job_execution(jobId=job_id, thingName=t[1])
    job = iot.describe_job(jobId=job_id)["job"]
    assert job["status"] == "COMPLETED"
    assert "completedAt" in job
    assert job["jobProcessDetails"]["numberOfCanceledThings"] == 2


def test_job_on_empty_group_completes_at_once(iot, fleet: Fleet) -> None:
    g = fleet.group("empty")
    job_id = fleet.job([group_arn(g)])
    assert iot.describe_job(jobId=job_id)["job"]["status"] == "COMPLETED"


def test_aws_cli_create_describe_list_cancel(server, fleet: Fleet) -> None:
    t = fleet.things(1)
    job_id = unique("clijob")
    out = server.cli("iot", "create-job", "--job-id", job_id, "--targets", thing_arn(t[0]), "--document", DOC)
    assert out["jobId"] == job_id
    described = server.cli("iot", "describe-job", "--job-id", job_id)
    assert described["job"]["status"] == "IN_PROGRESS"
    assert described["job"]["jobProcessDetails"]["numberOfQueuedThings"] == 1
    listed = server.cli("iot", "list-job-executions-for-job", "--job-id", job_id)
    assert listed["executionSummaries"][0]["thingArn"] == thing_arn(t[0])
    server.cli("iot", "cancel-job", "--job-id", job_id, "--reason-code", "OPERATOR")
    assert server.cli("iot", "describe-job", "--job-id", job_id)["job"]["status"] == "CANCELED"
    failed = server.cli("iot", "describe-job", "--job-id", unique("nope"), check=False)
    assert failed.returncode != 0 and "ResourceNotFoundException" in failed.stderr


def test_update_job_cannot_raise_a_retry_count(iot, fleet: Fleet) -> None:
    t = fleet.things(1)
    retry = {"criteriaList": [{"failureType": "FAILED", "numberOfRetries": 2}]}
    job_id = fleet.job([thing_arn(t[0])], jobExecutionsRetryConfig=retry)
    with pytest.raises(iot.exceptions.InvalidRequestException, match="cannot raise numberOfRetries"):
        iot.update_job(
            jobId=job_id, jobExecutionsRetryConfig={"criteriaList": [{"failureType": "FAILED", "numberOfRetries": 5}]}
        )
    assert iot.describe_job(jobId=job_id)["job"]["jobExecutionsRetryConfig"] == retry
    lower = {"criteriaList": [{"failureType": "FAILED", "numberOfRetries": 1}]}
    iot.update_job(jobId=job_id, jobExecutionsRetryConfig=lower)
    assert iot.describe_job(jobId=job_id)["job"]["jobExecutionsRetryConfig"] == lower
