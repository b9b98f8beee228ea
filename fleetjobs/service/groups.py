"""Static thing groups (JOBS_API.md §1.7).  Nested groups count for job targeting."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.domain.arns import parse_arn
from fleetjobs.domain.errors import InvalidRequest, ResourceAlreadyExists, ResourceNotFound, VersionConflict
from fleetjobs.service.context import ServiceContext
from fleetjobs.service.pagination import compact, decode_token, page, page_size
from fleetjobs.service.things import merge_attributes
from fleetjobs.store.schema import Thing, ThingGroup, ThingGroupMember

G = ThingGroup.__table__
T = Thing.__table__
M = ThingGroupMember.__table__

MAX_DEPTH = 7
MAX_GROUPS_PER_THING = 10

DESCENDANTS_SQL = """
    WITH RECURSIVE tree(id) AS (
        SELECT CAST(:root AS BIGINT)
        UNION ALL
        SELECT g.id FROM thing_groups g JOIN tree ON g.parent_id = tree.id
    )
    SELECT id FROM tree
"""


async def descendant_group_ids(conn: AsyncConnection, group_id: int) -> list[int]:
    """The group and every group below it."""
    return [r[0] for r in await conn.execute(text(DESCENDANTS_SQL), {"root": group_id})]


async def ancestors(conn: AsyncConnection, group: Any) -> list[Any]:
    """Rows from the root down to the group's parent (a hierarchy is at most 7 deep)."""
    chain: list[Any] = []
    parent_id = group.parent_id
    while parent_id is not None:
        row = (await conn.execute(select(G).where(G.c.id == parent_id))).first()
        if row is None:
            break
        chain.append(row)
        parent_id = row.parent_id
    return list(reversed(chain))


