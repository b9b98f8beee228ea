"""Forgets old device-request answers (``device_requests``), kept for answering redelivered requests.

Redelivery happens within seconds of a restart; an hour of remembered answers is plenty.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import delete

from fleetjobs.service.context import ServiceContext
from fleetjobs.store.tables import DEVICE_REQUESTS

log = logging.getLogger("fleetjobs.request_log")

KEEP_SECONDS = 3600.0


class RequestLog:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    async def forget(self, older_than: float) -> int:
        async with self.ctx.db.write() as conn:
            result = await conn.execute(delete(DEVICE_REQUESTS).where(DEVICE_REQUESTS.c.created_at < older_than))
            return result.rowcount or 0

    async def run(self, every: float = 60.0) -> None:
        while True:
            try:
                await self.forget(self.ctx.clock.now() - KEEP_SECONDS)
            except Exception:
                log.exception("forgetting old device requests failed; will retry")
            await asyncio.sleep(every)
