"""What a job created from a template inherits, read in the CreateJob transaction.

Reading on the caller's connection means a template deleted concurrently cannot leave a
half-inherited job.  Members the template does not set are absent; the request may override any.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.domain import managed_templates
from fleetjobs.domain.arns import Partition, parse_arn
from fleetjobs.domain.errors import InvalidRequest, ResourceNotFound
from fleetjobs.service.pagination import compact
from fleetjobs.store.tables import JOB_TEMPLATES

# Configuration members a template stores in its ``config`` column (camelCase, as AWS returns them).
TEMPLATE_CONFIG_MEMBERS = (
    "presignedUrlConfig",
    "jobExecutionsRolloutConfig",
    "abortConfig",
    "timeoutConfig",
    "jobExecutionsRetryConfig",
    "maintenanceWindows",
    "destinationPackageVersions",
)
# Members copied from a job's stored CreateJob configuration when a template is made from ``jobArn``;
# maintenance windows come out of its ``schedulingConfig`` (a template has no start/end times).
JOB_CONFIG_MEMBERS = tuple(m for m in TEMPLATE_CONFIG_MEMBERS if m != "maintenanceWindows")


async def inherited_members(conn: AsyncConnection, partition: Partition, job_template_arn: str) -> dict[str, Any]:
    """The CreateJob members a job created from ``job_template_arn`` inherits.

    Runs on the caller's connection so that the read belongs to its CreateJob transaction.
    Members the template does not set are absent; the caller lets the request override any.
    """
    arn = parse_arn(job_template_arn)
    if arn.resource_type != "jobtemplate":
        raise InvalidRequest(f"{job_template_arn} is not a job template ARN.")
    if arn.account == "":
        name, _, version = arn.resource_id.partition(":")
        template = managed_templates.lookup(name, version if ":" in arn.resource_id else None)
        return {"document": template.document, "description": template.description, "managedTemplate": template}
    if not partition.owns(arn):
        raise InvalidRequest(f"{job_template_arn} is not a job template of this account and region.")
    row = (await conn.execute(select(JOB_TEMPLATES).where(JOB_TEMPLATES.c.job_template_id == arn.resource_id))).first()
    if row is None:
        raise ResourceNotFound(f"Job template {arn.resource_id} does not exist.")
    config = row.config or {}
    inherited: dict[str, Any] = {
        "document": row.document,
        "documentSource": row.document_source,
        "description": row.description,
        **{m: config.get(m) for m in JOB_CONFIG_MEMBERS},
    }
    if config.get("maintenanceWindows"):
        inherited["schedulingConfig"] = {"maintenanceWindows": config["maintenanceWindows"]}
    return compact(inherited)
