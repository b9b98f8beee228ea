"""SQL idioms both dialects need, written once: row locks, unique-race retries, prefix matches.

Several server processes may share one PostgreSQL database, so a decision that depends on rows
locks them until commit; SQLite needs no locks (write transactions start with ``BEGIN IMMEDIATE``
and are serialised).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, any_, bindparam, func
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

R = TypeVar("R")
Q = TypeVar("Q", bound=Select[Any])


def locked(query: Q, conn: AsyncConnection, *, shared: bool = False, skip_locked: bool = False) -> Q:
    """Lock the selected rows until commit on PostgreSQL (``FOR UPDATE`` / ``FOR SHARE``;
    ``skip_locked``: rows another transaction holds are passed over, for work queues)."""
    if conn.dialect.name == "postgresql":
        return query.with_for_update(read=shared, skip_locked=skip_locked)
    return query


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


def among(column: Any, values: Sequence[Any], conn: AsyncConnection) -> ColumnElement[bool]:
    """``column IN (values)``.  On PostgreSQL as ``= ANY(:array)``: one bound array instead of one
    parameter per value, so the statement is compiled once and cached whatever the number of values
    (an ``IN`` list is re-rendered for every new length)."""
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(list(values))


def prefix_of(column: Any, prefix: str) -> ColumnElement[bool]:
    """A case-sensitive "starts with" on both dialects (SQLite's LIKE ignores ASCII case)."""
    return func.substr(column, 1, len(prefix)) == prefix
