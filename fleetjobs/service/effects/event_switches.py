"""Which ``$aws/events`` kinds are switched on (UpdateEventConfigurations), read in a transaction.

Bulk changes ask before collecting one event per execution, so that with the switch off (the
default) canceling 100,000 executions reads no rows it would only throw away.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.store.tables import EVENT_CONFIGURATIONS


async def enabled(conn: AsyncConnection, event_type: str) -> bool:
    q = select(EVENT_CONFIGURATIONS.c.enabled).where(EVENT_CONFIGURATIONS.c.event_type == event_type)
    return bool(await conn.scalar(q))
