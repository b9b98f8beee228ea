"""Tables.  Times are epoch seconds (float) because that is what every AWS plane speaks."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL wants BIGINT for 100k+ fan-outs.
BigId = BigInteger().with_variant(Integer, "sqlite")
Epoch = Float(precision=53)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Thing(Base):
    __tablename__ = "things"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    thing_name: Mapped[str] = mapped_column(String(128), unique=True)
    thing_id: Mapped[str] = mapped_column(String(64))
    thing_type_name: Mapped[str | None] = mapped_column(String(128), index=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON)
    billing_group_name: Mapped[str | None] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[float] = mapped_column(Epoch)


class ThingType(Base):
    __tablename__ = "thing_types"
    thing_type_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    thing_type_id: Mapped[str] = mapped_column(String(64))
    properties: Mapped[dict[str, Any]] = mapped_column(JSON)
    deprecated: Mapped[bool] = mapped_column(Boolean, default=False)
    deprecation_date: Mapped[float | None] = mapped_column(Epoch)
    created_at: Mapped[float] = mapped_column(Epoch)
    tags: Mapped[list[Any]] = mapped_column(JSON)


class ThingGroup(Base):
    __tablename__ = "thing_groups"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    group_name: Mapped[str] = mapped_column(String(128), unique=True)
    group_id: Mapped[str] = mapped_column(String(64), unique=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("thing_groups.id"), index=True)
    properties: Mapped[dict[str, Any]] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[float] = mapped_column(Epoch)
    tags: Mapped[list[Any]] = mapped_column(JSON)
    # Dynamic groups (fleet-index query); NULL for static groups.
    query_string: Mapped[str | None] = mapped_column(Text)
    index_name: Mapped[str | None] = mapped_column(String(128))
    query_version: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str | None] = mapped_column(String(32))


class ThingGroupMember(Base):
    __tablename__ = "thing_group_members"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("thing_groups.id", ondelete="CASCADE"))
    thing_id: Mapped[int] = mapped_column(ForeignKey("things.id", ondelete="CASCADE"), index=True)
    __table_args__ = (UniqueConstraint("group_id", "thing_id"),)


class Job(Base):
    __tablename__ = "jobs"
    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(32), index=True)
    target_selection: Mapped[str] = mapped_column(String(16))
    targets: Mapped[list[Any]] = mapped_column(JSON)
    document: Mapped[str | None] = mapped_column(Text)
    # The document as given, before ${aws:iot:parameter|package:...} substitution (beforeSubstitution).
    document_template: Mapped[str | None] = mapped_column(Text)
    document_source: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    namespace_id: Mapped[str | None] = mapped_column(String(64))
    job_template_arn: Mapped[str | None] = mapped_column(Text)
    # The remaining CreateJob input members, stored verbatim (camelCase, as AWS returns them).
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    tags: Mapped[list[Any]] = mapped_column(JSON)
    reason_code: Mapped[str | None] = mapped_column(String(128))
    comment: Mapped[str | None] = mapped_column(Text)
    force_canceled: Mapped[bool] = mapped_column(Boolean, default=False)
    # NULL once the rollout has reached every target (never an empty list).
    processing_targets: Mapped[list[Any] | None] = mapped_column(JSON(none_as_null=True))
    created_at: Mapped[float] = mapped_column(Epoch)
    last_updated_at: Mapped[float] = mapped_column(Epoch)
    completed_at: Mapped[float | None] = mapped_column(Epoch)
    # Per-status execution counters, maintained in the same transaction as every status change.
    n_queued: Mapped[int] = mapped_column(BigInteger, default=0)
    n_in_progress: Mapped[int] = mapped_column(BigInteger, default=0)
    n_succeeded: Mapped[int] = mapped_column(BigInteger, default=0)
    n_failed: Mapped[int] = mapped_column(BigInteger, default=0)
    n_rejected: Mapped[int] = mapped_column(BigInteger, default=0)
    n_canceled: Mapped[int] = mapped_column(BigInteger, default=0)
    n_removed: Mapped[int] = mapped_column(BigInteger, default=0)
    n_timed_out: Mapped[int] = mapped_column(BigInteger, default=0)
    # The rollout engine's durable state (see fleetjobs.service.loops.rollout_engine): when the job started
    # rolling out, how many executions it has released, the unused release credit and when it was
    # last accounted, and when the scheduler must next look at the job (NULL: nothing due).
    started_at: Mapped[float | None] = mapped_column(Epoch)
    n_released: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    rollout_credit: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    rollout_tick_at: Mapped[float | None] = mapped_column(Epoch)
    due_at: Mapped[float | None] = mapped_column(Epoch, index=True)


class JobTarget(Base):
    """Resolved group targets of a job, for ListJobs' thingGroupName/thingGroupId filters."""

    __tablename__ = "job_targets"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.job_id", ondelete="CASCADE"), index=True)
    target_arn: Mapped[str] = mapped_column(Text)
    group_name: Mapped[str | None] = mapped_column(String(128), index=True)
    group_id: Mapped[str | None] = mapped_column(String(64), index=True)


