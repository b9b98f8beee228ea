"""Continuous jobs follow group membership (JOBS_API.md §4.11).

A thing that joins a target group (directly or through a nested group) of an IN_PROGRESS
continuous job gets an execution at once (the job's rollout rate applies only to the members
it started with); a thing that leaves every target of the job has its pending execution
REMOVED.  Called by ``ThingGroups`` in the transaction that changes the membership.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.domain.execution_state import IN_PROGRESS, QUEUED, REMOVED
from fleetjobs.service.execution_moves import adjust_counters, move_executions
from fleetjobs.service.pending_notices import notice_things
from fleetjobs.service.registry_queries import ancestor_chain
from fleetjobs.store.schema import Job, JobExecution, JobTarget, RolloutQueue, ThingGroupMember

E = JobExecution.__table__
J = Job.__table__
JT = JobTarget.__table__
M = ThingGroupMember.__table__
Q = RolloutQueue.__table__


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
        select(J.c.job_id, J.c.targets)
        .where(
            J.c.target_selection == "CONTINUOUS",
            J.c.status == IN_PROGRESS,
            J.c.job_id.in_(select(JT.c.job_id).where(JT.c.group_name.in_(sorted(group_names)))),
        )
        .order_by(J.c.job_id)
    )
    return list((await conn.execute(q)).all())


async def jobs_reaching(conn: AsyncConnection, group_ids: list[int]) -> list[Any]:
    """The IN_PROGRESS continuous jobs that reach things through these groups."""
    return await _continuous_jobs(conn, await _reach(conn, group_ids))


async def things_joined(conn: AsyncConnection, thing: Any, group_ids: list[int], thing_arn: str, now: float) -> None:
    jobs = await _continuous_jobs(conn, await _reach(conn, group_ids))
    queued: list[str] = []
    for job in jobs:
        latest = (
            await conn.execute(
                select(E.c.status, E.c.execution_number)
                .where(E.c.job_id == job.job_id, E.c.thing_name == thing.thing_name)
                .order_by(E.c.execution_number.desc())
                .limit(1)
            )
        ).first()
        if latest is not None and latest.status != REMOVED:
            continue  # pending already, or it has run this job
        await conn.execute(delete(Q).where(Q.c.job_id == job.job_id, Q.c.thing_name == thing.thing_name))
        await conn.execute(
            insert(E).values(
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


async def things_left(conn: AsyncConnection, thing: Any, group_ids: list[int], thing_arn: str, now: float) -> None:
    """Call after the membership rows are gone."""
    jobs = await _continuous_jobs(conn, await _reach(conn, group_ids))
    if not jobs:
        return
    remaining = [r[0] for r in await conn.execute(select(M.c.group_id).where(M.c.thing_id == thing.id))]
    still = await _reach(conn, remaining)
    removed = False
    for job in jobs:
        target_names = {r[0] for r in await conn.execute(select(JT.c.group_name).where(JT.c.job_id == job.job_id))}
        if target_names & still or thing_arn in (job.targets or []):
            continue
        await conn.execute(delete(Q).where(Q.c.job_id == job.job_id, Q.c.thing_name == thing.thing_name))
        moved = await move_executions(
            conn, and_(E.c.job_id == job.job_id, E.c.thing_name == thing.thing_name), REMOVED, now, event="removed"
        )
        removed = removed or bool(moved)
    if removed:
        await notice_things(conn, [thing.thing_name], now)
