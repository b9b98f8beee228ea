"""Custom job templates through boto3 and the AWS CLI over real HTTP (JOBS_API.md §1.3, §3.1).

Two groups at the end depend on other services and may fail until those land:
``TestTemplateFromJob`` (CreateJobTemplate with ``jobArn`` of a job made by CreateThing + CreateJob)
and ``TestCreateJobFromTemplate`` (CreateJob with ``jobTemplateArn``, fleetjobs/service/jobs.py).
The ``test_service_*`` tests cover the same template code in process, without those dependencies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from fleetjobs.clock import ManualClock
from fleetjobs.domain.arns import Partition
from fleetjobs.domain.errors import InvalidRequest, ResourceNotFound
from fleetjobs.service.context import ServiceContext
from fleetjobs.service.effects.job_templates import inherited_members
from fleetjobs.service.templates import JobTemplates
from fleetjobs.store.database import Database, sqlite_url
from fleetjobs.store.schema import Job
from tests.conftest import Backend
from tests.fleet import DOC, Fleet, thing_arn
from tests.harness import ACCOUNT, REGION, Server, unique

ROLE = "arn:aws:iam::123456789012:role/JobsS3Read"
PKG = f"arn:aws:iot:{REGION}:{ACCOUNT}:package/fw/version/1.{{}}"
PARTITION = Partition(REGION, ACCOUNT)

FULL_CONFIG: dict[str, Any] = {
    "presignedUrlConfig": {"roleArn": ROLE, "expiresInSec": 600},
    "jobExecutionsRolloutConfig": {
        "maximumPerMinute": 500,
        "exponentialRate": {
            "baseRatePerMinute": 50,
            "incrementFactor": 1.5,
            "rateIncreaseCriteria": {"numberOfSucceededThings": 100},
        },
    },
    "abortConfig": {
        "criteriaList": [
            {"failureType": "FAILED", "action": "CANCEL", "thresholdPercentage": 20.25, "minNumberOfExecutedThings": 10}
        ]
    },
    "timeoutConfig": {"inProgressTimeoutInMinutes": 120},
    "jobExecutionsRetryConfig": {
        "criteriaList": [
            {"failureType": "FAILED", "numberOfRetries": 3},
            {"failureType": "TIMED_OUT", "numberOfRetries": 2},
        ]
    },
    "maintenanceWindows": [{"startTime": "cron(0 2 ? * SUN *)", "durationInMinutes": 120}],
    "destinationPackageVersions": [PKG.format(0), PKG.format(1)],
}


def template_arn(template_id: str) -> str:
    return f"arn:aws:iot:{REGION}:{ACCOUNT}:jobtemplate/{template_id}"


def job_arn(job_id: str) -> str:
    return f"arn:aws:iot:{REGION}:{ACCOUNT}:job/{job_id}"


def create_template(iot: Any, **kwargs: Any) -> str:
    template_id = kwargs.pop("jobTemplateId", None) or unique("tpl")
    kwargs.setdefault("description", "a template")
    if not {"document", "documentSource", "jobArn"} & kwargs.keys():
        kwargs["document"] = DOC
    iot.create_job_template(jobTemplateId=template_id, **kwargs)
    return template_id


def described(iot: Any, template_id: str) -> dict[str, Any]:
    out = iot.describe_job_template(jobTemplateId=template_id)
    out.pop("ResponseMetadata")
    return out


# -- CreateJobTemplate / DescribeJobTemplate ---------------------------------------------------------


def test_create_returns_arn_and_id(iot) -> None:  # type: ignore[no-untyped-def]
    template_id = unique("tpl")
    out = iot.create_job_template(jobTemplateId=template_id, description="fw", document=DOC)
    assert out["jobTemplateArn"] == template_arn(template_id)
    assert out["jobTemplateId"] == template_id


def test_every_member_is_stored_and_described(iot) -> None:  # type: ignore[no-untyped-def]
    before = time.time()
    template_id = create_template(
        iot, description="everything", tags=[{"Key": "team", "Value": "fw"}], **json.loads(json.dumps(FULL_CONFIG))
    )
    d = described(iot, template_id)
    created_at = d.pop("createdAt").timestamp()
    assert before - 5 <= created_at <= time.time() + 5
    assert d == {
        "jobTemplateArn": template_arn(template_id),
        "jobTemplateId": template_id,
        "description": "everything",
        "document": DOC,
        **FULL_CONFIG,
    }


def test_minimal_template_describes_only_what_was_given(iot) -> None:  # type: ignore[no-untyped-def]
    template_id = create_template(iot, description="minimal")
    d = described(iot, template_id)
    assert set(d) == {"jobTemplateArn", "jobTemplateId", "description", "document", "createdAt"}


def test_document_source_template(iot) -> None:  # type: ignore[no-untyped-def]
    source = "https://s3.us-east-1.amazonaws.com/bkt/job.json"
    template_id = create_template(iot, documentSource=source)
    d = described(iot, template_id)
    assert d["documentSource"] == source
    assert "document" not in d


def test_presigned_document_with_role_is_accepted(iot) -> None:  # type: ignore[no-untyped-def]
    document = json.dumps({"url": "${aws:iot:s3-presigned-url:https://s3.amazonaws.com/bkt/fw.bin}"})
    template_id = create_template(iot, document=document, presignedUrlConfig={"roleArn": ROLE})
    assert described(iot, template_id)["document"] == document


def test_duplicate_id_is_a_conflict(iot) -> None:  # type: ignore[no-untyped-def]
    template_id = create_template(iot, description="first")
    with pytest.raises(iot.exceptions.ConflictException) as e:
        iot.create_job_template(jobTemplateId=template_id, description="second", document=DOC)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
    assert template_id in e.value.response["Error"]["Message"]
    assert described(iot, template_id)["description"] == "first"


def test_concurrent_creates_of_one_id_make_exactly_one_template(server: Server) -> None:
    template_id = unique("tpl")
    clients = [server.client("iot") for _ in range(8)]

    def attempt(i: int) -> str:
        iot = clients[i]
        try:
            iot.create_job_template(jobTemplateId=template_id, description=f"racer {i}", document=DOC)
            return "created"
        except iot.exceptions.ConflictException:
            return "conflict"

    with ThreadPoolExecutor(len(clients)) as pool:
        outcomes = list(pool.map(attempt, range(len(clients))))
    assert outcomes.count("created") == 1
    assert outcomes.count("conflict") == len(clients) - 1


def test_describe_unknown_template_is_not_found(iot) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(iot.exceptions.ResourceNotFoundException) as e:
        iot.describe_job_template(jobTemplateId=unique("missing"))
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


# -- validation ------------------------------------------------------------------------------------------


def test_description_is_required(iot_raw) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(iot_raw.exceptions.InvalidRequestException, match="description"):
        iot_raw.create_job_template(jobTemplateId=unique("tpl"), document=DOC)


def test_a_document_source_is_required(iot) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(iot.exceptions.InvalidRequestException, match="one of document, documentSource or jobArn"):
        iot.create_job_template(jobTemplateId=unique("tpl"), description="nothing to run")


def test_only_one_document_source(iot) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(iot.exceptions.InvalidRequestException, match="only one"):
        iot.create_job_template(
            jobTemplateId=unique("tpl"), description="d", document=DOC, documentSource="https://s3.amazonaws.com/b/k"
        )


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"document": "[1, 2]"}, "JSON object"),
        ({"document": "not json"}, "not valid JSON"),
        (
            {"document": json.dumps({"u": "${aws:iot:s3-presigned-url:https://s3.amazonaws.com/b/k}"})},
            "presignedUrlConfig role ARN is required to generate an S3 presigned url in job document.",
        ),
        (
            {
                "jobExecutionsRolloutConfig": {
                    "exponentialRate": {
                        "baseRatePerMinute": 5,
                        "incrementFactor": 1.55,
                        "rateIncreaseCriteria": {"numberOfNotifiedThings": 5},
                    }
                }
            },
            "one digit after the decimal point",
        ),
        (
            {
                "jobExecutionsRolloutConfig": {
                    "exponentialRate": {
                        "baseRatePerMinute": 5,
                        "incrementFactor": 2.0,
                        "rateIncreaseCriteria": {"numberOfNotifiedThings": 5, "numberOfSucceededThings": 5},
                    }
                }
            },
            "exactly one of numberOfNotifiedThings or numberOfSucceededThings",
        ),
        (
            {
                "abortConfig": {
                    "criteriaList": [
                        {
                            "failureType": "ALL",
                            "action": "CANCEL",
                            "thresholdPercentage": 10.999,
                            "minNumberOfExecutedThings": 1,
                        }
                    ]
                }
            },
            "two digits after the decimal point",
        ),
        ({"timeoutConfig": {"inProgressTimeoutInMinutes": 10081}}, "between 1 and 10080"),
        ({"timeoutConfig": {"inProgressTimeoutInMinutes": 0}}, "between 1 and 10080"),
        (
            {
                "jobExecutionsRetryConfig": {
                    "criteriaList": [
                        {"failureType": "FAILED", "numberOfRetries": 6},
                        {"failureType": "ALL", "numberOfRetries": 5},
                    ]
                },
                "timeoutConfig": {"inProgressTimeoutInMinutes": 10},
            },
            "at most 10 retries",
        ),
        (
            {
                "jobExecutionsRetryConfig": {
                    "criteriaList": [
                        {"failureType": "FAILED", "numberOfRetries": 1},
                        {"failureType": "FAILED", "numberOfRetries": 1},
                    ]
                }
            },
            "more than once",
        ),
        ({"maintenanceWindows": [{"startTime": "every sunday", "durationInMinutes": 60}]}, "cron"),
        ({"maintenanceWindows": [{"startTime": "cron(0 25 ? * SUN *)", "durationInMinutes": 60}]}, "hours"),
        ({"destinationPackageVersions": [PKG.format(i) for i in range(26)]}, "at most 25"),
    ],
)
def test_bad_configuration_is_an_invalid_request(iot, bad: dict[str, Any], message: str) -> None:  # type: ignore[no-untyped-def]
    template_id = unique("tpl")
    kwargs = {"document": DOC, **bad}
    with pytest.raises(iot.exceptions.InvalidRequestException) as e:
        iot.create_job_template(jobTemplateId=template_id, description="bad", **kwargs)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert message in e.value.response["Error"]["Message"]
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_job_template(jobTemplateId=template_id)


def test_model_constraints_are_enforced_by_the_api(iot_raw) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(iot_raw.exceptions.InvalidRequestException, match="validation error"):
        iot_raw.create_job_template(
            jobTemplateId=unique("tpl"),
            description="d",
            document=DOC,
            maintenanceWindows=[{"startTime": "cron(0 2 ? * SUN *)", "durationInMinutes": 1431}],
        )


def test_template_from_unknown_job_is_not_found(iot) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.create_job_template(jobTemplateId=unique("tpl"), description="d", jobArn=job_arn(unique("nojob")))


@pytest.mark.parametrize(
    "arn",
    [
        "not-an-arn",
        f"arn:aws:iot:{REGION}:{ACCOUNT}:thing/x",
        f"arn:aws:iot:{REGION}:210987654321:job/x",
        f"arn:aws:iot:eu-west-1:{ACCOUNT}:job/x",
    ],
)
def test_template_from_a_non_job_arn_is_invalid(iot, arn: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.create_job_template(jobTemplateId=unique("tpl"), description="d", jobArn=arn)


# -- ListJobTemplates -----------------------------------------------------------------------------------


def listed(iot: Any, **paginate: Any) -> list[list[dict[str, Any]]]:
    pages = iot.get_paginator("list_job_templates").paginate(**paginate)
    return [p["jobTemplates"] for p in pages]


def test_list_paginates_newest_first(iot) -> None:  # type: ignore[no-untyped-def]
    mine = []
    for i in range(5):
        mine.append(create_template(iot, description=f"listed {i}"))
        time.sleep(0.01)
    pages = listed(iot, PaginationConfig={"PageSize": 2})
    assert all(len(p) <= 2 for p in pages)
    assert len(pages) >= 3
    flat = [s for p in pages for s in p]
    ids = [s["jobTemplateId"] for s in flat]
    assert len(ids) == len(set(ids)), "a template was listed twice"
    ours = [s for s in flat if s["jobTemplateId"] in mine]
    assert [s["jobTemplateId"] for s in ours] == list(reversed(mine))
    for s in ours:
        assert set(s) == {"jobTemplateArn", "jobTemplateId", "description", "createdAt"}
        assert s["jobTemplateArn"] == template_arn(s["jobTemplateId"])
        assert s["description"] == f"listed {mine.index(s['jobTemplateId'])}"
    created = [s["createdAt"] for s in flat]
    assert created == sorted(created, reverse=True)


def test_list_max_results_and_next_token(iot) -> None:  # type: ignore[no-untyped-def]
    create_template(iot)
    create_template(iot)
    first = iot.list_job_templates(maxResults=1)
    assert len(first["jobTemplates"]) == 1 and first["nextToken"]
    second = iot.list_job_templates(maxResults=1, nextToken=first["nextToken"])
    assert second["jobTemplates"][0]["jobTemplateId"] != first["jobTemplates"][0]["jobTemplateId"]


def test_list_with_a_bad_token_is_invalid(iot) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.list_job_templates(nextToken="garbage!")
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.list_job_templates(nextToken="eyJrIjoxfQ")  # {"k":1}: decodes, but is not a template position


def test_list_max_results_out_of_range_is_invalid(iot_raw) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(iot_raw.exceptions.InvalidRequestException):
        iot_raw.list_job_templates(maxResults=251)


# -- DeleteJobTemplate ------------------------------------------------------------------------------------


def test_delete_then_describe_and_delete_again_are_not_found(iot) -> None:  # type: ignore[no-untyped-def]
    template_id = create_template(iot)
    iot.delete_job_template(jobTemplateId=template_id)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_job_template(jobTemplateId=template_id)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.delete_job_template(jobTemplateId=template_id)
    assert template_id not in {s["jobTemplateId"] for p in listed(iot) for s in p}


def test_deleted_id_can_be_reused(iot) -> None:  # type: ignore[no-untyped-def]
    template_id = create_template(iot, description="old")
    iot.delete_job_template(jobTemplateId=template_id)
    create_template(iot, jobTemplateId=template_id, description="new")
    assert described(iot, template_id)["description"] == "new"


def test_delete_unknown_template_is_not_found(iot) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.delete_job_template(jobTemplateId=unique("missing"))


# -- AWS CLI ---------------------------------------------------------------------------------------------------


def test_aws_cli_round_trip(server: Server) -> None:
    template_id = unique("cli")
    out = server.cli(
        "iot",
        "create-job-template",
        "--job-template-id",
        template_id,
        "--description",
        "from the CLI",
        "--document",
        DOC,
        "--timeout-config",
        "inProgressTimeoutInMinutes=15",
        "--maintenance-windows",
        "startTime=cron(0 3 ? * SAT *),durationInMinutes=60",
    )
    assert out == {"jobTemplateArn": template_arn(template_id), "jobTemplateId": template_id}
    d = server.cli("iot", "describe-job-template", "--job-template-id", template_id)
    assert d["description"] == "from the CLI"
    assert d["timeoutConfig"] == {"inProgressTimeoutInMinutes": 15}
    assert d["maintenanceWindows"] == [{"startTime": "cron(0 3 ? * SAT *)", "durationInMinutes": 60}]
    assert isinstance(d["createdAt"], str | int | float)
    listing = server.cli("iot", "list-job-templates")
    assert template_id in {t["jobTemplateId"] for t in listing["jobTemplates"]}
    server.cli("iot", "delete-job-template", "--job-template-id", template_id)
    proc = server.cli("iot", "describe-job-template", "--job-template-id", template_id, check=False)
    assert proc.returncode != 0 and "ResourceNotFoundException" in proc.stderr


# -- service layer in process: jobArn copying and inherited_members ---------------------------------------
# These drive JobTemplates directly on a fresh database of the session's backend, with job rows written
# straight into the table, so they do not depend on CreateThing / CreateJob being implemented.


def run_service(
    backends: Backend, tmp_path: Path, scenario: Callable[[JobTemplates, Database], Awaitable[None]]
) -> None:
    """Run ``scenario`` in one event loop (asyncpg connections belong to the loop that made them)."""

    async def main() -> None:
        db = Database(backends.new_database() or sqlite_url(tmp_path))
        try:
            await db.migrate()
            ctx = ServiceContext(db=db, clock=ManualClock(1_800_000_000.0), partition=Partition(REGION, ACCOUNT))
            await scenario(JobTemplates(ctx), db)
        finally:
            await db.close()

    asyncio.run(main())


async def insert_job(
    db: Database, job_id: str, *, document: str | None = DOC, source: str | None = None, **config: Any
) -> None:
    async with db.write() as conn:
        await conn.execute(
            insert(Job.__table__).values(
                job_id=job_id,
                status="IN_PROGRESS",
                target_selection="SNAPSHOT",
                targets=[],
                document=document,
                document_source=source,
                description="the source job",
                config=config,
                tags=[],
                created_at=0.0,
                last_updated_at=0.0,
            )
        )


SOURCE_JOB_CONFIG: dict[str, Any] = {
    "presignedUrlConfig": {"roleArn": ROLE, "expiresInSec": 900},
    "abortConfig": FULL_CONFIG["abortConfig"],
    "timeoutConfig": {"inProgressTimeoutInMinutes": 30},
    "jobExecutionsRetryConfig": {"criteriaList": [{"failureType": "TIMED_OUT", "numberOfRetries": 4}]},
    "schedulingConfig": {
        "startTime": "2027-02-01T00:00",
        "endBehavior": "CANCEL",
        "endTime": "2027-03-01T00:00",
        "maintenanceWindows": [{"startTime": "cron(30 1 ? * MON-FRI *)", "durationInMinutes": 90}],
    },
    "documentParameters": {"k": "v"},
    "destinationPackageVersions": [PKG.format(3)],
}


def test_service_template_from_job_copies_document_and_configuration(backends: Backend, tmp_path: Path) -> None:
    async def scenario(templates: JobTemplates, db: Database) -> None:
        await insert_job(db, "src", **SOURCE_JOB_CONFIG)
        await templates.create_job_template(
            {"jobTemplateId": "t1", "description": "from a job", "jobArn": job_arn("src")}
        )
        d = await templates.describe_job_template({"jobTemplateId": "t1"})
        assert d.pop("createdAt") == 1_800_000_000.0
        assert d == {
            "jobTemplateArn": template_arn("t1"),
            "jobTemplateId": "t1",
            "description": "from a job",
            "document": DOC,
            "presignedUrlConfig": SOURCE_JOB_CONFIG["presignedUrlConfig"],
            "abortConfig": SOURCE_JOB_CONFIG["abortConfig"],
            "timeoutConfig": SOURCE_JOB_CONFIG["timeoutConfig"],
            "jobExecutionsRetryConfig": SOURCE_JOB_CONFIG["jobExecutionsRetryConfig"],
            "maintenanceWindows": SOURCE_JOB_CONFIG["schedulingConfig"]["maintenanceWindows"],
            "destinationPackageVersions": [PKG.format(3)],
        }

    run_service(backends, tmp_path, scenario)


def test_service_template_from_job_request_members_win(backends: Backend, tmp_path: Path) -> None:
    async def scenario(templates: JobTemplates, db: Database) -> None:
        await insert_job(db, "src", document=None, source="https://s3.amazonaws.com/b/k", **SOURCE_JOB_CONFIG)
        await templates.create_job_template(
            {
                "jobTemplateId": "t2",
                "description": "d",
                "jobArn": job_arn("src"),
                "timeoutConfig": {"inProgressTimeoutInMinutes": 45},
                "maintenanceWindows": [{"startTime": "cron(0 0 ? * SUN *)", "durationInMinutes": 30}],
            }
        )
        d = await templates.describe_job_template({"jobTemplateId": "t2"})
        assert d["documentSource"] == "https://s3.amazonaws.com/b/k" and "document" not in d
        assert d["timeoutConfig"] == {"inProgressTimeoutInMinutes": 45}
        assert d["maintenanceWindows"] == [{"startTime": "cron(0 0 ? * SUN *)", "durationInMinutes": 30}]
        assert d["abortConfig"] == SOURCE_JOB_CONFIG["abortConfig"]
        # The job retries TIMED_OUT: overriding its timeout away still makes a valid template
        # (step timers time executions out without a job timeout).
        await templates.create_job_template(
            {"jobTemplateId": "t3", "description": "d", "jobArn": job_arn("src"), "timeoutConfig": {}}
        )
        d3 = await templates.describe_job_template({"jobTemplateId": "t3"})
        assert d3["jobExecutionsRetryConfig"] == SOURCE_JOB_CONFIG["jobExecutionsRetryConfig"]
        with pytest.raises(ResourceNotFound, match="nojob"):
            await templates.create_job_template({"jobTemplateId": "t4", "description": "d", "jobArn": job_arn("nojob")})

    run_service(backends, tmp_path, scenario)


def test_service_inherited_members(backends: Backend, tmp_path: Path) -> None:
    async def scenario(templates: JobTemplates, db: Database) -> None:
        await templates.create_job_template(
            {"jobTemplateId": "full", "description": "full template", "document": DOC, **FULL_CONFIG}
        )
        await templates.create_job_template(
            {"jobTemplateId": "bare", "description": "bare", "documentSource": "https://s3.amazonaws.com/b/k"}
        )
        async with db.read() as conn:
            full = await inherited_members(conn, PARTITION, template_arn("full"))
            bare = await inherited_members(conn, PARTITION, template_arn("bare"))
            errors: list[tuple[str, type[Exception]]] = [
                (template_arn("missing"), ResourceNotFound),
                (f"arn:aws:iot:{REGION}::jobtemplate/AWS-Nonexistent:1.0", ResourceNotFound),
                (f"arn:aws:iot:{REGION}::jobtemplate/AWS-Reboot:9.9", ResourceNotFound),
                (f"arn:aws:iot:{REGION}:210987654321:jobtemplate/full", InvalidRequest),
                (f"arn:aws:iot:eu-west-1:{ACCOUNT}:jobtemplate/full", InvalidRequest),
                (job_arn("full"), InvalidRequest),
                ("arn:nonsense", InvalidRequest),
            ]
            for arn, error in errors:
                with pytest.raises(error):
                    await inherited_members(conn, PARTITION, arn)
        assert full == {
            "document": DOC,
            "description": "full template",
            "presignedUrlConfig": FULL_CONFIG["presignedUrlConfig"],
            "jobExecutionsRolloutConfig": FULL_CONFIG["jobExecutionsRolloutConfig"],
            "abortConfig": FULL_CONFIG["abortConfig"],
            "timeoutConfig": FULL_CONFIG["timeoutConfig"],
            "jobExecutionsRetryConfig": FULL_CONFIG["jobExecutionsRetryConfig"],
            "schedulingConfig": {"maintenanceWindows": FULL_CONFIG["maintenanceWindows"]},
            "destinationPackageVersions": FULL_CONFIG["destinationPackageVersions"],
        }
        assert bare == {"documentSource": "https://s3.amazonaws.com/b/k", "description": "bare"}

    run_service(backends, tmp_path, scenario)


# -- CreateJobTemplate with jobArn through boto3 (depends on CreateThing and CreateJob) ---------------------


class TestTemplateFromJob:
    """A template copied from a job made through the public API; needs things.py and jobs.py."""

    @pytest.fixture
    def source_job(self, iot) -> str:  # type: ignore[no-untyped-def]
        thing = Fleet(iot).things(1)[0]
        job_id = unique("job")
        iot.create_job(
            jobId=job_id,
            targets=[thing_arn(thing)],
            document=DOC,
            description="the source job",
            presignedUrlConfig={"roleArn": ROLE, "expiresInSec": 900},
            abortConfig=FULL_CONFIG["abortConfig"],
            timeoutConfig={"inProgressTimeoutInMinutes": 30},
            jobExecutionsRetryConfig={"criteriaList": [{"failureType": "TIMED_OUT", "numberOfRetries": 4}]},
            schedulingConfig={
                "maintenanceWindows": [{"startTime": "cron(30 1 ? * MON-FRI *)", "durationInMinutes": 90}]
            },
        )
        return job_id

    def test_copies_document_and_configuration(self, iot, source_job: str) -> None:  # type: ignore[no-untyped-def]
        template_id = create_template(iot, jobArn=job_arn(source_job), description="from a job")
        d = described(iot, template_id)
        assert d["description"] == "from a job"
        assert d["document"] == DOC
        assert d["presignedUrlConfig"] == {"roleArn": ROLE, "expiresInSec": 900}
        assert d["abortConfig"] == FULL_CONFIG["abortConfig"]
        assert d["timeoutConfig"] == {"inProgressTimeoutInMinutes": 30}
        assert d["jobExecutionsRetryConfig"] == {"criteriaList": [{"failureType": "TIMED_OUT", "numberOfRetries": 4}]}
        assert d["maintenanceWindows"] == [{"startTime": "cron(30 1 ? * MON-FRI *)", "durationInMinutes": 90}]
        assert "documentSource" not in d and "jobExecutionsRolloutConfig" not in d

    def test_request_members_override_the_jobs(self, iot, source_job: str) -> None:  # type: ignore[no-untyped-def]
        template_id = create_template(
            iot,
            jobArn=job_arn(source_job),
            timeoutConfig={"inProgressTimeoutInMinutes": 45},
            destinationPackageVersions=[PKG.format(7)],
        )
        d = described(iot, template_id)
        assert d["timeoutConfig"] == {"inProgressTimeoutInMinutes": 45}
        assert d["destinationPackageVersions"] == [PKG.format(7)]
        assert d["abortConfig"] == FULL_CONFIG["abortConfig"]

    def test_the_timeout_can_be_overridden_away(self, iot, source_job: str) -> None:  # type: ignore[no-untyped-def]
        """The job retries TIMED_OUT; a template without its timeout is still valid (step timers)."""
        template_id = create_template(iot, jobArn=job_arn(source_job), timeoutConfig={})
        d = described(iot, template_id)
        assert d["jobExecutionsRetryConfig"] == {"criteriaList": [{"failureType": "TIMED_OUT", "numberOfRetries": 4}]}
        assert not d.get("timeoutConfig", {}).get("inProgressTimeoutInMinutes")


# -- CreateJob with jobTemplateArn (depends on fleetjobs/service/jobs.py) -----------------------------------


class TestCreateJobFromTemplate:
    """CreateJob inheriting from a custom template (JOBS_API.md §3.1 rule 6)."""

    def test_job_inherits_document_description_and_configuration(self, iot) -> None:  # type: ignore[no-untyped-def]
        # CreateJob checks that destinationPackageVersions exist.
        with contextlib.suppress(iot.exceptions.ConflictException):
            iot.create_package(packageName="fw")
        for version in ("1.0", "1.1"):
            with contextlib.suppress(iot.exceptions.ConflictException):
                iot.create_package_version(packageName="fw", versionName=version)
        template_id = create_template(iot, description="template description", **json.loads(json.dumps(FULL_CONFIG)))
        thing = Fleet(iot).things(1)[0]
        job_id = unique("job")
        out = iot.create_job(jobId=job_id, targets=[thing_arn(thing)], jobTemplateArn=template_arn(template_id))
        assert out["description"] == "template description"
        job = iot.describe_job(jobId=job_id)["job"]
        assert job["jobTemplateArn"] == template_arn(template_id)
        assert job["description"] == "template description"
        assert job["presignedUrlConfig"] == FULL_CONFIG["presignedUrlConfig"]
        assert job["jobExecutionsRolloutConfig"] == FULL_CONFIG["jobExecutionsRolloutConfig"]
        assert job["abortConfig"] == FULL_CONFIG["abortConfig"]
        assert job["timeoutConfig"] == FULL_CONFIG["timeoutConfig"]
        assert job["jobExecutionsRetryConfig"] == FULL_CONFIG["jobExecutionsRetryConfig"]
        assert job["schedulingConfig"]["maintenanceWindows"] == FULL_CONFIG["maintenanceWindows"]
        assert job["destinationPackageVersions"] == FULL_CONFIG["destinationPackageVersions"]
        assert iot.get_job_document(jobId=job_id)["document"] == DOC

    def test_request_members_override_the_template(self, iot) -> None:  # type: ignore[no-untyped-def]
        template_id = create_template(iot, description="tpl", timeoutConfig={"inProgressTimeoutInMinutes": 60})
        thing = Fleet(iot).things(1)[0]
        job_id = unique("job")
        iot.create_job(
            jobId=job_id,
            targets=[thing_arn(thing)],
            jobTemplateArn=template_arn(template_id),
            description="mine",
            timeoutConfig={"inProgressTimeoutInMinutes": 5},
        )
        job = iot.describe_job(jobId=job_id)["job"]
        assert job["description"] == "mine"
        assert job["timeoutConfig"] == {"inProgressTimeoutInMinutes": 5}

    def test_job_keeps_its_copy_after_the_template_is_deleted(self, iot) -> None:  # type: ignore[no-untyped-def]
        template_id = create_template(iot)
        thing = Fleet(iot).things(1)[0]
        job_id = unique("job")
        iot.create_job(jobId=job_id, targets=[thing_arn(thing)], jobTemplateArn=template_arn(template_id))
        iot.delete_job_template(jobTemplateId=template_id)
        assert iot.get_job_document(jobId=job_id)["document"] == DOC

    def test_unknown_template_is_not_found(self, iot) -> None:  # type: ignore[no-untyped-def]
        thing = Fleet(iot).things(1)[0]
        with pytest.raises(iot.exceptions.ResourceNotFoundException):
            iot.create_job(
                jobId=unique("job"), targets=[thing_arn(thing)], jobTemplateArn=template_arn(unique("missing"))
            )

    def test_an_unknown_managed_template_is_not_found(self, iot) -> None:  # type: ignore[no-untyped-def]
        thing = Fleet(iot).things(1)[0]
        with pytest.raises(iot.exceptions.ResourceNotFoundException):
            iot.create_job(
                jobId=unique("job"),
                targets=[thing_arn(thing)],
                jobTemplateArn=f"arn:aws:iot:{REGION}::jobtemplate/AWS-Teleport:1.0",
            )

    @pytest.mark.parametrize(
        "arn",
        [f"arn:aws:iot:{REGION}:210987654321:jobtemplate/x", f"arn:aws:iot:{REGION}:{ACCOUNT}:job/x"],
    )
    def test_foreign_or_non_template_arn_is_invalid(self, iot, arn: str) -> None:  # type: ignore[no-untyped-def]
        thing = Fleet(iot).things(1)[0]
        with pytest.raises(iot.exceptions.InvalidRequestException):
            iot.create_job(jobId=unique("job"), targets=[thing_arn(thing)], jobTemplateArn=arn)

    def test_document_parameters_are_refused_with_a_custom_template(self, iot) -> None:  # type: ignore[no-untyped-def]
        template_id = create_template(iot)
        thing = Fleet(iot).things(1)[0]
        with pytest.raises(iot.exceptions.InvalidRequestException, match="AWS managed templates"):
            iot.create_job(
                jobId=unique("job"),
                targets=[thing_arn(thing)],
                jobTemplateArn=template_arn(template_id),
                documentParameters={"k": "v"},
            )