class ThingGroups:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    async def create_thing_group(self, req: dict[str, Any]) -> dict[str, Any]:
        name = req["thingGroupName"]
        props = self._properties({}, req.get("thingGroupProperties"))
        async with self.ctx.db.write() as conn:
            parent = None
            if req.get("parentGroupName"):
                parent = await self._group(conn, req["parentGroupName"])
                if len(await ancestors(conn, parent)) + 2 > MAX_DEPTH:
                    raise InvalidRequest(f"Thing group hierarchies can be at most {MAX_DEPTH} levels deep")
            existing = (await conn.execute(select(G).where(G.c.group_name == name))).first()
            if existing is not None:
                if existing.properties == props and existing.parent_id == (parent.id if parent else None):
                    return self._ids(existing)
                raise ResourceAlreadyExists(
                    f"Thing group {name} already exists with different configuration",
                    resourceId=existing.group_id,
                    resourceArn=self.ctx.partition.thing_group(name),
                )
            group_id = str(uuid.uuid4())
            try:
                await conn.execute(
                    insert(G).values(
                        group_name=name,
                        group_id=group_id,
                        parent_id=parent.id if parent else None,
                        properties=props,
                        version=1,
                        created_at=self.ctx.clock.now(),
                        tags=req.get("tags") or [],
                    )
                )
            except IntegrityError:
                raise ResourceAlreadyExists(f"Thing group {name} already exists", resourceId=name) from None
        return {"thingGroupName": name, "thingGroupArn": self.ctx.partition.thing_group(name), "thingGroupId": group_id}

    async def describe_thing_group(self, req: dict[str, Any]) -> dict[str, Any]:
        async with self.ctx.db.read() as conn:
            row = await self._group(conn, req["thingGroupName"])
            chain = await ancestors(conn, row)
        metadata = compact(
            {
                "parentGroupName": chain[-1].group_name if chain else None,
                "rootToParentThingGroups": [
                    {"groupName": g.group_name, "groupArn": self.ctx.partition.thing_group(g.group_name)} for g in chain
                ]
                or None,
                "creationDate": row.created_at,
            }
        )
        return compact(
            {
                **self._ids(row),
                "version": row.version,
                "thingGroupProperties": row.properties or {},
                "thingGroupMetadata": metadata,
                "queryString": row.query_string,
                "indexName": row.index_name,
                "queryVersion": row.query_version,
                "status": row.status,
            }
        )

    async def list_thing_groups(self, req: dict[str, Any]) -> dict[str, Any]:
        size = page_size(req)
        after = decode_token(req.get("nextToken"))
        recursive = req.get("recursive")
        q = select(G.c.group_name)
        async with self.ctx.db.read() as conn:
            if req.get("parentGroup"):
                parent = await self._group(conn, req["parentGroup"])
                if recursive is False:
                    q = q.where(G.c.parent_id == parent.id)
                else:
                    below = [i for i in await descendant_group_ids(conn, parent.id) if i != parent.id]
                    q = q.where(G.c.id.in_(below))
            elif recursive is False:
                q = q.where(G.c.parent_id.is_(None))
            if req.get("namePrefixFilter"):
                q = q.where(G.c.group_name.startswith(req["namePrefixFilter"], autoescape=True))
            if after is not None:
                q = q.where(G.c.group_name > after)
            rows = (await conn.execute(q.order_by(G.c.group_name).limit(size + 1))).all()
        rows, token = page(rows, size, lambda r: r.group_name)
        return {"thingGroups": [self._name_arn(r.group_name) for r in rows], "nextToken": token}

    async def update_thing_group(self, req: dict[str, Any]) -> dict[str, Any]:
        async with self.ctx.db.write() as conn:
            row = await self._group(conn, req["thingGroupName"], for_update=True)
            expected = req.get("expectedVersion")
            if expected is not None and expected != row.version:
                raise VersionConflict(
                    f"The expected version {expected} does not match the current version {row.version}"
                )
            props = self._properties(row.properties or {}, req["thingGroupProperties"])
            result = await conn.execute(
                update(G)
                .where(G.c.id == row.id, G.c.version == row.version)
                .values(properties=props, version=row.version + 1)
            )
            if result.rowcount != 1:
                raise VersionConflict("The thing group was updated concurrently")
        return {"version": row.version + 1}

    async def delete_thing_group(self, req: dict[str, Any]) -> None:
        name = req["thingGroupName"]
        async with self.ctx.db.write() as conn:
            row = (await conn.execute(select(G).where(G.c.group_name == name))).first()
            if row is None:
                return
            expected = req.get("expectedVersion")
            if expected is not None and expected != row.version:
                raise VersionConflict(
                    f"The expected version {expected} does not match the current version {row.version}"
                )
            child = (await conn.execute(select(G.c.id).where(G.c.parent_id == row.id).limit(1))).first()
            if child is not None:
                raise InvalidRequest(f"Cannot delete thing group : {name} when it still has child groups")
            await conn.execute(delete(M).where(M.c.group_id == row.id))
            await conn.execute(delete(G).where(G.c.id == row.id))

    async def add_thing_to_thing_group(self, req: dict[str, Any]) -> None:
        async with self.ctx.db.write() as conn:
            group = await self._group(conn, self._group_name(req))
            thing = await self._thing(conn, self._thing_name(req))
            await self._add(conn, group, thing)

    async def remove_thing_from_thing_group(self, req: dict[str, Any]) -> None:
        async with self.ctx.db.write() as conn:
            group = await self._group(conn, self._group_name(req))
            thing = await self._thing(conn, self._thing_name(req))
            await conn.execute(delete(M).where(M.c.group_id == group.id, M.c.thing_id == thing.id))

    async def update_thing_groups_for_thing(self, req: dict[str, Any]) -> None:
        if not req.get("thingName"):
            raise InvalidRequest("thingName is required")
        async with self.ctx.db.write() as conn:
            thing = await self._thing(conn, req["thingName"])
            for name in req.get("thingGroupsToRemove") or []:
                group = await self._group(conn, name)
                await conn.execute(delete(M).where(M.c.group_id == group.id, M.c.thing_id == thing.id))
            for name in req.get("thingGroupsToAdd") or []:
                await self._add(conn, await self._group(conn, name), thing)

    async def list_things_in_thing_group(self, req: dict[str, Any]) -> dict[str, Any]:
        size = page_size(req)
        after = decode_token(req.get("nextToken"))
        async with self.ctx.db.read() as conn:
            group = await self._group(conn, req["thingGroupName"])
            ids = await descendant_group_ids(conn, group.id) if req.get("recursive") else [group.id]
            q = select(T.c.thing_name).distinct().join(M, M.c.thing_id == T.c.id).where(M.c.group_id.in_(ids))
            if after is not None:
                q = q.where(T.c.thing_name > after)
            rows = (await conn.execute(q.order_by(T.c.thing_name).limit(size + 1))).all()
        rows, token = page(rows, size, lambda r: r.thing_name)
        return {"things": [r.thing_name for r in rows], "nextToken": token}

    async def list_thing_groups_for_thing(self, req: dict[str, Any]) -> dict[str, Any]:
        size = page_size(req)
        after = decode_token(req.get("nextToken"))
        async with self.ctx.db.read() as conn:
            thing = await self._thing(conn, req["thingName"])
            q = select(G.c.group_name).join(M, M.c.group_id == G.c.id).where(M.c.thing_id == thing.id)
            if after is not None:
                q = q.where(G.c.group_name > after)
            rows = (await conn.execute(q.order_by(G.c.group_name).limit(size + 1))).all()
        rows, token = page(rows, size, lambda r: r.group_name)
        return {"thingGroups": [self._name_arn(r.group_name) for r in rows], "nextToken": token}

    # -- helpers ---------------------------------------------------------------------------------

    async def _add(self, conn: AsyncConnection, group: Any, thing: Any) -> None:
        current = (await conn.execute(select(M.c.group_id).where(M.c.thing_id == thing.id))).scalars().all()
        if group.id in current:
            return
        if len(current) >= MAX_GROUPS_PER_THING:
            raise InvalidRequest(
                f"Thing {thing.thing_name} cannot be added to more than {MAX_GROUPS_PER_THING} thing groups"
            )
        root = await self._root_id(conn, group)
        for other_id in current:
            other = (await conn.execute(select(G).where(G.c.id == other_id))).first()
            if other is not None and await self._root_id(conn, other) == root:
                raise InvalidRequest(
                    f"Thing {thing.thing_name} is already in thing group {other.group_name} of the same hierarchy"
                )
        try:
            async with conn.begin_nested():
                await conn.execute(insert(M).values(group_id=group.id, thing_id=thing.id))
        except IntegrityError:
            return  # added concurrently: the outcome is the same

    async def _root_id(self, conn: AsyncConnection, group: Any) -> int:
        chain = await ancestors(conn, group)
        return chain[0].id if chain else group.id

    def _group_name(self, req: dict[str, Any]) -> str:
        if req.get("thingGroupName"):
            return req["thingGroupName"]
        if req.get("thingGroupArn"):
            parsed = parse_arn(req["thingGroupArn"])
            if parsed.resource_type != "thinggroup":
                raise InvalidRequest(f"{req['thingGroupArn']} is not a thing group ARN")
            return parsed.resource_id
        raise InvalidRequest("Either thingGroupName or thingGroupArn must be given")

    def _thing_name(self, req: dict[str, Any]) -> str:
        if req.get("thingName"):
            return req["thingName"]
        if req.get("thingArn"):
            parsed = parse_arn(req["thingArn"])
            if parsed.resource_type != "thing":
                raise InvalidRequest(f"{req['thingArn']} is not a thing ARN")
            return parsed.resource_id
        raise InvalidRequest("Either thingName or thingArn must be given")

    async def _group(self, conn: AsyncConnection, name: str, *, for_update: bool = False) -> Any:
        q = select(G).where(G.c.group_name == name)
        if for_update and conn.dialect.name == "postgresql":
            q = q.with_for_update()
        row = (await conn.execute(q)).first()
        if row is None:
            raise ResourceNotFound(f"Thing group {name} cannot be found.")
        return row

    async def _thing(self, conn: AsyncConnection, name: str) -> Any:
        row = (await conn.execute(select(T).where(T.c.thing_name == name))).first()
        if row is None:
            raise ResourceNotFound(f"Thing {name} cannot be found.")
        return row

    @staticmethod
    def _properties(current: dict[str, Any], given: dict[str, Any] | None) -> dict[str, Any]:
        if given is None:
            return dict(current)
        props = dict(current)
        if "thingGroupDescription" in given:
            props["thingGroupDescription"] = given["thingGroupDescription"]
        if "attributePayload" in given:
            current_attrs = (current.get("attributePayload") or {}).get("attributes") or {}
            props["attributePayload"] = {"attributes": merge_attributes(current_attrs, given["attributePayload"])}
        return props

    def _ids(self, row: Any) -> dict[str, Any]:
        return {
            "thingGroupName": row.group_name,
            "thingGroupId": row.group_id,
            "thingGroupArn": self.ctx.partition.thing_group(row.group_name),
        }

    def _name_arn(self, name: str) -> dict[str, str]:
        return {"groupName": name, "groupArn": self.ctx.partition.thing_group(name)}
