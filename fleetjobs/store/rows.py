"""Typed views of the rows the service layer reads with Core statements.

A SQLAlchemy ``Row`` answers any attribute name; these protocols say which ones a function relies
on, so mypy checks the names and types at every seam without building an object per row (the hot
paths read thousands of rows a second).  The functions below are the one place a row becomes one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, cast

from sqlalchemy import Row


class ExecutionRow(Protocol):
    id: int
    job_id: str
    thing_name: str
    execution_number: int
    status: str
    status_details: dict[str, str] | None
    queued_at: float
    started_at: float | None
    last_updated_at: float
    version_number: int
    force_canceled: bool
    retry_attempt: int
    in_progress_deadline: float | None
    step_deadline: float | None
    timeout_at: float | None
    failed_retries: int
    timed_out_retries: int


class JobDeliveryRow(Protocol):
    """What delivering a job to a device needs of the job row."""

    job_id: str
    document: str | None
    config: dict[str, Any] | None
    status: str


class JobRow(JobDeliveryRow, Protocol):
    target_selection: str
    targets: list[str]
    document_template: str | None
    document_source: str | None
    description: str | None
    namespace_id: str | None
    job_template_arn: str | None
    tags: list[Any]
    reason_code: str | None
    comment: str | None
    force_canceled: bool
    processing_targets: list[str] | None
    created_at: float
    last_updated_at: float
    completed_at: float | None
    started_at: float | None
    n_released: int
    n_succeeded: int
    rollout_credit: float
    rollout_tick_at: float | None
    due_at: float | None


class ThingRef(Protocol):
    """A thing as membership changes know it."""

    id: int
    thing_name: str


# One cast per protocol: mypy refuses a protocol class as a ``type[P]`` argument, and a row already
# has the columns as attributes, so nothing is copied.


def as_execution(row: Row[Any]) -> ExecutionRow:
    return cast(ExecutionRow, row)


def as_executions(rows: Iterable[Row[Any]]) -> list[ExecutionRow]:
    return [cast(ExecutionRow, r) for r in rows]


def as_job_delivery(row: Row[Any]) -> JobDeliveryRow:
    return cast(JobDeliveryRow, row)


def as_job_deliveries(rows: Iterable[Row[Any]]) -> list[JobDeliveryRow]:
    return [cast(JobDeliveryRow, r) for r in rows]


def as_thing_refs(rows: Iterable[Row[Any]]) -> list[ThingRef]:
    return [cast(ThingRef, r) for r in rows]
