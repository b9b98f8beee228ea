"""Executions as the device side sees them: pending lists, ``$next``, and the answers' shapes.

The device APIs (HTTPS and MQTT), the notifications the device façade decides in its own
transaction, and the notice drain all build a thing's listing and its ``$next`` execution here, so
a device hears the same document whichever path told it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.artifacts import ArtifactStore
from fleetjobs.clock import Clock
from fleetjobs.domain import pending
from fleetjobs.domain.errors import ResourceNotFound, ServiceUnavailable
from fleetjobs.domain.execution_state import IN_PROGRESS, PENDING, QUEUED
from fleetjobs.domain.timers import seconds_before_timeout
from fleetjobs.service.effects.job_documents import delivery_document
from fleetjobs.service.events import PendingChanged
from fleetjobs.service.pagination import compact
from fleetjobs.store.rows import (
    ExecutionRow,
    JobDeliveryRow,
    as_execution,
    as_executions,
    as_job_deliveries,
)
from fleetjobs.store.sql import among, locked
from fleetjobs.store.tables import EXECUTIONS, JOBS

log = logging.getLogger("fleetjobs.device")

THINGS_PER_QUERY = 500


async def pending_rows(
    conn: AsyncConnection, things: Sequence[str], *, lock: bool = False
) -> dict[str, list[ExecutionRow]]:
    """Each thing's QUEUED and IN_PROGRESS executions, a query per 500 things (``lock``: until commit,
    on PostgreSQL; rows are locked in id order, so two transactions never wait on each other in a circle)."""
    by_thing: dict[str, list[ExecutionRow]] = {t: [] for t in things}
    for chunk in range(0, len(things), THINGS_PER_QUERY):
        part = things[chunk : chunk + THINGS_PER_QUERY]
        q = (
            select(EXECUTIONS)
            .where(among(EXECUTIONS.c.thing_name, part, conn), EXECUTIONS.c.status.in_(PENDING))
            .order_by(EXECUTIONS.c.id)
        )
        for r in as_executions(await conn.execute(locked(q, conn) if lock else q)):
            by_thing[r.thing_name].append(r)
    return by_thing


async def latest_execution(
    conn: AsyncConnection, job_id: str, thing_name: str, execution_number: int | None, *, lock: bool = False
) -> ExecutionRow:
    """The addressed execution: a given executionNumber, else the latest one."""
    q = select(EXECUTIONS).where(EXECUTIONS.c.job_id == job_id, EXECUTIONS.c.thing_name == thing_name)
    if execution_number is not None:
        q = q.where(EXECUTIONS.c.execution_number == execution_number)
    q = q.order_by(EXECUTIONS.c.execution_number.desc()).limit(1)
    row = (await conn.execute(locked(q, conn) if lock else q)).first()
    if row is None:
        raise ResourceNotFound(f"Job execution of job {job_id} on thing {thing_name} cannot be found.")
    return as_execution(row)


async def jobs_for_delivery(conn: AsyncConnection, job_ids: Sequence[str]) -> dict[str, JobDeliveryRow]:
    """What delivering these jobs needs of their rows, in one query."""
    if not job_ids:
        return {}
    q = select(JOBS.c.job_id, JOBS.c.document, JOBS.c.config, JOBS.c.status).where(among(JOBS.c.job_id, job_ids, conn))
    return {j.job_id: j for j in as_job_deliveries(await conn.execute(q))}


class DocumentUnavailable(ServiceUnavailable):
    """A job's document cannot be built for delivery right now (its presigned URLs cannot be
    signed: the artifact store fails).  The request that needed it is answered
    ServiceUnavailableException (HTTPS 503; MQTT ``InternalError``, the Jobs MQTT API's code for a
    server-side failure), changes nothing and may be retried; nothing else is held back."""

    def __init__(self, job_id: str) -> None:
        super().__init__(
            f"The job document of job {job_id} cannot be delivered right now (its presigned URLs cannot be "
            "signed); retry later."
        )
        self.job_id = job_id


class DeviceViews:
    """Answers' shapes, with the clock (``approximateSecondsBeforeTimedOut``) and the artifact
    store (presigned URLs are signed at delivery) they depend on."""

    def __init__(self, clock: Clock, store: ArtifactStore | None = None) -> None:
        self.clock = clock
        self.store = store

    def deliver(self, job: JobDeliveryRow) -> str | None:
        """The document as a device gets it: presigned URLs signed now, for this delivery.

        Raises ``DocumentUnavailable`` (a ServiceError: the answer of the one request that needed
        this document) if it cannot be built now, e.g. the artifact store fails.  Any other
        exception would abort the whole batch's transaction, and so fail the other things'
        requests and the thing's requests about its other jobs along with it."""
        try:
            return delivery_document(job.document, job.config, self.store)
        except Exception as e:
            log.warning("cannot build the document of job %s for delivery: %r", job.job_id, e)
            raise DocumentUnavailable(job.job_id) from e

    def execution(self, row: ExecutionRow, document: str | None) -> dict[str, Any]:
        return compact(
            {
                "jobId": row.job_id,
                "thingName": row.thing_name,
                "status": row.status,
                "statusDetails": row.status_details or None,
                "queuedAt": int(row.queued_at),
                "startedAt": int(row.started_at) if row.started_at is not None else None,
                "lastUpdatedAt": int(row.last_updated_at),
                "approximateSecondsBeforeTimedOut": seconds_before_timeout(
                    row.status, row.in_progress_deadline, row.step_deadline, self.clock.now()
                ),
                "versionNumber": row.version_number,
                "executionNumber": row.execution_number,
                "jobDocument": document,
            }
        )

    @staticmethod
    def state(row: ExecutionRow) -> dict[str, Any]:
        return compact(
            {"status": row.status, "statusDetails": row.status_details or None, "versionNumber": row.version_number}
        )

    @staticmethod
    def summary(row: ExecutionRow) -> dict[str, Any]:
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

    def listing(self, rows: Sequence[ExecutionRow]) -> dict[str, Any]:
        """GetPendingJobExecutions' answer (and ``notify``'s content) from a thing's pending rows."""
        ordered: list[ExecutionRow] = pending.ordered(rows)
        return {
            "inProgressJobs": [self.summary(r) for r in ordered if r.status == IN_PROGRESS],
            "queuedJobs": [self.summary(r) for r in ordered if r.status == QUEUED],
        }

    async def pending_views(
        self, conn: AsyncConnection, things: list[str]
    ) -> tuple[dict[str, PendingChanged], dict[str, str]]:
        """Each thing's listing and ``$next`` execution (with its document), in two queries per
        500 things: what the notification drain publishes.  Also the things whose ``$next``
        document cannot be built now (and that job): their view has the listing but no execution (notify only),
        and the drain tries their notify-next again later."""
        by_thing = await pending_rows(conn, things)
        heads: dict[str, ExecutionRow | None] = {t: pending.head(rows) for t, rows in by_thing.items()}
        job_ids = sorted({h.job_id for h in heads.values() if h is not None})
        documents: dict[str, str | None] = {}
        broken: set[str] = set()
        for job in (await jobs_for_delivery(conn, job_ids)).values():
            try:
                documents[job.job_id] = self.deliver(job)
            except DocumentUnavailable:
                # One job's document must not hold back every other thing's notifications.
                broken.add(job.job_id)
        views: dict[str, PendingChanged] = {}
        undeliverable: dict[str, str] = {}
        for thing, rows in by_thing.items():
            head = heads[thing]
            if head is not None and head.job_id in broken:
                views[thing] = PendingChanged(thing, self.listing(rows), None, True, False)
                undeliverable[thing] = head.job_id
                continue
            execution = self.execution(head, documents.get(head.job_id)) if head is not None else None
            views[thing] = PendingChanged(thing, self.listing(rows), execution, True, True)
        return views, undeliverable
