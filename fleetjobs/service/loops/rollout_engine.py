"""The rollout engine: the clock-driven half of jobs (JOBS_API.md §4.1, §4.7-§4.11).

Every piece of due work is a row in the database, claimed in a write transaction (PostgreSQL:
``FOR UPDATE SKIP LOCKED``), so any number of instances share it with no leader, each piece is
done once, and a dead instance's work is simply picked up by the next pass of another:

* jobs whose ``due_at`` has come: start a SCHEDULED job, release the next executions of a staged
  rollout (a credit account on the job row, see ``domain.rollout``), open or close a maintenance
  window, apply ``endTime``;
* IN_PROGRESS executions whose ``timeout_at`` has come: TIMED_OUT, then retries and abort.

Time comes from the injected clock only; ``tick`` does everything due "now", so a test can run
an hour of rollout by moving a manual clock and ticking.
"""

from __future__ import annotations

import asyncio
import logging
import math
from types import SimpleNamespace
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.domain import job_status
from fleetjobs.domain.cron import next_window_start, open_window_end
from fleetjobs.domain.execution_state import IN_PROGRESS, QUEUED, TIMED_OUT
from fleetjobs.domain.rollout import (
    REEVALUATE_SECONDS,
    RolloutConfig,
    accrue,
    end_time_of,
    seconds_until_next,
    start_time_of,
    windows_of,
)
from fleetjobs.domain.timers import earliest
from fleetjobs.service.context import ServiceContext
from fleetjobs.service.effects.cancellation import cancel_executions
from fleetjobs.service.effects.execution_moves import complete_finished_jobs, move_executions
from fleetjobs.service.effects.notices import notice_job, notice_things
from fleetjobs.service.effects.outcomes import after_outcomes
from fleetjobs.service.events import ExecutionEvent, RolloutQueued
from fleetjobs.store.database import record_event
from fleetjobs.store.sql import locked
from fleetjobs.store.tables import EXECUTIONS, JOBS, ROLLOUT_QUEUE

log = logging.getLogger("fleetjobs.rollout")


# At most this many executions per job per pass: one transaction stays short whatever the rate.
RELEASE_BATCH = 2000
# A staged rollout is looked at no more often than this (releases then come in small batches).
MIN_TICK_SECONDS = 0.1
TIMEOUT_BATCH = 1000
JOBS_PER_PASS = 20


