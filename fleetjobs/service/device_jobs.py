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
from fleetjobs.domain import pending
from fleetjobs.domain.errors import (
    InvalidRequest,
    InvalidStateTransition,
    ResourceNotFound,
    TerminalState,
    VersionConflict,
)
from fleetjobs.domain.execution_state import IN_PROGRESS, PENDING, QUEUED, TERMINAL, device_transition_allowed
from fleetjobs.service.context import ServiceContext
from fleetjobs.service.events import ExecutionEvent, PendingChanged
from fleetjobs.service.execution_moves import adjust_counters, complete_finished_jobs
from fleetjobs.service.executions import Executions
from fleetjobs.service.job_documents import delivery_document
from fleetjobs.service.outcomes import after_outcomes, after_success
from fleetjobs.service.pagination import compact
from fleetjobs.service.throttle import ThingThrottle
from fleetjobs.store.database import record_event
from fleetjobs.store.schema import DeviceRequest, Job, JobExecution

E = JobExecution.__table__
R = DeviceRequest.__table__
J = Job.__table__

NEXT = "$next"
MAX_DETAILS = 10
MAX_DETAIL_VALUE = 1024
MAX_STEP_MINUTES = 10080
JOB_TERMINAL = frozenset({"COMPLETED", "CANCELED"})


def check_status_details(details: dict[str, str] | None) -> None:
    if details is None:
        return
    if len(details) > MAX_DETAILS:
        raise InvalidRequest(f"statusDetails can have at most {MAX_DETAILS} name/value pairs")
    for key, value in details.items():
        if len(value) > MAX_DETAIL_VALUE:
            raise InvalidRequest(f"statusDetails value of '{key}' is longer than {MAX_DETAIL_VALUE} characters")


def check_step_timeout(minutes: int | None, *, allow_cancel: bool) -> None:
    if minutes is None or (allow_cancel and minutes == -1):
        return
    if not 1 <= minutes <= MAX_STEP_MINUTES:
        raise InvalidRequest(
            f"stepTimeoutInMinutes must be between 1 and {MAX_STEP_MINUTES}" + (" or -1" if allow_cancel else "")
        )


