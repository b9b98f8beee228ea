"""Bulk thing registration (StartThingRegistrationTask and friends): the tasks, as operators see them.

A task registers one thing per line of a newline-delimited JSON file in the artifact store, by
evaluating a provisioning template (:mod:`fleetjobs.domain.provisioning_template`) with the line's
parameters.  This façade checks what AWS refuses outright (a template no line could use, an input
file that is not there) and stores the task; the work is done by
:mod:`fleetjobs.service.loops.registration_runner`, in chunks, on whichever instance holds the
task's lease, so that a task outlives the process that started it and never runs twice.

AWS semantics reproduced here:

* statuses InProgress -> Completed (every line done, whatever failed), Failed (the input file could
  not be read), and InProgress -> Cancelling -> Cancelled (StopThingRegistrationTask: the task stops
  between two chunks, keeping the counts and reports of the chunks it had committed);
* ``successCount`` / ``failureCount`` / ``percentageProgress`` (by bytes of the input file done);
* ListThingRegistrationTaskReports answers presigned URLs of report objects (one per chunk that had
  lines of that kind), each newline-delimited JSON: ``{"referenceId": "<0-based line number>",
  "response": {"resourceArns": {"<logical id>": "<thing ARN>"}}}`` for RESULTS, ``{"referenceId":
  ..., "errorCode": ..., "errorMessage": ...}`` for ERRORS.  They are written to the input file's
  bucket, under ``thing-registration-tasks/<taskId>/``.

Unlike AWS ("only one bulk registration task can run at a time per account"), several tasks may
run at once; they are worked on oldest first.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, cast

from sqlalchemy import Table, insert, or_, select, update

from fleetjobs.artifacts import ArtifactError, ArtifactNotFound, ArtifactStore
from fleetjobs.domain.errors import InvalidRequest, ResourceNotFound
from fleetjobs.domain.placeholders import S3Object
from fleetjobs.domain.provisioning_template import ProvisioningTemplate
from fleetjobs.model import shapes_iot as shapes
from fleetjobs.service.context import ServiceContext
from fleetjobs.service.pagination import compact, encode_token, page_size, token_id, token_time_and_name
from fleetjobs.store import schema
from fleetjobs.store.database import record_event
from fleetjobs.store.sql import locked

TASKS = cast(Table, schema.ThingRegistrationTask.__table__)
REPORTS = cast(Table, schema.ThingRegistrationReport.__table__)

IN_PROGRESS = "InProgress"
COMPLETED = "Completed"
FAILED = "Failed"
CANCELLING = "Cancelling"
CANCELLED = "Cancelled"
RUNNABLE = (IN_PROGRESS, CANCELLING)
REPORT_EXPIRY_SECONDS = 3600
# What an IAM role ARN looks like; the role is never assumed (fleetjobs reads its own artifact store),
# but a value that could not name a role would be refused by AWS before anything else.
_ROLE_ARN = re.compile(r"arn:aws[a-zA-Z-]*:iam::\d{12}:role/[\w+=,.@/-]+")


class RegistrationQueued:
    """A registration task was started (or must be finished): wake this instance's runner now."""


REGISTRATION_QUEUED = RegistrationQueued()


def report_key(task_id: str, report_type: str, part: int) -> str:
    """Where a report part lives in the input file's bucket (the runner writes it there)."""
    return f"thing-registration-tasks/{task_id}/{report_type}/{part:06d}.json"


