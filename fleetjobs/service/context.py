"""What every service needs: the database, the clock, and the ARN partition."""

from __future__ import annotations

from dataclasses import dataclass, field

from fleetjobs.clock import Clock
from fleetjobs.domain.arns import Partition
from fleetjobs.service.events import EventHub
from fleetjobs.store.database import Database


@dataclass(frozen=True)
class ServiceContext:
    db: Database
    clock: Clock
    partition: Partition
    events: EventHub = field(default_factory=EventHub)
