"""Shadow writes inside a caller's transaction, with the AWS document rules of :mod:`fleetjobs.domain.shadow_state`.

UpdateThingShadow and a SUCCEEDED execution's ``$package`` record both come here, so both merge the
same way and both re-evaluate the thing for the fleet index (dynamic groups can select on shadows).
The classic shadow is stored under the name ``''``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.domain import shadow_state
from fleetjobs.domain.errors import Conflict
from fleetjobs.service.effects.index_sync import thing_changed
from fleetjobs.store.sql import locked
from fleetjobs.store.tables import SHADOWS

CLASSIC = ""


async def locked_shadow(conn: AsyncConnection, thing_name: str, shadow_name: str) -> Row[Any] | None:
    q = select(SHADOWS).where(SHADOWS.c.thing_name == thing_name, SHADOWS.c.shadow_name == shadow_name)
    return (await conn.execute(locked(q, conn))).first()


async def write_shadow(
    conn: AsyncConnection,
    thing_name: str,
    shadow_name: str,
    update_state: dict[str, Any] | None,
    now: float,
    expected_version: int | None = None,
) -> tuple[int, int]:
    """Merge an update's ``state`` node into the shadow (creating it); the new (version, timestamp)."""
    ts = int(now)
    row = await locked_shadow(conn, thing_name, shadow_name)
    current = row.version if row is not None else 0
    if expected_version is not None and expected_version != current:
        raise Conflict("Version conflict")
    state, meta = shadow_state.apply_update(
        row.state if row is not None else {}, row.meta if row is not None else {}, update_state, ts
    )
    version = current + 1
    if row is None:
        await conn.execute(
            insert(SHADOWS).values(
                thing_name=thing_name, shadow_name=shadow_name, state=state, meta=meta, version=version, updated_at=now
            )
        )
    else:
        await conn.execute(
            update(SHADOWS)
            .where(SHADOWS.c.thing_name == thing_name, SHADOWS.c.shadow_name == shadow_name)
            .values(state=state, meta=meta, version=version, updated_at=now)
        )
    await thing_changed(conn, thing_name, now)
    return version, ts


async def update_reported(
    conn: AsyncConnection, thing_name: str, shadow_name: str, reported: dict[str, Any], now: float
) -> None:
    """Merge ``reported`` into the shadow's reported state (a None value removes a key), in the
    caller's transaction, as an UpdateThingShadow {"state": {"reported": ...}} would."""
    update_state = {"reported": reported}
    if shadow_name == shadow_state.PACKAGE_SHADOW:
        shadow_state.check_package_state(update_state)
    await write_shadow(conn, thing_name, shadow_name, update_state, now)


async def read_shadow(conn: AsyncConnection, thing_name: str, shadow_name: str = CLASSIC) -> dict[str, Any] | None:
    """The stored state (``{"desired", "reported"}``) of a shadow, or None: for other services (fleet index)."""
    row = (
        await conn.execute(
            select(SHADOWS.c.state).where(SHADOWS.c.thing_name == thing_name, SHADOWS.c.shadow_name == shadow_name)
        )
    ).first()
    return row.state if row is not None else None


async def delete_thing_shadows(conn: AsyncConnection, thing_name: str) -> None:
    """All the thing's shadows, classic and named (DeleteThing)."""
    await conn.execute(delete(SHADOWS).where(SHADOWS.c.thing_name == thing_name))
