"""Things and thing types (JOBS_API.md §1.5, §1.6)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.domain.errors import InvalidRequest, ResourceAlreadyExists, ResourceNotFound, VersionConflict
from fleetjobs.service.context import ServiceContext
from fleetjobs.service.execution_moves import remove_thing_executions
from fleetjobs.service.pagination import compact, decode_token, page, page_size
from fleetjobs.store.schema import Thing, ThingGroupMember, ThingType

T = Thing.__table__
TT = ThingType.__table__
M = ThingGroupMember.__table__

MAX_ATTRIBUTES_UNTYPED = 3
MAX_ATTRIBUTES_TYPED = 50


def merge_attributes(current: dict[str, str], payload: dict[str, Any] | None) -> dict[str, str]:
    """AttributePayload semantics: ``merge`` adds to the stored set, otherwise replaces it; an
    empty value removes that attribute either way."""
    if payload is None:
        return dict(current)
    given = payload.get("attributes") or {}
    merged = dict(current) if payload.get("merge") else {}
    for k, v in given.items():
        if v == "":
            merged.pop(k, None)
        else:
            merged[k] = v
    return merged


class Things:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    # -- things ----------------------------------------------------------------------------------

    async def create_thing(self, req: dict[str, Any]) -> dict[str, Any]:
        name = req["thingName"]
        type_name = req.get("thingTypeName")
        attributes = merge_attributes({}, req.get("attributePayload"))
        now = self.ctx.clock.now()
        async with self.ctx.db.write() as conn:
            if type_name:
                await self._usable_type(conn, type_name)
            self._check_attribute_count(attributes, type_name)
            existing = (await conn.execute(select(T).where(T.c.thing_name == name))).first()
            if existing is not None:
                return self._same_or_conflict(existing, type_name, attributes, req.get("billingGroupName"))
            thing_id = str(uuid.uuid4())
            try:
                await conn.execute(
                    insert(T).values(
                        thing_name=name,
                        thing_id=thing_id,
                        thing_type_name=type_name,
                        attributes=attributes,
                        billing_group_name=req.get("billingGroupName"),
                        version=1,
                        created_at=now,
                    )
                )
            except IntegrityError:
                raise ResourceAlreadyExists(
                    f"Thing {name} already exists", resourceId=name, resourceArn=self.ctx.partition.thing(name)
                ) from None
        return {"thingName": name, "thingArn": self.ctx.partition.thing(name), "thingId": thing_id}

    def _same_or_conflict(
        self, row: Any, type_name: str | None, attributes: dict[str, str], billing: str | None
    ) -> Any:
        if row.thing_type_name == type_name and row.attributes == attributes and row.billing_group_name == billing:
            return {
                "thingName": row.thing_name,
                "thingArn": self.ctx.partition.thing(row.thing_name),
                "thingId": row.thing_id,
            }
        raise ResourceAlreadyExists(
            f"Thing {row.thing_name} already exists with different configuration",
            resourceId=row.thing_id,
            resourceArn=self.ctx.partition.thing(row.thing_name),
        )

    async def describe_thing(self, req: dict[str, Any]) -> dict[str, Any]:
        async with self.ctx.db.read() as conn:
            row = await self._thing(conn, req["thingName"])
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

    async def list_things(self, req: dict[str, Any]) -> dict[str, Any]:
        size = page_size(req)
        after = decode_token(req.get("nextToken"))
        q = select(T)
        name, value = req.get("attributeName"), req.get("attributeValue")
        if name:
            attr = T.c.attributes[name].as_string()
            if value is None:
                q = q.where(attr.is_not(None))
            elif req.get("usePrefixAttributeValue"):
                q = q.where(attr.startswith(value, autoescape=True))
            else:
                q = q.where(attr == value)
        elif value is not None:
            raise InvalidRequest("attributeValue requires attributeName")
        if req.get("thingTypeName"):
            q = q.where(T.c.thing_type_name == req["thingTypeName"])
        if after is not None:
            q = q.where(T.c.thing_name > after)
        q = q.order_by(T.c.thing_name).limit(size + 1)
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
        return {"things": things, "nextToken": token}

    async def update_thing(self, req: dict[str, Any]) -> None:
        if req.get("removeThingType") and req.get("thingTypeName"):
            raise InvalidRequest("removeThingType cannot be combined with thingTypeName")
        async with self.ctx.db.write() as conn:
            row = await self._thing(conn, req["thingName"], for_update=True)
            expected = req.get("expectedVersion")
            if expected is not None and expected != row.version:
                raise VersionConflict(
                    f"The expected version {expected} does not match the current version {row.version}"
                )
            type_name = row.thing_type_name
            if req.get("removeThingType"):
                type_name = None
            elif req.get("thingTypeName"):
                type_name = req["thingTypeName"]
                await self._usable_type(conn, type_name)
            attributes = merge_attributes(row.attributes or {}, req.get("attributePayload"))
            if "attributePayload" not in req:
                attributes = dict(row.attributes or {})
            self._check_attribute_count(attributes, type_name)
            result = await conn.execute(
                update(T)
                .where(T.c.id == row.id, T.c.version == row.version)
                .values(thing_type_name=type_name, attributes=attributes, version=row.version + 1)
            )
            if result.rowcount != 1:
                raise VersionConflict("The thing was updated concurrently")

    async def delete_thing(self, req: dict[str, Any]) -> None:
        now = self.ctx.clock.now()
        async with self.ctx.db.write() as conn:
            q = select(T).where(T.c.thing_name == req["thingName"])
            if conn.dialect.name == "postgresql":
                q = q.with_for_update()
            row = (await conn.execute(q)).first()
            if row is None:
                return
            expected = req.get("expectedVersion")
            if expected is not None and expected != row.version:
                raise VersionConflict(
                    f"The expected version {expected} does not match the current version {row.version}"
                )
            await conn.execute(delete(M).where(M.c.thing_id == row.id))
            await conn.execute(delete(T).where(T.c.id == row.id))
            await remove_thing_executions(conn, row.thing_name, now)

    # -- thing types -----------------------------------------------------------------------------

    async def create_thing_type(self, req: dict[str, Any]) -> dict[str, Any]:
        name = req["thingTypeName"]
        props = req.get("thingTypeProperties") or {}
        async with self.ctx.db.write() as conn:
            existing = (await conn.execute(select(TT).where(TT.c.thing_type_name == name))).first()
            if existing is not None:
                if (existing.properties or {}) == props:
                    return self._type_ids(existing)
                raise ResourceAlreadyExists(
                    f"Thing type {name} already exists with different configuration",
                    resourceId=existing.thing_type_id,
                    resourceArn=self.ctx.partition.thing_type(name),
                )
            type_id = str(uuid.uuid4())
            try:
                await conn.execute(
                    insert(TT).values(
                        thing_type_name=name,
                        thing_type_id=type_id,
                        properties=props,
                        deprecated=False,
                        created_at=self.ctx.clock.now(),
                        tags=req.get("tags") or [],
                    )
                )
            except IntegrityError:
                raise ResourceAlreadyExists(f"Thing type {name} already exists", resourceId=name) from None
        return {"thingTypeName": name, "thingTypeArn": self.ctx.partition.thing_type(name), "thingTypeId": type_id}

    async def describe_thing_type(self, req: dict[str, Any]) -> dict[str, Any]:
        async with self.ctx.db.read() as conn:
            row = await self._type(conn, req["thingTypeName"])
        return {
            **self._type_ids(row),
            "thingTypeProperties": row.properties or {},
            "thingTypeMetadata": self._type_metadata(row),
        }

    async def list_thing_types(self, req: dict[str, Any]) -> dict[str, Any]:
        size = page_size(req)
        after = decode_token(req.get("nextToken"))
        q = select(TT)
        if req.get("thingTypeName"):
            q = q.where(TT.c.thing_type_name == req["thingTypeName"])
        if after is not None:
            q = q.where(TT.c.thing_type_name > after)
        q = q.order_by(TT.c.thing_type_name).limit(size + 1)
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
        return {"thingTypes": types, "nextToken": token}

    async def update_thing_type(self, req: dict[str, Any]) -> None:
        async with self.ctx.db.write() as conn:
            row = await self._type(conn, req["thingTypeName"])
            props = {**(row.properties or {}), **(req.get("thingTypeProperties") or {})}
            await conn.execute(update(TT).where(TT.c.thing_type_name == row.thing_type_name).values(properties=props))

    async def deprecate_thing_type(self, req: dict[str, Any]) -> None:
        undo = bool(req.get("undoDeprecate"))
        async with self.ctx.db.write() as conn:
            row = await self._type(conn, req["thingTypeName"])
            await conn.execute(
                update(TT)
                .where(TT.c.thing_type_name == row.thing_type_name)
                .values(deprecated=not undo, deprecation_date=None if undo else self.ctx.clock.now())
            )

    async def delete_thing_type(self, req: dict[str, Any]) -> None:
        name = req["thingTypeName"]
        async with self.ctx.db.write() as conn:
            row = await self._type(conn, name)
            if not row.deprecated:
                raise InvalidRequest(f"Thing type {name} must be deprecated before it can be deleted")
            in_use = (await conn.execute(select(T.c.id).where(T.c.thing_type_name == name).limit(1))).first()
            if in_use is not None:
                raise InvalidRequest(f"Thing type {name} is still associated with things")
            await conn.execute(delete(TT).where(TT.c.thing_type_name == name))

    # -- helpers -----------------------------------------------------------------------------------

    async def _thing(self, conn: AsyncConnection, name: str, *, for_update: bool = False) -> Any:
        q = select(T).where(T.c.thing_name == name)
        if for_update and conn.dialect.name == "postgresql":
            q = q.with_for_update()
        row = (await conn.execute(q)).first()
        if row is None:
            raise ResourceNotFound(f"Thing {name} cannot be found.")
        return row

    async def _type(self, conn: AsyncConnection, name: str) -> Any:
        row = (await conn.execute(select(TT).where(TT.c.thing_type_name == name))).first()
        if row is None:
            raise ResourceNotFound(f"Thing type {name} cannot be found.")
        return row

    async def _usable_type(self, conn: AsyncConnection, name: str) -> None:
        row = await self._type(conn, name)
        if row.deprecated:
            raise InvalidRequest(f"Can not create new thing with deprecated thing type: {name}")

    @staticmethod
    def _check_attribute_count(attributes: dict[str, str], type_name: str | None) -> None:
        limit = MAX_ATTRIBUTES_TYPED if type_name else MAX_ATTRIBUTES_UNTYPED
        if len(attributes) > limit:
            raise InvalidRequest(
                f"A thing {'with' if type_name else 'without'} a thing type can have at most {limit} attributes"
            )

    def _type_ids(self, row: Any) -> dict[str, Any]:
        name = row.thing_type_name
        return {
            "thingTypeName": name,
            "thingTypeId": row.thing_type_id,
            "thingTypeArn": self.ctx.partition.thing_type(name),
        }

    @staticmethod
    def _type_metadata(row: Any) -> dict[str, Any]:
        return compact(
            {
                "deprecated": bool(row.deprecated),
                "deprecationDate": row.deprecation_date,
                "creationDate": row.created_at,
            }
        )