class DeviceJobs:
    def __init__(
        self,
        ctx: ServiceContext,
        executions: Executions,
        throttle: ThingThrottle | None = None,
        store: ArtifactStore | None = None,
    ) -> None:
        self.ctx = ctx
        self.executions = executions
        self.throttle = throttle or ThingThrottle(0, 1)
        self.store = store

    async def get_pending_job_executions(self, req: dict[str, Any]) -> dict[str, Any]:
        self.throttle.check(req["thingName"])
        async with self.ctx.db.read() as conn:
            rows = await self._pending_rows(conn, req["thingName"])
        return self.listing(rows)

    async def start_next_pending_job_execution(
        self, req: dict[str, Any], *, request_key: str | None = None
    ) -> dict[str, Any]:
        self.throttle.check(req["thingName"])
        check_status_details(req.get("statusDetails"))
        check_step_timeout(req.get("stepTimeoutInMinutes"), allow_cancel=False)
        now = self.ctx.clock.now()
        async with self.ctx.db.write() as conn:
            replay = await self._replay(conn, request_key)
            if replay is not None:
                return replay
            rows = await self._pending_rows(conn, req["thingName"], for_update=True)
            row = pending.head(rows)
            if row is None:
                result: dict[str, Any] = {}
            else:
                job = await self._job(conn, row.job_id)
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
                result = {"execution": self._execution(row, self._deliver(job))}
            await self._remember(conn, request_key, result, now)
        return result

    async def describe_job_execution(self, req: dict[str, Any]) -> dict[str, Any]:
        self.throttle.check(req["thingName"])
        async with self.ctx.db.read() as conn:
            if req["jobId"] == NEXT:
                row = pending.head(await self._pending_rows(conn, req["thingName"]))
                if row is None:
                    raise ResourceNotFound(f"No pending job execution for thing {req['thingName']}.")
                job = await self._job(conn, row.job_id)
            else:
                row = await self.executions.latest(conn, req["jobId"], req["thingName"], req.get("executionNumber"))
                job = await self._job(conn, row.job_id)
                if row.status in TERMINAL and job.status in JOB_TERMINAL:
                    # "The job is in a terminal state": nothing is left to do on this execution.
                    raise TerminalState(
                        f"Job {row.job_id} is {job.status} and its execution on {row.thing_name} is {row.status}."
                    )
        document = self._deliver(job) if req.get("includeJobDocument", True) else None
        return {"execution": self._execution(row, document)}

    async def update_job_execution(self, req: dict[str, Any], *, request_key: str | None = None) -> dict[str, Any]:
        self.throttle.check(req["thingName"])
        status = req["status"]
        check_status_details(req.get("statusDetails"))
        step = req.get("stepTimeoutInMinutes")
        check_step_timeout(step, allow_cancel=True)
        now = self.ctx.clock.now()
        async with self.ctx.db.write() as conn:
            replay = await self._replay(conn, request_key)
            if replay is not None:
                return replay
            rows = await self._pending_rows(conn, req["thingName"], for_update=True)
            number = req.get("executionNumber")
            row = next(
                (r for r in rows if r.job_id == req["jobId"] and number in (None, r.execution_number)),
                None,
            )
            if row is None:  # not pending: the latest execution says why it cannot change
                row = await self.executions.latest(conn, req["jobId"], req["thingName"], number, for_update=True)
            expected = req.get("expectedVersion")
            if expected is not None and int(expected) != row.version_number:
                raise VersionConflict(
                    f"The expected version {expected} does not match the current version {row.version_number}.",
                    executionState=self._state(row),
                )
            if status not in ("IN_PROGRESS", "SUCCEEDED", "FAILED", "REJECTED"):
                raise InvalidRequest(f"A device cannot set the status of a job execution to {status}.")
            if not device_transition_allowed(row.status, status):
                raise InvalidStateTransition(
                    f"Job execution {row.job_id} on {row.thing_name} is {row.status} and cannot become {status}.",
                    executionState=self._state(row),
                )
            job = await self._job(conn, row.job_id)
            row = await self._transition(
                conn, row, status, now, req.get("statusDetails"), step, job=job, pending_rows=rows
            )
            result = {}
            if req.get("includeJobExecutionState"):
                result["executionState"] = self._state(row)
            if req.get("includeJobDocument") and job.document is not None:
                result["jobDocument"] = self._deliver(job)
            await self._remember(conn, request_key, result, now)
        return result

    def listing(self, rows: list[Any]) -> dict[str, Any]:
        """GetPendingJobExecutions' answer (and ``notify``'s content) from a thing's pending rows."""
        rows = pending.ordered(rows)
        summary = self._summary
        return {
            "inProgressJobs": [summary(r) for r in rows if r.status == IN_PROGRESS],
            "queuedJobs": [summary(r) for r in rows if r.status == QUEUED],
        }

    async def pending_views(self, conn: AsyncConnection, things: list[str]) -> dict[str, PendingChanged]:
        """Each thing's listing and ``$next`` execution (with its document), in two queries for any
        number of things: what the notification drain publishes."""
        by_thing: dict[str, list[Any]] = {t: [] for t in things}
        for chunk in range(0, len(things), 500):
            part = things[chunk : chunk + 500]
            rows = await conn.execute(select(E).where(E.c.thing_name.in_(part), E.c.status.in_(PENDING)))
            for r in rows:
                by_thing[r.thing_name].append(r)
        heads = {t: pending.head(rows) for t, rows in by_thing.items()}
        job_ids = sorted({h.job_id for h in heads.values() if h is not None})
        documents: dict[str, str | None] = {}
        if job_ids:
            found = await conn.execute(select(J.c.job_id, J.c.document, J.c.config).where(J.c.job_id.in_(job_ids)))
            documents = {r.job_id: self._deliver(r) for r in found}
        return {
            t: PendingChanged(
                t,
                self.listing(rows),
                self._execution(heads[t], documents.get(heads[t].job_id)) if heads[t] is not None else None,
                True,
                True,
            )
            for t, rows in by_thing.items()
        }

    # -- redelivered requests ------------------------------------------------------------------------

    async def _replay(self, conn: AsyncConnection, request_key: str | None) -> dict[str, Any] | None:
        if request_key is None:
            return None
        return await conn.scalar(select(R.c.result).where(R.c.request_key == request_key))

    async def _remember(
        self, conn: AsyncConnection, request_key: str | None, result: dict[str, Any], now: float
    ) -> None:
        """Stored in the same transaction as the change: either both happened or neither."""
        if request_key is not None:
            await conn.execute(insert(R).values(request_key=request_key, result=result, created_at=now))

    async def forget_requests(self, older_than: float) -> int:
        async with self.ctx.db.write() as conn:
            return (await conn.execute(delete(R).where(R.c.created_at < older_than))).rowcount or 0

    async def things_of_job(self, job_id: str, after_id: int, limit: int) -> list[tuple[int, str]]:
        """A page of (execution id, thing name) of a job, for announcing changes to its things."""
        async with self.ctx.db.read() as conn:
            rows = await conn.execute(
                select(E.c.id, E.c.thing_name)
                .where(E.c.job_id == job_id, E.c.id > after_id)
                .order_by(E.c.id)
                .limit(limit)
            )
            return [(r.id, r.thing_name) for r in rows]

    # -- the one place an execution changes status on a device's word ----------------------------

    async def _transition(
        self,
        conn: AsyncConnection,
        row: Any,
        status: str,
        now: float,
        details: dict[str, str] | None,
        step_minutes: int | None,
        *,
        job: Any,
        pending_rows: list[Any],
    ) -> Any:
        values: dict[str, Any] = {"status": status, "last_updated_at": now, "version_number": row.version_number + 1}
        if details is not None:
            values["status_details"] = details
        if status == IN_PROGRESS:
            in_progress_deadline = row.in_progress_deadline
            if row.status == QUEUED:
                values["started_at"] = now
                timeout = ((job.config or {}).get("timeoutConfig") or {}).get("inProgressTimeoutInMinutes")
                in_progress_deadline = now + timeout * 60 if timeout else None
                values["in_progress_deadline"] = in_progress_deadline
            if step_minutes == -1:
                values["step_deadline"] = None
            elif step_minutes is not None:
                deadline = now + step_minutes * 60
                if in_progress_deadline is not None:
                    deadline = min(deadline, in_progress_deadline)
                values["step_deadline"] = deadline
            step_deadline = values.get("step_deadline", row.step_deadline)
            values["timeout_at"] = min(
                (d for d in (in_progress_deadline, step_deadline) if d is not None), default=None
            )
        elif status in TERMINAL:
            values["in_progress_deadline"] = None
            values["step_deadline"] = None
            values["timeout_at"] = None
        result = await conn.execute(
            update(E)
            .where(E.c.id == row.id, E.c.version_number == row.version_number, E.c.status == row.status)
            .values(**values)
            .returning(*E.c)
        )
        new = result.first()
        if new is None:
            raise VersionConflict("The job execution was updated concurrently; retry.", executionState=self._state(row))
        if row.status != status:
            await adjust_counters(conn, row.job_id, {row.status: -1, status: 1}, now)
            if status in TERMINAL:
                record_event(
                    conn, ExecutionEvent(row.job_id, row.thing_name, status.lower(), status, new.status_details)
                )
                await after_outcomes(conn, row.job_id, job.config, [new], now)
                if status == "SUCCEEDED":
                    await after_success(conn, job.config, row.thing_name, now)
                await complete_finished_jobs(conn, [row.job_id], now)
            await self._announce(conn, pending_rows, new, job)
        return new

    async def _announce(self, conn: AsyncConnection, before: list[Any], new: Any, job: Any) -> None:
        """Publish (after commit) the notify / notify-next this change calls for, decided from the
        rows the transaction already holds."""
        after = pending.replace(before, new)
        notify, notify_next = pending.changes(before, after)
        if not (notify or notify_next):
            return
        head = pending.head(after)
        execution = None
        if notify_next and head is not None:
            document = self._deliver(job if head.job_id == new.job_id else await self._job(conn, head.job_id))
            execution = self._execution(head, document)
        record_event(conn, PendingChanged(new.thing_name, self.listing(after), execution, notify, notify_next))

    async def _pending_rows(self, conn: AsyncConnection, thing_name: str, *, for_update: bool = False) -> list[Any]:
        q = (
            select(E)
            .where(E.c.thing_name == thing_name, E.c.status.in_((QUEUED, IN_PROGRESS)))
            .order_by(E.c.queued_at, E.c.id)
        )
        if for_update and conn.dialect.name == "postgresql":
            q = q.with_for_update()
        return list((await conn.execute(q)).all())

    def _deliver(self, job: Any) -> str | None:
        """The document as a device gets it: presigned URLs signed now, for this delivery."""
        return delivery_document(job.document, job.config, self.store)

    async def _job(self, conn: AsyncConnection, job_id: str) -> Any:
        return (await conn.execute(select(J.c.document, J.c.config, J.c.status).where(J.c.job_id == job_id))).one()

    def _execution(self, row: Any, document: str | None) -> dict[str, Any]:
        return compact(
            {
                "jobId": row.job_id,
                "thingName": row.thing_name,
                "status": row.status,
                "statusDetails": row.status_details or None,
                "queuedAt": int(row.queued_at),
                "startedAt": int(row.started_at) if row.started_at is not None else None,
                "lastUpdatedAt": int(row.last_updated_at),
                "approximateSecondsBeforeTimedOut": self.executions.seconds_before_timeout(row),
                "versionNumber": row.version_number,
                "executionNumber": row.execution_number,
                "jobDocument": document,
            }
        )

    @staticmethod
    def _state(row: Any) -> dict[str, Any]:
        return compact(
            {"status": row.status, "statusDetails": row.status_details or None, "versionNumber": row.version_number}
        )

    @staticmethod
    def _summary(row: Any) -> dict[str, Any]:
        return compact(
            {
                "jobId": row.job_id,
                "queuedAt": int(row.queued_at),
                "startedAt": int(row.started_at) if row.started_at is not None else None,
                "lastUpdatedAt": int(row.last_updated_at),
                "versionNumber": row.version_number,
                "executionNumber": row.execution_number,
            }
        )
