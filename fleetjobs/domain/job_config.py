"""Rules of CreateJob / UpdateJob / CreateJobTemplate that the botocore model cannot express.

The API layer has already enforced every model constraint (lengths, patterns, enums, numeric
ranges, required members) before a service method runs, so nothing here repeats them; these
functions check the cross-member and documented-but-unmodelled rules of JOBS_API.md §3.1.
They are pure (no I/O, time passed in) so that the jobs service can run them on a request
*after* merging in a template's members, inside its transaction, and so that they can be tested
at every boundary without a server.

Every violation raises :class:`~fleetjobs.domain.errors.InvalidRequest`; AWS answers all of them
with ``InvalidRequestException`` (HTTP 400).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from fleetjobs.domain.cron import CronExpression
from fleetjobs.domain.errors import InvalidRequest

# -- limits (JOBS_API.md §3 scalar table, §3.1, §7) ------------------------------------------------

MAX_DOCUMENT_LENGTH = 32768
MAX_TARGETS = 100
MAX_DESTINATION_PACKAGE_VERSIONS = 25
MAX_TOTAL_RETRIES = 10
MIN_IN_PROGRESS_TIMEOUT_MINUTES = 1
MAX_IN_PROGRESS_TIMEOUT_MINUTES = 10080  # 7 days
INCREMENT_FACTOR_DECIMALS = 1
THRESHOLD_PERCENTAGE_DECIMALS = 2

MINUTE = 60.0
DAY = 86400.0
# "A year" / "two years" are taken as 365 / 730 days: AWS does not say how it counts them, and
# a fixed length keeps the rule independent of leap years.
SCHEDULE_MIN_LEAD = 30 * MINUTE
SCHEDULE_MAX_START_AHEAD = 365 * DAY
SCHEDULE_MAX_END_AHEAD = 730 * DAY
SCHEDULE_MIN_DURATION = 30 * MINUTE
SCHEDULE_MAX_DURATION = 730 * DAY

PRESIGNED_ROLE_REQUIRED = "presignedUrlConfig role ARN is required to generate an S3 presigned url in job document."

# Placeholders whose URL the service signs with presignedUrlConfig.roleArn (JOBS_API.md §6.1-6.3, 6.5d).
_PRESIGNED_PLACEHOLDER = re.compile(
    r"\$\{aws:iot:s3-presigned-url(?:-v1|-v2|-upload)?:"
    r"|\$\{aws:iot:package:[^}]*:artifact(?:-location)?:s3-presigned-url"
)
# arn:<partition>:iot:<region>::jobtemplate/<name>:<version> -- AWS managed templates have no account.
_MANAGED_TEMPLATE_ARN = re.compile(r"arn:aws[a-z-]*:iot:[a-z0-9-]*::jobtemplate/[^/:]+:[^/:]+")
# StringDateTime: "YYYY-MM-DDTHH:MM" in UTC; seconds, fractions and an explicit UTC suffix are tolerated.
_DATE_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?(?:[Zz]|[+-]00:?00)?")


# -- entry points ----------------------------------------------------------------------------------


def validate_job_request(req: Mapping[str, Any], now: float, *, has_template_document: bool = False) -> None:
    """Validate a CreateJob request (after any custom template's members were merged into it).

    ``has_template_document`` is for templates whose document is produced later (AWS managed
    templates): the request then need not carry ``document``/``documentSource`` itself.
    """
    _check_document_choice(req, required=not has_template_document)
    _check_document(req.get("document"))
    _check_targets(req.get("targets"))
    _check_document_parameters(req)
    _check_common_config(req)
    _check_presigned_role(req.get("document"), req.get("presignedUrlConfig"))
    _check_scheduling(req.get("schedulingConfig"), now)


def validate_job_update(req: Mapping[str, Any], *, current_config: Mapping[str, Any] | None = None) -> None:
    """Validate the mutable subset of an UpdateJob request.

    ``current_config`` is the job's stored configuration (CreateJob members, camelCase); when
    given, the request may not raise a failure type's ``numberOfRetries`` above it.
    """
    _check_common_config(req)
    if current_config is not None and req.get("jobExecutionsRetryConfig") is not None:
        _check_retries_not_raised(current_config.get("jobExecutionsRetryConfig"), req["jobExecutionsRetryConfig"])


def _retries_by_type(retry: Any) -> dict[str, int]:
    return {c.get("failureType"): int(c.get("numberOfRetries") or 0) for c in (retry or {}).get("criteriaList") or []}


def _check_retries_not_raised(current: Any, given: Any) -> None:
    """UpdateJob may lower or drop a failure type's retries, not raise them (the developer guide:
    the number of retries cannot be increased by updating the job); a failure type the job had no
    criterion for may be added."""
    before = _retries_by_type(current)
    for failure_type, n in _retries_by_type(given).items():
        if failure_type in before and n > before[failure_type]:
            raise InvalidRequest(
                f"UpdateJob cannot raise numberOfRetries for failureType {failure_type} "
                f"(from {before[failure_type]} to {n})."
            )


def validate_template_request(req: Mapping[str, Any]) -> None:
    """Validate a CreateJobTemplate request.

    A template takes its document from exactly one of ``document``, ``documentSource`` or
    ``jobArn`` (copying an existing job); the configuration rules are those of CreateJob, and
    a template carries bare ``maintenanceWindows`` instead of a ``schedulingConfig``.
    """
    if not req.get("description"):
        raise InvalidRequest("description is required for a job template.")
    given = [m for m in ("document", "documentSource", "jobArn") if req.get(m) is not None]
    if not given:
        raise InvalidRequest("A job template requires one of document, documentSource or jobArn.")
    if len(given) > 1:
        raise InvalidRequest(f"Specify only one of document, documentSource or jobArn (got {', '.join(given)}).")
    _check_document(req.get("document"))
    _check_common_config(req)
    _check_presigned_role(req.get("document"), req.get("presignedUrlConfig"))
    _check_maintenance_windows(req.get("maintenanceWindows"))


# -- helpers other modules use ---------------------------------------------------------------------


def is_managed_template_arn(arn: str) -> bool:
    """AWS managed template ARNs have an empty account and a ``:<version>`` suffix."""
    return bool(_MANAGED_TEMPLATE_ARN.fullmatch(arn))


def parse_schedule_time(value: Any, member: str = "startTime") -> float:
    """Parse a ``StringDateTime`` (``YYYY-MM-DDTHH:MM``, UTC) into epoch seconds.

    AWS documents minutes precision; seconds, fractions and a ``Z``/``+00:00`` suffix are
    accepted too because ISO-8601 writers produce them.  Other offsets are refused rather than
    silently converted: the API speaks UTC only.
    """
    m = _DATE_TIME.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise InvalidRequest(f"schedulingConfig.{member} '{value}' must have the format YYYY-MM-DDTHH:MM (UTC).")
    year, month, day, hour, minute = (int(g) for g in m.groups()[:5])
    second = int(m.group(6) or 0)
    try:
        when = dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)
    except ValueError:
        raise InvalidRequest(f"schedulingConfig.{member} '{value}' is not a valid date and time.") from None
    return when.timestamp()


def validate_cron_expression(expression: str) -> None:
    """Check a maintenance-window ``startTime`` cron expression.

    AWS does not document the dialect (JOBS_API.md §9 Q11); accepted are the AWS/EventBridge
    form ``cron(min hour day-of-month month day-of-week year)``, the same six fields bare, and
    classic five-field Unix cron.  The grammar lives in :mod:`fleetjobs.domain.cron` so that what
    is accepted here is exactly what the rollout scheduler can evaluate.
    """
    CronExpression.parse(expression)


# -- document, targets, parameters -----------------------------------------------------------------


def _check_document_choice(req: Mapping[str, Any], *, required: bool) -> None:
    has_doc = req.get("document") is not None
    has_source = req.get("documentSource") is not None
    if has_doc and has_source:
        raise InvalidRequest("Specify either document or documentSource, not both.")
    if required and not (has_doc or has_source):
        raise InvalidRequest("Either document or documentSource must be specified.")


def _check_document(document: Any) -> None:
    """Devices receive the document as a JSON object (the MQTT API embeds it as one)."""
    if document is None:
        return
    if not isinstance(document, str):
        raise InvalidRequest("The job document must be a string containing a JSON object.")
    if len(document) > MAX_DOCUMENT_LENGTH:
        raise InvalidRequest(f"The job document exceeds the maximum size of {MAX_DOCUMENT_LENGTH} characters.")
    try:
        parsed = json.loads(document)
    except ValueError:
        raise InvalidRequest("The job document is not valid JSON.") from None
    if not isinstance(parsed, dict):
        raise InvalidRequest("The job document must be a JSON object.")


def _check_targets(targets: Any) -> None:
    if not targets:
        raise InvalidRequest("targets must contain at least one thing or thing group ARN.")
    if len(targets) > MAX_TARGETS:
        raise InvalidRequest(f"A job can have at most {MAX_TARGETS} targets; {len(targets)} were given.")


def _check_document_parameters(req: Mapping[str, Any]) -> None:
    """documentParameters fill the ``${aws:iot:parameter:...}`` slots of AWS managed templates only."""
    if not req.get("documentParameters"):
        return
    arn = req.get("jobTemplateArn")
    if not arn or not is_managed_template_arn(arn):
        raise InvalidRequest(
            "documentParameters can only be used when creating jobs from AWS managed templates; "
            "they cannot be used with custom job templates or jobs created without a template."
        )


def _check_presigned_role(document: Any, presigned_url_config: Any) -> None:
    if not isinstance(document, str) or not _PRESIGNED_PLACEHOLDER.search(document):
        return
    if not (presigned_url_config or {}).get("roleArn"):
        raise InvalidRequest(PRESIGNED_ROLE_REQUIRED)


# -- rollout, abort, timeout, retry, package versions ----------------------------------------------


def _check_common_config(req: Mapping[str, Any]) -> None:
    _check_rollout(req.get("jobExecutionsRolloutConfig"))
    _check_abort(req.get("abortConfig"))
    _check_timeout(req.get("timeoutConfig"))
    _check_retry(req.get("jobExecutionsRetryConfig"))
    _check_package_versions(req.get("destinationPackageVersions"))


def _decimals(value: float) -> int:
    """Digits after the decimal point of the shortest text that round-trips the float (1.1 -> 1)."""
    try:
        exponent = Decimal(repr(float(value))).normalize().as_tuple().exponent
    except (InvalidOperation, ValueError, TypeError):
        return 99
    return max(0, -exponent) if isinstance(exponent, int) else 99


def _check_rollout(rollout: Any) -> None:
    if not rollout:
        return
    rate = rollout.get("exponentialRate")
    if rate is None:
        return
    factor = rate.get("incrementFactor")
    if factor is not None and _decimals(factor) > INCREMENT_FACTOR_DECIMALS:
        raise InvalidRequest(
            f"incrementFactor {factor} has too many decimal places; one digit after the decimal point "
            "is supported (for example 1.5, but not 1.55)."
        )
    criteria = rate.get("rateIncreaseCriteria") or {}
    set_members = [m for m in ("numberOfNotifiedThings", "numberOfSucceededThings") if criteria.get(m) is not None]
    if len(set_members) != 1:
        raise InvalidRequest(
            "rateIncreaseCriteria must specify exactly one of numberOfNotifiedThings or numberOfSucceededThings."
        )


def _check_abort(abort: Any) -> None:
    if not abort:
        return
    for criteria in abort.get("criteriaList") or []:
        pct = criteria.get("thresholdPercentage")
        if pct is None:
            continue
        if pct < 0:
            raise InvalidRequest(f"thresholdPercentage {pct} must be between 0 and 100.")
        if _decimals(pct) > THRESHOLD_PERCENTAGE_DECIMALS:
            raise InvalidRequest(
                f"thresholdPercentage {pct} has too many decimal places; up to two digits after the decimal "
                "point are supported (for example 10.99, but not 10.999)."
            )


def _check_timeout(timeout: Any) -> None:
    if not timeout:
        return
    minutes = timeout.get("inProgressTimeoutInMinutes")
    if minutes is None:
        return
    if not MIN_IN_PROGRESS_TIMEOUT_MINUTES <= minutes <= MAX_IN_PROGRESS_TIMEOUT_MINUTES:
        raise InvalidRequest(
            f"inProgressTimeoutInMinutes {minutes} is out of range; it must be between "
            f"{MIN_IN_PROGRESS_TIMEOUT_MINUTES} and {MAX_IN_PROGRESS_TIMEOUT_MINUTES} minutes (7 days)."
        )


def _check_retry(retry: Any) -> None:
    """Retry criteria on TIMED_OUT (or ALL) need no ``timeoutConfig``: the developer guide gives
    the job timeout as the precondition for timeout retries to *happen*, not as a rule of the
    request, and an execution can time out without one, on the step timer a device sets with
    ``stepTimeoutInMinutes`` (StartNextPendingJobExecution / UpdateJobExecution)."""
    if not retry:
        return
    criteria_list = retry.get("criteriaList") or []
    seen: set[str] = set()
    total = 0
    for criteria in criteria_list:
        failure_type = criteria.get("failureType")
        if failure_type in seen:
            raise InvalidRequest(f"jobExecutionsRetryConfig lists failureType {failure_type} more than once.")
        seen.add(failure_type)
        total += criteria.get("numberOfRetries") or 0
    if total > MAX_TOTAL_RETRIES:
        raise InvalidRequest(
            f"jobExecutionsRetryConfig allows {total} retries; at most {MAX_TOTAL_RETRIES} retries are allowed "
            "per job execution for all failure types combined."
        )


def _check_package_versions(versions: Any) -> None:
    if versions and len(versions) > MAX_DESTINATION_PACKAGE_VERSIONS:
        raise InvalidRequest(
            f"destinationPackageVersions can contain at most {MAX_DESTINATION_PACKAGE_VERSIONS} package version "
            f"ARNs; {len(versions)} were given."
        )


# -- scheduling ------------------------------------------------------------------------------------


def _check_scheduling(scheduling: Any, now: float) -> None:
    if not scheduling:
        return
    start_text = scheduling.get("startTime")
    end_text = scheduling.get("endTime")
    start = end = None
    if start_text is not None:
        start = parse_schedule_time(start_text, "startTime")
        if start < now + SCHEDULE_MIN_LEAD:
            raise InvalidRequest(
                f"schedulingConfig.startTime {start_text} must be at least 30 minutes after the current time."
            )
        if start > now + SCHEDULE_MAX_START_AHEAD:
            raise InvalidRequest(
                f"schedulingConfig.startTime {start_text} can be scheduled at most one year after the current time."
            )
    if end_text is not None:
        end = parse_schedule_time(end_text, "endTime")
        if end < now + SCHEDULE_MIN_LEAD:
            raise InvalidRequest(
                f"schedulingConfig.endTime {end_text} must be at least 30 minutes after the current time."
            )
        if end > now + SCHEDULE_MAX_END_AHEAD:
            raise InvalidRequest(
                f"schedulingConfig.endTime {end_text} can be scheduled at most two years after the current time."
            )
    if start is not None and end is not None:
        if end - start < SCHEDULE_MIN_DURATION:
            raise InvalidRequest("schedulingConfig.endTime must be at least 30 minutes after startTime.")
        # Already implied by the two bounds above; kept because AWS states it as a rule of its own.
        if end - start > SCHEDULE_MAX_DURATION:
            raise InvalidRequest("schedulingConfig.endTime can be at most two years after startTime.")
    # endBehavior without endTime: the model says it "does not apply"; accepted and ignored.
    _check_maintenance_windows(scheduling.get("maintenanceWindows"))


def _check_maintenance_windows(windows: Any) -> None:
    for window in windows or []:
        if not window.get("startTime"):
            raise InvalidRequest("A maintenance window requires a startTime (cron expression).")
        if window.get("durationInMinutes") is None:
            raise InvalidRequest("A maintenance window requires durationInMinutes.")
        validate_cron_expression(window["startTime"])
