"""Tagging (JOBS_API.md §1.12): TagResource, UntagResource, ListTagsForResource.

A resource's tags live in its own row (the ``tags`` column of jobs, job templates, thing groups,
thing types, packages and package versions), written at create by each family's façade and
changed here.  So a resource's tags are deleted with it, every instance sees them at once, and a
change locks the one row it rewrites (PostgreSQL ``FOR UPDATE``): two concurrent TagResource
calls on one resource both land, and the 50-tag bound is checked against what the other wrote.
The rules themselves (bounds, unique keys, the reserved ``aws:`` prefix) are in
:mod:`fleetjobs.domain.tagging`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Table, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.domain import tagging
from fleetjobs.domain.errors import ResourceNotFound
from fleetjobs.domain.tagging import Tag, TaggedResource
from fleetjobs.model import shapes_iot as shapes
from fleetjobs.service.context import ServiceContext
from fleetjobs.service.pagination import DEFAULT_PAGE, encode_token, token_str
from fleetjobs.store.sql import locked
from fleetjobs.store.tables import JOB_TEMPLATES, JOBS, PACKAGE_VERSIONS, PACKAGES, THING_GROUPS, THING_TYPES

# ListTagsForResource has no maxResults.  A page holds as many tags as a resource may have, so a
# caller that reads one page (as most code does) sees all of them; nextToken only appears for a
# resource that holds more (tags written before the bound was enforced).
TAGS_PAGE = max(DEFAULT_PAGE, tagging.MAX_TAGS_PER_RESOURCE)


def _row_of(resource: TaggedResource) -> tuple[Table, ColumnElement[bool]]:
    """The table holding the resource, and the condition that selects its row."""
    if resource.kind == tagging.JOB:
        return JOBS, JOBS.c.job_id == resource.name
    if resource.kind == tagging.JOB_TEMPLATE:
        return JOB_TEMPLATES, JOB_TEMPLATES.c.job_template_id == resource.name
    if resource.kind == tagging.THING_GROUP:  # static and dynamic groups alike
        return THING_GROUPS, THING_GROUPS.c.group_name == resource.name
    if resource.kind == tagging.THING_TYPE:
        return THING_TYPES, THING_TYPES.c.thing_type_name == resource.name
    if resource.kind == tagging.PACKAGE:
        return PACKAGES, PACKAGES.c.package_name == resource.name
    return PACKAGE_VERSIONS, (PACKAGE_VERSIONS.c.package_name == resource.name) & (
        PACKAGE_VERSIONS.c.version_name == resource.version
    )


class Tags:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    async def tag_resource(self, req: shapes.TagResourceRequest) -> dict[str, Any]:
        resource = tagging.tagged_resource(req["resourceArn"], self.ctx.partition)
        given = tagging.checked_tags(req["tags"], bounded=False)
        async with self.ctx.db.write() as conn:
            current = await self._tags(conn, resource, req["resourceArn"], lock=True)
            await self._store(conn, resource, tagging.merged(current, given))
        return {}

    async def untag_resource(self, req: shapes.UntagResourceRequest) -> dict[str, Any]:
        resource = tagging.tagged_resource(req["resourceArn"], self.ctx.partition)
        async with self.ctx.db.write() as conn:
            current = await self._tags(conn, resource, req["resourceArn"], lock=True)
            left = tagging.without(current, req["tagKeys"])
            if len(left) != len(current):
                await self._store(conn, resource, left)
        return {}

    async def list_tags_for_resource(self, req: shapes.ListTagsForResourceRequest) -> dict[str, Any]:
        resource = tagging.tagged_resource(req["resourceArn"], self.ctx.partition)
        after = token_str(req)
        async with self.ctx.db.read() as conn:
            current = await self._tags(conn, resource, req["resourceArn"], lock=False)
        tags = [t for t in tagging.sorted_tags(current) if after is None or t["Key"] > after]
        if len(tags) > TAGS_PAGE:
            tags = tags[:TAGS_PAGE]
            return {"tags": tags, "nextToken": encode_token(tags[-1]["Key"])}
        return {"tags": tags}

    # -- rows ------------------------------------------------------------------------------------

    async def _tags(self, conn: AsyncConnection, resource: TaggedResource, arn: str, *, lock: bool) -> list[Tag]:
        table, where = _row_of(resource)
        query = select(table.c.tags).where(where)
        row = (await conn.execute(locked(query, conn) if lock else query)).first()
        if row is None:
            raise ResourceNotFound(f"The resource {arn} does not exist.")
        stored: Sequence[Tag] = row.tags or []
        return list(stored)

    async def _store(self, conn: AsyncConnection, resource: TaggedResource, tags: list[Tag]) -> None:
        table, where = _row_of(resource)
        await conn.execute(update(table).where(where).values(tags=tags))