class RolloutEngine:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.wakeup = asyncio.Event()
        ctx.events.wake_on(RolloutQueued, self.wakeup)
        # One pass at a time per process: a tick asked for (the manual clock's) waits for the one
        # under way instead of skipping the rows that one has locked and answering too early.
        self._ticking = asyncio.Lock()

    # -- the passes ------------------------------------------------------------------------------------

    async def tick(self) -> int:
        """Do everything due now; returns how much was done (0: nothing was due)."""
        done = 0
        async with self._ticking:
            while True:
                jobs_due, timeouts_due = await self._due()
                if not (jobs_due or timeouts_due):
                    return done
                n = (await self._due_jobs_pass() if jobs_due else 0) + (
                    await self._timeouts_pass() if timeouts_due else 0
                )
                done += n
                if n == 0:
                    return done

    async def run(self, longest: float = 0.5) -> None:
        """Sleep until the earliest due time the database knows of, but at most ``longest`` (other
        instances add work too), or until this instance queues some.  Looking costs a read, so an
        idle instance costs next to nothing and takes no write lock."""
        while True:
            delay = longest
            try:
                await self.tick()
                next_at = await self._next_due_at()
                if next_at is not None:
                    delay = min(longest, max(0.01, next_at - self.ctx.clock.now()))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("rollout pass failed; will retry")
            self.wakeup.clear()
            try:
                await asyncio.wait_for(self.wakeup.wait(), timeout=delay)
            except TimeoutError:
                pass

    async def _next_due_at(self) -> float | None:
        async with self.ctx.db.read() as conn:
            job = await conn.scalar(select(func.min(JOBS.c.due_at)).where(JOBS.c.status.in_(job_status.ACTIVE)))
            timeout = await conn.scalar(
                select(func.min(EXECUTIONS.c.timeout_at)).where(EXECUTIONS.c.status == IN_PROGRESS)
            )
        return earliest(job, timeout)

    async def _due(self) -> tuple[bool, bool]:
        now = self.ctx.clock.now()
        async with self.ctx.db.read() as conn:
            job = await conn.scalar(
                select(JOBS.c.job_id).where(JOBS.c.due_at <= now, JOBS.c.status.in_(job_status.ACTIVE)).limit(1)
            )
            timeout = await conn.scalar(
                select(EXECUTIONS.c.id)
                .where(EXECUTIONS.c.timeout_at <= now, EXECUTIONS.c.status == IN_PROGRESS)
                .limit(1)
            )
        return job is not None, timeout is not None

    async def _due_jobs_pass(self) -> int:
        now = self.ctx.clock.now()
        async with self.ctx.db.write() as conn:
            q = (
                select(JOBS)
                .where(JOBS.c.due_at <= now, JOBS.c.status.in_(job_status.ACTIVE))
                .order_by(JOBS.c.due_at)
                .limit(JOBS_PER_PASS)
            )
            jobs = (await conn.execute(locked(q, conn, skip_locked=True))).all()
            for job in jobs:
                await self._advance(conn, job, now)
        return len(jobs)

    async def _advance(self, conn: AsyncConnection, job: Any, now: float) -> None:
        config = job.config or {}
        end = end_time_of(config)
        if end is not None and now >= end:
            await self._end(conn, job, config, now)
            return
        windows = windows_of(config)
        start = start_time_of(config)
        window_end = open_window_end(windows, now) if windows else None
        if job.status == job_status.SCHEDULED:
            if start is not None and now < start:
                await self._set(conn, job.job_id, due_at=earliest(start, end))
                return
            if windows and window_end is None:
                await self._set(conn, job.job_id, due_at=earliest(next_window_start(windows, now), end))
                return
            await self._set(
                conn, job.job_id, status=job_status.IN_PROGRESS, started_at=job.started_at or now, rollout_tick_at=None
            )
            job = (await conn.execute(select(JOBS).where(JOBS.c.job_id == job.job_id))).one()
        elif windows and window_end is None:
            # The window closed: the job waits, SCHEDULED, for the next one.
            await self._set(
                conn,
                job.job_id,
                status=job_status.SCHEDULED,
                rollout_tick_at=None,
                due_at=earliest(next_window_start(windows, now), end),
            )
            return
        await self._release(conn, job, config, now, earliest(window_end, end))

    async def _release(
        self, conn: AsyncConnection, job: Any, config: dict[str, Any], now: float, boundary: float | None
    ) -> None:
        rollout = RolloutConfig.of(config)
        if rollout is None:
            credit, rate, n = 0.0, math.inf, RELEASE_BATCH
        else:
            rate = rollout.rate(int(job.n_released), int(job.n_succeeded))
            credit = accrue(float(job.rollout_credit), job.rollout_tick_at, now, rate)
            n = min(int(credit), RELEASE_BATCH)
        released = 0
        if n > 0:
            batch = (
                await conn.execute(
                    select(ROLLOUT_QUEUE.c.id, ROLLOUT_QUEUE.c.thing_name)
                    .where(ROLLOUT_QUEUE.c.job_id == job.job_id)
                    .order_by(ROLLOUT_QUEUE.c.id)
                    .limit(n)
                )
            ).all()
            if batch:
                last_id = await conn.scalar(select(func.max(EXECUTIONS.c.id))) or 0
                await conn.execute(
                    insert(EXECUTIONS),
                    [
                        {
                            "job_id": job.job_id,
                            "thing_name": thing,
                            "execution_number": 1,
                            "status": QUEUED,
                            "queued_at": now,
                            "last_updated_at": now,
                            "version_number": 1,
                            "force_canceled": False,
                            "retry_attempt": 0,
                        }
                        for _, thing in batch
                    ],
                )
                await conn.execute(
                    delete(ROLLOUT_QUEUE).where(
                        ROLLOUT_QUEUE.c.job_id == job.job_id, ROLLOUT_QUEUE.c.id <= batch[-1].id
                    )
                )
                released = len(batch)
                await notice_job(conn, job.job_id, now, after=last_id)
        # Whether any target is left (not how many: a count would read a 500,000-row queue every tick).
        remaining = await conn.scalar(select(ROLLOUT_QUEUE.c.id).where(ROLLOUT_QUEUE.c.job_id == job.job_id).limit(1))
        values: dict[str, Any] = {
            "n_queued": JOBS.c.n_queued + released,
            "n_released": JOBS.c.n_released + released,
            "rollout_credit": max(0.0, credit - released) if rollout is not None else 0.0,
            "rollout_tick_at": now,
            "last_updated_at": now if released else job.last_updated_at,
        }
        if remaining is None:
            values.update(processing_targets=None, due_at=earliest(None, boundary) if end_time_of(config) else None)
            await self._set(conn, job.job_id, **values)
            await complete_finished_jobs(conn, [job.job_id], now)
            return
        if rollout is None:
            due = now
        else:
            wait = seconds_until_next(values["rollout_credit"], rate)
            if rollout.depends_on_successes:
                wait = min(wait, REEVALUATE_SECONDS)
            due = now + max(MIN_TICK_SECONDS, wait)
        values["due_at"] = earliest(due, boundary)
        await self._set(conn, job.job_id, **values)

    async def _end(self, conn: AsyncConnection, job: Any, config: dict[str, Any], now: float) -> None:
        """``endTime`` reached: no more releases; CANCEL / FORCE_CANCEL cancel like CancelJob."""
        behavior = ((config.get("schedulingConfig") or {}).get("endBehavior")) or "STOP_ROLLOUT"
        await conn.execute(delete(ROLLOUT_QUEUE).where(ROLLOUT_QUEUE.c.job_id == job.job_id))
        if behavior == "STOP_ROLLOUT":
            await self._set(
                conn,
                job.job_id,
                processing_targets=None,
                due_at=None,
                status=job_status.IN_PROGRESS,
                last_updated_at=now,
            )
            await self._complete_if_done(conn, job, now)
            return
        force = behavior == "FORCE_CANCEL"
        await self._set(
            conn,
            job.job_id,
            status=job_status.CANCELED,
            processing_targets=None,
            due_at=None,
            force_canceled=force,
            last_updated_at=now,
        )
        await cancel_executions(conn, job.job_id, now, force=force)

    async def _complete_if_done(self, conn: AsyncConnection, job: Any, now: float) -> None:
        """A job with an endTime that has passed completes once all its executions are terminal,
        continuous or not (§4.1)."""
        await conn.execute(
            update(JOBS)
            .where(
                JOBS.c.job_id == job.job_id,
                JOBS.c.status == job_status.IN_PROGRESS,
                JOBS.c.n_queued == 0,
                JOBS.c.n_in_progress == 0,
            )
            .values(status=job_status.COMPLETED, completed_at=now, last_updated_at=now)
        )

    async def _timeouts_pass(self) -> int:
        now = self.ctx.clock.now()
        async with self.ctx.db.write() as conn:
            q = (
                select(EXECUTIONS)
                .where(EXECUTIONS.c.status == IN_PROGRESS, EXECUTIONS.c.timeout_at <= now)
                .order_by(EXECUTIONS.c.timeout_at)
                .limit(TIMEOUT_BATCH)
            )
            rows = (await conn.execute(locked(q, conn, skip_locked=True))).all()
            if not rows:
                return 0
            ids = [r.id for r in rows]
            await move_executions(
                conn, EXECUTIONS.c.id.in_(ids), TIMED_OUT, now, from_statuses={IN_PROGRESS}, complete=False
            )
            by_job: dict[str, list[Any]] = {}
            for r in rows:
                record_event(conn, ExecutionEvent(r.job_id, r.thing_name, "timed_out", TIMED_OUT, r.status_details))
                by_job.setdefault(r.job_id, []).append(SimpleNamespace(**{**r._mapping, "status": TIMED_OUT}))
            await notice_things(conn, [r.thing_name for r in rows], now)
            q_configs = select(JOBS.c.job_id, JOBS.c.config).where(JOBS.c.job_id.in_(list(by_job)))
            configs: dict[str, dict[str, Any] | None] = {r.job_id: r.config for r in await conn.execute(q_configs)}
            for job_id, timed_out in by_job.items():
                await after_outcomes(conn, job_id, configs.get(job_id), timed_out, now)
            await complete_finished_jobs(conn, list(by_job), now)
        return len(rows)

    async def _set(self, conn: AsyncConnection, job_id: str, **values: Any) -> None:
        await conn.execute(update(JOBS).where(JOBS.c.job_id == job_id).values(**values))
