"""Job executions, control-plane side: Describe/List/Cancel/Delete (JOBS_API.md §1.2, §4.8)."""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import and_, delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.domain.errors import InvalidRequest, InvalidStateTransition, ResourceNotFound, VersionConflict
from fleetjobs.domain.execution_state import CANCELED, IN_PROGRESS, QUEUED, is_terminal
from fleetjobs.service.context import ServiceContext
from fleetjobs.service.events import ExecutionEvent
from fleetjobs.service.execution_moves import adjust_counters, complete_finished_jobs, move_executions
from fleetjobs.service.pagination import compact, decode_token, page, page_size
from fleetjobs.service.pending_notices import notice_things
from fleetjobs.store.database import record_event
from fleetjobs.store.schema import Job, JobExecution

E = JobExecution.__table__
J = Job.__table__

MAX_STATUS_DETAILS = 10


class Executions:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    async def describe_job_execution(self, req: dict[str, Any]) -> dict[str, Any]:
        async with self.ctx.db.read() as conn:
            row = await self.latest(conn, req["jobId"], req["thingName"], req.get("executionNumber"))
        return {"execution": self.to_execution(row)}

    async def list_job_executions_for_job(self, req: dict[str, Any]) -> dict[str, Any]:
        size = page_size(req)
        after = decode_token(req.get("nextToken"))
        q = select(E).where(E.c.job_id == req["jobId"])
        if req.get("status"):
            q = q.where(E.c.status == req["status"])
        if after is not None:
            q = q.where(E.c.id > int(after))
        q = q.order_by(E.c.id).limit(size + 1)
        async with self.ctx.db.read() as conn:
            if (await conn.execute(select(J.c.job_id).where(J.c.job_id == req["jobId"]))).first() is None:
                raise ResourceNotFound(f"Job {req['jobId']} cannot be found.")
            rows = (await conn.execute(q)).all()
        rows, token = page(rows, size, lambda r: r.id)
        summaries = [
            {"thingArn": self.ctx.partition.thing(r.thing_name), "jobExecutionSummary": self.to_summary(r)}
            for r in rows
        ]
        return {"executionSummaries": summaries, "nextToken": token}

    async def list_job_executions_for_thing(self, req: dict[str, Any]) -> dict[str, Any]:
        size = page_size(req)
        after = decode_token(req.get("nextToken"))
        q = select(E).where(E.c.thing_name == req["thingName"])
        if req.get("status"):
            q = q.where(E.c.status == req["status"])
        if req.get("jobId"):
            q = q.where(E.c.job_id == req["jobId"])
        if req.get("namespaceId"):
            q = q.where(E.c.job_id.in_(select(J.c.job_id).where(J.c.namespace_id == req["namespaceId"])))
        if after is not None:
            q = q.where(E.c.id > int(after))
        q = q.order_by(E.c.id).limit(size + 1)
        async with self.ctx.db.read() as conn:
            rows = (await conn.execute(q)).all()
        rows, token = page(rows, size, lambda r: r.id)
        summaries = [{"jobId": r.job_id, "jobExecutionSummary": self.to_summary(r)} for r in rows]
        return {"executionSummaries": summaries, "nextToken": token}

    async def cancel_job_execution(self, req: dict[str, Any]) -> None:
        now = self.ctx.clock.now()
        force = bool(req.get("force"))
        details = req.get("statusDetails")
        if details is not None and len(details) > MAX_STATUS_DETAILS:
            raise InvalidRequest(f"statusDetails can have at most {MAX_STATUS_DETAILS} name/value pairs")
        async with self.ctx.db.write() as conn:
            row = await self.latest(conn, req["jobId"], req["thingName"], None, for_update=True)
            if is_terminal(row.status):
                raise InvalidStateTransition(
                    f"Job execution {req['jobId']} on {req['thingName']} is already {row.status}; "
                    "it cannot be canceled."
                )
            if row.status == IN_PROGRESS and not force:
                raise InvalidStateTransition(
                    f"Job execution {req['jobId']} on {req['thingName']} is IN_PROGRESS; "
                    "set force to cancel an in-progress execution."
                )
            expected = req.get("expectedVersion")
            if expected is not None and expected != row.version_number:
                raise VersionConflict(
                    f"The expected version {expected} does not match the current version {row.version_number}."
                )
            extra: dict[str, Any] = {}
            if force:
                extra["force_canceled"] = True
            if details is not None:
                extra["status_details"] = details
            record_event(
                conn,
                ExecutionEvent(row.job_id, row.thing_name, "canceled", CANCELED, details or row.status_details),
            )
            moved = await move_executions(
                conn,
                and_(E.c.id == row.id, E.c.version_number == row.version_number),
                CANCELED,
                now,
                from_statuses={row.status},
                extra=extra,
            )
            if not moved:
                raise VersionConflict("The job execution was changed concurrently; retry.")
            await notice_things(conn, [row.thing_name], now, next_always=True)

    async def delete_job_execution(self, req: dict[str, Any]) -> None:
        now = self.ctx.clock.now()
        async with self.ctx.db.write() as conn:
            row = await self.latest(conn, req["jobId"], req["thingName"], req["executionNumber"], for_update=True)
            if not is_terminal(row.status) and not req.get("force"):
                raise InvalidStateTransition(
                    f"Job execution {req['jobId']} on {req['thingName']} is {row.status}; "
                    "only terminal executions can be deleted unless force is true."
                )
            result = await conn.execute(delete(E).where(E.c.id == row.id, E.c.status == row.status))
            if result.rowcount:
                record_event(
                    conn, ExecutionEvent(row.job_id, row.thing_name, "deleted", row.status, row.status_details)
                )
                await adjust_counters(conn, row.job_id, {row.status: -1}, now)
                if row.status in (QUEUED, IN_PROGRESS):
                    await complete_finished_jobs(conn, [row.job_id], now)
                    await notice_things(conn, [row.thing_name], now, next_always=True)

    # -- shared with the device plane ---------------------------------------------------------------

    async def latest(
        self,
        conn: AsyncConnection,
        job_id: str,
        thing_name: str,
        execution_number: int | None,
        *,
        for_update: bool = False,
    ) -> Any:
        """The addressed execution: a given executionNumber, else the latest one."""
        q = select(E).where(E.c.job_id == job_id, E.c.thing_name == thing_name)
        if execution_number is not None:
            q = q.where(E.c.execution_number == execution_number)
        q = q.order_by(E.c.execution_number.desc()).limit(1)
        if for_update and conn.dialect.name == "postgresql":
            q = q.with_for_update()
        row = (await conn.execute(q)).first()
        if row is None:
            raise ResourceNotFound(f"Job execution of job {job_id} on thing {thing_name} cannot be found.")
        return row

    def to_execution(self, row: Any) -> dict[str, Any]:
        return compact(
            {
                "jobId": row.job_id,
                "status": row.status,
                "forceCanceled": bool(row.force_canceled),
                "statusDetails": {"detailsMap": row.status_details} if row.status_details else None,
                "thingArn": self.ctx.partition.thing(row.thing_name),
                "queuedAt": row.queued_at,
                "startedAt": row.started_at,
                "lastUpdatedAt": row.last_updated_at,
                "executionNumber": row.execution_number,
                "versionNumber": row.version_number,
                "approximateSecondsBeforeTimedOut": self.seconds_before_timeout(row),
            }
        )

    def seconds_before_timeout(self, row: Any) -> int | None:
        deadlines = [d for d in (row.in_progress_deadline, row.step_deadline) if d is not None]
        if row.status != IN_PROGRESS or not deadlines:
            return None
        return max(0, math.ceil(min(deadlines) - self.ctx.clock.now()))

    @staticmethod
    def to_summary(row: Any) -> dict[str, Any]:
        return compact(
            {
                "status": row.status,
                "queuedAt": row.queued_at,
                "startedAt": row.started_at,
                "lastUpdatedAt": row.last_updated_at,
                "executionNumber": row.execution_number,
                "retryAttempt": row.retry_attempt,
            }
        )
