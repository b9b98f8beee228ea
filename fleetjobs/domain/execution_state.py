"""The job-execution state machine (JOBS_API.md §4.2-§4.3), free of I/O."""

from __future__ import annotations

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
