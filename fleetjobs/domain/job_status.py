"""The job lifecycle (JOBS_API.md §4.1), free of I/O, beside the execution state machine.

A job is SCHEDULED until its start time (or between maintenance windows), IN_PROGRESS while it
rolls out and its executions run, then COMPLETED (a snapshot job whose executions are all terminal)
or CANCELED; DeleteJob passes it through DELETION_IN_PROGRESS until its executions are purged.
Each rule answers with AWS's exception, so every caller refuses the same changes the same way.
"""

from __future__ import annotations

from fleetjobs.domain.errors import InvalidRequest, InvalidStateTransition

SCHEDULED = "SCHEDULED"
IN_PROGRESS = "IN_PROGRESS"
COMPLETED = "COMPLETED"
CANCELED = "CANCELED"
DELETION_IN_PROGRESS = "DELETION_IN_PROGRESS"

ALL_STATUSES = (SCHEDULED, IN_PROGRESS, COMPLETED, CANCELED, DELETION_IN_PROGRESS)
# Jobs whose executions may still change: rollouts, outcomes, retries and aborts apply to them.
ACTIVE = frozenset({SCHEDULED, IN_PROGRESS})
TERMINAL = frozenset({COMPLETED, CANCELED})


def is_active(status: str) -> bool:
    return status in ACTIVE


def check_cancel(job_id: str, status: str, *, force: bool, already_force_canceled: bool) -> None:
    """CancelJob: a canceled job may be canceled again only to force it (once)."""
    if status == DELETION_IN_PROGRESS:
        raise InvalidRequest(f"Job {job_id} is being deleted and cannot be canceled.")
    if status == COMPLETED:
        raise InvalidRequest(f"Job {job_id} is COMPLETED and cannot be canceled.")
    if status == CANCELED and (not force or already_force_canceled):
        raise InvalidRequest(f"Job {job_id} is already canceled.")


def check_update(job_id: str, status: str) -> None:
    """UpdateJob changes only a job that can still roll out."""
    if status not in ACTIVE:
        raise InvalidRequest(f"Job {job_id} is {status} and can no longer be updated.")


def check_delete(job_id: str, status: str, *, force: bool) -> None:
    """DeleteJob: a finished job, or any job with ``force``; never one already being deleted."""
    if status == DELETION_IN_PROGRESS:
        raise InvalidStateTransition(f"Job {job_id} is already being deleted.")
    if status not in TERMINAL and not force:
        raise InvalidStateTransition(
            f"Cannot delete job {job_id} in status {status} without force; "
            "only COMPLETED or CANCELED jobs can be deleted unless force is true."
        )


def check_associate_targets(job_id: str, status: str, target_selection: str) -> None:
    """AssociateTargetsWithJob: only a continuous job that is rolling out takes new targets."""
    if target_selection != "CONTINUOUS":
        raise InvalidRequest("Targets can only be associated with a job whose targetSelection is CONTINUOUS.")
    if status != IN_PROGRESS:
        raise InvalidRequest(f"Targets can only be associated with an IN_PROGRESS job; {job_id} is {status}.")


def is_concurrent(status: str, processing_targets: list[str] | None) -> bool:
    """``isConcurrent``: rolling out (targets not yet reached) or busy canceling/deleting."""
    return (status == IN_PROGRESS and bool(processing_targets)) or status == DELETION_IN_PROGRESS
