"""Finishes DeleteJob in the background: a DELETION_IN_PROGRESS job's executions go in chunks, then its row.

Idempotent and safe to run from several instances at once; it is also what finishes a deletion
that a crashed process had started.  DeleteJob's commit wakes it (``DeletionRequested``).
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import delete, select

from fleetjobs.domain import job_status
from fleetjobs.domain.execution_state import PENDING
from fleetjobs.service.context import ServiceContext
from fleetjobs.service.effects.notices import notice_query
from fleetjobs.service.events import DeletionRequested, JobEvent, job_snapshot
from fleetjobs.store.database import record_event
from fleetjobs.store.tables import EXECUTIONS, JOB_TARGETS, JOBS

log = logging.getLogger("fleetjobs.purger")

DELETE_CHUNK = 5000


class JobPurger:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self._wakeup = asyncio.Event()
        ctx.events.wake_on(DeletionRequested, self._wakeup)

    async def purge(self) -> int:
        """Delete, in chunks, the executions and then the row of every DELETION_IN_PROGRESS job.

        Idempotent and safe to run from several instances at once; it is also what finishes a
        deletion that a crashed process had started.  Returns the number of jobs finished.
        """
        finished = 0
        now = self.ctx.clock.now()
        async with self.ctx.db.read() as conn:
            q = select(JOBS.c.job_id).where(JOBS.c.status == job_status.DELETION_IN_PROGRESS)
            job_ids: list[str] = list((await conn.execute(q)).scalars())
        for job_id in job_ids:
            while True:
                async with self.ctx.db.write() as conn:
                    ids = list(
                        (
                            await conn.execute(
                                select(EXECUTIONS.c.id).where(EXECUTIONS.c.job_id == job_id).limit(DELETE_CHUNK)
                            )
                        ).scalars()
                    )
                    # Things whose pending list loses an execution hear of it once it is gone.
                    if ids:
                        await notice_query(
                            conn,
                            select(EXECUTIONS.c.thing_name).where(
                                EXECUTIONS.c.id.in_(ids), EXECUTIONS.c.status.in_(PENDING)
                            ),
                            now,
                        )
                        await conn.execute(delete(EXECUTIONS).where(EXECUTIONS.c.id.in_(ids)))
                        continue
                    await conn.execute(delete(JOB_TARGETS).where(JOB_TARGETS.c.job_id == job_id))
                    gone = (
                        await conn.execute(
                            delete(JOBS)
                            .where(JOBS.c.job_id == job_id, JOBS.c.status == job_status.DELETION_IN_PROGRESS)
                            .returning(*JOBS.c)
                        )
                    ).first()
                    if gone is not None:
                        record_event(conn, JobEvent(job_id, "deleted", job_snapshot(gone)))
                    finished += 1
                    break
        return finished

    async def run(self, interval: float = 5.0) -> None:
        while True:
            try:
                await self.purge()
            except Exception:
                log.exception("job deletion sweep failed; will retry")
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=interval)
            except TimeoutError:
                pass
            self._wakeup.clear()
