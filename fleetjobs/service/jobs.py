"""Jobs: CreateJob, DescribeJob, ListJobs, GetJobDocument, CancelJob, DeleteJob, UpdateJob,
AssociateTargetsWithJob."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import and_, exists, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.artifacts import ArtifactStore
from fleetjobs.domain import job_config, job_status, tagging
from fleetjobs.domain.cron import upcoming_starts
from fleetjobs.domain.errors import InvalidRequest, LimitExceeded, ResourceAlreadyExists, ResourceNotFound
from fleetjobs.domain.execution_state import COUNTER_FIELD
from fleetjobs.domain.rollout import RolloutConfig, needs_engine, windows_of
from fleetjobs.model import shapes_iot as shapes
from fleetjobs.service.context import ServiceContext
from fleetjobs.service.effects import job_documents
from fleetjobs.service.effects.cancellation import cancel_executions
from fleetjobs.service.effects.execution_moves import complete_finished_jobs
from fleetjobs.service.effects.job_templates import inherited_members
from fleetjobs.service.effects.notices import notice_job
from fleetjobs.service.effects.rollout_start import begin_rollout
from fleetjobs.service.effects.targets import ResolvedTarget, fan_out, resolve_targets
from fleetjobs.service.events import DELETION_REQUESTED, JobEvent, job_snapshot
from fleetjobs.service.pagination import compact, page, page_size, token_time_and_name
from fleetjobs.store.database import record_event
from fleetjobs.store.sql import locked
from fleetjobs.store.tables import EXECUTIONS, JOB_TARGETS, JOBS

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


class Jobs:
    def __init__(self, ctx: ServiceContext, store: ArtifactStore | None = None) -> None:
        self.ctx = ctx
        self.store = store

    # -- create ------------------------------------------------------------------------------

    async def create_job(self, req: shapes.CreateJobRequest) -> dict[str, Any]:
        now = self.ctx.clock.now()
        job_id = req["jobId"]
        tags = tagging.checked_tags(req.get("tags"))
        async with self.ctx.db.write() as conn:
            merged: dict[str, Any] = dict(req)
            template_arn = req.get("jobTemplateArn")
            managed = None
            if template_arn:
                inherited = await inherited_members(conn, self.ctx.partition, template_arn)
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
                    insert(JOBS).values(
                        job_id=job_id,
                        status=job_status.SCHEDULED if scheduled else job_status.IN_PROGRESS,
                        target_selection=merged.get("targetSelection") or "SNAPSHOT",
                        targets=merged["targets"],
                        document=document,
                        document_template=as_given,
                        document_source=merged.get("documentSource"),
                        description=merged.get("description"),
                        namespace_id=merged.get("namespaceId"),
                        job_template_arn=template_arn,
                        config=config,
                        tags=tags,  # the request's own: a template's tags are not inherited
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
            created = await begin_rollout(conn, job_id, config, targets, now)
            if created:
                await notice_job(conn, job_id, now)
            if not staged:
                await complete_finished_jobs(conn, [job_id], now)
        return {"jobArn": self._arn(job_id), "jobId": job_id, "description": merged.get("description")}

    # -- read ----------------------------------------------------------------------------------

    async def describe_job(self, req: shapes.DescribeJobRequest) -> dict[str, Any]:
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
                "isConcurrent": job_status.is_concurrent(row.status, row.processing_targets),
                **{k: cfg[k] for k in CONFIG_MEMBERS if k in cfg},
                "scheduledJobRollouts": self._scheduled_rollouts(cfg),
            }
        )
        return {"documentSource": row.document_source, "job": job}

    async def get_job_document(self, req: shapes.GetJobDocumentRequest) -> dict[str, Any]:
        async with self.ctx.db.read() as conn:
            row = await self._get(conn, req["jobId"])
        if req.get("beforeSubstitution") and row.document_template is not None:
            return {"document": row.document_template}
        return {"document": row.document}

    async def list_jobs(self, req: shapes.ListJobsRequest) -> dict[str, Any]:
        size = page_size(req)
        after = token_time_and_name(req)
        cols = [
            JOBS.c.job_id,
            JOBS.c.target_selection,
            JOBS.c.status,
            JOBS.c.created_at,
            JOBS.c.last_updated_at,
            JOBS.c.completed_at,
        ]
        cols += [JOBS.c.processing_targets]
        q = select(*cols)
        if req.get("status"):
            q = q.where(JOBS.c.status == req["status"])
        if req.get("targetSelection"):
            q = q.where(JOBS.c.target_selection == req["targetSelection"])
        if req.get("namespaceId"):
            q = q.where(JOBS.c.namespace_id == req["namespaceId"])
        group_cond = []
        if req.get("thingGroupName"):
            group_cond.append(JOB_TARGETS.c.group_name == req["thingGroupName"])
        if req.get("thingGroupId"):
            group_cond.append(JOB_TARGETS.c.group_id == req["thingGroupId"])
        if group_cond:
            q = q.where(exists().where(and_(JOB_TARGETS.c.job_id == JOBS.c.job_id, *group_cond)))
        if after is not None:
            created, job_id = after
            q = q.where(or_(JOBS.c.created_at < created, and_(JOBS.c.created_at == created, JOBS.c.job_id > job_id)))
        q = q.order_by(JOBS.c.created_at.desc(), JOBS.c.job_id).limit(size + 1)
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
                    "isConcurrent": job_status.is_concurrent(r.status, r.processing_targets),
                }
            )
            for r in rows
        ]
        return {"jobs": jobs, "nextToken": token}

    # -- change --------------------------------------------------------------------------------

    async def cancel_job(self, req: shapes.CancelJobRequest) -> dict[str, Any]:
        now = self.ctx.clock.now()
        job_id = req["jobId"]
        force = bool(req.get("force"))
        async with self.ctx.db.write() as conn:
            row = await self._get(conn, job_id, for_update=True)
            job_status.check_cancel(job_id, row.status, force=force, already_force_canceled=bool(row.force_canceled))
            values: dict[str, Any] = {
                "status": job_status.CANCELED,
                "due_at": None,
                "processing_targets": None,
                "last_updated_at": now,
                "force_canceled": bool(row.force_canceled) or force,
            }
            if "reasonCode" in req:
                values["reason_code"] = req["reasonCode"]
            if "comment" in req:
                values["comment"] = req["comment"]
            await conn.execute(update(JOBS).where(JOBS.c.job_id == job_id).values(**values))
            await cancel_executions(conn, job_id, now, force=force)
        return {"jobArn": self._arn(job_id), "jobId": job_id, "description": row.description}

    async def update_job(self, req: shapes.UpdateJobRequest) -> None:
        now = self.ctx.clock.now()
        job_id = req["jobId"]
        async with self.ctx.db.write() as conn:
            row = await self._get(conn, job_id, for_update=True)
            job_config.validate_job_update(req, current_config=row.config)
            job_status.check_update(job_id, row.status)
            if "timeoutConfig" in req:
                started = await conn.scalar(
                    select(func.count())
                    .select_from(EXECUTIONS)
                    .where(EXECUTIONS.c.job_id == job_id, EXECUTIONS.c.started_at.is_not(None))
                )
                if started:
                    raise InvalidRequest("The in-progress timeout cannot be changed after job executions have started.")
            config = dict(row.config or {})
            given: Mapping[str, Any] = req
            config.update({m: given[m] for m in UPDATABLE_MEMBERS if m in given})
            values: dict[str, Any] = {"config": config, "last_updated_at": now}
            if "description" in req:
                values["description"] = req["description"]
            await conn.execute(update(JOBS).where(JOBS.c.job_id == job_id).values(**values))

    async def associate_targets_with_job(self, req: shapes.AssociateTargetsWithJobRequest) -> dict[str, Any]:
        now = self.ctx.clock.now()
        job_id = req["jobId"]
        async with self.ctx.db.write() as conn:
            row = await self._get(conn, job_id, for_update=True)
            job_status.check_associate_targets(job_id, row.status, row.target_selection)
            new = [t for t in req["targets"] if t not in row.targets]
            all_targets = [*row.targets, *new]
            if len(all_targets) > MAX_TARGETS:
                raise LimitExceeded(f"A job can have at most {MAX_TARGETS} targets")
            targets = await resolve_targets(conn, self.ctx.partition, new)
            values: dict[str, Any] = {"targets": all_targets, "last_updated_at": now}
            if "comment" in req:
                values["comment"] = req["comment"]
            await conn.execute(update(JOBS).where(JOBS.c.job_id == job_id).values(**values))
            await self._record_group_targets(conn, job_id, targets)
            last_id = await conn.scalar(select(func.max(EXECUTIONS.c.id))) or 0
            if row.processing_targets is not None and RolloutConfig.of(row.config) is not None:
                # Mid-rollout: the new targets join the queue and go out at the job's rate.
                await fan_out(conn, job_id, targets, now, into_queue=True)
                created = 0
            else:
                created = await fan_out(conn, job_id, targets, now, skip_existing=True)
            if created:
                await conn.execute(
                    update(JOBS).where(JOBS.c.job_id == job_id).values(n_queued=JOBS.c.n_queued + created)
                )
                await notice_job(conn, job_id, now, after=last_id)
        return {"jobArn": self._arn(job_id), "jobId": job_id, "description": row.description}

    async def delete_job(self, req: shapes.DeleteJobRequest) -> None:
        """Mark the job DELETION_IN_PROGRESS now; its executions are purged in the background."""
        now = self.ctx.clock.now()
        job_id = req["jobId"]
        async with self.ctx.db.write() as conn:
            row = await self._get(conn, job_id, for_update=True)
            job_status.check_delete(job_id, row.status, force=bool(req.get("force")))
            deleting: int = (
                await conn.scalar(
                    select(func.count()).select_from(JOBS).where(JOBS.c.status == job_status.DELETION_IN_PROGRESS)
                )
                or 0
            )
            if deleting >= MAX_DELETING_JOBS:
                raise LimitExceeded(f"At most {MAX_DELETING_JOBS} jobs can be in DELETION_IN_PROGRESS at once.")
            await conn.execute(
                update(JOBS)
                .where(JOBS.c.job_id == job_id)
                .values(
                    status=job_status.DELETION_IN_PROGRESS, processing_targets=None, due_at=None, last_updated_at=now
                )
            )
            record_event(conn, JobEvent(job_id, "deletion_in_progress", job_snapshot(row)))
            record_event(conn, DELETION_REQUESTED)

    # -- helpers --------------------------------------------------------------------------------

    async def _record_group_targets(self, conn: AsyncConnection, job_id: str, targets: list[ResolvedTarget]) -> None:
        """Group targets, kept apart for ListJobs' thingGroupName / thingGroupId filters."""
        rows = [
            {"job_id": job_id, "target_arn": t.arn, "group_name": t.name, "group_id": t.group_id}
            for t in targets
            if t.kind == "thinggroup"
        ]
        if rows:
            await conn.execute(insert(JOB_TARGETS), rows)

    def _arn(self, job_id: str) -> str:
        return self.ctx.partition.job(job_id)

    def _scheduled_rollouts(self, cfg: dict[str, Any]) -> list[dict[str, str]] | None:
        """The next seven maintenance-window starts (AWS's ``scheduledJobRollouts``)."""
        windows = windows_of(cfg)
        if not windows:
            return None
        starts = upcoming_starts(windows, self.ctx.clock.now(), 7)
        return [{"startTime": dt.datetime.fromtimestamp(s, dt.UTC).strftime("%Y-%m-%dT%H:%M")} for s, _ in starts]

    async def _job_exists(self, conn: AsyncConnection, job_id: str) -> bool:
        return (await conn.execute(select(JOBS.c.job_id).where(JOBS.c.job_id == job_id))).first() is not None

    async def _get(self, conn: AsyncConnection, job_id: str, *, for_update: bool = False) -> Any:
        q = select(JOBS).where(JOBS.c.job_id == job_id)
        row = (await conn.execute(locked(q, conn) if for_update else q)).first()
        if row is None:
            raise ResourceNotFound(f"Job {job_id} cannot be found.")
        return row

    async def _first_group_ids(self, conn: AsyncConnection, job_ids: list[str]) -> dict[str, str]:
        if not job_ids:
            return {}
        rows = await conn.execute(
            select(JOB_TARGETS.c.job_id, JOB_TARGETS.c.group_id)
            .where(JOB_TARGETS.c.job_id.in_(job_ids))
            .order_by(JOB_TARGETS.c.id)
        )
        out: dict[str, str] = {}
        for job_id, group_id in rows:
            if group_id:
                out.setdefault(job_id, group_id)
        return out

    async def event_fields(self, job_id: str) -> dict[str, Any] | None:
        """The job's fields a ``$aws/events/job`` message carries (None: the job is gone): its
        snapshot, ``completedAt`` and the execution counters (``jobProcessDetails``)."""
        async with self.ctx.db.read() as conn:
            row = (await conn.execute(select(JOBS).where(JOBS.c.job_id == job_id))).first()
        if row is None:
            return None
        return {
            **job_snapshot(row),
            "job_process_details": {field: int(getattr(row, col)) for col, field in COUNTER_FIELD.items()},
        }
