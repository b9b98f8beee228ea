"""Set-based execution status changes that keep ``jobProcessDetails`` counters exact.

Every status change of an execution goes through here, in the same transaction as the
change, so the counters on the job row never drift from the executions table (DescribeJob
then reads them in O(1) instead of counting 100,000 rows).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.domain import job_status
from fleetjobs.domain.execution_state import COUNTER_COLUMN, PENDING, REMOVED, TERMINAL
from fleetjobs.service.effects.event_switches import enabled
from fleetjobs.service.events import ExecutionEvent, JobEvent
from fleetjobs.store.database import record_event
from fleetjobs.store.sql import locked
from fleetjobs.store.tables import EXECUTIONS, JOBS


async def adjust_counters(conn: AsyncConnection, job_id: str, deltas: dict[str, int], now: float) -> None:
    """Add ``deltas`` (execution status -> change) to a job's counters."""
    values: dict[str, Any] = {}
    for status, delta in deltas.items():
        if delta:
            col = COUNTER_COLUMN[status]
            values[col] = JOBS.c[col] + delta
    if values:
        values["last_updated_at"] = now
        await conn.execute(update(JOBS).where(JOBS.c.job_id == job_id).values(**values))


async def move_executions(
    conn: AsyncConnection,
    where: ColumnElement[bool],
    to_status: str,
    now: float,
    *,
    from_statuses: frozenset[str] | set[str] = PENDING,
    extra: dict[str, Any] | None = None,
    complete: bool = True,
    event: str | None = None,
) -> dict[str, int]:
    """Move every execution matching ``where`` whose status is in ``from_statuses`` to ``to_status``.

    Returns the number moved per job.  On PostgreSQL the UPDATE ... RETURNING inside a CTE
    counts exactly the rows this transaction changed, even with concurrent writers; SQLite has
    a single writer (``BEGIN IMMEDIATE``), so counting first is equally exact there.

    With ``event`` (e.g. "canceled"), each moved execution also gets its
    ``$aws/events/jobExecution/<jobId>/<event>`` -- collected only while those events are on.
    """
    values: dict[str, Any] = {
        "status": to_status,
        "last_updated_at": now,
        "version_number": EXECUTIONS.c.version_number + 1,
        **(extra or {}),
    }
    if to_status in TERMINAL:
        values.setdefault("in_progress_deadline", None)
        values.setdefault("step_deadline", None)
        values.setdefault("timeout_at", None)
    moved: dict[str, dict[str, int]] = defaultdict(dict)
    dialect = conn.dialect.name
    if event is not None and not await enabled(conn, "JOB_EXECUTION"):
        event = None
    for from_status in sorted(set(from_statuses) - {to_status}):
        cond = and_(where, EXECUTIONS.c.status == from_status)
        if event is not None:
            # Each execution's own event: read the rows first (the single writer, or our row locks, keep them).
            q = select(EXECUTIONS.c.job_id, EXECUTIONS.c.thing_name, EXECUTIONS.c.status_details).where(cond)
            rows = (await conn.execute(locked(q, conn))).all()
            if rows:
                await conn.execute(update(EXECUTIONS).where(cond).values(**values))
            for r in rows:
                details = (extra or {}).get("status_details", r.status_details)
                record_event(conn, ExecutionEvent(r.job_id, r.thing_name, event, to_status, details))
                moved[r.job_id][from_status] = moved[r.job_id].get(from_status, 0) + 1
            continue
        if dialect == "postgresql":
            stmt = update(EXECUTIONS).where(cond).values(**values).returning(EXECUTIONS.c.job_id).cte("moved")
            counts = (await conn.execute(select(stmt.c.job_id, func.count()).group_by(stmt.c.job_id))).all()
        else:
            q = select(EXECUTIONS.c.job_id, func.count()).where(cond).group_by(EXECUTIONS.c.job_id)
            counts = (await conn.execute(q)).all()
            if counts:
                await conn.execute(update(EXECUTIONS).where(cond).values(**values))
        for job_id, n in counts:
            moved[job_id][from_status] = n
    totals: dict[str, int] = {}
    for job_id, by_status in moved.items():
        total = sum(by_status.values())
        deltas = {s: -n for s, n in by_status.items()}
        deltas[to_status] = deltas.get(to_status, 0) + total
        await adjust_counters(conn, job_id, deltas, now)
        totals[job_id] = total
    if totals and complete:
        await complete_finished_jobs(conn, list(totals), now)
    return totals


async def complete_finished_jobs(conn: AsyncConnection, job_ids: list[str], now: float) -> list[str]:
    """Snapshot jobs whose rollout is done and whose executions are all terminal become COMPLETED."""
    if not job_ids:
        return []
    cond = and_(
        JOBS.c.job_id.in_(job_ids),
        JOBS.c.status == job_status.IN_PROGRESS,
        JOBS.c.target_selection == "SNAPSHOT",
        JOBS.c.n_queued == 0,
        JOBS.c.n_in_progress == 0,
        JOBS.c.processing_targets.is_(None),
    )
    result = await conn.execute(
        update(JOBS)
        .where(cond)
        .values(status=job_status.COMPLETED, completed_at=now, last_updated_at=now)
        .returning(JOBS.c.job_id)
    )
    completed = [r[0] for r in result]
    for job_id in completed:
        record_event(conn, JobEvent(job_id, "completed"))
    return completed


async def remove_thing_executions(conn: AsyncConnection, thing_name: str, now: float) -> dict[str, int]:
    """A deleted thing is no longer a target: its pending executions become REMOVED."""
    return await move_executions(conn, EXECUTIONS.c.thing_name == thing_name, REMOVED, now, event="removed")
