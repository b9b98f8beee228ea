"""Publishes ``$aws/events/job/...`` and ``$aws/events/jobExecution/...`` (JOBS_API.md §5.8).

Events arrive here only after their transaction committed, and go out only while
UpdateEventConfigurations has switched their kind (JOB, JOB_EXECUTION) on.  Like AWS's, they
are at-most-once here: a crash between commit and publish loses them.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select

from fleetjobs.clock import Clock
from fleetjobs.domain.arns import Partition
from fleetjobs.domain.execution_state import COUNTER_FIELD
from fleetjobs.service.event_configurations import ConfigurationsChanged, enabled
from fleetjobs.service.events import ExecutionEvent, JobEvent
from fleetjobs.store.database import Database
from fleetjobs.store.schema import Job

log = logging.getLogger("fleetjobs.mqtt.events")
J = Job.__table__

JOB_STATUS = {
    "completed": "COMPLETED",
    "canceled": "CANCELED",
    "deleted": "DELETED",
    "cancellation_in_progress": "CANCELLATION_IN_PROGRESS",
    "deletion_in_progress": "DELETION_IN_PROGRESS",
}
WITH_DETAILS = ("completed", "canceled")
SWITCHES_TTL = 1.0


class JobEventsPublisher:
    def __init__(
        self,
        db: Database,
        partition: Partition,
        clock: Clock,
        publish: Callable[[str, bytes], Awaitable[None]],
        spawn: Callable[[Any], None],
    ) -> None:
        self.db = db
        self.partition = partition
        self.clock = clock
        self.publish = publish
        self.spawn = spawn
        self._switches_read: tuple[float, tuple[bool, bool]] | None = None

    def __call__(self, events: list[Any]) -> None:
        if any(isinstance(e, ConfigurationsChanged) for e in events):
            self._switches_read = None
        ours = [e for e in events if isinstance(e, JobEvent | ExecutionEvent)]
        if ours:
            self.spawn(self._publish_all(ours))

    async def _switches(self) -> tuple[bool, bool]:
        """UpdateEventConfigurations' switches, read at most once a second: every device outcome
        would otherwise cost a query.  Another instance's change is seen within that second."""
        now = time.monotonic()
        if self._switches_read is None or now - self._switches_read[0] > SWITCHES_TTL:
            async with self.db.read() as conn:
                jobs_on = await enabled(conn, "JOB")
                executions_on = await enabled(conn, "JOB_EXECUTION")
            self._switches_read = (now, (jobs_on, executions_on))
        return self._switches_read[1]

    async def _publish_all(self, events: list[Any]) -> None:
        try:
            jobs_on, executions_on = await self._switches()
            for event in events:
                if isinstance(event, JobEvent) and jobs_on:
                    payload = await self._job_payload(event)
                    await self.publish(f"$aws/events/job/{event.job_id}/{event.operation}", payload)
                elif isinstance(event, ExecutionEvent) and executions_on:
                    topic = f"$aws/events/jobExecution/{event.job_id}/{event.operation}"
                    await self.publish(topic, self._execution_payload(event))
        except Exception:
            log.exception("failed to publish job events")

    def _base(self, event_type: str, operation: str) -> dict[str, Any]:
        return {
            "eventType": event_type,
            "eventId": str(uuid.uuid4()),
            "timestamp": int(self.clock.now()),
            "operation": operation,
        }

    async def _job_payload(self, event: JobEvent) -> bytes:
        doc = self._base("JOB", event.operation)
        doc.update({"jobId": event.job_id, "status": JOB_STATUS.get(event.operation, event.operation.upper())})
        row: Any = None
        if event.operation in WITH_DETAILS or event.snapshot is None:
            async with self.db.read() as conn:
                row = (await conn.execute(select(J).where(J.c.job_id == event.job_id))).first()
        fields = event.snapshot or (row._mapping if row is not None else {})
        doc.update(
            {
                k: v
                for k, v in {
                    "targetSelection": fields.get("target_selection"),
                    "targets": fields.get("targets"),
                    "description": fields.get("description"),
                    "createdAt": _int(fields.get("created_at")),
                    "lastUpdatedAt": _int(fields.get("last_updated_at")),
                }.items()
                if v is not None
            }
        )
        if event.operation == "completed" and row is not None and row.completed_at is not None:
            doc["completedAt"] = int(row.completed_at)
        if event.operation not in WITH_DETAILS and fields.get("comment"):
            doc["comment"] = fields["comment"]
        if event.operation in WITH_DETAILS and row is not None:
            doc["jobProcessDetails"] = {name: int(getattr(row, col)) for col, name in COUNTER_FIELD.items()}
        return json.dumps(doc, separators=(",", ":")).encode()

    def _execution_payload(self, event: ExecutionEvent) -> bytes:
        doc = self._base("JOB_EXECUTION", event.operation)
        doc.update(
            {
                "jobId": event.job_id,
                "thingArn": self.partition.thing(event.thing_name),
                "status": event.status,
            }
        )
        if event.status_details:
            doc["statusDetails"] = event.status_details
        return json.dumps(doc, separators=(",", ":")).encode()


def _int(value: Any) -> int | None:
    return int(value) if value is not None else None
