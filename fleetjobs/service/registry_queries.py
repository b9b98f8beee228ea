"""Registry queries shared by the things, thing-groups and jobs services.

Group hierarchies are walked in the database with ``WITH RECURSIVE`` (the same SQL runs on SQLite
and PostgreSQL), never by loading the tree into Python: several server processes may share one
database, so nothing here is cached, and a group may hold 100,000 things.

The attribute helpers implement the registry's ``AttributePayload`` rules once, for things and
thing groups alike: ``merge=false`` replaces the stored attributes, ``merge=true`` merges into
them, and an empty-string value removes an attribute (so no stored attribute is ever empty).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from sqlalchemy import CTE, Select, func, literal, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.store.schema import ThingGroup

G = ThingGroup.__table__
R = TypeVar("R")


# -- group hierarchy ---------------------------------------------------------------------------------


def descendant_groups_cte(group_id: int, name: str = "group_tree") -> CTE:
    """A recursive CTE (column ``id``) of ``group_id`` and every group below it, at any depth."""
    tree = select(G.c.id).where(G.c.id == group_id).cte(name, recursive=True)
    return tree.union_all(select(G.c.id).join(tree, G.c.parent_id == tree.c.id))


def descendant_groups_select(group_id: int) -> Select[Any]:
    """``SELECT id`` of ``group_id`` and all its descendants, for use in ``IN (...)``."""
    tree = descendant_groups_cte(group_id)
    return select(tree.c.id)


async def descendant_group_ids(conn: AsyncConnection, group_id: int) -> list[int]:
    """Row ids of the group ``group_id`` itself and of all its descendants (children, grandchildren, ...).

    Empty if the group does not exist.  Jobs use it to know which groups a group target reaches.
    """
    return [r[0] for r in await conn.execute(descendant_groups_select(group_id))]


async def ancestor_chain(conn: AsyncConnection, group_id: int) -> list[Any]:
    """The group and its ancestors, root first: rows of (id, group_name, parent_id, depth).

    ``depth`` is 0 for the group itself and grows towards the root; the list's length is the
    group's level in its hierarchy (1 for a root group), which bounds hierarchies at 7 levels.
    """
    up = select(G.c.id, G.c.group_name, G.c.parent_id, literal(0).label("depth")).where(G.c.id == group_id)
    chain = up.cte("ancestors", recursive=True)
    chain = chain.union_all(
        select(G.c.id, G.c.group_name, G.c.parent_id, (chain.c.depth + 1).label("depth")).join(
            chain, G.c.id == chain.c.parent_id
        )
    )
    rows = await conn.execute(select(chain).order_by(chain.c.depth.desc()))
    return list(rows)


async def root_group_ids(conn: AsyncConnection, group_ids: Iterable[int]) -> dict[int, int]:
    """Map each of ``group_ids`` to the id of the root of its hierarchy (a root maps to itself)."""
    ids = sorted(set(group_ids))
    if not ids:
        return {}
    start = select(G.c.id.label("start"), G.c.id, G.c.parent_id).where(G.c.id.in_(ids))
    up = start.cte("roots_up", recursive=True)
    up = up.union_all(select(up.c.start, G.c.id, G.c.parent_id).join(up, G.c.id == up.c.parent_id))
    rows = await conn.execute(select(up.c.start, up.c.id).where(up.c.parent_id.is_(None)))
    return {start_id: root_id for start_id, root_id in rows}


# -- attributes ------------------------------------------------------------------------------------


def payload_attributes(payload: dict[str, Any] | None) -> dict[str, str]:
    """The attributes of a create request's payload; empty values mean "no attribute"."""
    attrs = (payload or {}).get("attributes") or {}
    return {k: v for k, v in attrs.items() if v != ""}


def apply_attribute_payload(current: dict[str, str], payload: dict[str, Any] | None) -> dict[str, str]:
    """The attributes after an update with ``payload`` (AWS ``AttributePayload`` semantics).

    A payload without ``attributes`` changes nothing; ``merge`` (default false) decides between
    merging into and replacing the stored attributes; an empty value removes that attribute.
    """
    if not payload or payload.get("attributes") is None:
        return dict(current)
    attrs: dict[str, str] = payload["attributes"]
    merged = {**current, **attrs} if payload.get("merge") else dict(attrs)
    return {k: v for k, v in merged.items() if v != ""}


# -- concurrency -------------------------------------------------------------------------------------


async def retry_once_on_integrity_error(attempt: Callable[[], Awaitable[R]]) -> R:
    """Run a write transaction; if a concurrent writer won a unique or foreign-key race, run it again.

    The transaction that lost is rolled back (PostgreSQL aborts it anyway), and the second run
    sees what the winner committed, so it answers exactly as AWS would have had the requests
    arrived one after the other (idempotent success, ResourceAlreadyExists, ResourceNotFound).
    """
    try:
        return await attempt()
    except IntegrityError:
        return await attempt()


def locked(query: Select[Any], conn: AsyncConnection, *, shared: bool = False) -> Select[Any]:
    """Lock the selected rows until commit on PostgreSQL (``FOR UPDATE`` / ``FOR SHARE``).

    SQLite needs nothing: its write transactions start with ``BEGIN IMMEDIATE`` and are serialised.
    """
    if conn.dialect.name == "postgresql":
        return query.with_for_update(read=shared)
    return query


def prefix_of(column: Any, prefix: str) -> Any:
    """A case-sensitive "starts with" on both dialects (SQLite's LIKE ignores ASCII case)."""
    return func.substr(column, 1, len(prefix)) == prefix
