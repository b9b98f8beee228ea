"""Device shadows (iot-data): classic and named, including the reserved ``$package`` shadow (JOBS_API.md §1.13).

GetThingShadow / UpdateThingShadow / DeleteThingShadow / ListNamedShadowsForThing, with the AWS
document rules of :mod:`fleetjobs.domain.shadow_state`.  The classic shadow is stored under the
name ``''``.  As on AWS, a shadow does not need the thing in the registry (AWS does not enforce a
mapping between registry names and shadows); reading a shadow that does not exist is
ResourceNotFoundException.  DeleteThing removes the thing's shadows (:func:`delete_thing_shadows`).

``update_reported`` is the hook the jobs service calls on a SUCCEEDED execution (``$package``), in
its own transaction; every change re-evaluates the thing for the fleet index.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.domain import shadow_state
from fleetjobs.domain.errors import Conflict, InvalidRequest, ResourceNotFound
from fleetjobs.service import fleet_index
from fleetjobs.service.context import ServiceContext
from fleetjobs.service.pagination import decode_token, encode_token
from fleetjobs.service.registry_queries import locked, retry_once_on_integrity_error
from fleetjobs.store.schema import Shadow

S = Shadow.__table__
CLASSIC = ""
DEFAULT_PAGE = 100


def _encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _not_found(thing_name: str, shadow_name: str) -> ResourceNotFound:
    shown = thing_name if shadow_name == CLASSIC else f"{thing_name}~{shadow_name}"
    return ResourceNotFound(f"No shadow exists with name: '{shown}'")


async def _locked_row(conn: AsyncConnection, thing_name: str, shadow_name: str) -> Any:
    q = select(S).where(S.c.thing_name == thing_name, S.c.shadow_name == shadow_name)
    return (await conn.execute(locked(q, conn))).first()


async def _write(
    conn: AsyncConnection,
    thing_name: str,
    shadow_name: str,
    update_state: dict[str, Any] | None,
    now: float,
    expected_version: int | None = None,
) -> tuple[int, int]:
    """Merge an update's ``state`` node into the shadow (creating it); the new (version, timestamp)."""
    ts = int(now)
    row = await _locked_row(conn, thing_name, shadow_name)
    current = row.version if row is not None else 0
    if expected_version is not None and expected_version != current:
        raise Conflict("Version conflict")
    state, meta = shadow_state.apply_update(
        row.state if row is not None else {}, row.meta if row is not None else {}, update_state, ts
    )
    version = current + 1
    if row is None:
        await conn.execute(
            insert(S).values(
                thing_name=thing_name, shadow_name=shadow_name, state=state, meta=meta, version=version, updated_at=now
            )
        )
    else:
        await conn.execute(
            update(S)
            .where(S.c.thing_name == thing_name, S.c.shadow_name == shadow_name)
            .values(state=state, meta=meta, version=version, updated_at=now)
        )
    await fleet_index.thing_changed(conn, thing_name, now)
    return version, ts


async def update_reported(
    conn: AsyncConnection, thing_name: str, shadow_name: str, reported: dict[str, Any], now: float
) -> None:
    """Merge ``reported`` into the shadow's reported state (a None value removes a key), in the
    caller's transaction, as an UpdateThingShadow {"state": {"reported": ...}} would."""
    update_state = {"reported": reported}
    if shadow_name == shadow_state.PACKAGE_SHADOW:
        shadow_state.check_package_state(update_state)
    await _write(conn, thing_name, shadow_name, update_state, now)


async def read_shadow(conn: AsyncConnection, thing_name: str, shadow_name: str = CLASSIC) -> dict[str, Any] | None:
    """The stored state (``{"desired", "reported"}``) of a shadow, or None: for other services (fleet index)."""
    row = (
        await conn.execute(select(S.c.state).where(S.c.thing_name == thing_name, S.c.shadow_name == shadow_name))
    ).first()
    return row.state if row is not None else None


async def delete_thing_shadows(conn: AsyncConnection, thing_name: str) -> None:
    """All the thing's shadows, classic and named (DeleteThing)."""
    await conn.execute(delete(S).where(S.c.thing_name == thing_name))


class Shadows:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    async def get_thing_shadow(self, req: dict[str, Any]) -> dict[str, Any]:
        thing, name = req["thingName"], req.get("shadowName", CLASSIC)
        async with self.ctx.db.read() as conn:
            row = (await conn.execute(select(S).where(S.c.thing_name == thing, S.c.shadow_name == name))).first()
        if row is None:
            raise _not_found(thing, name)
        return {"payload": _encode(shadow_state.document(row.state, row.meta, row.version, int(self.ctx.clock.now())))}

    async def update_thing_shadow(self, req: dict[str, Any]) -> dict[str, Any]:
        thing, name = req["thingName"], req.get("shadowName", CLASSIC)
        doc = shadow_state.parse_update(req.get("payload") or b"", name)
        now = self.ctx.clock.now()

        async def attempt() -> tuple[int, int]:
            async with self.ctx.db.write() as conn:
                return await _write(conn, thing, name, doc["state"], now, doc.get("version"))

        version, ts = await retry_once_on_integrity_error(attempt)
        return {"payload": _encode(shadow_state.update_response(doc["state"], version, ts, doc.get("clientToken")))}

    async def delete_thing_shadow(self, req: dict[str, Any]) -> dict[str, Any]:
        """Answers ``{"version", "timestamp"}``.  (AWS keeps counting versions across a delete and
        re-create; fleetjobs has no row for a deleted shadow, so a re-created one starts at 1.)"""
        thing, name = req["thingName"], req.get("shadowName", CLASSIC)
        now = self.ctx.clock.now()
        async with self.ctx.db.write() as conn:
            row = await _locked_row(conn, thing, name)
            if row is None:
                raise _not_found(thing, name)
            await conn.execute(delete(S).where(S.c.thing_name == thing, S.c.shadow_name == name))
            await fleet_index.thing_changed(conn, thing, now)
        return {"payload": _encode({"version": row.version, "timestamp": int(now)})}

    async def list_named_shadows_for_thing(self, req: dict[str, Any]) -> dict[str, Any]:
        """Names of the thing's named shadows (not the classic one), in name order."""
        thing = req["thingName"]
        size = int(req.get("pageSize") or DEFAULT_PAGE)
        after = decode_token(req.get("nextToken"))
        if after is not None and not isinstance(after, str):
            raise InvalidRequest("The nextToken is invalid")
        q = select(S.c.shadow_name).where(S.c.thing_name == thing, S.c.shadow_name != CLASSIC)
        if after is not None:
            q = q.where(S.c.shadow_name > after)
        async with self.ctx.db.read() as conn:
            names = [r[0] for r in await conn.execute(q.order_by(S.c.shadow_name).limit(size + 1))]
        token = None
        if len(names) > size:
            names = names[:size]
            token = encode_token(names[-1])
        return {"results": names, "nextToken": token, "timestamp": int(self.ctx.clock.now())}
