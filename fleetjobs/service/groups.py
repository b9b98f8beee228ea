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
  (``WITH RECURSIVE``, see :mod:`fleetjobs.service.registry_queries`).

Membership changes happen in :meth:`ThingGroups._add_memberships` and
:meth:`ThingGroups._remove_memberships` only, inside the caller's transaction.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.domain.arns import parse_arn
from fleetjobs.domain.errors import InvalidRequest, ResourceAlreadyExists, ResourceNotFound, VersionConflict
from fleetjobs.service import continuous
from fleetjobs.service.context import ServiceContext
from fleetjobs.service.fleet_index import thing_changed
from fleetjobs.service.pagination import compact, decode_token, page, page_size
from fleetjobs.service.registry_queries import (
    ancestor_chain,
    apply_attribute_payload,
    descendant_groups_select,
    locked,
    payload_attributes,
    prefix_of,
    retry_once_on_integrity_error,
    root_group_ids,
)
from fleetjobs.store.schema import Thing, ThingGroup, ThingGroupMember

T = Thing.__table__
G = ThingGroup.__table__
M = ThingGroupMember.__table__

# AWS IoT quotas.
MAX_HIERARCHY_DEPTH = 7
MAX_GROUPS_PER_THING = 10
MAX_GROUP_ATTRIBUTES = 50


def normalize_group_properties(props: dict[str, Any] | None) -> dict[str, Any]:
    """Stored form of ThingGroupProperties: a description and non-empty attributes, nothing else
    (``merge`` only means something to an update), so absent and empty compare equal."""
    props = props or {}
    out: dict[str, Any] = {}
    if props.get("thingGroupDescription"):
        out["thingGroupDescription"] = props["thingGroupDescription"]
    attributes = payload_attributes(props.get("attributePayload"))
    if attributes:
        out["attributePayload"] = {"attributes": attributes}
    _check_group_attributes(out)
    return out


def _check_group_attributes(props: dict[str, Any]) -> None:
    n = len(props.get("attributePayload", {}).get("attributes", {}))
    if n > MAX_GROUP_ATTRIBUTES:
        raise InvalidRequest(f"A thing group can have at most {MAX_GROUP_ATTRIBUTES} attributes; {n} were given.")


def _token_str(req: dict[str, Any]) -> str | None:
    after = decode_token(req.get("nextToken"))
    if after is not None and not isinstance(after, str):
        raise InvalidRequest("The nextToken is invalid")
    return after


