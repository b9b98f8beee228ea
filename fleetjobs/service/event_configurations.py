"""DescribeEventConfigurations / UpdateEventConfigurations: which ``$aws/events`` kinds go out."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.api.service_model import service_model
from fleetjobs.service.context import ServiceContext
from fleetjobs.store.database import record_event
from fleetjobs.store.schema import EventConfiguration

C = EventConfiguration.__table__
EVENT_TYPES: tuple[str, ...] = tuple(service_model("iot").shape_for("EventType").enum)


class ConfigurationsChanged:
    """Domain event: this instance changed the switches (its publishers re-read them at once)."""


CONFIGURATIONS_CHANGED = ConfigurationsChanged()


async def enabled(conn: AsyncConnection, event_type: str) -> bool:
    return bool(await conn.scalar(select(C.c.enabled).where(C.c.event_type == event_type)))


class EventConfigurations:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    async def describe_event_configurations(self, req: dict[str, Any]) -> dict[str, Any]:
        async with self.ctx.db.read() as conn:
            rows = {r.event_type: r for r in await conn.execute(select(C))}
        created = min((r.created_at for r in rows.values()), default=None)
        modified = max((r.last_modified_at for r in rows.values()), default=None)
        return {
            "eventConfigurations": {t: {"Enabled": bool(rows[t].enabled) if t in rows else False} for t in EVENT_TYPES},
            "creationDate": created,
            "lastModifiedDate": modified,
        }

    async def update_event_configurations(self, req: dict[str, Any]) -> None:
        now = self.ctx.clock.now()
        configs = req.get("eventConfigurations") or {}
        async with self.ctx.db.write() as conn:
            record_event(conn, CONFIGURATIONS_CHANGED)
            for event_type, config in configs.items():
                value = bool(config.get("Enabled", False))
                result = await conn.execute(
                    update(C).where(C.c.event_type == event_type).values(enabled=value, last_modified_at=now)
                )
                if result.rowcount == 0:
                    try:
                        async with conn.begin_nested():
                            await conn.execute(
                                C.insert().values(
                                    event_type=event_type, enabled=value, created_at=now, last_modified_at=now
                                )
                            )
                    except IntegrityError:  # another instance created it first: update theirs
                        await conn.execute(
                            update(C).where(C.c.event_type == event_type).values(enabled=value, last_modified_at=now)
                        )
