"""Publishes the durable pending-list notices (:mod:`fleetjobs.service.effects.notices`).

Any instance's gateway takes notices under a lease (``time.time()``-based: a lease protects
against a dead *process*, which the injected domain clock knows nothing of), publishes ``notify``
/ ``notify-next`` and deletes them.  A crash between taking and finishing leaves the notice to be
taken again when its lease runs out: devices may hear of a change twice, never not at all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy import delete, insert, or_, select, update

from fleetjobs.service.context import ServiceContext
from fleetjobs.service.effects.device_views import DeviceViews
from fleetjobs.service.events import PendingChanged
from fleetjobs.store.sql import locked
from fleetjobs.store.tables import EXECUTIONS, PENDING_NOTICES

LEASE_SECONDS = 30.0
JOB_PAGE = 500
# A notify-next whose document cannot be built is tried again after 1 s, then 2, 4, ... up to this.
DOCUMENT_RETRY_MAX_SECONDS = 60.0


@dataclass
class NoticeBatch:
    changes: list[PendingChanged]
    thing_notice_ids: list[int] = field(default_factory=list)
    # job notice id -> the last execution id announced, or None when the job notice is finished
    job_cursors: dict[int, int | None] = field(default_factory=dict)
    # taken but left for the next batch (the batch was full): their lease is given back
    untouched: list[int] = field(default_factory=list)
    # (thing, job at its head) whose notify-next waits for a document that cannot be built now
    retry_next: list[tuple[str, str]] = field(default_factory=list)


class NoticeDrain:
    def __init__(self, ctx: ServiceContext, views: DeviceViews, *, limit: int = 200, things: int = 1000) -> None:
        self.ctx = ctx
        self.views = views
        self.limit = limit
        self.things = things  # at most about this many things per batch, however the notices are made
        # thing -> how many times running its notify-next has waited for its document: the backoff.
        # Per instance (another instance that takes the notice starts again at 1 s); an entry lives
        # only while that thing's document keeps failing.
        self._document_waits: dict[str, int] = {}

    async def take(self) -> NoticeBatch | None:
        wall = time.time()
        async with self.ctx.db.read() as conn:  # most polls find nothing: no write lock for them
            any_due = await conn.scalar(
                select(PENDING_NOTICES.c.id)
                .where(or_(PENDING_NOTICES.c.lease_until.is_(None), PENDING_NOTICES.c.lease_until < wall))
                .limit(1)
            )
        if any_due is None:
            return None
        async with self.ctx.db.write() as conn:
            q = (
                select(PENDING_NOTICES)
                .where(or_(PENDING_NOTICES.c.lease_until.is_(None), PENDING_NOTICES.c.lease_until < wall))
                .order_by(PENDING_NOTICES.c.id)
                .limit(self.limit)
            )
            notices = (await conn.execute(locked(q, conn, skip_locked=True))).all()
            if not notices:
                return None
            await conn.execute(
                update(PENDING_NOTICES)
                .where(PENDING_NOTICES.c.id.in_([n.id for n in notices]))
                .values(lease_until=wall + LEASE_SECONDS)
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
                q = select(EXECUTIONS.c.id, EXECUTIONS.c.thing_name).where(
                    EXECUTIONS.c.job_id == n.job_id, EXECUTIONS.c.id > (n.cursor or 0)
                )
                if n.upto is not None:
                    q = q.where(EXECUTIONS.c.id <= n.upto)
                page = (await conn.execute(q.order_by(EXECUTIONS.c.id).limit(JOB_PAGE))).all()
                for _, thing in page:
                    want(thing, n.next_always, n.job_id)
                batch.job_cursors[n.id] = page[-1].id if len(page) == JOB_PAGE else None
            views, undeliverable = await self.views.pending_views(conn, list(wanted))
        for thing, (always, jobs) in wanted.items():
            view = views[thing]
            if thing in undeliverable:
                # Its $next document cannot be built now: the listing goes out (notify), the
                # notify-next waits in a notice of its own, retried with backoff, so that it
                # neither holds back the batch nor spins; a notify-next without the document it
                # exists to carry would leave the device with a job it cannot run.
                waiting_job = undeliverable[thing]
                batch.changes.append(PendingChanged(thing, view.listing, None, True, False))
                if always or waiting_job in jobs:
                    batch.retry_next.append((thing, waiting_job))
                continue
            self._document_waits.pop(thing, None)
            head_job = view.execution["jobId"] if view.execution is not None else None
            next_wanted = always or head_job in jobs
            batch.changes.append(PendingChanged(thing, view.listing, view.execution, True, next_wanted))
        return batch

    def _retry_delay(self, thing: str) -> float:
        waits = self._document_waits.get(thing, 0)
        self._document_waits[thing] = waits + 1
        return min(DOCUMENT_RETRY_MAX_SECONDS, 2.0**waits)

    async def release(self, batch: NoticeBatch) -> None:
        """Give back a batch that was not (wholly) published: every notice stays, with its cursor,
        for the next take, of this instance or another."""
        ids = [*batch.untouched, *batch.thing_notice_ids, *batch.job_cursors]
        if not ids:
            return
        async with self.ctx.db.write() as conn:
            await conn.execute(update(PENDING_NOTICES).where(PENDING_NOTICES.c.id.in_(ids)).values(lease_until=None))

    async def done(self, batch: NoticeBatch) -> None:
        wall = time.time()
        async with self.ctx.db.write() as conn:
            if batch.retry_next:
                # Leased until the retry is due: no instance takes them before.
                await conn.execute(
                    insert(PENDING_NOTICES),
                    [
                        {
                            "thing_name": thing,
                            "job_id": job_id,
                            "next_always": True,
                            "created_at": self.ctx.clock.now(),
                            "lease_until": wall + self._retry_delay(thing),
                        }
                        for thing, job_id in batch.retry_next
                    ],
                )
            if batch.untouched:
                await conn.execute(
                    update(PENDING_NOTICES).where(PENDING_NOTICES.c.id.in_(batch.untouched)).values(lease_until=None)
                )
            if batch.thing_notice_ids:
                await conn.execute(delete(PENDING_NOTICES).where(PENDING_NOTICES.c.id.in_(batch.thing_notice_ids)))
            for notice_id, cursor in batch.job_cursors.items():
                if cursor is None:
                    await conn.execute(delete(PENDING_NOTICES).where(PENDING_NOTICES.c.id == notice_id))
                else:
                    await conn.execute(
                        update(PENDING_NOTICES)
                        .where(PENDING_NOTICES.c.id == notice_id)
                        .values(cursor=cursor, lease_until=None)
                    )