class ThingGroups:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    # -- groups ------------------------------------------------------------------------------------

    async def create_thing_group(self, req: dict[str, Any]) -> dict[str, Any]:
        name: str = req["thingGroupName"]
        parent_name: str | None = req.get("parentGroupName")
        props = normalize_group_properties(req.get("thingGroupProperties"))

        async def attempt() -> dict[str, Any]:
            async with self.ctx.db.write() as conn:
                row = (await conn.execute(select(G).where(G.c.group_name == name))).first()
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
                    insert(G).values(
                        group_name=name,
                        group_id=group_id,
                        parent_id=parent_id,
                        properties=props,
                        version=1,
                        created_at=self.ctx.clock.now(),
                        tags=req.get("tags") or [],
                    )
                )
                return self._created(name, group_id)

        return await retry_once_on_integrity_error(attempt)

    async def describe_thing_group(self, req: dict[str, Any]) -> dict[str, Any]:
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

    async def list_thing_groups(self, req: dict[str, Any]) -> dict[str, Any]:
        """By name.  ``recursive`` defaults to true (the model calls it RecursiveWithoutDefault):

        * no ``parentGroup``: every group, or only root groups with ``recursive=false``;
        * ``parentGroup``: all its descendants, or only its direct children with ``recursive=false``.
        """
        size = page_size(req)
        after = _token_str(req)
        recursive = req.get("recursive") is not False
        q = select(G.c.group_name)
        async with self.ctx.db.read() as conn:
            if req.get("parentGroup"):
                parent = await self._group(conn, req["parentGroup"])
                if recursive:
                    q = q.where(G.c.id.in_(descendant_groups_select(parent.id)), G.c.id != parent.id)
                else:
                    q = q.where(G.c.parent_id == parent.id)
            elif not recursive:
                q = q.where(G.c.parent_id.is_(None))
            if req.get("namePrefixFilter"):
                q = q.where(prefix_of(G.c.group_name, req["namePrefixFilter"]))
            if after is not None:
                q = q.where(G.c.group_name > after)
            rows = (await conn.execute(q.order_by(G.c.group_name).limit(size + 1))).all()
        rows, token = page(rows, size, lambda r: r.group_name)
        return compact({"thingGroups": [self._name_and_arn(r.group_name) for r in rows], "nextToken": token})

    async def update_thing_group(self, req: dict[str, Any]) -> dict[str, Any]:
        """Members of ``thingGroupProperties`` that the request leaves out keep their value;
        attributes follow the ``merge`` / empty-value rules of AttributePayload."""
        name = req["thingGroupName"]
        given: dict[str, Any] = req["thingGroupProperties"]
        expected: int | None = req.get("expectedVersion")
        async with self.ctx.db.write() as conn:
            row = await self._group(conn, name, lock=True)
            if expected is not None and expected != row.version:
                raise self._version_conflict(name)
            props = merged_group_properties(row.properties, given)
            _check_group_attributes(props)
            result = await conn.execute(
                update(G)
                .where(G.c.id == row.id, G.c.version == row.version)
                .values(properties=props, version=row.version + 1)
            )
            if result.rowcount != 1:
                raise self._version_conflict(name)
        return {"version": row.version + 1}

    async def delete_thing_group(self, req: dict[str, Any]) -> None:
        name = req["thingGroupName"]
        expected: int | None = req.get("expectedVersion")
        async with self.ctx.db.write() as conn:
            # The row lock makes a concurrent CreateThingGroup under this group wait (its foreign-key
            # check needs a key-share lock on it), so the child check below cannot miss a new child.
            row = (await conn.execute(locked(select(G).where(G.c.group_name == name), conn))).first()
            if row is None:
                return  # AWS: deleting a group that does not exist succeeds
            if expected is not None and expected != row.version:
                raise self._version_conflict(name)
            child = (await conn.execute(select(G.c.group_name).where(G.c.parent_id == row.id).limit(1))).first()
            if child is not None:
                raise InvalidRequest(
                    f"Cannot delete thing group {name} while it still has child groups (for example {child[0]})."
                )
            members = (
                await conn.execute(
                    select(T.c.id, T.c.thing_name).join(M, M.c.thing_id == T.c.id).where(M.c.group_id == row.id)
                )
            ).all()
            await conn.execute(delete(M).where(M.c.group_id == row.id))
            if members and await continuous.jobs_reaching(conn, [row.id]):
                now = self.ctx.clock.now()
                for thing in members:
                    await continuous.things_left(conn, thing, [row.id], self.ctx.partition.thing(thing.thing_name), now)
            await conn.execute(delete(G).where(G.c.id == row.id))
            for thing in sorted(members, key=lambda t: t.thing_name):  # their thingGroupNames changed
                await thing_changed(conn, thing.thing_name, self.ctx.clock.now(), partition=self.ctx.partition)

    # -- membership ----------------------------------------------------------------------------------

    async def add_thing_to_thing_group(self, req: dict[str, Any]) -> None:
        async def attempt() -> None:
            async with self.ctx.db.write() as conn:
                group = await self._resolve_group(conn, req.get("thingGroupName"), req.get("thingGroupArn"))
                thing = await self._resolve_thing(conn, req.get("thingName"), req.get("thingArn"))
                await self._add_memberships(conn, thing, [group])

        await retry_once_on_integrity_error(attempt)

    async def remove_thing_from_thing_group(self, req: dict[str, Any]) -> None:
        async with self.ctx.db.write() as conn:
            group = await self._resolve_group(conn, req.get("thingGroupName"), req.get("thingGroupArn"))
            thing = await self._resolve_thing(conn, req.get("thingName"), req.get("thingArn"))
            await self._remove_memberships(conn, thing, [group])

    async def update_thing_groups_for_thing(self, req: dict[str, Any]) -> None:
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
                await self._remove_memberships(conn, thing, removes)
                await self._add_memberships(conn, thing, adds)

        await retry_once_on_integrity_error(attempt)

    async def list_things_in_thing_group(self, req: dict[str, Any]) -> dict[str, Any]:
        """Thing names, each once, by name; ``recursive`` includes the things of every descendant group."""
        size = page_size(req)
        after = _token_str(req)
        async with self.ctx.db.read() as conn:
            group = await self._group(conn, req["thingGroupName"])
            if req.get("recursive"):
                in_group = M.c.group_id.in_(descendant_groups_select(group.id))
            else:
                in_group = M.c.group_id == group.id
            q = select(T.c.thing_name).select_from(M.join(T, T.c.id == M.c.thing_id)).where(in_group).distinct()
            if after is not None:
                q = q.where(T.c.thing_name > after)
            rows = (await conn.execute(q.order_by(T.c.thing_name).limit(size + 1))).all()
        rows, token = page(rows, size, lambda r: r.thing_name)
        return compact({"things": [r.thing_name for r in rows], "nextToken": token})

    async def list_thing_groups_for_thing(self, req: dict[str, Any]) -> dict[str, Any]:
        """The groups the thing was added to (not their ancestors), by name."""
        size = page_size(req)
        after = _token_str(req)
        name = req["thingName"]
        async with self.ctx.db.read() as conn:
            thing = (await conn.execute(select(T.c.id).where(T.c.thing_name == name))).first()
            if thing is None:
                raise self._thing_not_found(name)
            q = select(G.c.group_name).select_from(M.join(G, G.c.id == M.c.group_id)).where(M.c.thing_id == thing.id)
            if after is not None:
                q = q.where(G.c.group_name > after)
            rows = (await conn.execute(q.order_by(G.c.group_name).limit(size + 1))).all()
        rows, token = page(rows, size, lambda r: r.group_name)
        return compact({"thingGroups": [self._name_and_arn(r.group_name) for r in rows], "nextToken": token})

    # -- membership changes (the only two places) ---------------------------------------------------------

    async def _add_memberships(self, conn: AsyncConnection, thing: Any, groups: list[Any]) -> None:
        """Add a (locked) thing to ``groups``, enforcing the 10-group and one-group-per-hierarchy rules."""
        current = {r[0] for r in await conn.execute(select(M.c.group_id).where(M.c.thing_id == thing.id))}
        new = list({g.id: g for g in groups if g.id not in current}.values())
        if not new:
            return  # already a member: AWS answers success
        for g in new:
            if g.query_string is not None:
                raise InvalidRequest(f"Things cannot be added to dynamic thing group {g.group_name}.")
        if len(current) + len(new) > MAX_GROUPS_PER_THING:
            raise InvalidRequest(
                f"Thing {thing.thing_name} cannot be in more than {MAX_GROUPS_PER_THING} thing groups "
                f"(it is in {len(current)})."
            )
        roots = await root_group_ids(conn, current | {g.id for g in new})
        by_root: dict[int, int] = {roots[gid]: gid for gid in current}
        for g in new:
            other = by_root.get(roots[g.id])
            if other is not None:
                other_name = await conn.scalar(select(G.c.group_name).where(G.c.id == other))
                raise InvalidRequest(
                    f"Thing {thing.thing_name} cannot be added to thing group {g.group_name}: it already belongs "
                    f"to thing group {other_name} of the same hierarchy, and a thing can be in only one group "
                    "of a hierarchy."
                )
            by_root[roots[g.id]] = g.id
        await conn.execute(insert(M), [{"group_id": g.id, "thing_id": thing.id} for g in new])
        now = self.ctx.clock.now()
        await continuous.things_joined(
            conn, thing, [g.id for g in new], self.ctx.partition.thing(thing.thing_name), now
        )
        await thing_changed(conn, thing.thing_name, now, partition=self.ctx.partition)  # thingGroupNames changed

    async def _remove_memberships(self, conn: AsyncConnection, thing: Any, groups: list[Any]) -> None:
        """Removing a thing from a group it is not in is a no-op, as on AWS."""
        for g in groups:
            if g.query_string is not None:  # membership follows the group's query only
                raise InvalidRequest(f"Things cannot be removed from dynamic thing group {g.group_name}.")
        if groups:
            ids = [g.id for g in groups]
            await conn.execute(delete(M).where(M.c.thing_id == thing.id, M.c.group_id.in_(ids)))
            now = self.ctx.clock.now()
            await continuous.things_left(conn, thing, ids, self.ctx.partition.thing(thing.thing_name), now)
            await thing_changed(conn, thing.thing_name, now, partition=self.ctx.partition)  # thingGroupNames changed

    # -- lookups -----------------------------------------------------------------------------------------

    async def _group(self, conn: AsyncConnection, name: str, *, lock: bool = False) -> Any:
        q = select(G).where(G.c.group_name == name)
        row = (await conn.execute(locked(q, conn) if lock else q)).first()
        if row is None:
            raise self._group_not_found(name)
        return row

    async def _resolve_group(self, conn: AsyncConnection, name: str | None, arn: str | None) -> Any:
        """A group named by ``thingGroupName`` or ``thingGroupArn`` (both given: they must agree)."""
        if name is None and arn is None:
            raise InvalidRequest("Both thingGroupArn and thingGroupName are empty; specify at least one of them.")
        if arn is not None:
            arn_name = self._name_from_arn(arn, "thinggroup")
            if name is not None and name != arn_name:
                raise InvalidRequest(f"thingGroupArn {arn} does not match thingGroupName {name}")
            if arn_name is None:
                raise self._group_not_found(arn)
            name = arn_name
        assert name is not None
        return await self._group(conn, name)

    async def _resolve_thing(self, conn: AsyncConnection, name: str | None, arn: str | None) -> Any:
        """A thing named by ``thingName`` or ``thingArn``, its row locked until commit (see module doc)."""
        if name is None and arn is None:
            raise InvalidRequest("Both thingArn and thingName are empty; specify at least one of them.")
        if arn is not None:
            arn_name = self._name_from_arn(arn, "thing")
            if name is not None and name != arn_name:
                raise InvalidRequest(f"thingArn {arn} does not match thingName {name}")
            if arn_name is None:
                raise self._thing_not_found(arn)
            name = arn_name
        q = locked(select(T.c.id, T.c.thing_name).where(T.c.thing_name == name), conn)
        row = (await conn.execute(q)).first()
        if row is None:
            raise self._thing_not_found(name)
        return row

    def _name_from_arn(self, arn: str, resource_type: str) -> str | None:
        """The resource name of an ARN of ``resource_type``; None if it belongs to another account
        or region (so it cannot be found here)."""
        parsed = parse_arn(arn)
        if parsed.resource_type != resource_type:
            raise InvalidRequest(f"{arn} is not a {resource_type} ARN")
        if parsed.account != self.ctx.partition.account or parsed.region != self.ctx.partition.region:
            return None
        return parsed.resource_id

    @staticmethod
    async def _parent_name(conn: AsyncConnection, row: Any) -> str | None:
        if row.parent_id is None:
            return None
        return await conn.scalar(select(G.c.group_name).where(G.c.id == row.parent_id))

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


def merged_group_properties(current: dict[str, Any] | None, given: dict[str, Any]) -> dict[str, Any]:
    """UpdateThingGroup / UpdateDynamicThingGroup: a given description replaces the old one (empty
    removes it); a given attribute payload merges into the attributes (``merge`` semantics)."""
    props = dict(current or {})
    if "thingGroupDescription" in given:
        if given["thingGroupDescription"]:
            props["thingGroupDescription"] = given["thingGroupDescription"]
        else:
            props.pop("thingGroupDescription", None)
    if "attributePayload" in given:
        attributes = apply_attribute_payload(
            props.get("attributePayload", {}).get("attributes", {}), given["attributePayload"]
        )
        if attributes:
            props["attributePayload"] = {"attributes": attributes}
        else:
            props.pop("attributePayload", None)
    return props
