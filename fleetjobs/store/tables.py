"""The tables as SQLAlchemy Core ``Table`` objects, under one name each across the package.

Request paths speak Core (no ORM object is built per row); these names replace the per-file
one-letter aliases, which meant different tables in different files (``S`` was the shadows in one
and the service settings in another).  ``__table__`` is typed as a ``FromClause``; the cast says
what it is, once.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table

from fleetjobs.store import schema


def _table(model: type[schema.Base]) -> Table:
    return cast(Table, model.__table__)


THINGS = _table(schema.Thing)
THING_TYPES = _table(schema.ThingType)
THING_GROUPS = _table(schema.ThingGroup)
GROUP_MEMBERS = _table(schema.ThingGroupMember)
JOBS = _table(schema.Job)
JOB_TARGETS = _table(schema.JobTarget)
EXECUTIONS = _table(schema.JobExecution)
JOB_TEMPLATES = _table(schema.JobTemplate)
EVENT_CONFIGURATIONS = _table(schema.EventConfiguration)
DEVICE_REQUESTS = _table(schema.DeviceRequest)
ROLLOUT_QUEUE = _table(schema.RolloutQueue)
PENDING_NOTICES = _table(schema.PendingNotice)
PACKAGES = _table(schema.Package)
PACKAGE_VERSIONS = _table(schema.PackageVersion)
SHADOWS = _table(schema.Shadow)
SETTINGS = _table(schema.ServiceSetting)
