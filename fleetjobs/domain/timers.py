"""Execution timers (JOBS_API.md §4.7), free of I/O: the in-progress timer and the step timer.

An execution that starts (QUEUED -> IN_PROGRESS) gets the job's ``inProgressTimeoutInMinutes``
from that moment; a device may set a step timer with ``stepTimeoutInMinutes`` on any IN_PROGRESS
update (-1 clears it), and a step timer never outlives the in-progress one.  The sweep looks at one
column, ``timeout_at``: the earlier of the two.  A terminal execution has no timers.
"""

from __future__ import annotations

import math

from fleetjobs.domain.execution_state import IN_PROGRESS, QUEUED, TERMINAL

CLEAR_STEP = -1


def earliest(*times: float | None) -> float | None:
    """The earliest of the times given (None and infinity mean "never"), or None."""
    present = [t for t in times if t is not None and t != math.inf]
    return min(present) if present else None


def deadlines_after(
    from_status: str,
    to_status: str,
    *,
    in_progress_deadline: float | None,
    step_deadline: float | None,
    now: float,
    in_progress_minutes: int | None,
    step_minutes: int | None,
) -> dict[str, float | None]:
    """The timer columns (``in_progress_deadline``, ``step_deadline``, ``timeout_at``) that a device's
    status change sets; a change that touches no timer gives an empty dict."""
    if to_status in TERMINAL:
        return {"in_progress_deadline": None, "step_deadline": None, "timeout_at": None}
    if to_status != IN_PROGRESS:
        return {}
    values: dict[str, float | None] = {}
    if from_status == QUEUED:
        in_progress_deadline = now + in_progress_minutes * 60 if in_progress_minutes else None
        values["in_progress_deadline"] = in_progress_deadline
    if step_minutes == CLEAR_STEP:
        step_deadline = None
        values["step_deadline"] = None
    elif step_minutes is not None:
        step_deadline = earliest(now + step_minutes * 60, in_progress_deadline)
        values["step_deadline"] = step_deadline
    values["timeout_at"] = earliest(in_progress_deadline, step_deadline)
    return values


def seconds_before_timeout(
    status: str, in_progress_deadline: float | None, step_deadline: float | None, now: float
) -> int | None:
    """``approximateSecondsBeforeTimedOut``: only an IN_PROGRESS execution with a timer has one."""
    deadline = earliest(in_progress_deadline, step_deadline)
    if status != IN_PROGRESS or deadline is None:
        return None
    return max(0, math.ceil(deadline - now))
