"""Thing-group hierarchies, walked in the database with ``WITH RECURSIVE``.

The same SQL runs on SQLite and PostgreSQL, and the tree is never loaded into Python: several
server processes may share one database, so nothing here is cached, and a group may hold 100,000
things.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import CTE, Row, Select, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.store.tables import THING_GROUPS

# -- group hierarchy ---------------------------------------------------------------------------------


def descendant_groups_cte(group_id: int, name: str = "group_tree") -> CTE:
    """A recursive CTE (column ``id``) of ``group_id`` and every group below it, at any depth."""
    tree = select(THING_GROUPS.c.id).where(THING_GROUPS.c.id == group_id).cte(name, recursive=True)
    return tree.union_all(select(THING_GROUPS.c.id).join(tree, THING_GROUPS.c.parent_id == tree.c.id))


def descendant_groups_select(group_id: int) -> Select[Any]:
    """``SELECT id`` of ``group_id`` and all its descendants, for use in ``IN (...)``."""
    tree = descendant_groups_cte(group_id)
    return select(tree.c.id)


async def descendant_group_ids(conn: AsyncConnection, group_id: int) -> list[int]:
    """Row ids of the group ``group_id`` itself and of all its descendants (children, grandchildren, ...).

    Empty if the group does not exist.  Jobs use it to know which groups a group target reaches.
    """
    return [r[0] for r in await conn.execute(descendant_groups_select(group_id))]


async def ancestor_chain(conn: AsyncConnection, group_id: int) -> list[Row[Any]]:
    """The group and its ancestors, root first: rows of (id, group_name, parent_id, depth).

    ``depth`` is 0 for the group itself and grows towards the root; the list's length is the
    group's level in its hierarchy (1 for a root group), which bounds hierarchies at 7 levels.
    """
    up = select(
        THING_GROUPS.c.id, THING_GROUPS.c.group_name, THING_GROUPS.c.parent_id, literal(0).label("depth")
    ).where(THING_GROUPS.c.id == group_id)
    chain = up.cte("ancestors", recursive=True)
    chain = chain.union_all(
        select(
            THING_GROUPS.c.id, THING_GROUPS.c.group_name, THING_GROUPS.c.parent_id, (chain.c.depth + 1).label("depth")
        ).join(chain, THING_GROUPS.c.id == chain.c.parent_id)
    )
    rows = await conn.execute(select(chain).order_by(chain.c.depth.desc()))
    return list(rows)


async def root_group_ids(conn: AsyncConnection, group_ids: Iterable[int]) -> dict[int, int]:
    """Map each of ``group_ids`` to the id of the root of its hierarchy (a root maps to itself)."""
    ids = sorted(set(group_ids))
    if not ids:
        return {}
    start = select(THING_GROUPS.c.id.label("start"), THING_GROUPS.c.id, THING_GROUPS.c.parent_id).where(
        THING_GROUPS.c.id.in_(ids)
    )
    up = start.cte("roots_up", recursive=True)
    up = up.union_all(
        select(up.c.start, THING_GROUPS.c.id, THING_GROUPS.c.parent_id).join(up, THING_GROUPS.c.id == up.c.parent_id)
    )
    rows = await conn.execute(select(up.c.start, up.c.id).where(up.c.parent_id.is_(None)))
    return {start_id: root_id for start_id, root_id in rows}
