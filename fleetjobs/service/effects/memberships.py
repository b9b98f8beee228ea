"""Static thing-group membership changes, and a group's teardown, inside the caller's transaction.

The only places a static membership row is written or a group's members are let go: each change
moves continuous jobs (:mod:`.continuous`) and re-evaluates dynamic groups (:mod:`.index_sync`),
because a thing's ``thingGroupNames`` is something a fleet-index query can see.

AWS rules: a thing belongs to at most 10 groups, and to at most one group of any one hierarchy
(groups that share a root).  Both are checked with the thing's row locked by the caller, so two
concurrent AddThingToThingGroup calls for one thing cannot both slip past them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.domain.errors import InvalidRequest
from fleetjobs.domain.registry import MAX_GROUPS_PER_THING
from fleetjobs.service.effects import continuous
from fleetjobs.service.effects.hierarchy import root_group_ids
from fleetjobs.service.effects.index_sync import thing_changed
from fleetjobs.store.rows import ThingRef, as_thing_refs
from fleetjobs.store.tables import GROUP_MEMBERS, THING_GROUPS, THINGS


async def add_memberships(conn: AsyncConnection, thing: ThingRef, groups: list[Row[Any]], now: float) -> None:
    """Add a (locked) thing to ``groups``, enforcing the 10-group and one-group-per-hierarchy rules."""
    q = select(GROUP_MEMBERS.c.group_id).where(GROUP_MEMBERS.c.thing_id == thing.id)
    current: set[int] = {r[0] for r in await conn.execute(q)}
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
            other_name = await conn.scalar(select(THING_GROUPS.c.group_name).where(THING_GROUPS.c.id == other))
            raise InvalidRequest(
                f"Thing {thing.thing_name} cannot be added to thing group {g.group_name}: it already belongs "
                f"to thing group {other_name} of the same hierarchy, and a thing can be in only one group "
                "of a hierarchy."
            )
        by_root[roots[g.id]] = g.id
    await conn.execute(insert(GROUP_MEMBERS), [{"group_id": g.id, "thing_id": thing.id} for g in new])
    await continuous.things_joined(conn, thing, [g.id for g in new], now)
    await thing_changed(conn, thing.thing_name, now)  # thingGroupNames changed


async def remove_memberships(conn: AsyncConnection, thing: ThingRef, groups: list[Row[Any]], now: float) -> None:
    """Removing a thing from a group it is not in is a no-op, as on AWS."""
    for g in groups:
        if g.query_string is not None:  # membership follows the group's query only
            raise InvalidRequest(f"Things cannot be removed from dynamic thing group {g.group_name}.")
    if groups:
        ids = [g.id for g in groups]
        await conn.execute(
            delete(GROUP_MEMBERS).where(GROUP_MEMBERS.c.thing_id == thing.id, GROUP_MEMBERS.c.group_id.in_(ids))
        )
        await continuous.things_left(conn, thing, ids, now)
        await thing_changed(conn, thing.thing_name, now)  # thingGroupNames changed


async def drop_group(conn: AsyncConnection, group_id: int, now: float) -> list[ThingRef]:
    """Delete a group (static or dynamic) with its memberships; its former members, by name.

    Things that reached a continuous job only through this group lose their pending executions.
    """
    q = (
        select(THINGS.c.id, THINGS.c.thing_name)
        .join(GROUP_MEMBERS, GROUP_MEMBERS.c.thing_id == THINGS.c.id)
        .where(GROUP_MEMBERS.c.group_id == group_id)
        .order_by(THINGS.c.thing_name)
    )
    members = as_thing_refs(await conn.execute(q))
    await conn.execute(delete(GROUP_MEMBERS).where(GROUP_MEMBERS.c.group_id == group_id))
    if members and await continuous.jobs_reaching(conn, [group_id]):
        for thing in members:
            await continuous.things_left(conn, thing, [group_id], now)
    await conn.execute(delete(THING_GROUPS).where(THING_GROUPS.c.id == group_id))
    return members
