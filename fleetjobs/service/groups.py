"""Static thing groups (JOBS_API.md §1.7): hierarchies of groups, and which things belong to them.

AWS semantics reproduced here, beyond what the botocore model validates:

* CreateThingGroup is idempotent for the same parent and properties, else
  ResourceAlreadyExists; the parent must exist; a hierarchy is at most 7 levels deep; a group's
  parent never changes, so a group's place in its hierarchy is fixed at creation.
* ``version`` starts at 1 and every UpdateThingGroup adds one; ``expectedVersion`` guards updates
  and deletes.  DeleteThingGroup succeeds for an unknown group and refuses one with child groups.
* A thing belongs to at most 10 groups, and to at most one group of any one hierarchy (groups
  that share a root).  Both rules are checked with the thing's row locked, so two concurrent
  AddThingToThingGroup calls for one thing cannot both slip past them.
* ListThingsInThingGroup / ListThingGroups with ``recursive`` walk the tree in SQL
  (``WITH RECURSIVE``, see :mod:`fleetjobs.service.effects.hierarchy`).

Membership changes happen in :mod:`fleetjobs.service.effects.memberships` only, inside the
caller's transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.domain import tagging
from fleetjobs.domain.arns import parse_arn
from fleetjobs.domain.errors import InvalidRequest, ResourceAlreadyExists, ResourceNotFound, VersionConflict
from fleetjobs.domain.registry import MAX_HIERARCHY_DEPTH, merged_group_properties, normalize_group_properties
from fleetjobs.model import shapes_iot as shapes
from fleetjobs.service.context import ServiceContext
from fleetjobs.service.effects.hierarchy import ancestor_chain, descendant_groups_select
from fleetjobs.service.effects.index_sync import thing_changed
from fleetjobs.service.effects.memberships import add_memberships, drop_group, remove_memberships
from fleetjobs.service.pagination import compact, page, page_size, token_str
from fleetjobs.store.rows import ThingRef, as_thing_refs
from fleetjobs.store.sql import locked, prefix_of, retry_once_on_integrity_error
from fleetjobs.store.tables import GROUP_MEMBERS, THING_GROUPS, THINGS


class ThingGroups:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    # -- groups ------------------------------------------------------------------------------------

    async def create_thing_group(self, req: shapes.CreateThingGroupRequest) -> dict[str, Any]:
        name: str = req["thingGroupName"]
        parent_name: str | None = req.get("parentGroupName")
        props = normalize_group_properties(req.get("thingGroupProperties"))
        tags = tagging.checked_tags(req.get("tags"))

        async def attempt() -> dict[str, Any]:
            async with self.ctx.db.write() as conn:
                row = (await conn.execute(select(THING_GROUPS).where(THING_GROUPS.c.group_name == name))).first()
                if row is not None:
                    current_parent = await self._parent_name(conn, row)
                    if current_parent != parent_name or (row.properties or {}) != props:
                        raise ResourceAlreadyExists(
                            f"Thing Group {name} already exists in current account with different properties",
                            resourceId=row.group_id,
                            resourceArn=self.ctx.partition.thing_group(name),
                        )
                    return self._created(name, row.group_id)
                parent_id = None
                if parent_name:
                    parent = await self._group(conn, parent_name)
                    if parent.query_string is not None:
                        raise InvalidRequest(f"Dynamic thing group {parent_name} cannot be a parent group.")
                    depth = len(await ancestor_chain(conn, parent.id)) + 1
                    if depth > MAX_HIERARCHY_DEPTH:
                        raise InvalidRequest(
                            f"Thing group {name} cannot be created under {parent_name}: a thing group hierarchy "
                            f"is at most {MAX_HIERARCHY_DEPTH} levels deep."
                        )
                    parent_id = parent.id
                group_id = str(uuid.uuid4())
                # A parent deleted concurrently fails this insert's foreign key: the retry answers 404.
                await conn.execute(
                    insert(THING_GROUPS).values(
                        group_name=name,
                        group_id=group_id,
                        parent_id=parent_id,
                        properties=props,
                        version=1,
                        created_at=self.ctx.clock.now(),
                        tags=tags,
                    )
                )
                return self._created(name, group_id)

        return await retry_once_on_integrity_error(attempt)

    async def describe_thing_group(self, req: shapes.DescribeThingGroupRequest) -> dict[str, Any]:
        name = req["thingGroupName"]
        async with self.ctx.db.read() as conn:
            row = await self._group(conn, name)
            ancestors = (await ancestor_chain(conn, row.id))[:-1]
        metadata = compact(
            {
                "parentGroupName": ancestors[-1].group_name if ancestors else None,
                "rootToParentThingGroups": [
                    {"groupName": a.group_name, "groupArn": self.ctx.partition.thing_group(a.group_name)}
                    for a in ancestors
                ]
                or None,
                "creationDate": row.created_at,
            }
        )
        return compact(
            {
                "thingGroupName": row.group_name,
                "thingGroupId": row.group_id,
                "thingGroupArn": self.ctx.partition.thing_group(row.group_name),
                "version": row.version,
                "thingGroupProperties": row.properties or {},
                "thingGroupMetadata": metadata,
                "indexName": row.index_name,
                "queryString": row.query_string,
                "queryVersion": row.query_version,
                "status": row.status,
            }
        )

    async def list_thing_groups(self, req: shapes.ListThingGroupsRequest) -> dict[str, Any]:
        """By name.  ``recursive`` defaults to true (the model calls it RecursiveWithoutDefault):

        * no ``parentGroup``: every group, or only root groups with ``recursive=false``;
        * ``parentGroup``: all its descendants, or only its direct children with ``recursive=false``.
        """
        size = page_size(req)
        after = token_str(req)
        recursive = req.get("recursive") is not False
        q = select(THING_GROUPS.c.group_name)
        async with self.ctx.db.read() as conn:
            if req.get("parentGroup"):
                parent = await self._group(conn, req["parentGroup"])
                if recursive:
                    q = q.where(
                        THING_GROUPS.c.id.in_(descendant_groups_select(parent.id)), THING_GROUPS.c.id != parent.id
                    )
                else:
                    q = q.where(THING_GROUPS.c.parent_id == parent.id)
            elif not recursive:
                q = q.where(THING_GROUPS.c.parent_id.is_(None))
            if req.get("namePrefixFilter"):
                q = q.where(prefix_of(THING_GROUPS.c.group_name, req["namePrefixFilter"]))
            if after is not None:
                q = q.where(THING_GROUPS.c.group_name > after)
            rows = (await conn.execute(q.order_by(THING_GROUPS.c.group_name).limit(size + 1))).all()
        rows, token = page(rows, size, lambda r: r.group_name)
        return compact({"thingGroups": [self._name_and_arn(r.group_name) for r in rows], "nextToken": token})

    async def update_thing_group(self, req: shapes.UpdateThingGroupRequest) -> dict[str, Any]:
        """Members of ``thingGroupProperties`` that the request leaves out keep their value;
        attributes follow the ``merge`` / empty-value rules of AttributePayload."""
        name = req["thingGroupName"]
        given: Mapping[str, Any] = req["thingGroupProperties"]
        expected: int | None = req.get("expectedVersion")
        async with self.ctx.db.write() as conn:
            row = await self._group(conn, name, lock=True)
            if expected is not None and expected != row.version:
                raise self._version_conflict(name)
            props = merged_group_properties(row.properties, given)
            result = await conn.execute(
                update(THING_GROUPS)
                .where(THING_GROUPS.c.id == row.id, THING_GROUPS.c.version == row.version)
                .values(properties=props, version=row.version + 1)
            )
            if result.rowcount != 1:
                raise self._version_conflict(name)
        return {"version": row.version + 1}

    async def delete_thing_group(self, req: shapes.DeleteThingGroupRequest) -> None:
        name = req["thingGroupName"]
        expected: int | None = req.get("expectedVersion")
        async with self.ctx.db.write() as conn:
            # The row lock makes a concurrent CreateThingGroup under this group wait (its foreign-key
            # check needs a key-share lock on it), so the child check below cannot miss a new child.
            row = (
                await conn.execute(locked(select(THING_GROUPS).where(THING_GROUPS.c.group_name == name), conn))
            ).first()
            if row is None:
                return  # AWS: deleting a group that does not exist succeeds
            if expected is not None and expected != row.version:
                raise self._version_conflict(name)
            child = (
                await conn.execute(select(THING_GROUPS.c.group_name).where(THING_GROUPS.c.parent_id == row.id).limit(1))
            ).first()
            if child is not None:
                raise InvalidRequest(
                    f"Cannot delete thing group {name} while it still has child groups (for example {child[0]})."
                )
            now = self.ctx.clock.now()
            for thing in await drop_group(conn, row.id, now):  # their thingGroupNames changed
                await thing_changed(conn, thing.thing_name, now)

    # -- membership ----------------------------------------------------------------------------------

    async def add_thing_to_thing_group(self, req: shapes.AddThingToThingGroupRequest) -> None:
        async def attempt() -> None:
            async with self.ctx.db.write() as conn:
                group = await self._resolve_group(conn, req.get("thingGroupName"), req.get("thingGroupArn"))
                thing = await self._resolve_thing(conn, req.get("thingName"), req.get("thingArn"))
                await add_memberships(conn, thing, [group], self.ctx.clock.now())

        await retry_once_on_integrity_error(attempt)

    async def remove_thing_from_thing_group(self, req: shapes.RemoveThingFromThingGroupRequest) -> None:
        async with self.ctx.db.write() as conn:
            group = await self._resolve_group(conn, req.get("thingGroupName"), req.get("thingGroupArn"))
            thing = await self._resolve_thing(conn, req.get("thingName"), req.get("thingArn"))
            await remove_memberships(conn, thing, [group], self.ctx.clock.now())

    async def update_thing_groups_for_thing(self, req: shapes.UpdateThingGroupsForThingRequest) -> None:
        """Removals first, then additions, in one transaction: a thing can move between two groups
        of one hierarchy in a single call, and a refused call changes nothing."""
        to_add: list[str] = list(dict.fromkeys(req.get("thingGroupsToAdd") or []))
        to_remove: list[str] = list(dict.fromkeys(req.get("thingGroupsToRemove") or []))
        both = sorted(set(to_add) & set(to_remove))
        if both:
            raise InvalidRequest(f"Thing groups cannot be both added and removed in one call: {', '.join(both)}")

        async def attempt() -> None:
            async with self.ctx.db.write() as conn:
                thing = await self._resolve_thing(conn, req.get("thingName"), None)
                adds = [await self._group(conn, n) for n in to_add]
                removes = [await self._group(conn, n) for n in to_remove]
                now = self.ctx.clock.now()
                await remove_memberships(conn, thing, removes, now)
                await add_memberships(conn, thing, adds, now)

        await retry_once_on_integrity_error(attempt)

    async def list_things_in_thing_group(self, req: shapes.ListThingsInThingGroupRequest) -> dict[str, Any]:
        """Thing names, each once, by name; ``recursive`` includes the things of every descendant group."""
        size = page_size(req)
        after = token_str(req)
        async with self.ctx.db.read() as conn:
            group = await self._group(conn, req["thingGroupName"])
            if req.get("recursive"):
                in_group = GROUP_MEMBERS.c.group_id.in_(descendant_groups_select(group.id))
            else:
                in_group = GROUP_MEMBERS.c.group_id == group.id
            q = (
                select(THINGS.c.thing_name)
                .select_from(GROUP_MEMBERS.join(THINGS, THINGS.c.id == GROUP_MEMBERS.c.thing_id))
                .where(in_group)
                .distinct()
            )
            if after is not None:
                q = q.where(THINGS.c.thing_name > after)
            rows = (await conn.execute(q.order_by(THINGS.c.thing_name).limit(size + 1))).all()
        rows, token = page(rows, size, lambda r: r.thing_name)
        return compact({"things": [r.thing_name for r in rows], "nextToken": token})

    async def list_thing_groups_for_thing(self, req: shapes.ListThingGroupsForThingRequest) -> dict[str, Any]:
        """The groups the thing was added to (not their ancestors), by name."""
        size = page_size(req)
        after = token_str(req)
        name = req["thingName"]
        async with self.ctx.db.read() as conn:
            thing = (await conn.execute(select(THINGS.c.id).where(THINGS.c.thing_name == name))).first()
            if thing is None:
                raise self._thing_not_found(name)
            q = (
                select(THING_GROUPS.c.group_name)
                .select_from(GROUP_MEMBERS.join(THING_GROUPS, THING_GROUPS.c.id == GROUP_MEMBERS.c.group_id))
                .where(GROUP_MEMBERS.c.thing_id == thing.id)
            )
            if after is not None:
                q = q.where(THING_GROUPS.c.group_name > after)
            rows = (await conn.execute(q.order_by(THING_GROUPS.c.group_name).limit(size + 1))).all()
        rows, token = page(rows, size, lambda r: r.group_name)
        return compact({"thingGroups": [self._name_and_arn(r.group_name) for r in rows], "nextToken": token})

    # -- lookups -----------------------------------------------------------------------------------------

    async def _group(self, conn: AsyncConnection, name: str, *, lock: bool = False) -> Any:
        q = select(THING_GROUPS).where(THING_GROUPS.c.group_name == name)
        row = (await conn.execute(locked(q, conn) if lock else q)).first()
        if row is None:
            raise self._group_not_found(name)
        return row

    async def _resolve_group(self, conn: AsyncConnection, name: str | None, arn: str | None) -> Any:
        """A group named by ``thingGroupName`` or ``thingGroupArn`` (both given: they must agree)."""
        return await self._group(conn, self._named(name, arn, "thingGroup", "thinggroup", self._group_not_found))

    async def _resolve_thing(self, conn: AsyncConnection, name: str | None, arn: str | None) -> ThingRef:
        """A thing named by ``thingName`` or ``thingArn``, its row locked until commit (see module doc)."""
        name = self._named(name, arn, "thing", "thing", self._thing_not_found)
        q = locked(select(THINGS.c.id, THINGS.c.thing_name).where(THINGS.c.thing_name == name), conn)
        rows = as_thing_refs(await conn.execute(q))
        if not rows:
            raise self._thing_not_found(name)
        return rows[0]

    def _named(
        self,
        name: str | None,
        arn: str | None,
        member: str,
        resource_type: str,
        not_found: Callable[[str], ResourceNotFound],
    ) -> str:
        """The name given as ``<member>Name`` or ``<member>Arn``; an ARN of another account or region
        names nothing that can be found here."""
        if arn is None:
            if name is None:
                raise InvalidRequest(f"Both {member}Arn and {member}Name are empty; specify at least one of them.")
            return name
        parsed = parse_arn(arn)
        if parsed.resource_type != resource_type:
            raise InvalidRequest(f"{arn} is not a {resource_type} ARN")
        arn_name = parsed.resource_id if self.ctx.partition.owns(parsed) else None
        if name is not None and name != arn_name:
            raise InvalidRequest(f"{member}Arn {arn} does not match {member}Name {name}")
        if arn_name is None:
            raise not_found(arn)
        return arn_name

    @staticmethod
    async def _parent_name(conn: AsyncConnection, row: Any) -> str | None:
        if row.parent_id is None:
            return None
        return await conn.scalar(select(THING_GROUPS.c.group_name).where(THING_GROUPS.c.id == row.parent_id))

    def _created(self, name: str, group_id: str) -> dict[str, Any]:
        return {"thingGroupName": name, "thingGroupArn": self.ctx.partition.thing_group(name), "thingGroupId": group_id}

    def _name_and_arn(self, name: str) -> dict[str, str]:
        return {"groupName": name, "groupArn": self.ctx.partition.thing_group(name)}

    @staticmethod
    def _group_not_found(name: str) -> ResourceNotFound:
        return ResourceNotFound(f"Thing group {name} cannot be found.")

    @staticmethod
    def _thing_not_found(name: str) -> ResourceNotFound:
        return ResourceNotFound(f"Thing {name} cannot be found.")

    @staticmethod
    def _version_conflict(name: str) -> VersionConflict:
        return VersionConflict(f"The version for thing group {name} does not match the expected version.")
