"""Continuous jobs follow group membership (JOBS_API.md §4.11).

A thing that joins a target group (directly or through a nested group) of an IN_PROGRESS
continuous job gets an execution at once (the job's rollout rate applies only to the members
it started with); a thing that leaves every target of the job has its pending execution
REMOVED.  Called in the transaction that changes the membership (static groups, dynamic groups, deletions).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.domain import job_status
from fleetjobs.domain.arns import thing_targets
from fleetjobs.domain.execution_state import QUEUED, REMOVED
from fleetjobs.service.effects.execution_moves import adjust_counters, move_executions
from fleetjobs.service.effects.hierarchy import ancestor_chain
from fleetjobs.service.effects.notices import notice_things
from fleetjobs.store.rows import ThingRef
from fleetjobs.store.tables import EXECUTIONS, GROUP_MEMBERS, JOB_TARGETS, JOBS, ROLLOUT_QUEUE


async def _reach(conn: AsyncConnection, group_ids: list[int]) -> set[str]:
    """Names of the groups and all their ancestors: the group targets through which they are reached."""
    names: set[str] = set()
    for gid in group_ids:
        names.update(r.group_name for r in await ancestor_chain(conn, gid))
    return names


async def _continuous_jobs(conn: AsyncConnection, group_names: set[str]) -> list[Any]:
    if not group_names:
        return []
    q = (
        select(JOBS.c.job_id, JOBS.c.targets)
        .where(
            JOBS.c.target_selection == "CONTINUOUS",
            JOBS.c.status == job_status.IN_PROGRESS,
            JOBS.c.job_id.in_(select(JOB_TARGETS.c.job_id).where(JOB_TARGETS.c.group_name.in_(sorted(group_names)))),
        )
        .order_by(JOBS.c.job_id)
    )
    return list((await conn.execute(q)).all())


async def jobs_reaching(conn: AsyncConnection, group_ids: list[int]) -> list[Any]:
    """The IN_PROGRESS continuous jobs that reach things through these groups."""
    return await _continuous_jobs(conn, await _reach(conn, group_ids))


async def things_joined(conn: AsyncConnection, thing: ThingRef, group_ids: list[int], now: float) -> None:
    jobs = await _continuous_jobs(conn, await _reach(conn, group_ids))
    queued: list[str] = []
    for job in jobs:
        latest = (
            await conn.execute(
                select(EXECUTIONS.c.status, EXECUTIONS.c.execution_number)
                .where(EXECUTIONS.c.job_id == job.job_id, EXECUTIONS.c.thing_name == thing.thing_name)
                .order_by(EXECUTIONS.c.execution_number.desc())
                .limit(1)
            )
        ).first()
        if latest is not None and latest.status != REMOVED:
            continue  # pending already, or it has run this job
        await conn.execute(
            delete(ROLLOUT_QUEUE).where(
                ROLLOUT_QUEUE.c.job_id == job.job_id, ROLLOUT_QUEUE.c.thing_name == thing.thing_name
            )
        )
        await conn.execute(
            insert(EXECUTIONS).values(
                job_id=job.job_id,
                thing_name=thing.thing_name,
                execution_number=(latest.execution_number + 1) if latest is not None else 1,
                status=QUEUED,
                queued_at=now,
                last_updated_at=now,
                version_number=1,
                force_canceled=False,
                retry_attempt=0,
            )
        )
        await adjust_counters(conn, job.job_id, {QUEUED: 1}, now)
        queued.append(job.job_id)
    for job_id in queued:
        await notice_things(conn, [thing.thing_name], now, job_id=job_id)


async def things_left(conn: AsyncConnection, thing: ThingRef, group_ids: list[int], now: float) -> None:
    """Call after the membership rows are gone."""
    jobs = await _continuous_jobs(conn, await _reach(conn, group_ids))
    if not jobs:
        return
    remaining = [
        r[0] for r in await conn.execute(select(GROUP_MEMBERS.c.group_id).where(GROUP_MEMBERS.c.thing_id == thing.id))
    ]
    still = await _reach(conn, remaining)
    removed = False
    for job in jobs:
        target_names = {
            r[0] for r in await conn.execute(select(JOB_TARGETS.c.group_name).where(JOB_TARGETS.c.job_id == job.job_id))
        }
        if target_names & still or thing.thing_name in thing_targets(job.targets):
            continue
        await conn.execute(
            delete(ROLLOUT_QUEUE).where(
                ROLLOUT_QUEUE.c.job_id == job.job_id, ROLLOUT_QUEUE.c.thing_name == thing.thing_name
            )
        )
        moved = await move_executions(
            conn,
            and_(EXECUTIONS.c.job_id == job.job_id, EXECUTIONS.c.thing_name == thing.thing_name),
            REMOVED,
            now,
            event="removed",
        )
        removed = removed or bool(moved)
    if removed:
        await notice_things(conn, [thing.thing_name], now)
