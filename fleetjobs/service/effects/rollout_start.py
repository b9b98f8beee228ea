"""A new job's first step, in the CreateJob transaction: executions at once, or targets queued.

A job whose rollout does not wait on the clock gets all its executions now; any other (staged,
scheduled, windowed, ending) has its targets queued for :mod:`fleetjobs.service.loops.rollout_engine`
and is due at its start time.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.domain.rollout import needs_engine, start_time_of
from fleetjobs.service.effects.targets import ResolvedTarget, fan_out
from fleetjobs.service.events import ROLLOUT_QUEUED
from fleetjobs.store.database import record_event
from fleetjobs.store.tables import JOBS


async def begin_rollout(
    conn: AsyncConnection, job_id: str, config: dict[str, Any], targets: list[ResolvedTarget], now: float
) -> int:
    """Bring a new job's executions into being: at once when nothing holds them back (returns
    how many), else queue the targets for the engine (returns 0)."""
    if not needs_engine(config):
        created = await fan_out(conn, job_id, targets, now)
        await conn.execute(
            update(JOBS).where(JOBS.c.job_id == job_id).values(n_queued=created, n_released=created, started_at=now)
        )
        return created
    await fan_out(conn, job_id, targets, now, into_queue=True)
    record_event(conn, ROLLOUT_QUEUED)
    start = start_time_of(config)
    await conn.execute(update(JOBS).where(JOBS.c.job_id == job_id).values(due_at=start if start is not None else now))
    return 0
