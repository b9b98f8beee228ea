"""Jobs: CreateJob, DescribeJob, ListJobs, GetJobDocument, CancelJob, DeleteJob, UpdateJob,
AssociateTargetsWithJob."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

from sqlalchemy import and_, delete, exists, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.artifacts import ArtifactStore
from fleetjobs.domain import job_config
from fleetjobs.domain.cron import upcoming_starts
from fleetjobs.domain.errors import (
    InvalidRequest,
    InvalidStateTransition,
    LimitExceeded,
    ResourceAlreadyExists,
    ResourceNotFound,
)
from fleetjobs.domain.execution_state import CANCELED, COUNTER_FIELD, IN_PROGRESS, PENDING, QUEUED
from fleetjobs.domain.rollout import RolloutConfig
from fleetjobs.service import events, job_documents
from fleetjobs.service.context import ServiceContext
from fleetjobs.service.execution_moves import complete_finished_jobs, move_executions
from fleetjobs.service.pagination import compact, decode_token, page, page_size
from fleetjobs.service.pending_notices import notice_job, notice_query
from fleetjobs.service.rollout import RolloutEngine, needs_engine, windows_of
from fleetjobs.service.targets import ResolvedTarget, fan_out, resolve_targets
from fleetjobs.service.templates import JobTemplates
from fleetjobs.store.database import record_event
from fleetjobs.store.schema import Job, JobExecution, JobTarget, RolloutQueue

log = logging.getLogger(__name__)

J = Job.__table__
RQ = RolloutQueue.__table__
E = JobExecution.__table__
JT = JobTarget.__table__

# CreateJob members kept verbatim in the job's ``config`` column and echoed by DescribeJob.
CONFIG_MEMBERS = (
    "presignedUrlConfig",
    "jobExecutionsRolloutConfig",
    "abortConfig",
    "timeoutConfig",
    "jobExecutionsRetryConfig",
    "documentParameters",
    "schedulingConfig",
    "destinationPackageVersions",
)
# Members a custom job template supplies unless the CreateJob request overrides them.
TEMPLATE_MEMBERS = ("document", "documentSource", "description", *CONFIG_MEMBERS)
UPDATABLE_MEMBERS = (
    "presignedUrlConfig",
    "jobExecutionsRolloutConfig",
    "abortConfig",
    "timeoutConfig",
    "jobExecutionsRetryConfig",
)
MAX_DELETING_JOBS = 10
MAX_TARGETS = 100
DELETE_CHUNK = 5000


class Jobs:
    def __init__(
        self, ctx: ServiceContext, templates: JobTemplates, rollout: RolloutEngine, store: ArtifactStore | None = None
    ) -> None:
        self.ctx = ctx
        self.templates = templates
        self.rollout = rollout
        self.store = store
        self._purge_wakeup = asyncio.Event()

    # -- create ------------------------------------------------------------------------------

    async def create_job(self, req: dict[str, Any]) -> dict[str, Any]:
        now = self.ctx.clock.now()
        job_id = req["jobId"]
        async with self.ctx.db.write() as conn:
            merged = dict(req)
            template_arn = req.get("jobTemplateArn")
            managed = None
            if template_arn:
                inherited = await self.templates.template_for_job(conn, template_arn)
                managed = inherited.pop("managedTemplate", None)
                overrides_document = "document" in req or "documentSource" in req
                for member in TEMPLATE_MEMBERS:
                    if member in ("document", "documentSource") and overrides_document:
                        continue
                    if member not in req and inherited.get(member) is not None:
                        merged[member] = inherited[member]
            job_config.validate_job_request(merged, now)
            document, as_given = await job_documents.creation_document(conn, merged, managed, self.store)
            if await self._job_exists(conn, job_id):
                raise ResourceAlreadyExists(
                    f"Job with id {job_id} already exists.", resourceId=job_id, resourceArn=self._arn(job_id)
                )
            targets = await resolve_targets(conn, self.ctx.partition, merged["targets"])
            scheduled = bool((merged.get("schedulingConfig") or {}).get("startTime"))
            config = {k: merged[k] for k in CONFIG_MEMBERS if merged.get(k) is not None}
            staged = needs_engine(config)
            try:
                await conn.execute(
                    insert(J).values(
                        job_id=job_id,
                        status="SCHEDULED" if scheduled else IN_PROGRESS,
                        target_selection=merged.get("targetSelection") or "SNAPSHOT",
                        targets=merged["targets"],
                        document=document,
                        document_template=as_given,
                        document_source=merged.get("documentSource"),
                        description=merged.get("description"),
                        namespace_id=merged.get("namespaceId"),
                        job_template_arn=template_arn,
                        config=config,
                        tags=merged.get("tags") or [],
                        force_canceled=False,
                        processing_targets=merged["targets"] if staged else None,
                        created_at=now,
                        last_updated_at=now,
                        n_queued=0,
                        n_in_progress=0,
                        n_succeeded=0,
                        n_failed=0,
                        n_rejected=0,
                        n_canceled=0,
                        n_removed=0,
                        n_timed_out=0,
                    )
                )
            except IntegrityError:
                raise ResourceAlreadyExists(
                    f"Job with id {job_id} already exists.", resourceId=job_id, resourceArn=self._arn(job_id)
                ) from None
            await self._record_group_targets(conn, job_id, targets)
            created = await self.rollout.begin(conn, job_id, config, targets, now)
            if created:
                await notice_job(conn, job_id, now)
            if not staged:
                await complete_finished_jobs(conn, [job_id], now)
        if staged:
            self.rollout.wakeup.set()
        return {"jobArn": self._arn(job_id), "jobId": job_id, "description": merged.get("description")}

    # -- read ----------------------------------------------------------------------------------

    async def describe_job(self, req: dict[str, Any]) -> dict[str, Any]:
        async with self.ctx.db.read() as conn:
            row = await self._get(conn, req["jobId"])
        cfg = row.config or {}
        counters = {field: int(getattr(row, col)) for col, field in COUNTER_FIELD.items()}
        process = {"processingTargets": row.processing_targets, **counters}
        job = compact(
            {
                "jobArn": self._arn(row.job_id),
                "jobId": row.job_id,
                "targetSelection": row.target_selection,
                "status": row.status,
                "forceCanceled": bool(row.force_canceled),
                "reasonCode": row.reason_code,
                "comment": row.comment,
                "targets": row.targets,
                "description": row.description,
                "createdAt": row.created_at,
                "lastUpdatedAt": row.last_updated_at,
                "completedAt": row.completed_at,
                "jobProcessDetails": compact(process),
                "namespaceId": row.namespace_id,
                "jobTemplateArn": row.job_template_arn,
                "isConcurrent": self._is_concurrent(row),
                **{k: cfg[k] for k in CONFIG_MEMBERS if k in cfg},
                "scheduledJobRollouts": self._scheduled_rollouts(cfg),
            }
        )
        return {"documentSource": row.document_source, "job": job}

    async def get_job_document(self, req: dict[str, Any]) -> dict[str, Any]:
        async with self.ctx.db.read() as conn:
            row = await self._get(conn, req["jobId"])
        if req.get("beforeSubstitution") and row.document_template is not None:
            return {"document": row.document_template}
        return {"document": row.document}

    async def list_jobs(self, req: dict[str, Any]) -> dict[str, Any]:
        size = page_size(req)
        after = decode_token(req.get("nextToken"))
        cols = [J.c.job_id, J.c.target_selection, J.c.status, J.c.created_at, J.c.last_updated_at, J.c.completed_at]
        cols += [J.c.processing_targets]
        q = select(*cols)
        if req.get("status"):
            q = q.where(J.c.status == req["status"])
        if req.get("targetSelection"):
            q = q.where(J.c.target_selection == req["targetSelection"])
        if req.get("namespaceId"):
            q = q.where(J.c.namespace_id == req["namespaceId"])
        group_cond = []
        if req.get("thingGroupName"):
            group_cond.append(JT.c.group_name == req["thingGroupName"])
        if req.get("thingGroupId"):
            group_cond.append(JT.c.group_id == req["thingGroupId"])
        if group_cond:
            q = q.where(exists().where(and_(JT.c.job_id == J.c.job_id, *group_cond)))
        if after is not None:
            created, job_id = after
            q = q.where(or_(J.c.created_at < created, and_(J.c.created_at == created, J.c.job_id > job_id)))
        q = q.order_by(J.c.created_at.desc(), J.c.job_id).limit(size + 1)
        async with self.ctx.db.read() as conn:
            rows = (await conn.execute(q)).all()
            rows, token = page(rows, size, lambda r: [r.created_at, r.job_id])
            group_ids = await self._first_group_ids(conn, [r.job_id for r in rows])
        jobs = [
            compact(
                {
                    "jobArn": self._arn(r.job_id),
                    "jobId": r.job_id,
                    "thingGroupId": group_ids.get(r.job_id),
                    "targetSelection": r.target_selection,
                    "status": r.status,
                    "createdAt": r.created_at,
                    "lastUpdatedAt": r.last_updated_at,
                    "completedAt": r.completed_at,
                    "isConcurrent": self._is_concurrent(r),
                }
            )
            for r in rows
        ]
        return {"jobs": jobs, "nextToken": token}

    # -- change --------------------------------------------------------------------------------

    async def cancel_job(self, req: dict[str, Any]) -> dict[str, Any]:
        now = self.ctx.clock.now()
        job_id = req["jobId"]
        force = bool(req.get("force"))
        async with self.ctx.db.write() as conn:
            row = await self._get(conn, job_id, for_update=True)
            if row.status == "DELETION_IN_PROGRESS":
                raise InvalidRequest(f"Job {job_id} is being deleted and cannot be canceled.")
            if row.status == "COMPLETED":
                raise InvalidRequest(f"Job {job_id} is COMPLETED and cannot be canceled.")
            if row.status == CANCELED and (not force or row.force_canceled):
                raise InvalidRequest(f"Job {job_id} is already canceled.")
            await conn.execute(delete(RQ).where(RQ.c.job_id == job_id))
            values: dict[str, Any] = {
                "status": CANCELED,
                "due_at": None,
                "processing_targets": None,
                "last_updated_at": now,
                "force_canceled": bool(row.force_canceled) or force,
            }
            if "reasonCode" in req:
                values["reason_code"] = req["reasonCode"]
            if "comment" in req:
                values["comment"] = req["comment"]
            await conn.execute(update(J).where(J.c.job_id == job_id).values(**values))
            record_event(conn, events.JobEvent(job_id, "cancellation_in_progress"))
            from_statuses = {QUEUED, IN_PROGRESS} if force else {QUEUED}
            await move_executions(
                conn,
                E.c.job_id == job_id,
                CANCELED,
                now,
                from_statuses=from_statuses,
                extra={"force_canceled": True} if force else None,
                event="canceled",
            )
            record_event(conn, events.JobEvent(job_id, "canceled"))
            await notice_job(conn, job_id, now, next_always=True)
        return {"jobArn": self._arn(job_id), "jobId": job_id, "description": row.description}

    async def update_job(self, req: dict[str, Any]) -> None:
        now = self.ctx.clock.now()
        job_id = req["jobId"]
        async with self.ctx.db.write() as conn:
            row = await self._get(conn, job_id, for_update=True)
            job_config.validate_job_update(req, current_config=row.config)
            if row.status not in (IN_PROGRESS, "SCHEDULED"):
                raise InvalidRequest(f"Job {job_id} is {row.status} and can no longer be updated.")
            if "timeoutConfig" in req:
                started = await conn.scalar(
                    select(func.count()).select_from(E).where(E.c.job_id == job_id, E.c.started_at.is_not(None))
                )
                if started:
                    raise InvalidRequest("The in-progress timeout cannot be changed after job executions have started.")
            config = dict(row.config or {})
            for member in UPDATABLE_MEMBERS:
                if member in req:
                    config[member] = req[member]
            values: dict[str, Any] = {"config": config, "last_updated_at": now}
            if "description" in req:
                values["description"] = req["description"]
            await conn.execute(update(J).where(J.c.job_id == job_id).values(**values))

    async def associate_targets_with_job(self, req: dict[str, Any]) -> dict[str, Any]:
        now = self.ctx.clock.now()
        job_id = req["jobId"]
        async with self.ctx.db.write() as conn:
            row = await self._get(conn, job_id, for_update=True)
            if row.target_selection != "CONTINUOUS":
                raise InvalidRequest("Targets can only be associated with a job whose targetSelection is CONTINUOUS.")
            if row.status != IN_PROGRESS:
                raise InvalidRequest(
                    f"Targets can only be associated with an IN_PROGRESS job; {job_id} is {row.status}."
                )
            new = [t for t in req["targets"] if t not in row.targets]
            all_targets = [*row.targets, *new]
            if len(all_targets) > MAX_TARGETS:
                raise LimitExceeded(f"A job can have at most {MAX_TARGETS} targets")
            targets = await resolve_targets(conn, self.ctx.partition, new)
            values: dict[str, Any] = {"targets": all_targets, "last_updated_at": now}
            if "comment" in req:
                values["comment"] = req["comment"]
            await conn.execute(update(J).where(J.c.job_id == job_id).values(**values))
            await self._record_group_targets(conn, job_id, targets)
            last_id = await conn.scalar(select(func.max(E.c.id))) or 0
            if row.processing_targets is not None and RolloutConfig.of(row.config) is not None:
                # Mid-rollout: the new targets join the queue and go out at the job's rate.
                await fan_out(conn, job_id, targets, now, into_queue=True)
                created = 0
            else:
                created = await fan_out(conn, job_id, targets, now, skip_existing=True)
            if created:
                await conn.execute(update(J).where(J.c.job_id == job_id).values(n_queued=J.c.n_queued + created))
                await notice_job(conn, job_id, now, after=last_id)
        return {"jobArn": self._arn(job_id), "jobId": job_id, "description": row.description}

    async def delete_job(self, req: dict[str, Any]) -> None:
        """Mark the job DELETION_IN_PROGRESS now; its executions are purged in the background."""
        now = self.ctx.clock.now()
        job_id = req["jobId"]
        async with self.ctx.db.write() as conn:
            row = await self._get(conn, job_id, for_update=True)
            if row.status == "DELETION_IN_PROGRESS":
                raise InvalidStateTransition(f"Job {job_id} is already being deleted.")
            if row.status not in ("COMPLETED", CANCELED) and not req.get("force"):
                raise InvalidStateTransition(
                    f"Cannot delete job {job_id} in status {row.status} without force; "
                    "only COMPLETED or CANCELED jobs can be deleted unless force is true."
                )
            deleting = await conn.scalar(
                select(func.count()).select_from(J).where(J.c.status == "DELETION_IN_PROGRESS")
            )
            if deleting >= MAX_DELETING_JOBS:
                raise LimitExceeded(f"At most {MAX_DELETING_JOBS} jobs can be in DELETION_IN_PROGRESS at once.")
            await conn.execute(
                update(J)
                .where(J.c.job_id == job_id)
                .values(status="DELETION_IN_PROGRESS", processing_targets=None, due_at=None, last_updated_at=now)
            )
            record_event(conn, events.JobEvent(job_id, "deletion_in_progress", self._snapshot(row)))
        self._purge_wakeup.set()

    # -- background deletion ---------------------------------------------------------------------

    async def purge_deleting_jobs(self) -> int:
        """Delete, in chunks, the executions and then the row of every DELETION_IN_PROGRESS job.

        Idempotent and safe to run from several instances at once; it is also what finishes a
        deletion that a crashed process had started.  Returns the number of jobs finished.
        """
        finished = 0
        now = self.ctx.clock.now()
        async with self.ctx.db.read() as conn:
            job_ids = (await conn.execute(select(J.c.job_id).where(J.c.status == "DELETION_IN_PROGRESS"))).scalars()
            job_ids = list(job_ids)
        for job_id in job_ids:
            while True:
                async with self.ctx.db.write() as conn:
                    ids = list(
                        (await conn.execute(select(E.c.id).where(E.c.job_id == job_id).limit(DELETE_CHUNK))).scalars()
                    )
                    # Things whose pending list loses an execution hear of it once it is gone.
                    if ids:
                        await notice_query(
                            conn, select(E.c.thing_name).where(E.c.id.in_(ids), E.c.status.in_(PENDING)), now
                        )
                        await conn.execute(delete(E).where(E.c.id.in_(ids)))
                        continue
                    await conn.execute(delete(JT).where(JT.c.job_id == job_id))
                    gone = (
                        await conn.execute(
                            delete(J).where(J.c.job_id == job_id, J.c.status == "DELETION_IN_PROGRESS").returning(*J.c)
                        )
                    ).first()
                    if gone is not None:
                        record_event(conn, events.JobEvent(job_id, "deleted", self._snapshot(gone)))
                    finished += 1
                    break
        return finished

    async def run_purger(self, interval: float = 5.0) -> None:
        while True:
            try:
                await self.purge_deleting_jobs()
            except Exception:
                log.exception("job deletion sweep failed; will retry")
            try:
                await asyncio.wait_for(self._purge_wakeup.wait(), timeout=interval)
            except TimeoutError:
                pass
            self._purge_wakeup.clear()

    # -- helpers --------------------------------------------------------------------------------

    async def _record_group_targets(self, conn: AsyncConnection, job_id: str, targets: list[ResolvedTarget]) -> None:
        """Group targets, kept apart for ListJobs' thingGroupName / thingGroupId filters."""
        rows = [
            {"job_id": job_id, "target_arn": t.arn, "group_name": t.name, "group_id": t.group_id}
            for t in targets
            if t.kind == "thinggroup"
        ]
        if rows:
            await conn.execute(insert(JT), rows)

    def _arn(self, job_id: str) -> str:
        return self.ctx.partition.job(job_id)

    @staticmethod
    def _snapshot(row: Any) -> dict[str, Any]:
        """What a job event says of a job whose row may be gone by the time it is published."""
        return {
            "job_id": row.job_id,
            "target_selection": row.target_selection,
            "targets": row.targets,
            "description": row.description,
            "comment": row.comment,
            "created_at": row.created_at,
            "last_updated_at": row.last_updated_at,
            "completed_at": row.completed_at,
        }

    def _scheduled_rollouts(self, cfg: dict[str, Any]) -> list[dict[str, str]] | None:
        """The next seven maintenance-window starts (AWS's ``scheduledJobRollouts``)."""
        windows = windows_of(cfg)
        if not windows:
            return None
        starts = upcoming_starts(windows, self.ctx.clock.now(), 7)
        return [{"startTime": dt.datetime.fromtimestamp(s, dt.UTC).strftime("%Y-%m-%dT%H:%M")} for s, _ in starts]

    @staticmethod
    def _is_concurrent(row: Any) -> bool:
        # Rolling out (targets not yet reached) or busy canceling/deleting.
        return (row.status == IN_PROGRESS and bool(row.processing_targets)) or row.status == "DELETION_IN_PROGRESS"

    async def _job_exists(self, conn: AsyncConnection, job_id: str) -> bool:
        return (await conn.execute(select(J.c.job_id).where(J.c.job_id == job_id))).first() is not None

    async def _get(self, conn: AsyncConnection, job_id: str, *, for_update: bool = False) -> Any:
        q = select(J).where(J.c.job_id == job_id)
        if for_update and conn.dialect.name == "postgresql":
            q = q.with_for_update()
        row = (await conn.execute(q)).first()
        if row is None:
            raise ResourceNotFound(f"Job {job_id} cannot be found.")
        return row

    async def _first_group_ids(self, conn: AsyncConnection, job_ids: list[str]) -> dict[str, str]:
        if not job_ids:
            return {}
        rows = await conn.execute(select(JT.c.job_id, JT.c.group_id).where(JT.c.job_id.in_(job_ids)).order_by(JT.c.id))
        out: dict[str, str] = {}
        for job_id, group_id in rows:
            if group_id:
                out.setdefault(job_id, group_id)
        return out
