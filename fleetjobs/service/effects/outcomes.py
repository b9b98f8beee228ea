"""What follows an execution's outcome: retries (§4.9) and abort criteria (§3 AbortConfig).

Called in the transaction that recorded the outcome (a device's update, a timeout), before the
job's completion is decided, so a retry keeps its job open and an abort happens exactly at the
outcome that crossed the threshold.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.domain import job_status
from fleetjobs.domain.execution_state import COUNTER_COLUMN, FAILED, QUEUED, TIMED_OUT
from fleetjobs.domain.rollout import abort_decision, may_retry
from fleetjobs.domain.shadow_state import PACKAGE_SHADOW
from fleetjobs.service.effects.cancellation import cancel_executions
from fleetjobs.service.effects.execution_moves import adjust_counters
from fleetjobs.service.effects.job_documents import destination_refs
from fleetjobs.service.effects.notices import notice_things
from fleetjobs.service.effects.package_versions import package_configuration, version_for_job
from fleetjobs.service.effects.shadow_writes import update_reported
from fleetjobs.store.tables import EXECUTIONS, JOBS

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
    status: str | None = await conn.scalar(select(JOBS.c.status).where(JOBS.c.job_id == job_id))
    if status is None or not job_status.is_active(status):
        return
    retried = [r for r in rows if may_retry(config, r.status, r.failed_retries, r.timed_out_retries)]
    if retried:
        await conn.execute(
            insert(EXECUTIONS),
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
                    "failed_retries": r.failed_retries + (r.status == FAILED),
                    "timed_out_retries": r.timed_out_retries + (r.status == TIMED_OUT),
                }
                for r in retried
            ],
        )
        await adjust_counters(conn, job_id, {QUEUED: len(retried)}, now)
        await notice_things(conn, [r.thing_name for r in retried], now, job_id=job_id)
    counters = (
        await conn.execute(select(*(JOBS.c[c] for c in COUNTER_COLUMN.values())).where(JOBS.c.job_id == job_id))
    ).one()
    counts = {s: int(counters[i]) for i, s in enumerate(COUNTER_COLUMN)}
    decision = abort_decision(config, counts)
    if decision is not None:
        await abort_job(conn, job_id, decision.comment, now)


async def abort_job(conn: AsyncConnection, job_id: str, comment: str, now: float) -> None:
    """Abort: the job is CANCELED; queued executions (queued retries too) and unreleased targets are
    canceled, IN_PROGRESS ones are left to finish."""
    await conn.execute(
        update(JOBS)
        .where(JOBS.c.job_id == job_id)
        .values(
            status=job_status.CANCELED,
            reason_code=ABORT_REASON,
            comment=comment,
            processing_targets=None,
            due_at=None,
            last_updated_at=now,
        )
    )
    await cancel_executions(conn, job_id, now, force=False)


async def after_success(conn: AsyncConnection, config: dict[str, Any] | None, thing_name: str, now: float) -> None:
    """With versionUpdateByJobsConfig enabled, a SUCCEEDED execution of a job with
    destinationPackageVersions records them in the thing's reserved ``$package`` shadow
    (``$null``: the package is removed from it)."""
    arns = (config or {}).get("destinationPackageVersions")
    if not arns:
        return
    setting = await package_configuration(conn)
    switch = setting.get("versionUpdateByJobsConfig", setting)
    if not switch.get("enabled"):
        return

    reported: dict[str, Any] = {}
    for ref in destination_refs(arns):
        if ref.version == "$null":
            reported[ref.package] = None
            continue
        found = await version_for_job(conn, ref.package, ref.version)
        version = (found or {}).get("versionName") or ref.version
        reported[ref.package] = {"version": version, "attributes": (found or {}).get("attributes") or {}}
    await update_reported(conn, thing_name, PACKAGE_SHADOW, reported, now)
