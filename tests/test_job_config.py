"""Pure tests of fleetjobs.domain.job_config (JOBS_API.md §3.1): each rule at its boundary and just past it."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from fleetjobs.domain import job_config
from fleetjobs.domain.errors import InvalidRequest
from fleetjobs.domain.job_config import (
    PRESIGNED_ROLE_REQUIRED,
    is_managed_template_arn,
    parse_schedule_time,
    validate_cron_expression,
    validate_job_request,
    validate_job_update,
    validate_template_request,
)

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z, a whole minute
MIN = 60.0
DAY = 86400.0
DOC = json.dumps({"operation": "install"})
TARGET = "arn:aws:iot:us-east-1:123456789012:thing/t1"
ROLE = "arn:aws:iam::123456789012:role/JobsS3Read"
MANAGED_ARN = "arn:aws:iot:us-east-1::jobtemplate/AWS-Download-File:1.0"
CUSTOM_ARN = "arn:aws:iot:us-east-1:123456789012:jobtemplate/mine"
PKG = "arn:aws:iot:us-east-1:123456789012:package/p/version/v{}"


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M")


def job(**members: Any) -> dict[str, Any]:
    req: dict[str, Any] = {"jobId": "j", "targets": [TARGET], "document": DOC}
    req.update(members)
    return {k: v for k, v in req.items() if v is not None}


def template(**members: Any) -> dict[str, Any]:
    req: dict[str, Any] = {"jobTemplateId": "tpl", "description": "d", "document": DOC}
    req.update(members)
    return {k: v for k, v in req.items() if v is not None}


def ok_job(**members: Any) -> None:
    validate_job_request(job(**members), NOW)


def bad_job(match: str, **members: Any) -> None:
    with pytest.raises(InvalidRequest, match=match):
        validate_job_request(job(**members), NOW)


def rollout(factor: float = 2.0, **criteria: int) -> dict[str, Any]:
    return {
        "exponentialRate": {
            "baseRatePerMinute": 10,
            "incrementFactor": factor,
            "rateIncreaseCriteria": criteria if criteria else {"numberOfNotifiedThings": 10},
        }
    }


def abort(pct: float) -> dict[str, Any]:
    return {
        "criteriaList": [
            {"failureType": "FAILED", "action": "CANCEL", "thresholdPercentage": pct, "minNumberOfExecutedThings": 1}
        ]
    }


def retry(*criteria: tuple[str, int]) -> dict[str, Any]:
    return {"criteriaList": [{"failureType": f, "numberOfRetries": n} for f, n in criteria]}


TIMEOUT = {"inProgressTimeoutInMinutes": 60}


# -- document / documentSource ---------------------------------------------------------------------


def test_document_or_document_source_exactly_one() -> None:
    ok_job()
    ok_job(document=None, documentSource="https://s3.amazonaws.com/bkt/doc.json")
    bad_job("not both", documentSource="https://s3.amazonaws.com/bkt/doc.json")
    bad_job("Either document or documentSource", document=None)


def test_template_document_makes_the_document_optional_but_never_both() -> None:
    validate_job_request(job(document=None), NOW, has_template_document=True)
    validate_job_request(job(), NOW, has_template_document=True)
    with pytest.raises(InvalidRequest, match="not both"):
        validate_job_request(job(documentSource="https://s3.amazonaws.com/b/k"), NOW, has_template_document=True)


def padded_document(length: int) -> str:
    skeleton = json.dumps({"p": ""})
    doc = json.dumps({"p": "x" * (length - len(skeleton))})
    assert len(doc) == length
    return doc


def test_document_size_limit_boundary() -> None:
    ok_job(document=padded_document(32768))
    bad_job("maximum size of 32768", document=padded_document(32769))


@pytest.mark.parametrize("document", ["", "not json", "[1, 2]", '"text"', "42", "null", '{"a": 1'])
def test_document_must_be_a_json_object(document: str) -> None:
    bad_job("JSON", document=document)


def test_document_json_object_with_nested_values_is_accepted() -> None:
    ok_job(document=json.dumps({"steps": [{"action": {"name": "x"}}], "n": 1.5, "ok": True}))


# -- targets ---------------------------------------------------------------------------------------


def test_targets_boundary() -> None:
    ok_job(targets=[TARGET])
    ok_job(targets=[f"{TARGET}{i}" for i in range(100)])
    bad_job("at most 100 targets", targets=[f"{TARGET}{i}" for i in range(101)])
    bad_job("at least one", targets=[])
    with pytest.raises(InvalidRequest, match="at least one"):
        validate_job_request({"jobId": "j", "document": DOC}, NOW)


# -- documentParameters ----------------------------------------------------------------------------


def test_document_parameters_only_with_managed_template() -> None:
    params = {"downloadUrl": "https://example.com/f", "filePath": "/tmp/f"}
    validate_job_request(
        job(document=None, jobTemplateArn=MANAGED_ARN, documentParameters=params), NOW, has_template_document=True
    )
    bad_job("AWS managed templates", documentParameters=params)
    bad_job("AWS managed templates", jobTemplateArn=CUSTOM_ARN, documentParameters=params)
    ok_job(jobTemplateArn=CUSTOM_ARN, documentParameters={})


@pytest.mark.parametrize(
    ("arn", "managed"),
    [
        (MANAGED_ARN, True),
        ("arn:aws:iot:eu-west-1::jobtemplate/AWS-Reboot:1.0", True),
        ("arn:aws-cn:iot:cn-north-1::jobtemplate/AWS-Reboot:2.1", True),
        (CUSTOM_ARN, False),
        ("arn:aws:iot:us-east-1::jobtemplate/AWS-Reboot", False),
        ("arn:aws:iot:us-east-1::job/AWS-Reboot:1.0", False),
        ("arn:aws:iot:us-east-1:123456789012:jobtemplate/AWS-Reboot:1.0", False),
    ],
)
def test_is_managed_template_arn(arn: str, managed: bool) -> None:
    assert is_managed_template_arn(arn) is managed


# -- presigned URL role ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "placeholder",
    [
        "${aws:iot:s3-presigned-url:https://s3.us-east-1.amazonaws.com/bkt/fw.bin}",
        "${aws:iot:s3-presigned-url-v1:https://s3.amazonaws.com/bkt/fw.bin}",
        "${aws:iot:s3-presigned-url-v2:https://s3.amazonaws.com/bkt/fw.bin%3FversionId%3D1}",
        "${aws:iot:s3-presigned-url-upload:https://s3.us-east-1.amazonaws.com/bkt/${thingName}}",
        "${aws:iot:package:pkg:version:1.0:artifact-location:s3-presigned-url}",
    ],
)
def test_presigned_placeholder_requires_role_arn(placeholder: str) -> None:
    document = json.dumps({"url": placeholder})
    with pytest.raises(InvalidRequest) as e:
        validate_job_request(job(document=document), NOW)
    assert e.value.message == PRESIGNED_ROLE_REQUIRED
    with pytest.raises(InvalidRequest, match="presignedUrlConfig role ARN is required"):
        validate_job_request(job(document=document, presignedUrlConfig={"expiresInSec": 600}), NOW)
    validate_job_request(job(document=document, presignedUrlConfig={"roleArn": ROLE}), NOW)


def test_no_presigned_placeholder_needs_no_role() -> None:
    ok_job(document=json.dumps({"url": "https://s3.amazonaws.com/bkt/fw.bin", "note": "aws:iot:s3-presigned-url"}))
    ok_job(document=None, documentSource="https://s3.amazonaws.com/bkt/doc-with-placeholders.json")


def test_presigned_role_message_is_the_aws_text() -> None:
    assert PRESIGNED_ROLE_REQUIRED == (
        "presignedUrlConfig role ARN is required to generate an S3 presigned url in job document."
    )


# -- rollout ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [1.1, 1.5, 2, 2.0, 4.9, 5.0])
def test_increment_factor_one_decimal_accepted(factor: float) -> None:
    ok_job(jobExecutionsRolloutConfig=rollout(factor))


@pytest.mark.parametrize("factor", [1.55, 1.11, 4.99, 2.05])
def test_increment_factor_two_decimals_refused(factor: float) -> None:
    bad_job("one digit after the decimal point", jobExecutionsRolloutConfig=rollout(factor))


def test_rate_increase_criteria_exactly_one() -> None:
    ok_job(jobExecutionsRolloutConfig=rollout(numberOfNotifiedThings=5))
    ok_job(jobExecutionsRolloutConfig=rollout(numberOfSucceededThings=5))
    bad_job("exactly one", jobExecutionsRolloutConfig=rollout(numberOfNotifiedThings=5, numberOfSucceededThings=5))
    config = rollout()
    config["exponentialRate"]["rateIncreaseCriteria"] = {}
    bad_job("exactly one", jobExecutionsRolloutConfig=config)


def test_maximum_per_minute_alone_is_accepted() -> None:
    ok_job(jobExecutionsRolloutConfig={"maximumPerMinute": 1000})
    ok_job(jobExecutionsRolloutConfig={"maximumPerMinute": 5, **rollout()})


# -- abort -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("pct", [0, 0.01, 10, 10.9, 10.99, 99.99, 100, 100.0])
def test_threshold_percentage_two_decimals_accepted(pct: float) -> None:
    ok_job(abortConfig=abort(pct))


@pytest.mark.parametrize("pct", [10.999, 0.001, 99.995])
def test_threshold_percentage_three_decimals_refused(pct: float) -> None:
    bad_job("two digits after the decimal point", abortConfig=abort(pct))


def test_threshold_percentage_negative_refused() -> None:
    bad_job("between 0 and 100", abortConfig=abort(-0.01))


def test_every_abort_criterion_is_checked() -> None:
    config = abort(10)
    config["criteriaList"].append(
        {"failureType": "TIMED_OUT", "action": "CANCEL", "thresholdPercentage": 1.234, "minNumberOfExecutedThings": 1}
    )
    bad_job("two digits", abortConfig=config)


# -- timeout ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("minutes", [1, 10080])
def test_in_progress_timeout_bounds_accepted(minutes: int) -> None:
    ok_job(timeoutConfig={"inProgressTimeoutInMinutes": minutes})


@pytest.mark.parametrize("minutes", [0, -1, 10081])
def test_in_progress_timeout_out_of_range_refused(minutes: int) -> None:
    bad_job("between 1 and 10080", timeoutConfig={"inProgressTimeoutInMinutes": minutes})


def test_empty_timeout_config_is_accepted() -> None:
    ok_job(timeoutConfig={})


# -- retry -----------------------------------------------------------------------------------------


def test_retry_total_boundary() -> None:
    ok_job(jobExecutionsRetryConfig=retry(("FAILED", 10)))
    ok_job(jobExecutionsRetryConfig=retry(("FAILED", 5), ("TIMED_OUT", 5)), timeoutConfig=TIMEOUT)
    ok_job(jobExecutionsRetryConfig=retry(("FAILED", 0), ("TIMED_OUT", 10)), timeoutConfig=TIMEOUT)
    bad_job(
        "at most 10 retries", jobExecutionsRetryConfig=retry(("FAILED", 6), ("TIMED_OUT", 5)), timeoutConfig=TIMEOUT
    )
    bad_job("at most 10 retries", jobExecutionsRetryConfig=retry(("FAILED", 1), ("ALL", 10)), timeoutConfig=TIMEOUT)


@pytest.mark.parametrize("failure_type", ["FAILED", "TIMED_OUT", "ALL"])
def test_retry_duplicate_failure_type_refused(failure_type: str) -> None:
    bad_job(
        "more than once",
        jobExecutionsRetryConfig=retry((failure_type, 1), (failure_type, 1)),
        timeoutConfig=TIMEOUT,
    )


@pytest.mark.parametrize("failure_type", ["TIMED_OUT", "ALL"])
def test_retry_on_timeout_needs_no_timeout_config(failure_type: str) -> None:
    """A job timeout is the precondition for in-progress timeouts to happen, not a rule of the
    request: step timers (stepTimeoutInMinutes) time executions out without one."""
    ok_job(jobExecutionsRetryConfig=retry((failure_type, 2)), timeoutConfig=TIMEOUT)
    ok_job(jobExecutionsRetryConfig=retry((failure_type, 2)))
    ok_job(jobExecutionsRetryConfig=retry((failure_type, 2)), timeoutConfig={})


def test_retry_on_failed_needs_no_timeout() -> None:
    ok_job(jobExecutionsRetryConfig=retry(("FAILED", 3)))


# -- destinationPackageVersions --------------------------------------------------------------------


def test_destination_package_versions_boundary() -> None:
    ok_job(destinationPackageVersions=[PKG.format(i) for i in range(25)])
    bad_job("at most 25", destinationPackageVersions=[PKG.format(i) for i in range(26)])


# -- scheduling ------------------------------------------------------------------------------------


def sched(**members: Any) -> dict[str, Any]:
    return {"schedulingConfig": members}


def test_start_time_at_least_30_minutes_ahead() -> None:
    ok_job(**sched(startTime=iso(NOW + 30 * MIN)))
    bad_job("at least 30 minutes", **sched(startTime=iso(NOW + 29 * MIN)))
    bad_job("at least 30 minutes", **sched(startTime=iso(NOW - DAY)))


def test_start_time_at_most_one_year_ahead() -> None:
    ok_job(**sched(startTime=iso(NOW + 365 * DAY)))
    bad_job("at most one year", **sched(startTime=iso(NOW + 365 * DAY + MIN)))


def test_end_time_at_least_30_minutes_ahead() -> None:
    ok_job(**sched(endTime=iso(NOW + 30 * MIN)))
    bad_job("endTime .* at least 30 minutes", **sched(endTime=iso(NOW + 29 * MIN)))


def test_end_time_at_most_two_years_ahead() -> None:
    ok_job(**sched(endTime=iso(NOW + 730 * DAY)))
    bad_job("at most two years", **sched(endTime=iso(NOW + 730 * DAY + MIN)))


def test_end_minus_start_at_least_30_minutes() -> None:
    start = NOW + DAY
    ok_job(**sched(startTime=iso(start), endTime=iso(start + 30 * MIN)))
    bad_job("at least 30 minutes after startTime", **sched(startTime=iso(start), endTime=iso(start + 29 * MIN)))
    bad_job("at least 30 minutes after startTime", **sched(startTime=iso(start), endTime=iso(start - 60 * MIN)))


def test_longest_schedule_is_accepted() -> None:
    ok_job(**sched(startTime=iso(NOW + 30 * MIN), endTime=iso(NOW + 730 * DAY)))


def test_end_behavior_only_with_end_time() -> None:
    ok_job(**sched(endTime=iso(NOW + DAY), endBehavior="CANCEL"))
    ok_job(**sched(startTime=iso(NOW + DAY), endTime=iso(NOW + 2 * DAY), endBehavior="FORCE_CANCEL"))
    ok_job(**sched(startTime=iso(NOW + DAY), endBehavior="STOP_ROLLOUT"))  # "does not apply" without endTime


@pytest.mark.parametrize(
    "text",
    [
        "2027-01-15T09:00",
        "2027-01-15T09:00:00",
        "2027-01-15T09:00Z",
        "2027-01-15T09:00:00Z",
        "2027-01-15T09:00:00.000Z",
    ],
)
def test_schedule_time_formats_accepted(text: str) -> None:
    assert parse_schedule_time(text) == dt.datetime(2027, 1, 15, 9, 0, tzinfo=dt.UTC).timestamp()
    ok_job(**sched(startTime=text))


def test_schedule_time_utc_offset_spellings() -> None:
    expected = dt.datetime(2027, 1, 15, 9, 0, tzinfo=dt.UTC).timestamp()
    assert parse_schedule_time("2027-01-15T09:00+00:00") == expected
    assert parse_schedule_time("2027-01-15T09:00:30") == expected + 30


@pytest.mark.parametrize(
    "text",
    [
        "2027-01-15",
        "2027-01-15 09:00",
        "2027-01-15T9:00",
        "2027-02-30T09:00",
        "2027-01-15T24:00",
        "2027-01-15T09:60",
        "2027-01-15T09:00+01:00",
        "1800000000",
        "tomorrow",
        "",
    ],
)
def test_schedule_time_bad_formats_refused(text: str) -> None:
    with pytest.raises(InvalidRequest, match="startTime"):
        parse_schedule_time(text)
    bad_job("startTime", **sched(startTime=text))


def test_scheduling_maintenance_windows_are_checked() -> None:
    window = {"startTime": "cron(0 2 ? * SUN *)", "durationInMinutes": 60}
    ok_job(**sched(startTime=iso(NOW + DAY), maintenanceWindows=[window]))
    bad_job(
        "invalid hours", **sched(maintenanceWindows=[{"startTime": "cron(0 25 ? * SUN *)", "durationInMinutes": 60}])
    )
    bad_job("requires a startTime", **sched(maintenanceWindows=[{"durationInMinutes": 60}]))
    bad_job("requires durationInMinutes", **sched(maintenanceWindows=[{"startTime": "cron(0 2 ? * SUN *)"}]))


# -- cron ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    [
        "cron(0 0 ? * MON *)",
        "cron(0 2 ? * SUN *)",
        "cron(30 23 * * ? *)",
        "cron(0/15 8-17 ? * MON-FRI *)",
        "cron(*/5 * ? * 2,4,6 2027)",
        "cron(0 0 L * ? *)",
        "cron(0 0 15W * ? *)",
        "cron(0 0 LW * ? 2027-2030)",
        "cron(0 0 ? * 6L *)",
        "cron(0 0 ? * 2#1 *)",
        "cron(0 0 ? JAN,jul MON#2 *)",
        "CRON(59 23 31 12 ? 2199)",
        "0 0 ? * MON *",
        "0 2 * * 0",
        "*/10 1-5 1,15 * 1-5",
        "0 0 * * 7",
        "  cron(0 0 ? * MON *)  ",
    ],
)
def test_cron_accepted(expression: str) -> None:
    validate_cron_expression(expression)


@pytest.mark.parametrize(
    "expression",
    [
        "",
        "daily",
        "cron()",
        "cron(0 0 * * ?)",  # the AWS form has six fields
        "cron(0 0 ? * MON * 1)",
        "0 0 *",
        "cron(60 0 ? * MON *)",
        "cron(0 24 ? * MON *)",
        "cron(0 0 32 * ? *)",
        "cron(0 0 0 * ? *)",
        "cron(0 0 ? 13 MON *)",
        "cron(0 0 ? * 8 *)",
        "cron(0 0 ? * 0 *)",  # AWS day-of-week is 1-7
        "cron(0 0 ? * FUN *)",
        "cron(0 0 ? * MON 1969)",
        "cron(? 0 ? * MON *)",
        "cron(0 0 ? * ? *)",
        "cron(0/0 0 ? * MON *)",
        "cron(0/x 0 ? * MON *)",
        "cron(10-5 0 ? * MON *)",
        "cron(0 0 ? * MON#6 *)",
        "cron(0 0 32W * ? *)",
        "cron(1,,2 0 ? * MON *)",
        "rate(5 minutes)",
        "0 0 * * 8",
    ],
)
def test_cron_refused(expression: str) -> None:
    with pytest.raises(InvalidRequest, match="Maintenance window startTime"):
        validate_cron_expression(expression)


# -- UpdateJob -------------------------------------------------------------------------------------


def test_update_needs_no_document_or_targets() -> None:
    validate_job_update({"jobId": "j"})
    validate_job_update({"jobId": "j", "description": "new"})


def test_update_checks_the_mutable_configuration() -> None:
    validate_job_update({"jobId": "j", "jobExecutionsRolloutConfig": rollout(1.5), "abortConfig": abort(10.99)})
    for bad in (
        {"jobExecutionsRolloutConfig": rollout(1.55)},
        {"jobExecutionsRolloutConfig": rollout(numberOfNotifiedThings=1, numberOfSucceededThings=1)},
        {"abortConfig": abort(10.999)},
        {"timeoutConfig": {"inProgressTimeoutInMinutes": 10081}},
        {"jobExecutionsRetryConfig": retry(("FAILED", 6), ("TIMED_OUT", 5)), "timeoutConfig": TIMEOUT},
        {"jobExecutionsRetryConfig": retry(("FAILED", 1), ("FAILED", 1))},
    ):
        with pytest.raises(InvalidRequest):
            validate_job_update({"jobId": "j", **bad})
    validate_job_update({"jobId": "j", "timeoutConfig": {"inProgressTimeoutInMinutes": 10080}})


def test_update_retry_on_timeout_needs_no_timeout() -> None:
    update = {"jobId": "j", "jobExecutionsRetryConfig": retry(("TIMED_OUT", 2))}
    validate_job_update(update)
    retrying = {"jobExecutionsRetryConfig": retry(("TIMED_OUT", 2))}
    validate_job_update(update, current_config={"timeoutConfig": TIMEOUT, **retrying})
    validate_job_update({**update, "timeoutConfig": TIMEOUT}, current_config=retrying)
    # Neither the job nor the request has a timeout: accepted all the same (step timers).
    validate_job_update(update, current_config={})
    validate_job_update({**update, "timeoutConfig": {}})


# -- CreateJobTemplate -----------------------------------------------------------------------------


def test_template_requires_description() -> None:
    validate_template_request(template())
    with pytest.raises(InvalidRequest, match="description"):
        validate_template_request(template(description=None))


@pytest.mark.parametrize(
    "source",
    [
        {"document": DOC},
        {"documentSource": "https://s3.amazonaws.com/bkt/doc.json"},
        {"jobArn": "arn:aws:iot:us-east-1:123456789012:job/j1"},
    ],
)
def test_template_takes_exactly_one_document_source(source: dict[str, str]) -> None:
    validate_template_request({"jobTemplateId": "tpl", "description": "d", **source})


def test_template_document_source_errors() -> None:
    with pytest.raises(InvalidRequest, match="requires one of"):
        validate_template_request(template(document=None))
    with pytest.raises(InvalidRequest, match="only one"):
        validate_template_request(template(documentSource="https://s3.amazonaws.com/b/k"))
    with pytest.raises(InvalidRequest, match="only one"):
        validate_template_request(template(jobArn="arn:aws:iot:us-east-1:123456789012:job/j1"))
    with pytest.raises(InvalidRequest, match="JSON object"):
        validate_template_request(template(document="[]"))
    with pytest.raises(InvalidRequest, match="maximum size"):
        validate_template_request(template(document=padded_document(32769)))
    validate_template_request(template(document=padded_document(32768)))


def test_template_config_rules_are_those_of_create_job() -> None:
    validate_template_request(
        template(
            jobExecutionsRolloutConfig=rollout(1.5),
            abortConfig=abort(10.99),
            timeoutConfig={"inProgressTimeoutInMinutes": 10080},
            jobExecutionsRetryConfig=retry(("FAILED", 5), ("TIMED_OUT", 5)),
            maintenanceWindows=[{"startTime": "cron(0 2 ? * SUN *)", "durationInMinutes": 1430}],
            destinationPackageVersions=[PKG.format(i) for i in range(25)],
        )
    )
    for bad, match in (
        ({"jobExecutionsRolloutConfig": rollout(1.55)}, "one digit"),
        ({"abortConfig": abort(10.999)}, "two digits"),
        ({"timeoutConfig": {"inProgressTimeoutInMinutes": 0}}, "between 1 and 10080"),
        ({"jobExecutionsRetryConfig": retry(("FAILED", 11))}, "at most 10 retries"),
        ({"destinationPackageVersions": [PKG.format(i) for i in range(26)]}, "at most 25"),
        ({"maintenanceWindows": [{"startTime": "every sunday", "durationInMinutes": 60}]}, "cron"),
        ({"maintenanceWindows": [{"startTime": "cron(0 2 ? * SUN *)"}]}, "durationInMinutes"),
        ({"document": json.dumps({"u": "${aws:iot:s3-presigned-url:https://s3.amazonaws.com/b/k}"})}, "role ARN"),
    ):
        with pytest.raises(InvalidRequest, match=match):
            validate_template_request(template(**bad))


def test_template_retry_on_timeout_needs_no_timeout() -> None:
    validate_template_request(template(jobExecutionsRetryConfig=retry(("TIMED_OUT", 1))))
    validate_template_request(template(jobExecutionsRetryConfig=retry(("ALL", 3)), timeoutConfig={}))


def test_template_presigned_document_with_role_is_accepted() -> None:
    document = json.dumps({"u": "${aws:iot:s3-presigned-url:https://s3.amazonaws.com/b/k}"})
    validate_template_request(template(document=document, presignedUrlConfig={"roleArn": ROLE, "expiresInSec": 60}))


def test_validators_are_pure() -> None:
    """No member is added, removed or normalised: the service stores the request as given."""
    req = job(
        schedulingConfig={"startTime": iso(NOW + DAY), "endTime": iso(NOW + 2 * DAY)},
        jobExecutionsRetryConfig=retry(("FAILED", 1)),
    )
    before = json.dumps(req, sort_keys=True)
    validate_job_request(req, NOW)
    assert json.dumps(req, sort_keys=True) == before
    assert job_config.MAX_TARGETS == 100


def test_update_cannot_raise_the_number_of_retries() -> None:
    current = {"jobExecutionsRetryConfig": retry(("FAILED", 2))}
    validate_job_update({"jobId": "j", "jobExecutionsRetryConfig": retry(("FAILED", 1))}, current_config=current)
    validate_job_update({"jobId": "j", "jobExecutionsRetryConfig": retry(("FAILED", 2))}, current_config=current)
    with pytest.raises(InvalidRequest, match="cannot raise numberOfRetries"):
        validate_job_update({"jobId": "j", "jobExecutionsRetryConfig": retry(("FAILED", 5))}, current_config=current)
    # A failure type the job had no criterion for may be added.
    validate_job_update({"jobId": "j", "jobExecutionsRetryConfig": retry(("REJECTED", 1))}, current_config={})
