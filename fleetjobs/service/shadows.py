"""Device shadows (iot-data): classic and named, including the reserved ``$package`` shadow (JOBS_API.md §1.13).

GetThingShadow / UpdateThingShadow / DeleteThingShadow / ListNamedShadowsForThing, with the AWS
document rules of :mod:`fleetjobs.domain.shadow_state`.  The classic shadow is stored under the
name ``''``.  As on AWS, a shadow does not need the thing in the registry (AWS does not enforce a
mapping between registry names and shadows); reading a shadow that does not exist is
ResourceNotFoundException.  DeleteThing removes the thing's shadows (:func:`delete_thing_shadows`).

Writes go through :mod:`fleetjobs.service.effects.shadow_writes`, which the jobs service also
uses on a SUCCEEDED execution (``$package``); every change re-evaluates the thing for the fleet index.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import delete, select

from fleetjobs.domain import shadow_state
from fleetjobs.domain.errors import ResourceNotFound
from fleetjobs.model import shapes_iot_data as shapes
from fleetjobs.service.context import ServiceContext
from fleetjobs.service.effects.index_sync import thing_changed
from fleetjobs.service.effects.shadow_writes import CLASSIC, locked_shadow, write_shadow
from fleetjobs.service.pagination import encode_token, token_str
from fleetjobs.store.sql import retry_once_on_integrity_error
from fleetjobs.store.tables import SHADOWS

DEFAULT_PAGE = 100


def _encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _not_found(thing_name: str, shadow_name: str) -> ResourceNotFound:
    shown = thing_name if shadow_name == CLASSIC else f"{thing_name}~{shadow_name}"
    return ResourceNotFound(f"No shadow exists with name: '{shown}'")


class Shadows:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    async def get_thing_shadow(self, req: shapes.GetThingShadowRequest) -> dict[str, Any]:
        thing, name = req["thingName"], req.get("shadowName", CLASSIC)
        async with self.ctx.db.read() as conn:
            row = (
                await conn.execute(select(SHADOWS).where(SHADOWS.c.thing_name == thing, SHADOWS.c.shadow_name == name))
            ).first()
        if row is None:
            raise _not_found(thing, name)
        return {"payload": _encode(shadow_state.document(row.state, row.meta, row.version, int(self.ctx.clock.now())))}

    async def update_thing_shadow(self, req: shapes.UpdateThingShadowRequest) -> dict[str, Any]:
        thing, name = req["thingName"], req.get("shadowName", CLASSIC)
        doc = shadow_state.parse_update(req.get("payload") or b"", name)
        now = self.ctx.clock.now()

        async def attempt() -> tuple[int, int]:
            async with self.ctx.db.write() as conn:
                return await write_shadow(conn, thing, name, doc["state"], now, doc.get("version"))

        version, ts = await retry_once_on_integrity_error(attempt)
        return {"payload": _encode(shadow_state.update_response(doc["state"], version, ts, doc.get("clientToken")))}

    async def delete_thing_shadow(self, req: shapes.DeleteThingShadowRequest) -> dict[str, Any]:
        """Answers ``{"version", "timestamp"}``.  (AWS keeps counting versions across a delete and
        re-create; fleetjobs has no row for a deleted shadow, so a re-created one starts at 1.)"""
        thing, name = req["thingName"], req.get("shadowName", CLASSIC)
        now = self.ctx.clock.now()
        async with self.ctx.db.write() as conn:
            row = await locked_shadow(conn, thing, name)
            if row is None:
                raise _not_found(thing, name)
            await conn.execute(delete(SHADOWS).where(SHADOWS.c.thing_name == thing, SHADOWS.c.shadow_name == name))
            await thing_changed(conn, thing, now)
        return {"payload": _encode({"version": row.version, "timestamp": int(now)})}

    async def list_named_shadows_for_thing(self, req: shapes.ListNamedShadowsForThingRequest) -> dict[str, Any]:
        """Names of the thing's named shadows (not the classic one), in name order."""
        thing = req["thingName"]
        size = int(req.get("pageSize") or DEFAULT_PAGE)
        after = token_str(req)
        q = select(SHADOWS.c.shadow_name).where(SHADOWS.c.thing_name == thing, SHADOWS.c.shadow_name != CLASSIC)
        if after is not None:
            q = q.where(SHADOWS.c.shadow_name > after)
        async with self.ctx.db.read() as conn:
            names = [r[0] for r in await conn.execute(q.order_by(SHADOWS.c.shadow_name).limit(size + 1))]
        token = None
        if len(names) > size:
            names = names[:size]
            token = encode_token(names[-1])
        return {"results": names, "nextToken": token, "timestamp": int(self.ctx.clock.now())}
