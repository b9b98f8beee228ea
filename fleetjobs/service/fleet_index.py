"""Fleet indexing: SearchIndex, the indexing configuration and dynamic thing groups (JOBS_API.md §1.8-§1.9).

There is no separate index: a query (:mod:`fleetjobs.domain.fleet_query`) is evaluated in Python over
the registry tables, paged through in thing-name order, so a search always sees committed data.

What the ``AWS_Things`` index holds for a thing follows the indexing configuration
(``GetIndexingConfiguration``), as on AWS:

* ``thingIndexingMode`` OFF (the default of a fresh account): there is no index; SearchIndex and
  DescribeIndex answer ResourceNotFoundException ("Index AWS_Things does not exist. Please enable
  index by calling UpdateIndexingConfiguration"), CreateDynamicThingGroup too.
* REGISTRY: ``thingName``, ``thingId``, ``thingTypeName``, ``attributes.*`` and
  ``thingGroupNames`` (the groups the thing is directly in, static and dynamic).
* REGISTRY_AND_SHADOW: also the classic shadow (``shadow.reported.*``, ``shadow.desired.*``,
  ``shadow.delta.*``, ``shadow.hasDelta``), and named shadows (``shadow.name.<name>.*``) when
  ``namedShadowIndexingMode`` is ON and the name is listed in ``filter.namedShadowNames`` (so
  ``$package`` must be listed to search installed software packages).  Nothing else is indexed.
* ``thingConnectivityIndexingMode`` STATUS: ``connectivity.connected`` is false for every thing
  (fleetjobs does not track MQTT sessions; AWS reports never-connected devices the same way).

Dynamic thing groups: memberships are ordinary ``thing_group_members`` rows, kept in step here.
A group's query is evaluated against the thing's *static* group names only, so that dynamic groups
never depend on one another (no chains or cycles).  :func:`thing_changed` is the hook the registry,
group and shadow services call after anything a query can see changes; a thing that joins or leaves
a dynamic group gets or loses its continuous jobs' executions (:mod:`fleetjobs.service.continuous`).
As on AWS, dynamic memberships count toward the 10-groups-per-thing limit: a thing already in 10
groups is not added to another dynamic group.

Concurrency (PostgreSQL, several servers): evaluating a whole group (create, query update,
indexing configuration change) locks the indexing-configuration row and then each thing row
``FOR SHARE`` in name order, so it waits for in-flight changes of those things and sees their
committed values; :func:`thing_changed` locks its thing row ``FOR UPDATE`` and, for a thing being
created (not yet visible to others), the configuration row ``FOR SHARE``.  Either way one of the
two sees the other's work.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.domain.arns import Partition
from fleetjobs.domain.errors import InvalidRequest, ResourceAlreadyExists, ResourceNotFound, VersionConflict
from fleetjobs.domain.fleet_query import FleetQuery, ThingRecord
from fleetjobs.service import continuous
from fleetjobs.service.context import ServiceContext
from fleetjobs.service.pagination import compact, decode_token, encode_token
from fleetjobs.service.registry_queries import locked, retry_once_on_integrity_error
from fleetjobs.store.schema import ServiceSetting, Shadow, Thing, ThingGroup, ThingGroupMember

T = Thing.__table__
G = ThingGroup.__table__
M = ThingGroupMember.__table__
S = Shadow.__table__
SS = ServiceSetting.__table__

THINGS_INDEX = "AWS_Things"
GROUPS_INDEX = "AWS_ThingGroups"
QUERY_VERSION = "2017-09-30"
SETTING = "indexing_configuration"
MAX_SEARCH_RESULTS = 100  # "This maximum number cannot exceed 100" (SearchIndex)
MAX_NAMED_SHADOW_FILTER = 10
MAX_GROUPS_PER_THING = 10
_CHUNK = 2000  # things read per query while scanning (bound parameters stay under SQLite's 32,766)

_THING_MODES = ("OFF", "REGISTRY", "REGISTRY_AND_SHADOW")

# Set by the FleetIndex service, for hooks called without a partition (thing ARNs of continuous jobs).
_default_partition: Partition | None = None


def default_configuration() -> dict[str, Any]:
    """What GetIndexingConfiguration answers for an account that never set one: everything OFF."""
    return {
        "thingIndexingConfiguration": {"thingIndexingMode": "OFF", "thingConnectivityIndexingMode": "OFF"},
        "thingGroupIndexingConfiguration": {"thingGroupIndexingMode": "OFF"},
    }


def _things_indexed(config: dict[str, Any]) -> bool:
    return config.get("thingIndexingConfiguration", {}).get("thingIndexingMode", "OFF") != "OFF"


def _index_missing(name: str) -> ResourceNotFound:
    return ResourceNotFound(f"Index {name} does not exist. Please enable index by calling UpdateIndexingConfiguration")


@functools.lru_cache(maxsize=1024)
def _parsed(text: str) -> FleetQuery:
    return FleetQuery.parse(text)


def _normalize_thing_config(given: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in given.items() if v not in (None, [], {})}
    mode = out.get("thingIndexingMode", "OFF")
    if mode not in _THING_MODES:
        raise InvalidRequest(f"thingIndexingMode must be one of {', '.join(_THING_MODES)}")
    out.setdefault("thingConnectivityIndexingMode", "OFF")
    if mode == "OFF":
        extras = [
            k
            for k in ("thingConnectivityIndexingMode", "namedShadowIndexingMode", "deviceDefenderIndexingMode")
            if out.get(k) not in (None, "OFF")
        ]
        if extras or out.get("customFields") or out.get("filter"):
            raise InvalidRequest(
                "thingIndexingMode OFF cannot be combined with other thing indexing settings "
                f"({', '.join(extras) or 'customFields/filter'})."
            )
    if out.get("namedShadowIndexingMode") == "ON" and mode != "REGISTRY_AND_SHADOW":
        raise InvalidRequest("namedShadowIndexingMode ON requires thingIndexingMode REGISTRY_AND_SHADOW.")
    names = (out.get("filter") or {}).get("namedShadowNames") or []
    if len(names) > MAX_NAMED_SHADOW_FILTER:
        raise InvalidRequest(f"filter.namedShadowNames can list at most {MAX_NAMED_SHADOW_FILTER} shadow names.")
    return out


def _schema(thing_config: dict[str, Any]) -> str:
    if thing_config.get("namedShadowIndexingMode") == "ON" or thing_config.get("deviceDefenderIndexingMode") not in (
        None,
        "OFF",
    ):
        return "MULTI_INDEXING_MODE"
    schema = thing_config.get("thingIndexingMode", "OFF")
    if thing_config.get("thingConnectivityIndexingMode", "OFF") != "OFF":
        schema += "_AND_CONNECTIVITY_STATUS"
    return schema


async def _config(conn: AsyncConnection, *, lock: str | None = None) -> dict[str, Any]:
    """The stored configuration (or the default); ``lock`` "share"/"update" locks its row on PostgreSQL."""
    q = select(SS.c.value).where(SS.c.name == SETTING)
    if lock is not None:
        q = locked(q, conn, shared=lock == "share")
    value = await conn.scalar(q)
    return value if value else default_configuration()


# -- thing documents --------------------------------------------------------------------------------------


class _View:
    """What the configuration puts into the index: which shadows, and connectivity."""

    def __init__(self, config: dict[str, Any]) -> None:
        tc = config.get("thingIndexingConfiguration", {})
        self.shadow = tc.get("thingIndexingMode") == "REGISTRY_AND_SHADOW"
        self.named: frozenset[str] = frozenset()
        if self.shadow and tc.get("namedShadowIndexingMode") == "ON":
            self.named = frozenset((tc.get("filter") or {}).get("namedShadowNames") or [])
        self.connectivity = tc.get("thingConnectivityIndexingMode", "OFF") != "OFF"


class _Doc:
    """One thing as indexed: its record for queries (static groups only, or all) and its SearchIndex document."""

    __slots__ = ("all_groups", "group_ids", "row", "shadows", "static_groups")

    def __init__(self, row: Any) -> None:
        self.row = row
        self.group_ids: set[int] = set()
        self.all_groups: list[str] = []
        self.static_groups: list[str] = []
        self.shadows: dict[str, dict[str, Any]] = {}

    def record(self, view: _View, *, static_only: bool) -> ThingRecord:
        return ThingRecord(
            thing_name=self.row.thing_name,
            thing_id=self.row.thing_id,
            thing_type_name=self.row.thing_type_name,
            attributes=self.row.attributes or {},
            thing_group_names=tuple(self.static_groups if static_only else self.all_groups),
            shadow=self.shadows.get(""),
            named_shadows={k: v for k, v in self.shadows.items() if k},
            connectivity={"connected": False} if view.connectivity else None,
        )

    def document(self, view: _View) -> dict[str, Any]:
        shadow: dict[str, Any] = {}
        if "" in self.shadows:
            shadow.update(_shadow_json(self.shadows[""]))
        named = {k: _shadow_json(v) for k, v in self.shadows.items() if k}
        if named:
            shadow["name"] = named
        return compact(
            {
                "thingName": self.row.thing_name,
                "thingId": self.row.thing_id,
                "thingTypeName": self.row.thing_type_name,
                "thingGroupNames": sorted(self.all_groups) or None,
                "attributes": self.row.attributes or None,
                "shadow": json.dumps(shadow, separators=(",", ":")) if shadow else None,
                "connectivity": {"connected": False} if view.connectivity else None,
            }
        )


def _shadow_json(state: dict[str, Any]) -> dict[str, Any]:
    out = {k: state[k] for k in ("reported", "desired") if state.get(k) is not None}
    reported = state.get("reported") or {}
    desired = state.get("desired") or {}
    out["hasDelta"] = any(reported.get(k) != v for k, v in desired.items()) if isinstance(desired, dict) else False
    return out


async def _fill(
    conn: AsyncConnection, docs: list[_Doc], view: _View, *, groups: bool = True, shadows: bool = True
) -> None:
    """Group names and indexed shadows for a batch of things (each only if asked for: a query that
    names neither need not read them for every thing it scans)."""
    if groups:
        await _fill_groups(conn, docs)
    if shadows:
        await _fill_shadows(conn, docs, view)


async def _fill_groups(conn: AsyncConnection, docs: list[_Doc]) -> None:
    by_id = {d.row.id: d for d in docs}
    q = (
        select(M.c.thing_id, G.c.id, G.c.group_name, G.c.query_string)
        .select_from(M.join(G, G.c.id == M.c.group_id))
        .where(M.c.thing_id.in_(list(by_id)))
    )
    for r in await conn.execute(q):
        doc = by_id[r.thing_id]
        doc.group_ids.add(r.id)
        doc.all_groups.append(r.group_name)
        if r.query_string is None:
            doc.static_groups.append(r.group_name)


async def _fill_shadows(conn: AsyncConnection, docs: list[_Doc], view: _View) -> None:
    if not view.shadow or not docs:
        return
    by_name = {d.row.thing_name: d for d in docs}
    wanted = ["", *sorted(view.named)]
    q2 = select(S.c.thing_name, S.c.shadow_name, S.c.state).where(
        S.c.thing_name.in_(list(by_name)), S.c.shadow_name.in_(wanted)
    )
    for r in await conn.execute(q2):
        by_name[r.thing_name].shadows[r.shadow_name] = r.state or {}


_THING_COLUMNS = (T.c.id, T.c.thing_name, T.c.thing_id, T.c.thing_type_name, T.c.attributes)


async def _scan_batches(
    conn: AsyncConnection,
    view: _View,
    after: str | None,
    *,
    lock: bool = False,
    groups: bool = True,
    shadows: bool = True,
) -> AsyncIterator[list[_Doc]]:
    """Every thing after ``after`` in name order, in batches; ``lock`` takes FOR SHARE row locks (PostgreSQL)."""
    while True:
        q = select(*_THING_COLUMNS).order_by(T.c.thing_name).limit(_CHUNK)
        if after is not None:
            q = q.where(T.c.thing_name > after)
        if lock:
            q = locked(q, conn, shared=True)
        rows = (await conn.execute(q)).all()
        if not rows:
            return
        docs = [_Doc(r) for r in rows]
        await _fill(conn, docs, view, groups=groups, shadows=shadows)
        yield docs
        if len(rows) < _CHUNK:
            return
        after = rows[-1].thing_name


async def _scan(
    conn: AsyncConnection, view: _View, after: str | None, *, groups: bool = True, shadows: bool = True
) -> AsyncIterator[_Doc]:
    async for batch in _scan_batches(conn, view, after, groups=groups, shadows=shadows):
        for doc in batch:
            yield doc


# -- membership maintenance -------------------------------------------------------------------------------


async def _join(conn: AsyncConnection, thing: Any, group_ids: Sequence[int], arn: str, now: float) -> None:
    if group_ids:
        await conn.execute(insert(M), [{"group_id": g, "thing_id": thing.id} for g in group_ids])
        await continuous.things_joined(conn, thing, list(group_ids), arn, now)


async def _leave(conn: AsyncConnection, thing: Any, group_ids: Sequence[int], arn: str, now: float) -> None:
    if group_ids:
        await conn.execute(delete(M).where(M.c.thing_id == thing.id, M.c.group_id.in_(list(group_ids))))
        await continuous.things_left(conn, thing, list(group_ids), arn, now)


async def _evaluate_group(
    conn: AsyncConnection, group_id: int, query: FleetQuery, config: dict[str, Any], partition: Partition, now: float
) -> None:
    """Bring one dynamic group's memberships in line with ``query``.  The caller holds the
    configuration row FOR UPDATE; each thing's row is locked FOR SHARE before its memberships are
    read, so a concurrent change of the thing has committed (and is seen) or waits for this one.
    Membership rows change a batch at a time; continuous jobs are consulted only if one targets the group."""
    view = _View(config)
    reaching = bool(await continuous.jobs_reaching(conn, [group_id]))
    async for batch in _scan_batches(conn, view, None, lock=True):
        joins: list[Any] = []
        leaves: list[Any] = []
        for doc in batch:
            member = group_id in doc.group_ids
            wanted = query.matches(doc.record(view, static_only=True))
            if wanted and not member and len(doc.group_ids) < MAX_GROUPS_PER_THING:
                joins.append(doc.row)
            elif member and not wanted:
                leaves.append(doc.row)
        if joins:
            await conn.execute(insert(M), [{"group_id": group_id, "thing_id": t.id} for t in joins])
        if leaves:
            ids = [t.id for t in leaves]
            await conn.execute(delete(M).where(M.c.group_id == group_id, M.c.thing_id.in_(ids)))
        if reaching:
            for t in joins:
                await continuous.things_joined(conn, t, [group_id], partition.thing(t.thing_name), now)
            for t in leaves:
                await continuous.things_left(conn, t, [group_id], partition.thing(t.thing_name), now)


async def thing_changed(
    conn: AsyncConnection, thing_name: str, now: float, *, created: bool = False, partition: Partition | None = None
) -> None:
    """Re-evaluate ``thing_name`` against every dynamic group, in the caller's transaction: called
    after anything a fleet-index query can see changes (registry, groups, shadows).

    ``created``: the thing was inserted by this transaction (CreateThing), so a concurrent group
    evaluation cannot see it; then the configuration row is locked FOR SHARE to order the two.
    """
    config = await _config(conn, lock="share" if created else None)
    if not _things_indexed(config):
        return
    groups = (await conn.execute(select(G.c.id, G.c.query_string).where(G.c.query_string.is_not(None)))).all()
    if not groups:
        return
    row = (await conn.execute(locked(select(*_THING_COLUMNS).where(T.c.thing_name == thing_name), conn))).first()
    if row is None:
        return
    view = _View(config)
    doc = _Doc(row)
    await _fill(conn, [doc], view)
    record = doc.record(view, static_only=True)
    current = {r[0] for r in await conn.execute(select(M.c.group_id).where(M.c.thing_id == row.id))}
    joined: list[int] = []
    left: list[int] = []
    room = MAX_GROUPS_PER_THING - len(current)
    for g in groups:
        wanted = _parsed(g.query_string).matches(record)
        if wanted and g.id not in current and room > 0:
            joined.append(g.id)
            room -= 1
        elif not wanted and g.id in current:
            left.append(g.id)
    if not joined and not left:
        return
    part = partition or _default_partition
    arn = part.thing(thing_name) if part is not None else ""
    await _leave(conn, row, left, arn, now)
    await _join(conn, row, joined, arn, now)


# -- the service ------------------------------------------------------------------------------------------


class FleetIndex:
    def __init__(self, ctx: ServiceContext) -> None:
        global _default_partition
        self.ctx = ctx
        _default_partition = ctx.partition

    # -- indexing configuration --------------------------------------------------------------------------

    async def get_indexing_configuration(self, req: dict[str, Any]) -> dict[str, Any]:
        async with self.ctx.db.read() as conn:
            return await _config(conn)

    async def update_indexing_configuration(self, req: dict[str, Any]) -> dict[str, Any]:
        """Members given replace that part of the configuration.  Thing indexing cannot be turned
        OFF while dynamic thing groups exist; a change of what is indexed re-evaluates them."""

        async def attempt() -> dict[str, Any]:
            async with self.ctx.db.write() as conn:
                exists = await conn.scalar(locked(select(SS.c.name).where(SS.c.name == SETTING), conn))
                old = await _config(conn)
                new = json.loads(json.dumps(old))
                if req.get("thingIndexingConfiguration") is not None:
                    new["thingIndexingConfiguration"] = _normalize_thing_config(req["thingIndexingConfiguration"])
                if req.get("thingGroupIndexingConfiguration") is not None:
                    given = req["thingGroupIndexingConfiguration"]
                    new["thingGroupIndexingConfiguration"] = {k: v for k, v in given.items() if v not in (None, [])}
                dynamic = await conn.execute(select(G.c.id, G.c.query_string).where(G.c.query_string.is_not(None)))
                dynamic_groups = dynamic.all()
                if dynamic_groups and not _things_indexed(new):
                    raise InvalidRequest(
                        "Thing indexing cannot be turned OFF while dynamic thing groups exist; "
                        "delete them first (DeleteDynamicThingGroup)."
                    )
                now = self.ctx.clock.now()
                if exists:
                    await conn.execute(update(SS).where(SS.c.name == SETTING).values(value=new, updated_at=now))
                else:
                    await conn.execute(insert(SS).values(name=SETTING, value=new, updated_at=now))
                if new.get("thingIndexingConfiguration") != old.get("thingIndexingConfiguration"):
                    for g in dynamic_groups:
                        await _evaluate_group(conn, g.id, _parsed(g.query_string), new, self.ctx.partition, now)
            return {}

        return await retry_once_on_integrity_error(attempt)

    # -- indices ---------------------------------------------------------------------------------------------

    async def list_indices(self, req: dict[str, Any]) -> dict[str, Any]:
        async with self.ctx.db.read() as conn:
            config = await _config(conn)
        names = []
        if _things_indexed(config):
            names.append(THINGS_INDEX)
        if config.get("thingGroupIndexingConfiguration", {}).get("thingGroupIndexingMode", "OFF") != "OFF":
            names.append(GROUPS_INDEX)
        return {"indexNames": names}

    async def describe_index(self, req: dict[str, Any]) -> dict[str, Any]:
        name = req["indexName"]
        async with self.ctx.db.read() as conn:
            config = await _config(conn)
        if name == THINGS_INDEX and _things_indexed(config):
            return {"indexName": name, "indexStatus": "ACTIVE", "schema": _schema(config["thingIndexingConfiguration"])}
        group_mode = config.get("thingGroupIndexingConfiguration", {}).get("thingGroupIndexingMode", "OFF")
        if name == GROUPS_INDEX and group_mode != "OFF":
            return {"indexName": name, "indexStatus": "ACTIVE", "schema": "THING_GROUPS"}
        raise _index_missing(name)

    async def search_index(self, req: dict[str, Any]) -> dict[str, Any]:
        """Things matching the query, by name; ``nextToken`` is the last name returned."""
        index = req.get("indexName") or THINGS_INDEX
        size = min(int(req.get("maxResults") or MAX_SEARCH_RESULTS), MAX_SEARCH_RESULTS)
        after = decode_token(req.get("nextToken"))
        if after is not None and not isinstance(after, str):
            raise InvalidRequest("The nextToken is invalid")
        async with self.ctx.db.read() as conn:
            config = await _config(conn)
            if index == GROUPS_INDEX:
                if config.get("thingGroupIndexingConfiguration", {}).get("thingGroupIndexingMode", "OFF") == "OFF":
                    raise _index_missing(index)
                raise InvalidRequest("fleetjobs searches the AWS_Things index only.")
            if index != THINGS_INDEX or not _things_indexed(config):
                raise _index_missing(index)
            query = _parsed(req["queryString"])
            view = _View(config)
            found: list[_Doc] = []
            # Read groups and shadows while scanning only if the query looks at them ("*": an
            # unfielded term reads everything); the page's things get them afterwards for the answer.
            fields = query.fields
            groups = "*" in fields or any(f.startswith("thingGroupNames") for f in fields)
            shadows = "*" in fields or any(f.startswith("shadow") for f in fields)
            async for doc in _scan(conn, view, after, groups=groups, shadows=shadows):
                if query.matches(doc.record(view, static_only=False)):
                    found.append(doc)
                    if len(found) > size:
                        break
            page_docs = found[:size]
            await _fill(conn, page_docs, view, groups=not groups, shadows=not shadows)
        token = None
        if len(found) > size:
            found = found[:size]
            token = encode_token(found[-1].row.thing_name)
        return compact({"things": [d.document(view) for d in found], "thingGroups": [], "nextToken": token})

    # -- dynamic thing groups ------------------------------------------------------------------------------

    @staticmethod
    def _query_args(req: dict[str, Any]) -> tuple[str, str]:
        index = req.get("indexName") or THINGS_INDEX
        if index != THINGS_INDEX:
            raise InvalidRequest(f"Dynamic thing groups support the index {THINGS_INDEX} only, not {index}.")
        version = req.get("queryVersion") or QUERY_VERSION
        if version != QUERY_VERSION:
            raise InvalidRequest(f"Query version {version} is not supported; use {QUERY_VERSION}.")
        return index, version

    async def create_dynamic_thing_group(self, req: dict[str, Any]) -> dict[str, Any]:
        from fleetjobs.service.groups import normalize_group_properties

        name: str = req["thingGroupName"]
        query_string: str = req["queryString"]
        index, version = self._query_args(req)
        query = _parsed(query_string)  # InvalidQueryException before anything else
        props = normalize_group_properties(req.get("thingGroupProperties"))

        async def attempt() -> dict[str, Any]:
            async with self.ctx.db.write() as conn:
                config = await _config(conn, lock="update")
                if not _things_indexed(config):
                    raise _index_missing(THINGS_INDEX)
                row = (await conn.execute(select(G).where(G.c.group_name == name))).first()
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
                result = await conn.execute(
                    insert(G).values(
                        group_name=name,
                        group_id=group_id,
                        parent_id=None,
                        properties=props,
                        version=1,
                        created_at=now,
                        tags=req.get("tags") or [],
                        query_string=query_string,
                        index_name=index,
                        query_version=version,
                        status="ACTIVE",
                    )
                )
                pk = result.inserted_primary_key[0]
                await _evaluate_group(conn, pk, query, config, self.ctx.partition, now)
                row = (await conn.execute(select(G).where(G.c.id == pk))).first()
                return self._created(row, name)

        return await retry_once_on_integrity_error(attempt)

    async def update_dynamic_thing_group(self, req: dict[str, Any]) -> dict[str, Any]:
        from fleetjobs.service.groups import merged_group_properties  # groups imports this module

        name: str = req["thingGroupName"]
        given: dict[str, Any] = req.get("thingGroupProperties") or {}
        expected: int | None = req.get("expectedVersion")
        new_query: str | None = req.get("queryString")
        if new_query is not None:
            _parsed(new_query)
        if req.get("indexName") or req.get("queryVersion"):
            self._query_args(req)
        async with self.ctx.db.write() as conn:
            config = await _config(conn, lock="update")
            row = (await conn.execute(locked(select(G).where(G.c.group_name == name), conn))).first()
            if row is None:
                raise ResourceNotFound(f"Thing group {name} cannot be found.")
            if row.query_string is None:
                raise InvalidRequest(f"Thing group {name} is a static thing group; use UpdateThingGroup.")
            if expected is not None and expected != row.version:
                raise VersionConflict(f"The version for thing group {name} does not match the expected version.")
            props = merged_group_properties(row.properties, given)
            query_string = new_query if new_query is not None else row.query_string
            await conn.execute(
                update(G)
                .where(G.c.id == row.id)
                .values(properties=props, version=row.version + 1, query_string=query_string)
            )
            if query_string != row.query_string:
                now = self.ctx.clock.now()
                await _evaluate_group(conn, row.id, _parsed(query_string), config, self.ctx.partition, now)
        return {"version": row.version + 1}

    async def delete_dynamic_thing_group(self, req: dict[str, Any]) -> None:
        name: str = req["thingGroupName"]
        expected: int | None = req.get("expectedVersion")
        async with self.ctx.db.write() as conn:
            await _config(conn, lock="update")
            row = (await conn.execute(locked(select(G).where(G.c.group_name == name), conn))).first()
            if row is None:
                return  # as DeleteThingGroup: deleting a group that does not exist succeeds
            if row.query_string is None:
                raise InvalidRequest(f"Thing group {name} is a static thing group; use DeleteThingGroup.")
            if expected is not None and expected != row.version:
                raise VersionConflict(f"The version for thing group {name} does not match the expected version.")
            members = (
                await conn.execute(
                    select(T.c.id, T.c.thing_name)
                    .join(M, M.c.thing_id == T.c.id)
                    .where(M.c.group_id == row.id)
                    .order_by(T.c.thing_name)
                )
            ).all()
            await conn.execute(delete(M).where(M.c.group_id == row.id))
            if members and await continuous.jobs_reaching(conn, [row.id]):
                now = self.ctx.clock.now()
                for thing in members:
                    await continuous.things_left(conn, thing, [row.id], self.ctx.partition.thing(thing.thing_name), now)
            await conn.execute(delete(G).where(G.c.id == row.id))

    def _created(self, row: Any, name: str) -> dict[str, Any]:
        return {
            "thingGroupName": name,
            "thingGroupArn": self.ctx.partition.thing_group(name),
            "thingGroupId": row.group_id,
            "indexName": row.index_name,
            "queryString": row.query_string,
            "queryVersion": row.query_version,
        }
