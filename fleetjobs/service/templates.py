"""Custom job templates: CreateJobTemplate, DescribeJobTemplate, ListJobTemplates, DeleteJobTemplate.

A template is a stored, reusable set of CreateJob members (JOBS_API.md §1.3).  The jobs service
reads one through :mod:`fleetjobs.service.effects.job_templates` inside its own transaction, so a
template deleted concurrently cannot leave a half-inherited job.  Nothing is cached in-process:
several server processes may share one PostgreSQL database.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import and_, delete, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.domain import job_config, managed_templates, tagging
from fleetjobs.domain.arns import parse_arn
from fleetjobs.domain.errors import Conflict, InvalidRequest, ResourceNotFound
from fleetjobs.model import shapes_iot as shapes
from fleetjobs.service.context import ServiceContext
from fleetjobs.service.effects.job_templates import JOB_CONFIG_MEMBERS, TEMPLATE_CONFIG_MEMBERS
from fleetjobs.service.pagination import compact, page, page_size, token_str, token_time_and_name
from fleetjobs.store.tables import JOB_TEMPLATES, JOBS


class JobTemplates:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    # -- operations --------------------------------------------------------------------------------

    async def create_job_template(self, req: shapes.CreateJobTemplateRequest) -> dict[str, Any]:
        job_config.validate_template_request(req)
        tags = tagging.checked_tags(req.get("tags"))
        template_id = req["jobTemplateId"]
        now = self.ctx.clock.now()
        async with self.ctx.db.write() as conn:
            if await conn.scalar(
                select(JOB_TEMPLATES.c.job_template_id).where(JOB_TEMPLATES.c.job_template_id == template_id)
            ):
                raise self._exists(template_id)
            content = dict(req)
            if req.get("jobArn"):
                content = await self._content_from_job(conn, req)
                # Re-check the combination: the job's members plus this request's overrides.
                job_config.validate_template_request(content)
            try:
                await conn.execute(
                    insert(JOB_TEMPLATES).values(
                        job_template_id=template_id,
                        description=content["description"],
                        document=content.get("document"),
                        document_source=content.get("documentSource"),
                        config={m: content[m] for m in TEMPLATE_CONFIG_MEMBERS if content.get(m) is not None},
                        tags=tags,
                        created_at=now,
                    )
                )
            except IntegrityError:
                # Another process created the same id between our check and the insert.
                raise self._exists(template_id) from None
        return {"jobTemplateArn": self.ctx.partition.job_template(template_id), "jobTemplateId": template_id}

    async def describe_job_template(self, req: shapes.DescribeJobTemplateRequest) -> dict[str, Any]:
        template_id = req["jobTemplateId"]
        async with self.ctx.db.read() as conn:
            row = (
                await conn.execute(select(JOB_TEMPLATES).where(JOB_TEMPLATES.c.job_template_id == template_id))
            ).first()
        if row is None:
            raise self._not_found(template_id)
        config = row.config or {}
        return compact(
            {
                "jobTemplateArn": self.ctx.partition.job_template(row.job_template_id),
                "jobTemplateId": row.job_template_id,
                "description": row.description,
                "documentSource": row.document_source,
                "document": row.document,
                "createdAt": row.created_at,
                **{m: config.get(m) for m in TEMPLATE_CONFIG_MEMBERS},
            }
        )

    async def list_job_templates(self, req: shapes.ListJobTemplatesRequest) -> dict[str, Any]:
        """Newest first, like ListJobs; the token is the (createdAt, id) of the last row returned."""
        size = page_size(req)
        after = token_time_and_name(req)
        q = select(JOB_TEMPLATES.c.job_template_id, JOB_TEMPLATES.c.description, JOB_TEMPLATES.c.created_at)
        if after is not None:
            created, template_id = after
            q = q.where(
                or_(
                    JOB_TEMPLATES.c.created_at < created,
                    and_(JOB_TEMPLATES.c.created_at == created, JOB_TEMPLATES.c.job_template_id > template_id),
                )
            )
        q = q.order_by(JOB_TEMPLATES.c.created_at.desc(), JOB_TEMPLATES.c.job_template_id).limit(size + 1)
        async with self.ctx.db.read() as conn:
            rows = (await conn.execute(q)).all()
        rows, token = page(rows, size, lambda r: [r.created_at, r.job_template_id])
        summaries = [
            compact(
                {
                    "jobTemplateArn": self.ctx.partition.job_template(r.job_template_id),
                    "jobTemplateId": r.job_template_id,
                    "description": r.description,
                    "createdAt": r.created_at,
                }
            )
            for r in rows
        ]
        return {"jobTemplates": summaries, "nextToken": token}

    async def delete_job_template(self, req: shapes.DeleteJobTemplateRequest) -> None:
        """Jobs created from the template keep their copy of its members and its ARN."""
        template_id = req["jobTemplateId"]
        async with self.ctx.db.write() as conn:
            result = await conn.execute(delete(JOB_TEMPLATES).where(JOB_TEMPLATES.c.job_template_id == template_id))
            if result.rowcount == 0:
                raise self._not_found(template_id)

    # -- AWS managed templates ---------------------------------------------------------------------

    async def list_managed_job_templates(self, req: shapes.ListManagedJobTemplatesRequest) -> dict[str, Any]:
        names = sorted(managed_templates.TEMPLATES)
        if req.get("templateName"):
            names = [n for n in names if n == req["templateName"]]
        size = page_size(req)
        after = token_str(req)
        if after is not None:
            names = [n for n in names if n > after]
        rows, token = page(names[: size + 1], size, lambda n: n)
        region = self.ctx.partition.region
        summaries = [
            {
                "templateArn": managed_templates.TEMPLATES[n].arn(region),
                "templateName": n,
                "description": managed_templates.TEMPLATES[n].description,
                "environments": ["LINUX"],
                "templateVersion": managed_templates.VERSION,
            }
            for n in rows
        ]
        return {"managedJobTemplates": summaries, "nextToken": token}

    async def describe_managed_job_template(self, req: shapes.DescribeManagedJobTemplateRequest) -> dict[str, Any]:
        template = managed_templates.lookup(req["templateName"], req.get("templateVersion"))
        return {
            "templateName": template.name,
            "templateArn": template.arn(self.ctx.partition.region),
            "description": template.description,
            "templateVersion": managed_templates.VERSION,
            "environments": ["LINUX"],
            "documentParameters": template.parameters,
            "document": template.document,
        }

    # -- internals ---------------------------------------------------------------------------------

    async def _content_from_job(self, conn: AsyncConnection, req: Mapping[str, Any]) -> dict[str, Any]:
        """The request with the document and configuration of the job named by ``jobArn`` filled in.

        Members given in the request win over the job's, so a template can start from a job and
        change, say, its timeout.
        """
        job_arn = req["jobArn"]
        try:
            arn = parse_arn(job_arn)
        except InvalidRequest:
            raise InvalidRequest(f"{job_arn} is not a valid job ARN.") from None
        if arn.resource_type != "job":
            raise InvalidRequest(f"{job_arn} is not a job ARN.")
        if not self.ctx.partition.owns(arn):
            raise InvalidRequest(f"{job_arn} is not a job of this account and region.")
        job = (
            await conn.execute(
                select(JOBS.c.document, JOBS.c.document_source, JOBS.c.config).where(JOBS.c.job_id == arn.resource_id)
            )
        ).first()
        if job is None:
            raise ResourceNotFound(f"Job {arn.resource_id} does not exist.")
        job_config_members = job.config or {}
        content: dict[str, Any] = {
            "document": job.document,
            "documentSource": job.document_source,
            **{m: job_config_members.get(m) for m in JOB_CONFIG_MEMBERS},
            "maintenanceWindows": (job_config_members.get("schedulingConfig") or {}).get("maintenanceWindows"),
        }
        for member, value in req.items():
            if member != "jobArn" and value is not None:
                content[member] = value
        return compact(content)

    @staticmethod
    def _exists(template_id: str) -> Conflict:
        return Conflict(f"Job template {template_id} already exists.", resourceId=template_id)

    @staticmethod
    def _not_found(template_id: str) -> ResourceNotFound:
        return ResourceNotFound(f"Job template {template_id} does not exist.")
