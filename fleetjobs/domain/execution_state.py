"""The job-execution state machine (JOBS_API.md §4.2-§4.3), free of I/O."""

from __future__ import annotations

from fleetjobs.domain.errors import InvalidRequest

QUEUED = "QUEUED"
IN_PROGRESS = "IN_PROGRESS"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
TIMED_OUT = "TIMED_OUT"
REJECTED = "REJECTED"
REMOVED = "REMOVED"
CANCELED = "CANCELED"

ALL_STATUSES = (QUEUED, IN_PROGRESS, SUCCEEDED, FAILED, TIMED_OUT, REJECTED, REMOVED, CANCELED)
PENDING = frozenset({QUEUED, IN_PROGRESS})
TERMINAL = frozenset({SUCCEEDED, FAILED, TIMED_OUT, REJECTED, REMOVED, CANCELED})
DEVICE_SETTABLE = frozenset({IN_PROGRESS, SUCCEEDED, FAILED, REJECTED})

# Job row counter column for each execution status (jobProcessDetails).
COUNTER_COLUMN = {
    QUEUED: "n_queued",
    IN_PROGRESS: "n_in_progress",
    SUCCEEDED: "n_succeeded",
    FAILED: "n_failed",
    TIMED_OUT: "n_timed_out",
    REJECTED: "n_rejected",
    REMOVED: "n_removed",
    CANCELED: "n_canceled",
}

COUNTER_FIELD = {
    "n_canceled": "numberOfCanceledThings",
    "n_succeeded": "numberOfSucceededThings",
    "n_failed": "numberOfFailedThings",
    "n_rejected": "numberOfRejectedThings",
    "n_queued": "numberOfQueuedThings",
    "n_in_progress": "numberOfInProgressThings",
    "n_removed": "numberOfRemovedThings",
    "n_timed_out": "numberOfTimedOutThings",
}


def is_terminal(status: str) -> bool:
    return status in TERMINAL


def device_transition_allowed(current: str, requested: str) -> bool:
    """May a device (UpdateJobExecution / StartNext) move an execution from ``current`` to ``requested``?"""
    if requested not in DEVICE_SETTABLE or current in TERMINAL:
        return False
    return current in PENDING


# Limits of a device's (and CancelJobExecution's) request members.
MAX_STATUS_DETAILS = 10
MAX_DETAIL_VALUE = 1024
MAX_STEP_MINUTES = 10080


def check_status_details(details: dict[str, str] | None) -> None:
    if details is None:
        return
    if len(details) > MAX_STATUS_DETAILS:
        raise InvalidRequest(f"statusDetails can have at most {MAX_STATUS_DETAILS} name/value pairs")
    for key, value in details.items():
        if len(value) > MAX_DETAIL_VALUE:
            raise InvalidRequest(f"statusDetails value of '{key}' is longer than {MAX_DETAIL_VALUE} characters")


def check_step_timeout(minutes: int | None, *, allow_cancel: bool) -> None:
    """``stepTimeoutInMinutes``: 1..10080, or -1 (clear the step timer) where ``allow_cancel``."""
    if minutes is None or (allow_cancel and minutes == -1):
        return
    if not 1 <= minutes <= MAX_STEP_MINUTES:
        raise InvalidRequest(
            f"stepTimeoutInMinutes must be between 1 and {MAX_STEP_MINUTES}" + (" or -1" if allow_cancel else "")
        )


def check_device_status(status: str) -> None:
    if status not in DEVICE_SETTABLE:
        raise InvalidRequest(f"A device cannot set the status of a job execution to {status}.")
