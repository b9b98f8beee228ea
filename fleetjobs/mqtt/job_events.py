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

from fleetjobs.clock import Clock
from fleetjobs.domain.arns import Partition
from fleetjobs.service.event_configurations import EventConfigurations
from fleetjobs.service.events import ConfigurationsChanged, ExecutionEvent, JobEvent
from fleetjobs.service.jobs import Jobs

log = logging.getLogger("fleetjobs.mqtt.events")

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
        jobs: Jobs,
        switches: EventConfigurations,
        partition: Partition,
        clock: Clock,
        publish: Callable[[str, bytes], Awaitable[None]],
        spawn: Callable[[Any], None],
    ) -> None:
        self.jobs = jobs
        self.switches = switches
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
            self._switches_read = (now, await self.switches.switches())
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
        current: dict[str, Any] | None = None
        if event.operation in WITH_DETAILS or event.snapshot is None:
            current = await self.jobs.event_fields(event.job_id)
        fields = event.snapshot or current or {}
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
        if event.operation == "completed" and current is not None and current["completed_at"] is not None:
            doc["completedAt"] = int(current["completed_at"])
        if event.operation not in WITH_DETAILS and fields.get("comment"):
            doc["comment"] = fields["comment"]
        if event.operation in WITH_DETAILS and current is not None:
            doc["jobProcessDetails"] = current["job_process_details"]
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
