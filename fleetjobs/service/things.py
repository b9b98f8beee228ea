"""Things and thing types (JOBS_API.md §1.5, §1.6): the registry that job targets resolve against.

AWS semantics reproduced here, beyond what the botocore model validates:

* CreateThing / CreateThingType are idempotent: the same name with the same configuration
  answers with the existing resource, a different configuration is ResourceAlreadyExists
  (with ``resourceId`` / ``resourceArn``).
* A thing has at most 3 attributes without a thing type and 50 with one; a deprecated thing type
  cannot be given to a thing; a thing type can be deleted only once deprecated and unused.
* ``version`` starts at 1 and every UpdateThing adds one; ``expectedVersion`` guards updates
  and deletes (VersionConflictException).
* DeleteThing succeeds for an unknown thing, drops the thing's group memberships and turns its
  pending job executions into REMOVED, all in one transaction.

Several server processes may share one PostgreSQL database, so nothing is cached: rows that a
decision depends on are locked (``FOR UPDATE`` / ``FOR SHARE``), updates are conditional on the
version read, and unique-constraint races are answered by re-running the request.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, exists, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.domain import tagging
from fleetjobs.domain.errors import InvalidRequest, ResourceAlreadyExists, ResourceNotFound, VersionConflict
from fleetjobs.domain.registry import (
    apply_attribute_payload,
    check_attribute_count,
    check_searchable_attributes,
    normalize_type_properties,
    payload_attributes,
)
from fleetjobs.model import shapes_iot as shapes
from fleetjobs.service.context import ServiceContext
from fleetjobs.service.effects.execution_moves import remove_thing_executions
from fleetjobs.service.effects.index_sync import thing_changed
from fleetjobs.service.effects.notices import notice_things
from fleetjobs.service.effects.shadow_writes import delete_thing_shadows
from fleetjobs.service.pagination import compact, page, page_size, token_str
from fleetjobs.store.sql import locked, prefix_of, retry_once_on_integrity_error
from fleetjobs.store.tables import GROUP_MEMBERS, THING_TYPES, THINGS


class Things:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    # -- things ------------------------------------------------------------------------------------

    async def create_thing(self, req: shapes.CreateThingRequest) -> dict[str, Any]:
        name: str = req["thingName"]
        type_name: str | None = req.get("thingTypeName")
        attributes = payload_attributes(req.get("attributePayload"))
        if req.get("billingGroupName"):
            # Billing groups are out of fleetjobs' scope (JOBS_API.md §0.1): none can exist.
            raise InvalidRequest("Billing groups are not supported by fleetjobs; omit billingGroupName.")
        check_attribute_count(attributes, type_name)

        async def attempt() -> dict[str, Any]:
            async with self.ctx.db.write() as conn:
                row = (await conn.execute(select(THINGS).where(THINGS.c.thing_name == name))).first()
                if row is not None:
                    same = (row.thing_type_name, row.attributes or {}, row.billing_group_name) == (
                        type_name,
                        attributes,
                        None,
                    )
                    if not same:
                        raise ResourceAlreadyExists(
                            f"Thing {name} already exists in account with different attributes",
                            resourceId=row.thing_id,
                            resourceArn=self.ctx.partition.thing(name),
                        )
                    return self._created(name, row.thing_id)
                if type_name:
                    await self._usable_thing_type(conn, type_name, "create new thing with")
                thing_id = str(uuid.uuid4())
                await conn.execute(
                    insert(THINGS).values(
                        thing_name=name,
                        thing_id=thing_id,
                        thing_type_name=type_name,
                        attributes=attributes,
                        billing_group_name=None,
                        version=1,
                        created_at=self.ctx.clock.now(),
                    )
                )
                await thing_changed(conn, name, self.ctx.clock.now(), created=True)  # dynamic thing groups
                return self._created(name, thing_id)

        return await retry_once_on_integrity_error(attempt)

    async def describe_thing(self, req: shapes.DescribeThingRequest) -> dict[str, Any]:
        name = req["thingName"]
        async with self.ctx.db.read() as conn:
            row = (await conn.execute(select(THINGS).where(THINGS.c.thing_name == name))).first()
        if row is None:
            raise self._thing_not_found(name)
        return compact(
            {
                "defaultClientId": row.thing_name,
                "thingName": row.thing_name,
                "thingId": row.thing_id,
                "thingArn": self.ctx.partition.thing(row.thing_name),
                "thingTypeName": row.thing_type_name,
                "attributes": row.attributes or {},
                "version": row.version,
                "billingGroupName": row.billing_group_name,
            }
        )

    async def list_things(self, req: shapes.ListThingsRequest) -> dict[str, Any]:
        """By name; every filter is a WHERE clause so pages stay full and the walk stays O(page).

        Unlike AWS, which refuses it, combining an attribute filter with ``thingTypeName`` works.
        """
        size = page_size(req)
        after = token_str(req)
        attr_name: str | None = req.get("attributeName")
        attr_value: str | None = req.get("attributeValue")
        if attr_value is not None and attr_name is None:
            raise InvalidRequest("attributeValue requires attributeName.")
        q = select(THINGS.c.thing_name, THINGS.c.thing_type_name, THINGS.c.attributes, THINGS.c.version)
        if after is not None:
            q = q.where(THINGS.c.thing_name > after)
        if req.get("thingTypeName"):
            q = q.where(THINGS.c.thing_type_name == req["thingTypeName"])
        if attr_name is not None:
            value = THINGS.c.attributes[attr_name].as_string()
            if attr_value is None:
                q = q.where(value.is_not(None))
            elif req.get("usePrefixAttributeValue"):
                q = q.where(value.is_not(None), prefix_of(value, attr_value))
            else:
                q = q.where(value == attr_value)
        q = q.order_by(THINGS.c.thing_name).limit(size + 1)
        async with self.ctx.db.read() as conn:
            rows = (await conn.execute(q)).all()
        rows, token = page(rows, size, lambda r: r.thing_name)
        things = [
            compact(
                {
                    "thingName": r.thing_name,
                    "thingTypeName": r.thing_type_name,
                    "thingArn": self.ctx.partition.thing(r.thing_name),
                    "attributes": r.attributes or {},
                    "version": r.version,
                }
            )
            for r in rows
        ]
        return compact({"things": things, "nextToken": token})

    async def update_thing(self, req: shapes.UpdateThingRequest) -> None:
        name = req["thingName"]
        type_name: str | None = req.get("thingTypeName")
        remove_type = bool(req.get("removeThingType"))
        expected: int | None = req.get("expectedVersion")
        if remove_type and type_name:
            raise InvalidRequest("Cannot specify both thingTypeName and removeThingType=true.")
        async with self.ctx.db.write() as conn:
            row = (await conn.execute(locked(select(THINGS).where(THINGS.c.thing_name == name), conn))).first()
            if row is None:
                raise self._thing_not_found(name)
            if expected is not None and expected != row.version:
                raise self._version_conflict(name)
            new_type = row.thing_type_name
            if remove_type:
                new_type = None
            elif type_name is not None and type_name != row.thing_type_name:
                await self._usable_thing_type(conn, type_name, "update a thing to use")
                new_type = type_name
            attributes = apply_attribute_payload(row.attributes or {}, req.get("attributePayload"))
            check_attribute_count(attributes, new_type)
            result = await conn.execute(
                update(THINGS)
                .where(THINGS.c.id == row.id, THINGS.c.version == row.version)
                .values(thing_type_name=new_type, attributes=attributes, version=row.version + 1)
            )
            if result.rowcount != 1:  # only possible if the row lock were bypassed; never overwrite blindly
                raise self._version_conflict(name)
            await thing_changed(conn, name, self.ctx.clock.now())  # dynamic groups

    async def delete_thing(self, req: shapes.DeleteThingRequest) -> None:
        name = req["thingName"]
        expected: int | None = req.get("expectedVersion")
        async with self.ctx.db.write() as conn:
            q = locked(select(THINGS.c.id, THINGS.c.version).where(THINGS.c.thing_name == name), conn)
            row = (await conn.execute(q)).first()
            if row is None:
                return  # AWS: deleting a thing that does not exist succeeds
            if expected is not None and expected != row.version:
                raise self._version_conflict(name)
            await conn.execute(delete(GROUP_MEMBERS).where(GROUP_MEMBERS.c.thing_id == row.id))
            await delete_thing_shadows(conn, name)
            result = await conn.execute(delete(THINGS).where(THINGS.c.id == row.id, THINGS.c.version == row.version))
            if result.rowcount != 1:
                raise self._version_conflict(name)
            now = self.ctx.clock.now()
            if await remove_thing_executions(conn, name, now):
                await notice_things(conn, [name], now, next_always=True)

    # -- thing types -------------------------------------------------------------------------------

    async def create_thing_type(self, req: shapes.CreateThingTypeRequest) -> dict[str, Any]:
        name: str = req["thingTypeName"]
        props = normalize_type_properties(req.get("thingTypeProperties"))
        check_searchable_attributes(props)
        tags = tagging.checked_tags(req.get("tags"))

        async def attempt() -> dict[str, Any]:
            async with self.ctx.db.write() as conn:
                row = (await conn.execute(select(THING_TYPES).where(THING_TYPES.c.thing_type_name == name))).first()
                if row is not None:
                    if (row.properties or {}) != props:
                        raise ResourceAlreadyExists(
                            f"Thing Type {name} already exists in account with different properties",
                            resourceId=row.thing_type_id,
                            resourceArn=self.ctx.partition.thing_type(name),
                        )
                    return self._type_created(name, row.thing_type_id)
                type_id = str(uuid.uuid4())
                await conn.execute(
                    insert(THING_TYPES).values(
                        thing_type_name=name,
                        thing_type_id=type_id,
                        properties=props,
                        deprecated=False,
                        deprecation_date=None,
                        created_at=self.ctx.clock.now(),
                        tags=tags,
                    )
                )
                return self._type_created(name, type_id)

        return await retry_once_on_integrity_error(attempt)

    async def describe_thing_type(self, req: shapes.DescribeThingTypeRequest) -> dict[str, Any]:
        name = req["thingTypeName"]
        async with self.ctx.db.read() as conn:
            row = (await conn.execute(select(THING_TYPES).where(THING_TYPES.c.thing_type_name == name))).first()
        if row is None:
            raise self._type_not_found(name)
        return {
            "thingTypeName": row.thing_type_name,
            "thingTypeId": row.thing_type_id,
            "thingTypeArn": self.ctx.partition.thing_type(row.thing_type_name),
            "thingTypeProperties": row.properties or {},
            "thingTypeMetadata": self._type_metadata(row),
        }

    async def list_thing_types(self, req: shapes.ListThingTypesRequest) -> dict[str, Any]:
        """By name.  ``thingTypeName`` filters by name prefix, as AWS does (not by exact name)."""
        size = page_size(req)
        after = token_str(req)
        q = select(THING_TYPES)
        if after is not None:
            q = q.where(THING_TYPES.c.thing_type_name > after)
        if req.get("thingTypeName"):
            q = q.where(prefix_of(THING_TYPES.c.thing_type_name, req["thingTypeName"]))
        q = q.order_by(THING_TYPES.c.thing_type_name).limit(size + 1)
        async with self.ctx.db.read() as conn:
            rows = (await conn.execute(q)).all()
        rows, token = page(rows, size, lambda r: r.thing_type_name)
        types = [
            {
                "thingTypeName": r.thing_type_name,
                "thingTypeArn": self.ctx.partition.thing_type(r.thing_type_name),
                "thingTypeProperties": r.properties or {},
                "thingTypeMetadata": self._type_metadata(r),
            }
            for r in rows
        ]
        return compact({"thingTypes": types, "nextToken": token})

    async def update_thing_type(self, req: shapes.UpdateThingTypeRequest) -> None:
        """Replaces the members of ``thingTypeProperties`` that the request gives (an empty one removes it)."""
        name = req["thingTypeName"]
        given: Mapping[str, Any] = req.get("thingTypeProperties") or {}
        async with self.ctx.db.write() as conn:
            row = await self._type_row(conn, name, lock=True)
            props = dict(row.properties or {})
            for member, value in given.items():
                if value in ("", [], {}):
                    props.pop(member, None)
                else:
                    props[member] = value
            check_searchable_attributes(props)
            await conn.execute(
                update(THING_TYPES).where(THING_TYPES.c.thing_type_name == name).values(properties=props)
            )

    async def deprecate_thing_type(self, req: shapes.DeprecateThingTypeRequest) -> None:
        name = req["thingTypeName"]
        async with self.ctx.db.write() as conn:
            row = await self._type_row(conn, name, lock=True)
            if req.get("undoDeprecate"):
                values: dict[str, Any] = {"deprecated": False, "deprecation_date": None}
            elif row.deprecated:
                return  # deprecating again keeps the original deprecation date
            else:
                values = {"deprecated": True, "deprecation_date": self.ctx.clock.now()}
            await conn.execute(update(THING_TYPES).where(THING_TYPES.c.thing_type_name == name).values(**values))

    async def delete_thing_type(self, req: shapes.DeleteThingTypeRequest) -> None:
        """Only a deprecated type without things.  (AWS also makes you wait five minutes after
        deprecating; that delay only reflects its own propagation, so fleetjobs does not impose it.)"""
        name = req["thingTypeName"]
        async with self.ctx.db.write() as conn:
            row = await self._type_row(conn, name, lock=True)
            if not row.deprecated:
                raise InvalidRequest(
                    f"Thing type {name} must be deprecated (DeprecateThingType) before it can be deleted."
                )
            in_use = await conn.scalar(select(exists().where(THINGS.c.thing_type_name == name)))
            if in_use:
                raise InvalidRequest(
                    f"Thing type {name} cannot be deleted: things are still associated with it. "
                    "Change or remove their thing type first (UpdateThing)."
                )
            await conn.execute(delete(THING_TYPES).where(THING_TYPES.c.thing_type_name == name))

    # -- helpers -------------------------------------------------------------------------------------

    async def _usable_thing_type(self, conn: AsyncConnection, name: str, action: str) -> None:
        """The type must exist and not be deprecated; it stays so until commit (shared row lock),
        so a concurrent DeprecateThingType / DeleteThingType cannot slip in between."""
        q = locked(select(THING_TYPES.c.deprecated).where(THING_TYPES.c.thing_type_name == name), conn, shared=True)
        row = (await conn.execute(q)).first()
        if row is None:
            raise self._type_not_found(name)
        if row.deprecated:
            raise InvalidRequest(f"Can not {action} deprecated thing type: {name}")

    async def _type_row(self, conn: AsyncConnection, name: str, *, lock: bool = False) -> Any:
        q = select(THING_TYPES).where(THING_TYPES.c.thing_type_name == name)
        row = (await conn.execute(locked(q, conn) if lock else q)).first()
        if row is None:
            raise self._type_not_found(name)
        return row

    @staticmethod
    def _type_metadata(row: Any) -> dict[str, Any]:
        return compact(
            {
                "deprecated": bool(row.deprecated),
                "deprecationDate": row.deprecation_date if row.deprecated else None,
                "creationDate": row.created_at,
            }
        )

    def _created(self, name: str, thing_id: str) -> dict[str, Any]:
        return {"thingName": name, "thingArn": self.ctx.partition.thing(name), "thingId": thing_id}

    def _type_created(self, name: str, type_id: str) -> dict[str, Any]:
        return {"thingTypeName": name, "thingTypeArn": self.ctx.partition.thing_type(name), "thingTypeId": type_id}

    @staticmethod
    def _thing_not_found(name: str) -> ResourceNotFound:
        return ResourceNotFound(f"Thing {name} cannot be found.")

    @staticmethod
    def _type_not_found(name: str) -> ResourceNotFound:
        return ResourceNotFound(f"Thing type {name} cannot be found.")

    @staticmethod
    def _version_conflict(name: str) -> VersionConflict:
        return VersionConflict(f"The version for thing {name} does not match the expected version.")
