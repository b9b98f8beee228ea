"""What every service needs: the database, the clock, and the ARN partition."""

from __future__ import annotations

from dataclasses import dataclass

from fleetjobs.clock import Clock
from fleetjobs.domain.arns import Partition
from fleetjobs.store.database import Database


@dataclass(frozen=True)
class ServiceContext:
    db: Database
    clock: Clock
    partition: Partition
