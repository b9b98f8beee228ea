"""DescribeEventConfigurations / UpdateEventConfigurations: which ``$aws/events`` kinds go out."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from fleetjobs.model import service_model
from fleetjobs.model import shapes_iot as shapes
from fleetjobs.service.context import ServiceContext
from fleetjobs.service.effects.event_switches import enabled
from fleetjobs.service.events import CONFIGURATIONS_CHANGED
from fleetjobs.store.database import record_event
from fleetjobs.store.tables import EVENT_CONFIGURATIONS

EVENT_TYPES: tuple[str, ...] = tuple(service_model("iot").shape_for("EventType").enum)


class EventConfigurations:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    async def describe_event_configurations(self, req: shapes.DescribeEventConfigurationsRequest) -> dict[str, Any]:
        async with self.ctx.db.read() as conn:
            rows = {r.event_type: r for r in await conn.execute(select(EVENT_CONFIGURATIONS))}
        created = min((r.created_at for r in rows.values()), default=None)
        modified = max((r.last_modified_at for r in rows.values()), default=None)
        return {
            "eventConfigurations": {t: {"Enabled": bool(rows[t].enabled) if t in rows else False} for t in EVENT_TYPES},
            "creationDate": created,
            "lastModifiedDate": modified,
        }

    async def update_event_configurations(self, req: shapes.UpdateEventConfigurationsRequest) -> None:
        now = self.ctx.clock.now()
        configs = req.get("eventConfigurations") or {}
        async with self.ctx.db.write() as conn:
            record_event(conn, CONFIGURATIONS_CHANGED)
            for event_type, config in configs.items():
                value = bool(config.get("Enabled", False))
                result = await conn.execute(
                    update(EVENT_CONFIGURATIONS)
                    .where(EVENT_CONFIGURATIONS.c.event_type == event_type)
                    .values(enabled=value, last_modified_at=now)
                )
                if result.rowcount == 0:
                    try:
                        async with conn.begin_nested():
                            await conn.execute(
                                EVENT_CONFIGURATIONS.insert().values(
                                    event_type=event_type, enabled=value, created_at=now, last_modified_at=now
                                )
                            )
                    except IntegrityError:  # another instance created it first: update theirs
                        await conn.execute(
                            update(EVENT_CONFIGURATIONS)
                            .where(EVENT_CONFIGURATIONS.c.event_type == event_type)
                            .values(enabled=value, last_modified_at=now)
                        )

    async def switches(self) -> tuple[bool, bool]:
        """(JOB events on?, JOB_EXECUTION events on?): what the ``$aws/events`` publisher asks."""
        async with self.ctx.db.read() as conn:
            return await enabled(conn, "JOB"), await enabled(conn, "JOB_EXECUTION")
