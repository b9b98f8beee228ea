"""DeleteJob's asynchronous phase, driven through the service layer with the purger held back.

Over HTTP a deletion finishes too quickly to observe reliably, so these tests build the services
on a fresh SQLite database and run the background sweep only when they say so.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from fleetjobs.clock import ManualClock
from fleetjobs.domain.arns import Partition
from fleetjobs.domain.errors import InvalidRequest, InvalidStateTransition, LimitExceeded, ResourceNotFound
from fleetjobs.server import Services
from fleetjobs.service.context import ServiceContext
from fleetjobs.store.database import Database, sqlite_url


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _services(tmp: Path) -> tuple[Database, Services]:
    db = Database(sqlite_url(tmp))
    await db.migrate()
    ctx = ServiceContext(db=db, clock=ManualClock(), partition=Partition("us-east-1", "123456789012"))
    return db, Services.create(ctx)


def test_at_most_ten_jobs_deleting_and_cancel_refused_while_deleting(tmp_path: Path) -> None:
    async def scenario() -> None:
        db, s = await _services(tmp_path)
        try:
            await s.things.create_thing({"thingName": "t1"})
            arn = "arn:aws:iot:us-east-1:123456789012:thing/t1"
            for i in range(11):
                await s.jobs.create_job({"jobId": f"j{i}", "targets": [arn], "document": "{}"})
            for i in range(10):
                await s.jobs.delete_job({"jobId": f"j{i}", "force": True})
            with pytest.raises(LimitExceeded):
                await s.jobs.delete_job({"jobId": "j10", "force": True})
            assert (await s.jobs.describe_job({"jobId": "j10"}))["job"]["status"] == "IN_PROGRESS"
            described = await s.jobs.describe_job({"jobId": "j0"})
            assert described["job"]["status"] == "DELETION_IN_PROGRESS"
            assert described["job"]["isConcurrent"] is True
            with pytest.raises(InvalidRequest):
                await s.jobs.cancel_job({"jobId": "j0"})
            with pytest.raises(InvalidStateTransition):
                await s.jobs.delete_job({"jobId": "j0", "force": True})
            assert await s.purger.purge() == 10
            with pytest.raises(ResourceNotFound):
                await s.jobs.describe_job({"jobId": "j0"})
            await s.jobs.delete_job({"jobId": "j10", "force": True})  # room again
        finally:
            await db.close()

    run(scenario())


def test_purge_resumes_an_interrupted_deletion(tmp_path: Path) -> None:
    """A process that dies mid-deletion leaves DELETION_IN_PROGRESS behind; any instance finishes it."""

    async def scenario() -> None:
        db, s = await _services(tmp_path)
        try:
            for i in range(30):
                await s.things.create_thing({"thingName": f"t{i}"})
            await s.groups.create_thing_group({"thingGroupName": "g"})
            for i in range(30):
                await s.groups.add_thing_to_thing_group({"thingGroupName": "g", "thingName": f"t{i}"})
            arn = "arn:aws:iot:us-east-1:123456789012:thinggroup/g"
            await s.jobs.create_job({"jobId": "big", "targets": [arn], "document": "{}"})
            await s.jobs.delete_job({"jobId": "big", "force": True})
        finally:
            await db.close()
        # A new process (fresh services over the same database) completes it.
        db2, s2 = await _services(tmp_path)
        try:
            assert await s2.purger.purge() == 1
            with pytest.raises(ResourceNotFound):
                await s2.executions.describe_job_execution({"jobId": "big", "thingName": "t0"})
            await s2.jobs.create_job({"jobId": "big", "targets": [arn], "document": "{}"})
            listed = await s2.executions.list_job_executions_for_job({"jobId": "big", "maxResults": 250})
            assert len(listed["executionSummaries"]) == 30
        finally:
            await db2.close()

    run(scenario())
