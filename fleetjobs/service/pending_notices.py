"""Durable notifications of pending-list changes the service (not a device request) makes.

A job created or released by a rollout, a cancel, a timeout, a retry, a thing removed: each
writes a notice in the transaction of the change.  Any instance's gateway takes notices under a
lease (``time.time()``-based: a lease protects against a dead *process*, which the injected
domain clock knows nothing of), publishes ``notify`` / ``notify-next`` and deletes them.  A crash
between taking and finishing leaves the notice to be taken again when its lease runs out: devices
may hear of a change twice, never not at all.

A job notice stands for every execution of a job in an id range and is worked through page by
page with a cursor, so announcing a 100,000-thing job writes one row, not 100,000.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, delete, insert, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.service.context import ServiceContext
from fleetjobs.service.events import PendingChanged
from fleetjobs.store.database import record_event
from fleetjobs.store.schema import JobExecution, PendingNotice

if TYPE_CHECKING:  # device_jobs -> executions -> here
    from fleetjobs.service.device_jobs import DeviceJobs

N = PendingNotice.__table__
E = JobExecution.__table__

LEASE_SECONDS = 30.0
JOB_PAGE = 500


class NoticesQueued:
    """Domain event: notices were committed; wake this instance's drain now rather than at its next poll."""


QUEUED = NoticesQueued()


async def notice_things(
    conn: AsyncConnection, things: Iterable[str], now: float, *, job_id: str | None = None, next_always: bool = True
) -> None:
    rows = [
        {"thing_name": t, "job_id": job_id, "next_always": next_always, "created_at": now}
        for t in dict.fromkeys(things)
    ]
    if rows:
        await conn.execute(insert(N), rows)
        record_event(conn, QUEUED)


async def notice_query(
    conn: AsyncConnection, thing_names: Select[Any], now: float, *, job_id: str | None = None, next_always: bool = True
) -> None:
    """Notices for the things a one-column ``SELECT thing_name ...`` yields, in one INSERT .. SELECT."""
    sub = thing_names.subquery()
    source = select(
        sub.c[0],
        literal(job_id, N.c.job_id.type),
        literal(next_always, N.c.next_always.type),
        literal(now, N.c.created_at.type),
    )
    await conn.execute(insert(N).from_select(["thing_name", "job_id", "next_always", "created_at"], source))
    record_event(conn, QUEUED)


async def notice_job(
    conn: AsyncConnection,
    job_id: str,
    now: float,
    *,
    after: int = 0,
    upto: int | None = None,
    next_always: bool = False,
) -> None:
    """Every execution of ``job_id`` with ``after < id <= upto`` (upto None: any) is to be announced."""
    await conn.execute(
        insert(N).values(job_id=job_id, cursor=after, upto=upto, next_always=next_always, created_at=now)
    )
    record_event(conn, QUEUED)


@dataclass
class NoticeBatch:
    changes: list[PendingChanged]
    thing_notice_ids: list[int] = field(default_factory=list)
    # job notice id -> the last execution id announced, or None when the job notice is finished
    job_cursors: dict[int, int | None] = field(default_factory=dict)
    # taken but left for the next batch (the batch was full): their lease is given back
    untouched: list[int] = field(default_factory=list)


class NoticeDrain:
    def __init__(self, ctx: ServiceContext, device: DeviceJobs, *, limit: int = 200, things: int = 1000) -> None:
        self.ctx = ctx
        self.device = device
        self.limit = limit
        self.things = things  # at most about this many things per batch, however the notices are made

    async def take(self) -> NoticeBatch | None:
        wall = time.time()
        async with self.ctx.db.read() as conn:  # most polls find nothing: no write lock for them
            any_due = await conn.scalar(
                select(N.c.id).where(or_(N.c.lease_until.is_(None), N.c.lease_until < wall)).limit(1)
            )
        if any_due is None:
            return None
        async with self.ctx.db.write() as conn:
            q = (
                select(N)
                .where(or_(N.c.lease_until.is_(None), N.c.lease_until < wall))
                .order_by(N.c.id)
                .limit(self.limit)
            )
            if conn.dialect.name == "postgresql":
                q = q.with_for_update(skip_locked=True)
            notices = (await conn.execute(q)).all()
            if not notices:
                return None
            await conn.execute(
                update(N).where(N.c.id.in_([n.id for n in notices])).values(lease_until=wall + LEASE_SECONDS)
            )
        batch = NoticeBatch([])
        # thing -> (notify-next always?, jobs whose reaching the head calls for notify-next)
        wanted: dict[str, tuple[bool, set[str]]] = {}

        def want(thing: str, always: bool, job_id: str | None) -> None:
            was_always, jobs = wanted.get(thing, (False, set()))
            if job_id is not None:
                jobs.add(job_id)
            wanted[thing] = (was_always or always, jobs)

        async with self.ctx.db.read() as conn:
            for n in notices:
                if len(wanted) >= self.things:
                    batch.untouched.append(n.id)
                    continue
                if n.thing_name is not None:
                    want(n.thing_name, n.next_always, n.job_id)
                    batch.thing_notice_ids.append(n.id)
                    continue
                q = select(E.c.id, E.c.thing_name).where(E.c.job_id == n.job_id, E.c.id > (n.cursor or 0))
                if n.upto is not None:
                    q = q.where(E.c.id <= n.upto)
                page = (await conn.execute(q.order_by(E.c.id).limit(JOB_PAGE))).all()
                for _, thing in page:
                    want(thing, n.next_always, n.job_id)
                batch.job_cursors[n.id] = page[-1].id if len(page) == JOB_PAGE else None
            views = await self.device.pending_views(conn, list(wanted))
        for thing, (always, jobs) in wanted.items():
            view = views[thing]
            head_job = view.execution["jobId"] if view.execution is not None else None
            batch.changes.append(PendingChanged(thing, view.listing, view.execution, True, always or head_job in jobs))
        return batch

    async def done(self, batch: NoticeBatch) -> None:
        async with self.ctx.db.write() as conn:
            if batch.untouched:
                await conn.execute(update(N).where(N.c.id.in_(batch.untouched)).values(lease_until=None))
            if batch.thing_notice_ids:
                await conn.execute(delete(N).where(N.c.id.in_(batch.thing_notice_ids)))
            for notice_id, cursor in batch.job_cursors.items():
                if cursor is None:
                    await conn.execute(delete(N).where(N.c.id == notice_id))
                else:
                    await conn.execute(update(N).where(N.c.id == notice_id).values(cursor=cursor, lease_until=None))
