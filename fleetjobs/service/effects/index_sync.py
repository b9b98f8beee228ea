"""Keeps dynamic thing groups in step with the fleet index, inside the caller's transaction.

There is no separate index: a query (:mod:`fleetjobs.domain.fleet_query`) is evaluated in Python over
the registry tables, paged through in thing-name order, so a search always sees committed data.
What the index holds of a thing is :mod:`fleetjobs.domain.indexing`'s rule.

Dynamic thing groups: memberships are ordinary ``thing_group_members`` rows, kept in step here.
A group's query is evaluated against the thing's *static* group names only, so that dynamic groups
never depend on one another (no chains or cycles).  :func:`thing_changed` is the hook the registry,
group and shadow changes call after anything a query can see changes; a thing that joins or leaves
a dynamic group gets or loses its continuous jobs' executions (:mod:`.continuous`).
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

from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.domain.fleet_query import FleetQuery
from fleetjobs.domain.indexing import (
    IndexView,
    ThingDoc,
    default_configuration,
    parsed_query,
    things_indexed,
)
from fleetjobs.domain.registry import MAX_GROUPS_PER_THING
from fleetjobs.service.effects import continuous
from fleetjobs.store.rows import ThingRef
from fleetjobs.store.sql import locked
from fleetjobs.store.tables import GROUP_MEMBERS, SETTINGS, SHADOWS, THING_GROUPS, THINGS

SETTING = "indexing_configuration"
_CHUNK = 2000  # things read per query while scanning (bound parameters stay under SQLite's 32,766)


async def read_configuration(conn: AsyncConnection, *, lock: str | None = None) -> dict[str, Any]:
    """The stored configuration (or the default); ``lock`` "share"/"update" locks its row on PostgreSQL."""
    q = select(SETTINGS.c.value).where(SETTINGS.c.name == SETTING)
    if lock is not None:
        q = locked(q, conn, shared=lock == "share")
    value = await conn.scalar(q)
    return value if value else default_configuration()


async def fill(
    conn: AsyncConnection, docs: list[ThingDoc], view: IndexView, *, groups: bool = True, shadows: bool = True
) -> None:
    """Group names and indexed shadows for a batch of things (each only if asked for: a query that
    names neither need not read them for every thing it scans)."""
    if groups:
        await _fill_groups(conn, docs)
    if shadows:
        await _fill_shadows(conn, docs, view)


async def _fill_groups(conn: AsyncConnection, docs: list[ThingDoc]) -> None:
    by_id = {d.row.id: d for d in docs}
    q = (
        select(GROUP_MEMBERS.c.thing_id, THING_GROUPS.c.id, THING_GROUPS.c.group_name, THING_GROUPS.c.query_string)
        .select_from(GROUP_MEMBERS.join(THING_GROUPS, THING_GROUPS.c.id == GROUP_MEMBERS.c.group_id))
        .where(GROUP_MEMBERS.c.thing_id.in_(list(by_id)))
    )
    for r in await conn.execute(q):
        doc = by_id[r.thing_id]
        doc.group_ids.add(r.id)
        doc.all_groups.append(r.group_name)
        if r.query_string is None:
            doc.static_groups.append(r.group_name)


async def _fill_shadows(conn: AsyncConnection, docs: list[ThingDoc], view: IndexView) -> None:
    if not view.shadow or not docs:
        return
    by_name = {d.row.thing_name: d for d in docs}
    wanted = ["", *sorted(view.named)]
    q2 = select(SHADOWS.c.thing_name, SHADOWS.c.shadow_name, SHADOWS.c.state).where(
        SHADOWS.c.thing_name.in_(list(by_name)), SHADOWS.c.shadow_name.in_(wanted)
    )
    for r in await conn.execute(q2):
        by_name[r.thing_name].shadows[r.shadow_name] = r.state or {}


_THING_COLUMNS = (THINGS.c.id, THINGS.c.thing_name, THINGS.c.thing_id, THINGS.c.thing_type_name, THINGS.c.attributes)


async def scan_batches(
    conn: AsyncConnection,
    view: IndexView,
    after: str | None,
    *,
    lock: bool = False,
    groups: bool = True,
    shadows: bool = True,
) -> AsyncIterator[list[ThingDoc]]:
    """Every thing after ``after`` in name order, in batches; ``lock`` takes FOR SHARE row locks (PostgreSQL)."""
    while True:
        q = select(*_THING_COLUMNS).order_by(THINGS.c.thing_name).limit(_CHUNK)
        if after is not None:
            q = q.where(THINGS.c.thing_name > after)
        if lock:
            q = locked(q, conn, shared=True)
        rows = (await conn.execute(q)).all()
        if not rows:
            return
        docs = [ThingDoc(r) for r in rows]
        await fill(conn, docs, view, groups=groups, shadows=shadows)
        yield docs
        if len(rows) < _CHUNK:
            return
        after = rows[-1].thing_name


async def scan(
    conn: AsyncConnection, view: IndexView, after: str | None, *, groups: bool = True, shadows: bool = True
) -> AsyncIterator[ThingDoc]:
    async for batch in scan_batches(conn, view, after, groups=groups, shadows=shadows):
        for doc in batch:
            yield doc


# -- membership maintenance -------------------------------------------------------------------------------


async def _join(conn: AsyncConnection, thing: ThingRef, group_ids: Sequence[int], now: float) -> None:
    if group_ids:
        await conn.execute(insert(GROUP_MEMBERS), [{"group_id": g, "thing_id": thing.id} for g in group_ids])
        await continuous.things_joined(conn, thing, list(group_ids), now)


async def _leave(conn: AsyncConnection, thing: ThingRef, group_ids: Sequence[int], now: float) -> None:
    if group_ids:
        await conn.execute(
            delete(GROUP_MEMBERS).where(
                GROUP_MEMBERS.c.thing_id == thing.id, GROUP_MEMBERS.c.group_id.in_(list(group_ids))
            )
        )
        await continuous.things_left(conn, thing, list(group_ids), now)


async def evaluate_group(
    conn: AsyncConnection, group_id: int, query: FleetQuery, config: dict[str, Any], now: float
) -> None:
    """Bring one dynamic group's memberships in line with ``query``.  The caller holds the
    configuration row FOR UPDATE; each thing's row is locked FOR SHARE before its memberships are
    read, so a concurrent change of the thing has committed (and is seen) or waits for this one.
    Membership rows change a batch at a time; continuous jobs are consulted only if one targets the group."""
    view = IndexView(config)
    reaching = bool(await continuous.jobs_reaching(conn, [group_id]))
    async for batch in scan_batches(conn, view, None, lock=True):
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
            await conn.execute(insert(GROUP_MEMBERS), [{"group_id": group_id, "thing_id": t.id} for t in joins])
        if leaves:
            ids = [t.id for t in leaves]
            await conn.execute(
                delete(GROUP_MEMBERS).where(GROUP_MEMBERS.c.group_id == group_id, GROUP_MEMBERS.c.thing_id.in_(ids))
            )
        if reaching:
            for t in joins:
                await continuous.things_joined(conn, t, [group_id], now)
            for t in leaves:
                await continuous.things_left(conn, t, [group_id], now)


async def thing_changed(conn: AsyncConnection, thing_name: str, now: float, *, created: bool = False) -> None:
    """Re-evaluate ``thing_name`` against every dynamic group, in the caller's transaction: called
    after anything a fleet-index query can see changes (registry, groups, shadows).

    ``created``: the thing was inserted by this transaction (CreateThing), so a concurrent group
    evaluation cannot see it; then the configuration row is locked FOR SHARE to order the two.
    """
    config = await read_configuration(conn, lock="share" if created else None)
    if not things_indexed(config):
        return
    groups = (
        await conn.execute(
            select(THING_GROUPS.c.id, THING_GROUPS.c.query_string).where(THING_GROUPS.c.query_string.is_not(None))
        )
    ).all()
    if not groups:
        return
    row = (await conn.execute(locked(select(*_THING_COLUMNS).where(THINGS.c.thing_name == thing_name), conn))).first()
    if row is None:
        return
    view = IndexView(config)
    doc = ThingDoc(row)
    await fill(conn, [doc], view)
    record = doc.record(view, static_only=True)
    current = {
        r[0] for r in await conn.execute(select(GROUP_MEMBERS.c.group_id).where(GROUP_MEMBERS.c.thing_id == row.id))
    }
    joined: list[int] = []
    left: list[int] = []
    room = MAX_GROUPS_PER_THING - len(current)
    for g in groups:
        wanted = parsed_query(g.query_string).matches(record)
        if wanted and g.id not in current and room > 0:
            joined.append(g.id)
            room -= 1
        elif not wanted and g.id in current:
            left.append(g.id)
    if not joined and not left:
        return
    await _leave(conn, row, left, now)
    await _join(conn, row, joined, now)
