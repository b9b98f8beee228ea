"""Durable notifications of pending-list changes the service (not a device request) makes.

A job created or released by a rollout, a cancel, a timeout, a retry, a thing removed: each
writes a notice here, in the transaction of the change, so the notice exists exactly when the
change does.  :mod:`fleetjobs.service.loops.notice_drain` publishes and deletes them.

A job notice stands for every execution of a job in an id range and is worked through page by
page with a cursor, so announcing a 100,000-thing job writes one row, not 100,000.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Select, insert, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.service.events import NOTICES_QUEUED
from fleetjobs.store.database import record_event
from fleetjobs.store.tables import PENDING_NOTICES


async def notice_things(
    conn: AsyncConnection, things: Iterable[str], now: float, *, job_id: str | None = None, next_always: bool = True
) -> None:
    rows = [
        {"thing_name": t, "job_id": job_id, "next_always": next_always, "created_at": now}
        for t in dict.fromkeys(things)
    ]
    if rows:
        await conn.execute(insert(PENDING_NOTICES), rows)
        record_event(conn, NOTICES_QUEUED)


async def notice_query(
    conn: AsyncConnection, thing_names: Select[Any], now: float, *, job_id: str | None = None, next_always: bool = True
) -> None:
    """Notices for the things a one-column ``SELECT thing_name ...`` yields, in one INSERT .. SELECT."""
    sub = thing_names.subquery()
    source = select(
        sub.c[0],
        literal(job_id, PENDING_NOTICES.c.job_id.type),
        literal(next_always, PENDING_NOTICES.c.next_always.type),
        literal(now, PENDING_NOTICES.c.created_at.type),
    )
    await conn.execute(
        insert(PENDING_NOTICES).from_select(["thing_name", "job_id", "next_always", "created_at"], source)
    )
    record_event(conn, NOTICES_QUEUED)


async def notice_job(
    conn: AsyncConnection,
    job_id: str,
    now: float,
    *,
    after: int = 0,
    upto: int | None = None,
    next_always: bool = False,
) -> None:
    """Every execution of ``job_id`` with ``after < id <= upto`` (upto None: any) is to be announced."""
    await conn.execute(
        insert(PENDING_NOTICES).values(job_id=job_id, cursor=after, upto=upto, next_always=next_always, created_at=now)
    )
    record_event(conn, NOTICES_QUEUED)
