"""A job's cancellation, whoever asks: CancelJob, an ``endTime`` with a cancel behaviour, an abort.

The job row's own change differs by asker (reason code, comment, force flag); what happens to its
executions does not, and is written here once: unreleased targets are dropped, QUEUED executions
(and with ``force`` IN_PROGRESS ones) are CANCELED with their events, and every thing of the job
hears of it.
"""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.domain.execution_state import CANCELED, IN_PROGRESS, QUEUED
from fleetjobs.service.effects.execution_moves import move_executions
from fleetjobs.service.effects.notices import notice_job
from fleetjobs.service.events import JobEvent
from fleetjobs.store.database import record_event
from fleetjobs.store.tables import EXECUTIONS, ROLLOUT_QUEUE


async def cancel_executions(conn: AsyncConnection, job_id: str, now: float, *, force: bool) -> None:
    """Call after the job row says CANCELED."""
    await conn.execute(delete(ROLLOUT_QUEUE).where(ROLLOUT_QUEUE.c.job_id == job_id))
    record_event(conn, JobEvent(job_id, "cancellation_in_progress"))
    await move_executions(
        conn,
        EXECUTIONS.c.job_id == job_id,
        CANCELED,
        now,
        from_statuses={QUEUED, IN_PROGRESS} if force else {QUEUED},
        extra={"force_canceled": True} if force else None,
        event="canceled",
    )
    record_event(conn, JobEvent(job_id, "canceled"))
    await notice_job(conn, job_id, now, next_always=True)