class JobExecution(Base):
    __tablename__ = "job_executions"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.job_id", ondelete="CASCADE"))
    thing_name: Mapped[str] = mapped_column(String(128))
    execution_number: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    status_details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    queued_at: Mapped[float] = mapped_column(Epoch)
    started_at: Mapped[float | None] = mapped_column(Epoch)
    last_updated_at: Mapped[float] = mapped_column(Epoch)
    version_number: Mapped[int] = mapped_column(BigInteger)
    force_canceled: Mapped[bool] = mapped_column(Boolean, default=False)
    retry_attempt: Mapped[int] = mapped_column(Integer, default=0)
    # Absolute deadlines (epoch seconds) of the in-progress and step timers.
    in_progress_deadline: Mapped[float | None] = mapped_column(Epoch)
    step_deadline: Mapped[float | None] = mapped_column(Epoch)
    # The earlier of the two deadlines: what the timer sweep looks at (NULL unless IN_PROGRESS).
    timeout_at: Mapped[float | None] = mapped_column(Epoch, index=True)
    # Retries already spent per failure type (JobExecutionsRetryConfig counts them separately).
    failed_retries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    timed_out_retries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    __table_args__ = (
        UniqueConstraint("job_id", "thing_name", "execution_number"),
        Index("ix_job_executions_job_status", "job_id", "status", "id"),
        Index("ix_job_executions_thing_status", "thing_name", "status", "queued_at"),
    )


class JobTemplate(Base):
    __tablename__ = "job_templates"
    job_template_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str] = mapped_column(Text)
    document: Mapped[str | None] = mapped_column(Text)
    document_source: Mapped[str | None] = mapped_column(Text)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    tags: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Epoch)


class EventConfiguration(Base):
    """UpdateEventConfigurations: which ``$aws/events/...`` kinds are published (all off by default)."""

    __tablename__ = "event_configurations"
    event_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[float] = mapped_column(Epoch)
    last_modified_at: Mapped[float] = mapped_column(Epoch)


class DeviceRequest(Base):
    """Results of state-changing device requests, by request key (topic + bytes), so that a request
    the broker delivers again (fleetjobs died before acknowledging it) is answered the same way, not
    re-run.  An answer stands only while the execution it addressed (``job_id``, ``execution_number``)
    is still the one the request addresses, at the version the answer produced (``version_number``):
    a later request with the same bytes is then a new request, as on AWS."""

    __tablename__ = "device_requests"
    request_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    result: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Epoch, index=True)
    job_id: Mapped[str | None] = mapped_column(String(64))
    execution_number: Mapped[int | None] = mapped_column(BigInteger)
    version_number: Mapped[int | None] = mapped_column(BigInteger)


class RolloutQueue(Base):
    """Targets of a rolling-out job that have no execution yet, in release order."""

    __tablename__ = "rollout_queue"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.job_id", ondelete="CASCADE"))
    thing_name: Mapped[str] = mapped_column(String(128))
    __table_args__ = (Index("ix_rollout_queue_job", "job_id", "id"),)


