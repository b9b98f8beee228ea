"""A thing's pending list and the notifications its changes call for (JOBS_API.md §5.5), free of I/O.

AWS publishes ``notify`` only when an execution enters or leaves the pending list, and
``notify-next`` only when the execution ``$next`` designates changes (a status change of the
current head, QUEUED -> IN_PROGRESS, publishes nothing).  Deciding both from the rows the change's
own transaction already holds costs no extra query.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from fleetjobs.domain.execution_state import IN_PROGRESS, PENDING


class PendingRow(Protocol):
    id: int
    job_id: str
    status: str
    queued_at: float
    execution_number: int


def order_key(row: PendingRow) -> tuple[int, float, int]:
    """``$next`` is the oldest IN_PROGRESS execution, else the oldest QUEUED one."""
    return (0 if row.status == IN_PROGRESS else 1, row.queued_at, row.id)


def ordered(rows: Iterable[PendingRow]) -> list[Any]:
    return sorted((r for r in rows if r.status in PENDING), key=order_key)


def head(rows: Sequence[PendingRow]) -> Any | None:
    pending = ordered(rows)
    return pending[0] if pending else None


def identity(row: PendingRow | None) -> tuple[str, int] | None:
    return None if row is None else (row.job_id, row.execution_number)


def replace(rows: Sequence[Any], new: Any) -> list[Any]:
    """The pending list after ``new`` (a changed execution) replaced its old row."""
    return [r for r in rows if r.id != new.id] + ([new] if new.status in PENDING else [])


def changes(before: Sequence[PendingRow], after: Sequence[PendingRow]) -> tuple[bool, bool]:
    """(publish notify?, publish notify-next?)"""
    members = {identity(r) for r in before if r.status in PENDING}
    members_after = {identity(r) for r in after if r.status in PENDING}
    return members != members_after, identity(head(before)) != identity(head(after))
