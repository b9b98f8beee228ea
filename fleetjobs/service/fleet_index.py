"""Fleet indexing: SearchIndex, the indexing configuration and dynamic thing groups (JOBS_API.md §1.8-§1.9).

What the index holds of a thing is :mod:`fleetjobs.domain.indexing`; keeping dynamic groups in step
with it, inside every change's transaction, is :mod:`fleetjobs.service.effects.index_sync`.  This
façade answers the operations.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import insert, select, update

from fleetjobs.domain import tagging
from fleetjobs.domain.errors import InvalidRequest, ResourceAlreadyExists, ResourceNotFound, VersionConflict
from fleetjobs.domain.indexing import (
    GROUPS_INDEX,
    MAX_SEARCH_RESULTS,
    THINGS_INDEX,
    IndexView,
    ThingDoc,
    check_dynamic_group_query,
    groups_indexed,
    index_missing,
    normalize_thing_config,
    parsed_query,
    schema_of,
    things_indexed,
)
from fleetjobs.domain.registry import merged_group_properties, normalize_group_properties
from fleetjobs.model import shapes_iot as shapes
from fleetjobs.service.context import ServiceContext
from fleetjobs.service.effects.index_sync import SETTING, evaluate_group, fill, read_configuration, scan
from fleetjobs.service.effects.memberships import drop_group
from fleetjobs.service.pagination import compact, encode_token, token_str
from fleetjobs.store.sql import locked, retry_once_on_integrity_error
from fleetjobs.store.tables import SETTINGS, THING_GROUPS


class FleetIndex:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    # -- indexing configuration --------------------------------------------------------------------------

    async def get_indexing_configuration(self, req: shapes.GetIndexingConfigurationRequest) -> dict[str, Any]:
        async with self.ctx.db.read() as conn:
            return await read_configuration(conn)

    async def update_indexing_configuration(self, req: shapes.UpdateIndexingConfigurationRequest) -> dict[str, Any]:
        """Members given replace that part of the configuration.  Thing indexing cannot be turned
        OFF while dynamic thing groups exist; a change of what is indexed re-evaluates them."""

        async def attempt() -> dict[str, Any]:
            async with self.ctx.db.write() as conn:
                exists = await conn.scalar(locked(select(SETTINGS.c.name).where(SETTINGS.c.name == SETTING), conn))
                old = await read_configuration(conn)
                new = json.loads(json.dumps(old))
                if req.get("thingIndexingConfiguration") is not None:
                    new["thingIndexingConfiguration"] = normalize_thing_config(req["thingIndexingConfiguration"])
                if req.get("thingGroupIndexingConfiguration") is not None:
                    given = req["thingGroupIndexingConfiguration"]
                    new["thingGroupIndexingConfiguration"] = {k: v for k, v in given.items() if v not in (None, [])}
                dynamic = await conn.execute(
                    select(THING_GROUPS.c.id, THING_GROUPS.c.query_string).where(
                        THING_GROUPS.c.query_string.is_not(None)
                    )
                )
                dynamic_groups = dynamic.all()
                if dynamic_groups and not things_indexed(new):
                    raise InvalidRequest(
                        "Thing indexing cannot be turned OFF while dynamic thing groups exist; "
                        "delete them first (DeleteDynamicThingGroup)."
                    )
                now = self.ctx.clock.now()
                if exists:
                    await conn.execute(
                        update(SETTINGS).where(SETTINGS.c.name == SETTING).values(value=new, updated_at=now)
                    )
                else:
                    await conn.execute(insert(SETTINGS).values(name=SETTING, value=new, updated_at=now))
                if new.get("thingIndexingConfiguration") != old.get("thingIndexingConfiguration"):
                    for g in dynamic_groups:
                        await evaluate_group(conn, g.id, parsed_query(g.query_string), new, now)
            return {}

        return await retry_once_on_integrity_error(attempt)

    # -- indices ---------------------------------------------------------------------------------------------

    async def list_indices(self, req: shapes.ListIndicesRequest) -> dict[str, Any]:
        async with self.ctx.db.read() as conn:
            config = await read_configuration(conn)
        names = []
        if things_indexed(config):
            names.append(THINGS_INDEX)
        if groups_indexed(config):
            names.append(GROUPS_INDEX)
        return {"indexNames": names}

    async def describe_index(self, req: shapes.DescribeIndexRequest) -> dict[str, Any]:
        name = req["indexName"]
        async with self.ctx.db.read() as conn:
            config = await read_configuration(conn)
        if name == THINGS_INDEX and things_indexed(config):
            return {
                "indexName": name,
                "indexStatus": "ACTIVE",
                "schema": schema_of(config["thingIndexingConfiguration"]),
            }
        if name == GROUPS_INDEX and groups_indexed(config):
            return {"indexName": name, "indexStatus": "ACTIVE", "schema": "THING_GROUPS"}
        raise index_missing(name)

    async def search_index(self, req: shapes.SearchIndexRequest) -> dict[str, Any]:
        """Things matching the query, by name; ``nextToken`` is the last name returned."""
        index = req.get("indexName") or THINGS_INDEX
        size = min(int(req.get("maxResults") or MAX_SEARCH_RESULTS), MAX_SEARCH_RESULTS)
        after = token_str(req)
        async with self.ctx.db.read() as conn:
            config = await read_configuration(conn)
            if index == GROUPS_INDEX:
                if not groups_indexed(config):
                    raise index_missing(index)
                raise InvalidRequest("fleetjobs searches the AWS_Things index only.")
            if index != THINGS_INDEX or not things_indexed(config):
                raise index_missing(index)
            query = parsed_query(req["queryString"])
            view = IndexView(config)
            found: list[ThingDoc] = []
            # Read groups and shadows while scanning only if the query looks at them ("*": an
            # unfielded term reads everything); the page's things get them afterwards for the answer.
            fields = query.fields
            groups = "*" in fields or any(f.startswith("thingGroupNames") for f in fields)
            shadows = "*" in fields or any(f.startswith("shadow") for f in fields)
            async for doc in scan(conn, view, after, groups=groups, shadows=shadows):
                if query.matches(doc.record(view, static_only=False)):
                    found.append(doc)
                    if len(found) > size:
                        break
            page_docs = found[:size]
            await fill(conn, page_docs, view, groups=not groups, shadows=not shadows)
        token = None
        if len(found) > size:
            found = found[:size]
            token = encode_token(found[-1].row.thing_name)
        return compact({"things": [d.document(view) for d in found], "thingGroups": [], "nextToken": token})

    # -- dynamic thing groups ------------------------------------------------------------------------------

    async def create_dynamic_thing_group(self, req: shapes.CreateDynamicThingGroupRequest) -> dict[str, Any]:
        name: str = req["thingGroupName"]
        query_string: str = req["queryString"]
        index, version = check_dynamic_group_query(req.get("indexName"), req.get("queryVersion"))
        query = parsed_query(query_string)  # InvalidQueryException before anything else
        props = normalize_group_properties(req.get("thingGroupProperties"))
        tags = tagging.checked_tags(req.get("tags"))

        async def attempt() -> dict[str, Any]:
            async with self.ctx.db.write() as conn:
                config = await read_configuration(conn, lock="update")
                if not things_indexed(config):
                    raise index_missing(THINGS_INDEX)
                row = (await conn.execute(select(THING_GROUPS).where(THING_GROUPS.c.group_name == name))).first()
                if row is not None:
                    same = (row.query_string, row.index_name, row.query_version, row.properties or {}) == (
                        query_string,
                        index,
                        version,
                        props,
                    )
                    if not same:
                        raise ResourceAlreadyExists(
                            f"Thing Group {name} already exists in current account with different properties",
                            resourceId=row.group_id,
                            resourceArn=self.ctx.partition.thing_group(name),
                        )
                    return self._created(row, name)
                group_id = str(uuid.uuid4())
                now = self.ctx.clock.now()
                inserted = await conn.execute(
                    insert(THING_GROUPS)
                    .values(
                        group_name=name,
                        group_id=group_id,
                        parent_id=None,
                        properties=props,
                        version=1,
                        created_at=now,
                        tags=tags,
                        query_string=query_string,
                        index_name=index,
                        query_version=version,
                        status="ACTIVE",
                    )
                    .returning(THING_GROUPS.c.id)
                )
                pk: int = inserted.scalar_one()
                await evaluate_group(conn, pk, query, config, now)
                row = (await conn.execute(select(THING_GROUPS).where(THING_GROUPS.c.id == pk))).first()
                return self._created(row, name)

        return await retry_once_on_integrity_error(attempt)

    async def update_dynamic_thing_group(self, req: shapes.UpdateDynamicThingGroupRequest) -> dict[str, Any]:
        name: str = req["thingGroupName"]
        given: Mapping[str, Any] = req.get("thingGroupProperties") or {}
        expected: int | None = req.get("expectedVersion")
        new_query: str | None = req.get("queryString")
        if new_query is not None:
            parsed_query(new_query)
        if req.get("indexName") or req.get("queryVersion"):
            check_dynamic_group_query(req.get("indexName"), req.get("queryVersion"))
        async with self.ctx.db.write() as conn:
            config = await read_configuration(conn, lock="update")
            row = (
                await conn.execute(locked(select(THING_GROUPS).where(THING_GROUPS.c.group_name == name), conn))
            ).first()
            if row is None:
                raise ResourceNotFound(f"Thing group {name} cannot be found.")
            if row.query_string is None:
                raise InvalidRequest(f"Thing group {name} is a static thing group; use UpdateThingGroup.")
            if expected is not None and expected != row.version:
                raise VersionConflict(f"The version for thing group {name} does not match the expected version.")
            props = merged_group_properties(row.properties, given)
            query_string = new_query if new_query is not None else row.query_string
            await conn.execute(
                update(THING_GROUPS)
                .where(THING_GROUPS.c.id == row.id)
                .values(properties=props, version=row.version + 1, query_string=query_string)
            )
            if query_string != row.query_string:
                now = self.ctx.clock.now()
                await evaluate_group(conn, row.id, parsed_query(query_string), config, now)
        return {"version": row.version + 1}

    async def delete_dynamic_thing_group(self, req: shapes.DeleteDynamicThingGroupRequest) -> None:
        name: str = req["thingGroupName"]
        expected: int | None = req.get("expectedVersion")
        async with self.ctx.db.write() as conn:
            await read_configuration(conn, lock="update")
            row = (
                await conn.execute(locked(select(THING_GROUPS).where(THING_GROUPS.c.group_name == name), conn))
            ).first()
            if row is None:
                return  # as DeleteThingGroup: deleting a group that does not exist succeeds
            if row.query_string is None:
                raise InvalidRequest(f"Thing group {name} is a static thing group; use DeleteThingGroup.")
            if expected is not None and expected != row.version:
                raise VersionConflict(f"The version for thing group {name} does not match the expected version.")
            await drop_group(conn, row.id, self.ctx.clock.now())

    def _created(self, row: Any, name: str) -> dict[str, Any]:
        return {
            "thingGroupName": name,
            "thingGroupArn": self.ctx.partition.thing_group(name),
            "thingGroupId": row.group_id,
            "indexName": row.index_name,
            "queryString": row.query_string,
            "queryVersion": row.query_version,
        }
