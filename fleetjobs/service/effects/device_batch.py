"""Device requests that arrive together, applied in one transaction with set-based SQL.

A fleet answering a notify-next sends thousands of requests at once; one transaction each would
spend most of its time on statement overhead.  A batch reads the pending lists of all its things
in one query, the jobs and the stored answers in one query each, applies every request in arrival
order to those rows in memory (the same rules as one request alone: :mod:`fleetjobs.domain`), and
then writes: every changed execution in one executemany, the job counters once per job, the
answers' records in one insert, and the notify / notify-next each thing's change calls for,
decided from the same rows.

Exactness: a thing whose execution reaches a terminal status in a batch may get a retry, an abort
or a completed job from that outcome, which only the write phase computes; its later requests in
the batch are therefore *deferred* (returned to the caller, to be applied in a following batch, in
order), so every request sees exactly what it would have seen alone.  Errors of one request
(``ServiceError``) are its answer and change nothing; any other failure aborts the transaction and
the caller replays the batch one request at a time.  A job document that cannot be built for
delivery (``DocumentUnavailable``) is such an error of the one request that needed it; a notify-next
that needs it becomes a durable notice, retried by the drain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.domain import job_status, pending
from fleetjobs.domain.errors import (
    InvalidStateTransition,
    ResourceNotFound,
    ServiceError,
    TerminalState,
    VersionConflict,
)
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
from fleetjobs.service.effects.device_views import (
    DeviceViews,
    DocumentUnavailable,
    jobs_for_delivery,
    latest_execution,
    pending_rows,
)
from fleetjobs.service.effects.execution_moves import adjust_counters, complete_finished_jobs
from fleetjobs.service.effects.notices import notice_things
from fleetjobs.service.effects.outcomes import after_outcomes, after_success
from fleetjobs.service.events import ExecutionEvent, PendingChanged
from fleetjobs.store.database import record_event
from fleetjobs.store.rows import ExecutionRow, JobDeliveryRow
from fleetjobs.store.sql import among
from fleetjobs.store.tables import DEVICE_REQUESTS, EXECUTIONS

GET_PENDING = "GetPendingJobExecutions"
START_NEXT = "StartNextPendingJobExecution"
DESCRIBE = "DescribeJobExecution"
UPDATE = "UpdateJobExecution"
NEXT = "$next"
_WRITTEN = (
    "status",
    "status_details",
    "last_updated_at",
    "version_number",
    "started_at",
    "in_progress_deadline",
    "step_deadline",
    "timeout_at",
)


@dataclass
class DeviceCall:
    """One device request: its operation, its service-layer request, and (for a change that may be
    delivered again) the key its answer is remembered under."""

    operation: str
    req: dict[str, Any]
    request_key: str | None = None


@dataclass
class Execution:
    """An execution row the batch may change: its columns, and the version it was read at."""

    id: int
    job_id: str
    thing_name: str
    execution_number: int
    status: str
    status_details: dict[str, str] | None
    queued_at: float
    started_at: float | None
    last_updated_at: float
    version_number: int
    force_canceled: bool
    retry_attempt: int
    in_progress_deadline: float | None
    step_deadline: float | None
    timeout_at: float | None
    failed_retries: int
    timed_out_retries: int
    read_version: int = 0

    @classmethod
    def of(cls, row: ExecutionRow) -> Execution:
        values = dict(row._mapping)  # type: ignore[attr-defined]  # a Row behind the protocol
        return cls(**values, read_version=values["version_number"])

    def copy(self) -> Execution:
        return Execution(**self.__dict__)


Outcome = dict[str, Any] | ServiceError


@dataclass
class BatchResult:
    outcomes: list[Outcome | None]  # None: deferred to a following batch
    deferred: list[int] = field(default_factory=list)


class _Batch:
    def __init__(self, conn: AsyncConnection, views: DeviceViews, now: float) -> None:
        self.conn = conn
        self.views = views
        self.now = now
        self.pending: dict[str, list[Execution]] = {}
        self.before: dict[str, list[Execution]] = {}
        self.jobs: dict[str, JobDeliveryRow] = {}
        self.stored: dict[str, Any] = {}
        self.changed: dict[int, Execution] = {}
        self.counters: dict[str, dict[str, int]] = {}
        self.finished: dict[str, list[Execution]] = {}  # job -> executions that became terminal
        self.successes: list[tuple[str, str]] = []  # (job_id, thing)
        self.remembered: dict[str, tuple[dict[str, Any], Execution]] = {}
        self.closed_things: set[str] = set()

    # -- reads -----------------------------------------------------------------------------------

    async def load(self, calls: list[DeviceCall], *, lock: bool) -> None:
        things = list(dict.fromkeys(c.req["thingName"] for c in calls))
        read = await pending_rows(self.conn, things, lock=lock)
        self.pending = {t: [Execution.of(r) for r in rows] for t, rows in read.items()}
        self.before = {t: [e.copy() for e in rows] for t, rows in self.pending.items()}
        job_ids = {e.job_id for rows in self.pending.values() for e in rows}
        job_ids |= {c.req["jobId"] for c in calls if c.req.get("jobId") not in (None, NEXT)}
        await self._load_jobs(job_ids)
        keys = [c.request_key for c in calls if c.request_key is not None]
        if keys:
            q2 = select(
                DEVICE_REQUESTS.c.request_key,
                DEVICE_REQUESTS.c.result,
                DEVICE_REQUESTS.c.job_id,
                DEVICE_REQUESTS.c.execution_number,
                DEVICE_REQUESTS.c.version_number,
            ).where(among(DEVICE_REQUESTS.c.request_key, keys, self.conn))
            self.stored = {r.request_key: r for r in await self.conn.execute(q2)}

    async def _load_jobs(self, job_ids: set[str]) -> None:
        self.jobs.update(await jobs_for_delivery(self.conn, sorted(job_ids - set(self.jobs))))

    async def job(self, job_id: str) -> JobDeliveryRow:
        if job_id not in self.jobs:
            await self._load_jobs({job_id})
        return self.jobs[job_id]

    # -- answers remembered for redelivery ---------------------------------------------------------

    def replay(self, key: str | None, addressed: ExecutionRow | None) -> dict[str, Any] | None:
        """The stored answer, if it still stands (see ``DeviceRequest``): same execution, same version."""
        if key is None or addressed is None:
            return None
        if key in self.remembered:
            result, produced = self.remembered[key]
            same = (produced.job_id, produced.execution_number, produced.version_number)
        else:
            stored = self.stored.get(key)
            if stored is None:
                return None
            result = stored.result
            same = (stored.job_id, stored.execution_number, stored.version_number)
        if same != (addressed.job_id, addressed.execution_number, addressed.version_number):
            return None
        return result

    def remember(self, key: str | None, result: dict[str, Any], produced: Execution | None) -> None:
        if key is not None and produced is not None:
            self.remembered[key] = (result, produced.copy())

    # -- the operations ---------------------------------------------------------------------------

    async def apply(self, call: DeviceCall) -> Outcome:
        try:
            op = call.operation
            if op == GET_PENDING:
                return self.views.listing(self.pending[call.req["thingName"]])
            if op == START_NEXT:
                return await self.start_next(call)
            if op == DESCRIBE:
                return await self.describe(call)
            return await self.update(call)
        except ServiceError as e:
            return e

    async def start_next(self, call: DeviceCall) -> dict[str, Any]:
        req = call.req
        check_status_details(req.get("statusDetails"))
        check_step_timeout(req.get("stepTimeoutInMinutes"), allow_cancel=False)
        head: Execution | None = pending.head(self.pending[req["thingName"]])
        replay = self.replay(call.request_key, head)
        if replay is not None:
            return replay
        if head is None:
            return {}
        job = await self.job(head.job_id)
        document = self.views.deliver(job)  # first: a document that cannot be built changes nothing
        if head.status == QUEUED:
            self.transition(head, IN_PROGRESS, req.get("statusDetails"), req.get("stepTimeoutInMinutes"), job)
        result = {"execution": self.views.execution(head, document)}
        self.remember(call.request_key, result, head)
        return result

    async def describe(self, call: DeviceCall) -> dict[str, Any]:
        req = call.req
        thing = req["thingName"]
        if req["jobId"] == NEXT:
            row: Any = pending.head(self.pending[thing])
            if row is None:
                raise ResourceNotFound(f"No pending job execution for thing {thing}.")
            job = await self.job(row.job_id)
        else:
            number = req.get("executionNumber")
            row = self._pending_of(thing, req["jobId"], number)
            if row is None:
                row = await latest_execution(self.conn, req["jobId"], thing, number)
            job = await self.job(row.job_id)
            if row.status in TERMINAL and job.status in job_status.TERMINAL:
                raise TerminalState(
                    f"Job {row.job_id} is {job.status} and its execution on {row.thing_name} is {row.status}."
                )
        document = self.views.deliver(job) if req.get("includeJobDocument", True) else None
        return {"execution": self.views.execution(row, document)}

    async def update(self, call: DeviceCall) -> dict[str, Any]:
        req = call.req
        thing = req["thingName"]
        status = req["status"]
        check_status_details(req.get("statusDetails"))
        step = req.get("stepTimeoutInMinutes")
        check_step_timeout(step, allow_cancel=True)
        number = req.get("executionNumber")
        row: Any = self._pending_of(thing, req["jobId"], number)
        if row is None:  # not pending: the latest execution says why it cannot change
            row = await latest_execution(self.conn, req["jobId"], thing, number, lock=True)
        replay = self.replay(call.request_key, row)
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
        job = await self.job(row.job_id)
        # Built before the change: if it cannot be, the update is refused whole, not half-answered.
        document = self.views.deliver(job) if req.get("includeJobDocument") and job.document is not None else None
        self.transition(row, status, req.get("statusDetails"), step, job)
        result: dict[str, Any] = {}
        if req.get("includeJobExecutionState"):
            result["executionState"] = self.views.state(row)
        if document is not None:
            result["jobDocument"] = document
        self.remember(call.request_key, result, row)
        return result

    def _pending_of(self, thing: str, job_id: str, number: int | None) -> Execution | None:
        return next(
            (e for e in self.pending[thing] if e.job_id == job_id and number in (None, e.execution_number)),
            None,
        )

    # -- the one place an execution changes on a device's word, in memory -----------------------------

    def transition(
        self, row: Execution, status: str, details: dict[str, str] | None, step: int | None, job: JobDeliveryRow
    ) -> None:
        from_status = row.status
        timeout = ((job.config or {}).get("timeoutConfig") or {}).get("inProgressTimeoutInMinutes")
        timers = deadlines_after(
            from_status,
            status,
            in_progress_deadline=row.in_progress_deadline,
            step_deadline=row.step_deadline,
            now=self.now,
            in_progress_minutes=timeout,
            step_minutes=step,
        )
        if status == IN_PROGRESS and from_status == QUEUED:
            row.started_at = self.now
        for column, value in timers.items():
            setattr(row, column, value)
        if details is not None:
            row.status_details = details
        row.status = status
        row.last_updated_at = self.now
        row.version_number += 1
        self.changed[row.id] = row
        if from_status != status:
            deltas = self.counters.setdefault(row.job_id, {})
            deltas[from_status] = deltas.get(from_status, 0) - 1
            deltas[status] = deltas.get(status, 0) + 1
        if status in TERMINAL:
            self.pending[row.thing_name] = [e for e in self.pending[row.thing_name] if e.id != row.id]
            self.closed_things.add(row.thing_name)
            self.finished.setdefault(row.job_id, []).append(row)
            if status == SUCCEEDED:
                self.successes.append((row.job_id, row.thing_name))

    # -- writes ---------------------------------------------------------------------------------------

    async def write(self) -> None:
        conn, now = self.conn, self.now
        if self.changed:
            stmt = (
                update(EXECUTIONS)
                .where(EXECUTIONS.c.id == bindparam("b_id"), EXECUTIONS.c.version_number == bindparam("b_read"))
                .values({c: bindparam(f"b_{c}") for c in _WRITTEN})
            )
            params = [
                {"b_id": e.id, "b_read": e.read_version, **{f"b_{c}": getattr(e, c) for c in _WRITTEN}}
                for e in self.changed.values()
            ]
            # Every changed row was read FOR UPDATE in this transaction (SQLite: the one writer), so
            # no other writer can have moved it since: the version guard cannot miss.
            await conn.execute(stmt, params)
        # Job rows in one order in every transaction: two batches never wait on each other in a circle.
        for job_id in sorted(self.counters):
            await adjust_counters(conn, job_id, self.counters[job_id], now)
        for job_id, rows in sorted(self.finished.items()):
            job = self.jobs[job_id]
            for e in rows:
                record_event(conn, ExecutionEvent(e.job_id, e.thing_name, e.status.lower(), e.status, e.status_details))
            await after_outcomes(conn, job_id, job.config, rows, now)
        for job_id, thing in self.successes:
            await after_success(conn, self.jobs[job_id].config, thing, now)
        if self.finished:
            await complete_finished_jobs(conn, sorted(self.finished), now)
        if self.remembered:
            keys = list(self.remembered)
            await conn.execute(delete(DEVICE_REQUESTS).where(among(DEVICE_REQUESTS.c.request_key, keys, conn)))
            await conn.execute(
                insert(DEVICE_REQUESTS),
                [
                    {
                        "request_key": key,
                        "result": result,
                        "created_at": now,
                        "job_id": e.job_id,
                        "execution_number": e.execution_number,
                        "version_number": e.version_number,
                    }
                    for key, (result, e) in self.remembered.items()
                ],
            )
        await self._announce()

    async def _announce(self) -> None:
        """notify / notify-next per thing whose pending list or ``$next`` the batch changed."""
        for thing, before in self.before.items():
            after = self.pending[thing]
            notify, notify_next = pending.changes(before, after)
            if not (notify or notify_next):
                continue
            head: Execution | None = pending.head(after)
            execution = None
            if notify_next and head is not None:
                job = await self.job(head.job_id)
                try:
                    execution = self.views.execution(head, self.views.deliver(job))
                except DocumentUnavailable:
                    # The change itself stands (the device's request succeeded); its notify-next
                    # waits for the document, as a durable notice the drain retries with backoff.
                    await notice_things(self.conn, [thing], self.now, job_id=head.job_id, next_always=True)
                    notify_next = False
                    if not notify:
                        continue
            listing = self.views.listing(after)
            record_event(self.conn, PendingChanged(thing, listing, execution, notify, notify_next))


def changes(call: DeviceCall) -> bool:
    """Can the call change anything (so its rows are locked and it needs a write transaction)?"""
    return call.operation in (START_NEXT, UPDATE)


async def apply_batch(conn: AsyncConnection, views: DeviceViews, calls: list[DeviceCall], now: float) -> BatchResult:
    """Apply ``calls`` (in arrival order) in the caller's write transaction."""
    batch = _Batch(conn, views, now)
    await batch.load(calls, lock=any(changes(c) for c in calls))
    result = BatchResult([])
    for i, call in enumerate(calls):
        if call.req["thingName"] in batch.closed_things:
            result.outcomes.append(None)
            result.deferred.append(i)
            continue
        result.outcomes.append(await batch.apply(call))
    await batch.write()
    return result
