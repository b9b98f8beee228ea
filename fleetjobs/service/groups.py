"""ThingGroups: service-layer operations (see the botocore iot model for each operation's shapes)."""

from __future__ import annotations

from fleetjobs.service.context import ServiceContext


class ThingGroups:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
