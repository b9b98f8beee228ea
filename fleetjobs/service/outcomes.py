"""What follows an execution's outcome: retries (§4.9) and abort criteria (§3 AbortConfig).

Called in the transaction that recorded the outcome (a device's update, a timeout), before the
job's completion is decided, so a retry keeps its job open and an abort happens exactly at the
outcome that crossed the threshold.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.domain.execution_state import CANCELED, COUNTER_COLUMN, QUEUED
from fleetjobs.domain.rollout import abort_decision, may_retry
from fleetjobs.service.events import JobEvent
from fleetjobs.service.execution_moves import adjust_counters, move_executions
from fleetjobs.service.pending_notices import notice_job, notice_things
from fleetjobs.store.database import record_event
from fleetjobs.store.schema import Job, JobExecution, RolloutQueue, ServiceSetting

E = JobExecution.__table__
J = Job.__table__
Q = RolloutQueue.__table__
S = ServiceSetting.__table__

ABORT_REASON = "ABORTED_BY_ABORT_CONFIG"


def has_outcome_rules(config: dict[str, Any] | None) -> bool:
    cfg = config or {}
    return bool(cfg.get("abortConfig") or cfg.get("jobExecutionsRetryConfig"))


async def after_outcomes(
    conn: AsyncConnection, job_id: str, config: dict[str, Any] | None, rows: list[Any], now: float
) -> None:
    """``rows``: executions of ``job_id`` that have just become terminal (their new status on them)."""
    if not has_outcome_rules(config):
        return
    status = await conn.scalar(select(J.c.status).where(J.c.job_id == job_id))
    if status not in ("IN_PROGRESS", "SCHEDULED"):
        return
    retried = [r for r in rows if may_retry(config, r.status, r.failed_retries, r.timed_out_retries)]
    if retried:
        await conn.execute(
            insert(E),
            [
                {
                    "job_id": job_id,
                    "thing_name": r.thing_name,
                    "execution_number": r.execution_number + 1,
                    "status": QUEUED,
                    "queued_at": now,
                    "last_updated_at": now,
                    "version_number": 1,
                    "force_canceled": False,
                    "retry_attempt": r.retry_attempt + 1,
                    "failed_retries": r.failed_retries + (r.status == "FAILED"),
                    "timed_out_retries": r.timed_out_retries + (r.status == "TIMED_OUT"),
                }
                for r in retried
            ],
        )
        await adjust_counters(conn, job_id, {QUEUED: len(retried)}, now)
        await notice_things(conn, [r.thing_name for r in retried], now, job_id=job_id)
    counters = (
        await conn.execute(select(*(J.c[c] for c in COUNTER_COLUMN.values())).where(J.c.job_id == job_id))
    ).one()
    counts = {s: int(counters[i]) for i, s in enumerate(COUNTER_COLUMN)}
    decision = abort_decision(config, counts)
    if decision is not None:
        await abort_job(conn, job_id, decision.comment, now)


async def abort_job(conn: AsyncConnection, job_id: str, comment: str, now: float) -> None:
    """Abort: the job is CANCELED; queued executions (queued retries too) and unreleased targets are
    canceled, IN_PROGRESS ones are left to finish."""
    await conn.execute(
        update(J)
        .where(J.c.job_id == job_id)
        .values(
            status=CANCELED,
            reason_code=ABORT_REASON,
            comment=comment,
            processing_targets=None,
            due_at=None,
            last_updated_at=now,
        )
    )
    await conn.execute(delete(Q).where(Q.c.job_id == job_id))
    record_event(conn, JobEvent(job_id, "cancellation_in_progress"))
    await move_executions(conn, E.c.job_id == job_id, CANCELED, now, from_statuses={QUEUED}, event="canceled")
    record_event(conn, JobEvent(job_id, "canceled"))
    await notice_job(conn, job_id, now, next_always=True)


async def after_success(conn: AsyncConnection, config: dict[str, Any] | None, thing_name: str, now: float) -> None:
    """With versionUpdateByJobsConfig enabled, a SUCCEEDED execution of a job with
    destinationPackageVersions records them in the thing's reserved ``$package`` shadow
    (``$null``: the package is removed from it)."""
    arns = (config or {}).get("destinationPackageVersions")
    if not arns:
        return
    setting = await conn.scalar(select(S.c.value).where(S.c.name == "package_configuration"))
    switch = (setting or {}).get("versionUpdateByJobsConfig", setting or {})
    if not switch.get("enabled"):
        return
    from fleetjobs.service import packages, shadows
    from fleetjobs.service.job_documents import destination_refs

    reported: dict[str, Any] = {}
    for ref in destination_refs(arns):
        if ref.version == "$null":
            reported[ref.package] = None
            continue
        found = await packages.version_for_job(conn, ref.package, ref.version)
        version = (found or {}).get("versionName") or ref.version
        reported[ref.package] = {"version": version, "attributes": (found or {}).get("attributes") or {}}
    await shadows.update_reported(conn, thing_name, "$package", reported, now)
