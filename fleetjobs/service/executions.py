"""Job executions, control-plane side: Describe/List/Cancel/Delete (JOBS_API.md §1.2, §4.8)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, delete, select

from fleetjobs.domain.errors import InvalidStateTransition, ResourceNotFound, VersionConflict
from fleetjobs.domain.execution_state import CANCELED, IN_PROGRESS, QUEUED, check_status_details, is_terminal
from fleetjobs.domain.timers import seconds_before_timeout
from fleetjobs.model import shapes_iot as shapes
from fleetjobs.service.context import ServiceContext
from fleetjobs.service.effects.device_views import latest_execution
from fleetjobs.service.effects.execution_moves import adjust_counters, complete_finished_jobs, move_executions
from fleetjobs.service.effects.notices import notice_things
from fleetjobs.service.events import ExecutionEvent
from fleetjobs.service.pagination import compact, page, page_size, token_id
from fleetjobs.store.database import record_event
from fleetjobs.store.tables import EXECUTIONS, JOBS


class Executions:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    async def describe_job_execution(self, req: shapes.DescribeJobExecutionRequest) -> dict[str, Any]:
        async with self.ctx.db.read() as conn:
            row = await latest_execution(conn, req["jobId"], req["thingName"], req.get("executionNumber"))
        return {"execution": self.to_execution(row)}

    async def list_job_executions_for_job(self, req: shapes.ListJobExecutionsForJobRequest) -> dict[str, Any]:
        size = page_size(req)
        after = token_id(req)
        q = select(EXECUTIONS).where(EXECUTIONS.c.job_id == req["jobId"])
        if req.get("status"):
            q = q.where(EXECUTIONS.c.status == req["status"])
        if after is not None:
            q = q.where(EXECUTIONS.c.id > after)
        q = q.order_by(EXECUTIONS.c.id).limit(size + 1)
        async with self.ctx.db.read() as conn:
            if (await conn.execute(select(JOBS.c.job_id).where(JOBS.c.job_id == req["jobId"]))).first() is None:
                raise ResourceNotFound(f"Job {req['jobId']} cannot be found.")
            rows = (await conn.execute(q)).all()
        rows, token = page(rows, size, lambda r: r.id)
        summaries = [
            {"thingArn": self.ctx.partition.thing(r.thing_name), "jobExecutionSummary": self.to_summary(r)}
            for r in rows
        ]
        return {"executionSummaries": summaries, "nextToken": token}

    async def list_job_executions_for_thing(self, req: shapes.ListJobExecutionsForThingRequest) -> dict[str, Any]:
        size = page_size(req)
        after = token_id(req)
        q = select(EXECUTIONS).where(EXECUTIONS.c.thing_name == req["thingName"])
        if req.get("status"):
            q = q.where(EXECUTIONS.c.status == req["status"])
        if req.get("jobId"):
            q = q.where(EXECUTIONS.c.job_id == req["jobId"])
        if req.get("namespaceId"):
            q = q.where(EXECUTIONS.c.job_id.in_(select(JOBS.c.job_id).where(JOBS.c.namespace_id == req["namespaceId"])))
        if after is not None:
            q = q.where(EXECUTIONS.c.id > after)
        q = q.order_by(EXECUTIONS.c.id).limit(size + 1)
        async with self.ctx.db.read() as conn:
            rows = (await conn.execute(q)).all()
        rows, token = page(rows, size, lambda r: r.id)
        summaries = [{"jobId": r.job_id, "jobExecutionSummary": self.to_summary(r)} for r in rows]
        return {"executionSummaries": summaries, "nextToken": token}

    async def cancel_job_execution(self, req: shapes.CancelJobExecutionRequest) -> None:
        now = self.ctx.clock.now()
        force = bool(req.get("force"))
        details = req.get("statusDetails")
        check_status_details(details)
        async with self.ctx.db.write() as conn:
            row = await latest_execution(conn, req["jobId"], req["thingName"], None, lock=True)
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
                and_(EXECUTIONS.c.id == row.id, EXECUTIONS.c.version_number == row.version_number),
                CANCELED,
                now,
                from_statuses={row.status},
                extra=extra,
            )
            if not moved:
                raise VersionConflict("The job execution was changed concurrently; retry.")
            await notice_things(conn, [row.thing_name], now, next_always=True)

    async def delete_job_execution(self, req: shapes.DeleteJobExecutionRequest) -> None:
        now = self.ctx.clock.now()
        async with self.ctx.db.write() as conn:
            row = await latest_execution(conn, req["jobId"], req["thingName"], req["executionNumber"], lock=True)
            if not is_terminal(row.status) and not req.get("force"):
                raise InvalidStateTransition(
                    f"Job execution {req['jobId']} on {req['thingName']} is {row.status}; "
                    "only terminal executions can be deleted unless force is true."
                )
            result = await conn.execute(
                delete(EXECUTIONS).where(EXECUTIONS.c.id == row.id, EXECUTIONS.c.status == row.status)
            )
            if result.rowcount:
                record_event(
                    conn, ExecutionEvent(row.job_id, row.thing_name, "deleted", row.status, row.status_details)
                )
                await adjust_counters(conn, row.job_id, {row.status: -1}, now)
                if row.status in (QUEUED, IN_PROGRESS):
                    await complete_finished_jobs(conn, [row.job_id], now)
                    await notice_things(conn, [row.thing_name], now, next_always=True)

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
                "approximateSecondsBeforeTimedOut": seconds_before_timeout(
                    row.status, row.in_progress_deadline, row.step_deadline, self.ctx.clock.now()
                ),
            }
        )

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