class PendingNotice(Base):
    """A durable to-do: tell a thing (or every thing of a job, page by page from ``cursor``) that
    its pending list changed.  Written in the transaction of the change, so no instance's crash
    loses a notification; any instance's gateway drains it under a lease."""

    __tablename__ = "pending_notices"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    thing_name: Mapped[str | None] = mapped_column(String(128))
    job_id: Mapped[str | None] = mapped_column(String(64))
    # For a job notice: executions of the job with cursor < id <= upto are to be announced.
    cursor: Mapped[int | None] = mapped_column(BigInteger)
    upto: Mapped[int | None] = mapped_column(BigInteger)
    # notify-next is published when the thing's next execution is ``job_id``'s, or always.
    next_always: Mapped[bool] = mapped_column(Boolean)
    lease_until: Mapped[float | None] = mapped_column(Epoch)
    created_at: Mapped[float] = mapped_column(Epoch)


class Package(Base):
    """Software package catalog: a package (CreatePackage)."""

    __tablename__ = "packages"
    package_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    description: Mapped[str | None] = mapped_column(Text)
    default_version_name: Mapped[str | None] = mapped_column(String(64))
    tags: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Epoch)
    last_modified_at: Mapped[float] = mapped_column(Epoch)


class PackageVersion(Base):
    """A version of a package: DRAFT -> PUBLISHED -> DEPRECATED; attributes are editable only in DRAFT."""

    __tablename__ = "package_versions"
    package_name: Mapped[str] = mapped_column(ForeignKey("packages.package_name", ondelete="CASCADE"), primary_key=True)
    version_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str | None] = mapped_column(Text)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON)
    artifact: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    recipe: Mapped[str | None] = mapped_column(Text)
    sbom: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    error_reason: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Epoch)
    last_modified_at: Mapped[float] = mapped_column(Epoch)


class Shadow(Base):
    """Device shadows (iot-data): the classic one has the name '' ; named ones (e.g. ``$package``) their name."""

    __tablename__ = "shadows"
    thing_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    shadow_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[float] = mapped_column(Epoch)


class ServiceSetting(Base):
    """Account-wide singletons: package configuration, indexing configuration."""

    __tablename__ = "service_settings"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[float] = mapped_column(Epoch)


class ThingRegistrationTask(Base):
    """StartThingRegistrationTask: one bulk registration, worked through its input file chunk by chunk.

    ``cursor`` is the byte offset in the input file of the first line not yet committed (and
    ``next_line`` that line's 0-based number): each chunk's things, its report parts and the new
    cursor commit together, so a task resumes exactly where it stopped.  Whoever runs the task holds
    ``lease_owner`` until ``lease_until`` (``time.time()``), renewed by every chunk."""

    __tablename__ = "thing_registration_tasks"
    task_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    template_body: Mapped[str] = mapped_column(Text)
    input_file_bucket: Mapped[str] = mapped_column(String(256))
    input_file_key: Mapped[str] = mapped_column(Text)
    role_arn: Mapped[str] = mapped_column(Text)
    message: Mapped[str | None] = mapped_column(Text)
    success_count: Mapped[int] = mapped_column(BigInteger, default=0)
    failure_count: Mapped[int] = mapped_column(BigInteger, default=0)
    input_size: Mapped[int] = mapped_column(BigInteger)
    cursor: Mapped[int] = mapped_column(BigInteger, default=0)
    next_line: Mapped[int] = mapped_column(BigInteger, default=0)
    parts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[float | None] = mapped_column(Epoch)
    created_at: Mapped[float] = mapped_column(Epoch)
    last_modified_at: Mapped[float] = mapped_column(Epoch)


class ThingRegistrationReport(Base):
    """One object of a registration task's ERRORS or RESULTS report (a chunk's lines, newline-delimited
    JSON) in the artifact store; ListThingRegistrationTaskReports presigns them in ``part`` order."""

    __tablename__ = "thing_registration_reports"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("thing_registration_tasks.task_id", ondelete="CASCADE"))
    report_type: Mapped[str] = mapped_column(String(16))
    part: Mapped[int] = mapped_column(Integer)
    bucket: Mapped[str] = mapped_column(String(256))
    key: Mapped[str] = mapped_column(Text)
    lines: Mapped[int] = mapped_column(Integer)
    __table_args__ = (UniqueConstraint("task_id", "report_type", "part"),)
