"""The device side of the execution state machine (iot-jobs-data; the MQTT gateway reuses it).

Both device APIs (HTTPS and MQTT) call these methods, so a transition is legal or illegal in
exactly one place (``domain.execution_state``) and every change keeps the job counters,
version numbers and timers consistent.  Concurrent updates of one execution are decided by a
conditional UPDATE on ``version_number``: of two racing writers, exactly one wins.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.artifacts import ArtifactStore
from fleetjobs.domain import job_status, pending
from fleetjobs.domain.errors import InvalidStateTransition, ResourceNotFound, TerminalState, VersionConflict
from fleetjobs.domain.execution_state import (
    IN_PROGRESS,
    QUEUED,
    SUCCEEDED,
    TERMINAL,
    check_device_status,
    check_status_details,
    check_step_timeout,
    device_transition_allowed,
)
from fleetjobs.domain.timers import deadlines_after
from fleetjobs.model import shapes_iot_jobs_data as shapes
from fleetjobs.service.context import ServiceContext
from fleetjobs.service.effects.device_views import (
    DeviceViews,
    job_for_delivery,
    latest_execution,
    pending_rows,
)
from fleetjobs.service.effects.execution_moves import adjust_counters, complete_finished_jobs
from fleetjobs.service.effects.outcomes import after_outcomes, after_success
from fleetjobs.service.events import ExecutionEvent, PendingChanged
from fleetjobs.service.throttle import ThingThrottle
from fleetjobs.store.database import record_event
from fleetjobs.store.rows import ExecutionRow, JobDeliveryRow, as_execution
from fleetjobs.store.tables import DEVICE_REQUESTS, EXECUTIONS

NEXT = "$next"


class DeviceJobs:
    def __init__(
        self,
        ctx: ServiceContext,
        throttle: ThingThrottle | None = None,
        store: ArtifactStore | None = None,
    ) -> None:
        self.ctx = ctx
        self.throttle = throttle or ThingThrottle(0, 1)
        self.views = DeviceViews(ctx.clock, store)

    async def get_pending_job_executions(self, req: shapes.GetPendingJobExecutionsRequest) -> dict[str, Any]:
        self.throttle.check(req["thingName"])
        async with self.ctx.db.read() as conn:
            rows = await pending_rows(conn, req["thingName"])
        return self.views.listing(rows)

    async def start_next_pending_job_execution(
        self, req: shapes.StartNextPendingJobExecutionRequest, *, request_key: str | None = None
    ) -> dict[str, Any]:
        self.throttle.check(req["thingName"])
        check_status_details(req.get("statusDetails"))
        check_step_timeout(req.get("stepTimeoutInMinutes"), allow_cancel=False)
        now = self.ctx.clock.now()
        async with self.ctx.db.write() as conn:
            rows = await pending_rows(conn, req["thingName"], lock=True)
            row: ExecutionRow | None = pending.head(rows)
            replay = await self._replay(conn, request_key, row)
            if replay is not None:
                return replay
            if row is None:
                result: dict[str, Any] = {}
            else:
                job = await job_for_delivery(conn, row.job_id)
                if row.status == QUEUED:
                    row = await self._transition(
                        conn,
                        row,
                        IN_PROGRESS,
                        now,
                        req.get("statusDetails"),
                        req.get("stepTimeoutInMinutes"),
                        job=job,
                        pending_rows=rows,
                    )
                result = {"execution": self.views.execution(row, self.views.deliver(job))}
            await self._remember(conn, request_key, result, now, row)
        return result

    async def describe_job_execution(self, req: shapes.DescribeJobExecutionRequest) -> dict[str, Any]:
        self.throttle.check(req["thingName"])
        async with self.ctx.db.read() as conn:
            if req["jobId"] == NEXT:
                row = pending.head(await pending_rows(conn, req["thingName"]))
                if row is None:
                    raise ResourceNotFound(f"No pending job execution for thing {req['thingName']}.")
                job = await job_for_delivery(conn, row.job_id)
            else:
                row = await latest_execution(conn, req["jobId"], req["thingName"], req.get("executionNumber"))
                job = await job_for_delivery(conn, row.job_id)
                if row.status in TERMINAL and job.status in job_status.TERMINAL:
                    # "The job is in a terminal state": nothing is left to do on this execution.
                    raise TerminalState(
                        f"Job {row.job_id} is {job.status} and its execution on {row.thing_name} is {row.status}."
                    )
        document = self.views.deliver(job) if req.get("includeJobDocument", True) else None
        return {"execution": self.views.execution(row, document)}

    async def update_job_execution(
        self, req: shapes.UpdateJobExecutionRequest, *, request_key: str | None = None
    ) -> dict[str, Any]:
        self.throttle.check(req["thingName"])
        status = req["status"]
        check_status_details(req.get("statusDetails"))
        step = req.get("stepTimeoutInMinutes")
        check_step_timeout(step, allow_cancel=True)
        now = self.ctx.clock.now()
        async with self.ctx.db.write() as conn:
            rows = await pending_rows(conn, req["thingName"], lock=True)
            number = req.get("executionNumber")
            row = next(
                (r for r in rows if r.job_id == req["jobId"] and number in (None, r.execution_number)),
                None,
            )
            if row is None:  # not pending: the latest execution says why it cannot change
                row = await latest_execution(conn, req["jobId"], req["thingName"], number, lock=True)
            replay = await self._replay(conn, request_key, row)
            if replay is not None:
                return replay
            expected = req.get("expectedVersion")
            if expected is not None and int(expected) != row.version_number:
                raise VersionConflict(
                    f"The expected version {expected} does not match the current version {row.version_number}.",
                    executionState=self.views.state(row),
                )
            check_device_status(status)
            if not device_transition_allowed(row.status, status):
                raise InvalidStateTransition(
                    f"Job execution {row.job_id} on {row.thing_name} is {row.status} and cannot become {status}.",
                    executionState=self.views.state(row),
                )
            job = await job_for_delivery(conn, row.job_id)
            row = await self._transition(
                conn, row, status, now, req.get("statusDetails"), step, job=job, pending_rows=rows
            )
            result: dict[str, Any] = {}
            if req.get("includeJobExecutionState"):
                result["executionState"] = self.views.state(row)
            if req.get("includeJobDocument") and job.document is not None:
                result["jobDocument"] = self.views.deliver(job)
            await self._remember(conn, request_key, result, now, row)
        return result

    # -- redelivered requests ------------------------------------------------------------------------

    async def _replay(
        self, conn: AsyncConnection, request_key: str | None, addressed: ExecutionRow | None
    ) -> dict[str, Any] | None:
        """The stored answer of this very request, if it still stands: the execution the request
        addresses now (``addressed``) is the one the answer was about, at the version it produced.
        Versions only grow, so an answer that no longer stands never stands again."""
        if request_key is None or addressed is None:
            return None
        q = select(
            DEVICE_REQUESTS.c.result,
            DEVICE_REQUESTS.c.job_id,
            DEVICE_REQUESTS.c.execution_number,
            DEVICE_REQUESTS.c.version_number,
        ).where(DEVICE_REQUESTS.c.request_key == request_key)
        stored = (await conn.execute(q)).first()
        if stored is None:
            return None
        if (stored.job_id, stored.execution_number, stored.version_number) != (
            addressed.job_id,
            addressed.execution_number,
            addressed.version_number,
        ):
            return None
        result: dict[str, Any] = stored.result
        return result

    async def _remember(
        self,
        conn: AsyncConnection,
        request_key: str | None,
        result: dict[str, Any],
        now: float,
        produced: ExecutionRow | None,
    ) -> None:
        """Stored in the same transaction as the change: either both happened or neither.  An answer
        that changed nothing (no execution pending) needs no record: handling it again is harmless."""
        if request_key is None or produced is None:
            return
        await conn.execute(delete(DEVICE_REQUESTS).where(DEVICE_REQUESTS.c.request_key == request_key))
        await conn.execute(
            insert(DEVICE_REQUESTS).values(
                request_key=request_key,
                result=result,
                created_at=now,
                job_id=produced.job_id,
                execution_number=produced.execution_number,
                version_number=produced.version_number,
            )
        )

    # -- the one place an execution changes status on a device's word ----------------------------

    async def _transition(
        self,
        conn: AsyncConnection,
        row: ExecutionRow,
        status: str,
        now: float,
        details: dict[str, str] | None,
        step_minutes: int | None,
        *,
        job: JobDeliveryRow,
        pending_rows: list[ExecutionRow],
    ) -> ExecutionRow:
        values: dict[str, Any] = {"status": status, "last_updated_at": now, "version_number": row.version_number + 1}
        if details is not None:
            values["status_details"] = details
        if status == IN_PROGRESS and row.status == QUEUED:
            values["started_at"] = now
        values.update(
            deadlines_after(
                row.status,
                status,
                in_progress_deadline=row.in_progress_deadline,
                step_deadline=row.step_deadline,
                now=now,
                in_progress_minutes=((job.config or {}).get("timeoutConfig") or {}).get("inProgressTimeoutInMinutes"),
                step_minutes=step_minutes,
            )
        )
        result = await conn.execute(
            update(EXECUTIONS)
            .where(
                EXECUTIONS.c.id == row.id,
                EXECUTIONS.c.version_number == row.version_number,
                EXECUTIONS.c.status == row.status,
            )
            .values(**values)
            .returning(*EXECUTIONS.c)
        )
        changed = result.first()
        if changed is None:
            raise VersionConflict(
                "The job execution was updated concurrently; retry.", executionState=self.views.state(row)
            )
        new = as_execution(changed)
        if row.status != status:
            await adjust_counters(conn, row.job_id, {row.status: -1, status: 1}, now)
            if status in TERMINAL:
                record_event(
                    conn, ExecutionEvent(row.job_id, row.thing_name, status.lower(), status, new.status_details)
                )
                await after_outcomes(conn, row.job_id, job.config, [new], now)
                if status == SUCCEEDED:
                    await after_success(conn, job.config, row.thing_name, now)
                await complete_finished_jobs(conn, [row.job_id], now)
            await self._announce(conn, pending_rows, new, job)
        return new

    async def _announce(
        self, conn: AsyncConnection, before: list[ExecutionRow], new: ExecutionRow, job: JobDeliveryRow
    ) -> None:
        """Publish (after commit) the notify / notify-next this change calls for, decided from the
        rows the transaction already holds."""
        after = pending.replace(before, new)
        notify, notify_next = pending.changes(before, after)
        if not (notify or notify_next):
            return
        head: ExecutionRow | None = pending.head(after)
        execution = None
        if notify_next and head is not None:
            head_job = job if head.job_id == new.job_id else await job_for_delivery(conn, head.job_id)
            execution = self.views.execution(head, self.views.deliver(head_job))
        record_event(conn, PendingChanged(new.thing_name, self.views.listing(after), execution, notify, notify_next))