class ThingRegistrationTasks:
    def __init__(self, ctx: ServiceContext, store: ArtifactStore | None = None) -> None:
        self.ctx = ctx
        self.store = store

    async def start_thing_registration_task(self, req: shapes.StartThingRegistrationTaskRequest) -> dict[str, Any]:
        """Refuses what would fail every line (the template, the role ARN, a missing input file);
        anything a single line can get wrong is that line's entry in the ERRORS report."""
        ProvisioningTemplate.parse(
            req["templateBody"], region=self.ctx.partition.region, account=self.ctx.partition.account
        )
        if not _ROLE_ARN.fullmatch(req["roleArn"]):
            raise InvalidRequest(
                f"roleArn {req['roleArn']} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)."
            )
        bucket, key = req["inputFileBucket"], req["inputFileKey"]
        size = len(await self._input(bucket, key))
        task_id = str(uuid.uuid4())
        now = self.ctx.clock.now()
        async with self.ctx.db.write() as conn:
            await conn.execute(
                insert(TASKS).values(
                    task_id=task_id,
                    status=IN_PROGRESS,
                    template_body=req["templateBody"],
                    input_file_bucket=bucket,
                    input_file_key=key,
                    role_arn=req["roleArn"],
                    message=None,
                    success_count=0,
                    failure_count=0,
                    input_size=size,
                    cursor=0,
                    next_line=0,
                    parts=0,
                    created_at=now,
                    last_modified_at=now,
                )
            )
            record_event(conn, REGISTRATION_QUEUED)
        return {"taskId": task_id}

    async def describe_thing_registration_task(
        self, req: shapes.DescribeThingRegistrationTaskRequest
    ) -> dict[str, Any]:
        async with self.ctx.db.read() as conn:
            row = (await conn.execute(select(TASKS).where(TASKS.c.task_id == req["taskId"]))).first()
        if row is None:
            raise self._not_found(req["taskId"])
        if row.status == COMPLETED or row.input_size == 0:
            progress = 100 if row.status == COMPLETED else 0
        else:
            progress = min(100, row.cursor * 100 // row.input_size)
        return compact(
            {
                "taskId": row.task_id,
                "creationDate": row.created_at,
                "lastModifiedDate": row.last_modified_at,
                "templateBody": row.template_body,
                "inputFileBucket": row.input_file_bucket,
                "inputFileKey": row.input_file_key,
                "roleArn": row.role_arn,
                "status": row.status,
                "message": row.message,
                "successCount": row.success_count,
                "failureCount": row.failure_count,
                "percentageProgress": progress,
            }
        )

    async def list_thing_registration_tasks(self, req: shapes.ListThingRegistrationTasksRequest) -> dict[str, Any]:
        """Newest first; ``status`` filters."""
        size = page_size(req)
        after = token_time_and_name(req)
        q = select(TASKS.c.task_id, TASKS.c.created_at)
        if req.get("status"):
            q = q.where(TASKS.c.status == req["status"])
        if after is not None:
            q = q.where(
                or_(
                    TASKS.c.created_at < after[0],
                    (TASKS.c.created_at == after[0]) & (TASKS.c.task_id < after[1]),
                )
            )
        q = q.order_by(TASKS.c.created_at.desc(), TASKS.c.task_id.desc()).limit(size + 1)
        async with self.ctx.db.read() as conn:
            rows = (await conn.execute(q)).all()
        token = encode_token([rows[size - 1].created_at, rows[size - 1].task_id]) if len(rows) > size else None
        return compact({"taskIds": [r.task_id for r in rows[:size]], "nextToken": token})

    async def stop_thing_registration_task(self, req: shapes.StopThingRegistrationTaskRequest) -> None:
        """InProgress -> Cancelling; the runner stops between chunks and makes it Cancelled.  A task no
        instance holds a live lease on is Cancelled at once (nothing is running that could finish a chunk)."""
        task_id = req["taskId"]
        async with self.ctx.db.write() as conn:
            row = (await conn.execute(locked(select(TASKS).where(TASKS.c.task_id == task_id), conn))).first()
            if row is None:
                raise self._not_found(task_id)
            if row.status in (CANCELLING, CANCELLED):
                return
            if row.status != IN_PROGRESS:
                raise InvalidRequest(f"Thing registration task {task_id} is {row.status}: it cannot be stopped.")
            unheld = row.lease_until is None or row.lease_until < time.time()
            await conn.execute(
                update(TASKS)
                .where(TASKS.c.task_id == task_id)
                .values(status=CANCELLED if unheld else CANCELLING, last_modified_at=self.ctx.clock.now())
            )
            record_event(conn, REGISTRATION_QUEUED)

    async def list_thing_registration_task_reports(
        self, req: shapes.ListThingRegistrationTaskReportsRequest
    ) -> dict[str, Any]:
        """The report objects of one kind, in line order, as presigned URLs valid for an hour.  (The
        model gives this operation no ResourceNotFoundException: an unknown task is an invalid request.)"""
        task_id, kind = req["taskId"], req["reportType"]
        size = page_size(req)
        after = token_id(req)
        q = select(REPORTS.c.part, REPORTS.c.bucket, REPORTS.c.key).where(
            REPORTS.c.task_id == task_id, REPORTS.c.report_type == kind
        )
        if after is not None:
            q = q.where(REPORTS.c.part > after)
        async with self.ctx.db.read() as conn:
            if await conn.scalar(select(TASKS.c.task_id).where(TASKS.c.task_id == task_id)) is None:
                raise InvalidRequest(f"Thing registration task {task_id} does not exist.")
            rows = (await conn.execute(q.order_by(REPORTS.c.part).limit(size + 1))).all()
        store = self._store()
        links = [store.presign_get(S3Object(r.bucket, r.key), REPORT_EXPIRY_SECONDS) for r in rows[:size]]
        token = encode_token(rows[size - 1].part) if len(rows) > size else None
        return compact({"resourceLinks": links, "reportType": kind, "nextToken": token})

    # -- helpers ---------------------------------------------------------------------------------------

    def _store(self) -> ArtifactStore:
        if self.store is None:
            raise InvalidRequest("Bulk registration needs an artifact store; none is configured.")
        return self.store

    async def _input(self, bucket: str, key: str) -> bytes:
        try:
            return await self._store().read(S3Object(bucket, key))
        except (FileNotFoundError, ArtifactNotFound):
            raise InvalidRequest(f"The input file s3://{bucket}/{key} does not exist.") from None
        except ArtifactError as e:
            raise InvalidRequest(f"The input file s3://{bucket}/{key} cannot be read: {e}") from None

    @staticmethod
    def _not_found(task_id: str) -> ResourceNotFound:
        return ResourceNotFound(f"Thing registration task {task_id} cannot be found.")
