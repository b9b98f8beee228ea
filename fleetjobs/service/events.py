"""Domain events: what a committed transaction tells the edges (``$aws/events``, notify / notify-next).

Services record them on the transaction (``record_event``); they reach listeners only after
commit.  Without a gateway nobody listens and they cost nothing.  Listeners must not block: they
schedule their work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class JobEvent:
    """``$aws/events/job/<jobId>/<operation>``: completed, canceled, cancellation_in_progress,
    deletion_in_progress, deleted.  ``snapshot`` carries the job's fields when the row may be gone."""

    job_id: str
    operation: str
    snapshot: dict[str, Any] | None = None


@dataclass(frozen=True)
class ExecutionEvent:
    """``$aws/events/jobExecution/<jobId>/<operation>``: an execution reached a terminal status or was deleted."""

    job_id: str
    thing_name: str
    operation: str
    status: str
    status_details: dict[str, str] | None = field(default=None)


@dataclass(frozen=True)
class PendingChanged:
    """A thing's pending list or ``$next`` execution changed: publish ``notify`` (with ``listing``)
    and/or ``notify-next`` (with ``execution``, None when nothing is pending)."""

    thing_name: str
    listing: dict[str, Any]
    execution: dict[str, Any] | None
    notify: bool
    notify_next: bool


class NoticesQueued:
    """Pending-list notices were committed: wake this instance's drain now rather than at its next poll."""


class ConfigurationsChanged:
    """This instance changed the ``$aws/events`` switches: its publishers re-read them at once."""


class RolloutQueued:
    """A job now waits on the rollout engine (staged, scheduled, windowed): wake it rather than wait a poll."""


class DeletionRequested:
    """A job became DELETION_IN_PROGRESS: wake the purger rather than wait a poll."""


def job_snapshot(row: Any) -> dict[str, Any]:
    """What a job event says of a job whose row may be gone by the time it is published."""
    return {
        "job_id": row.job_id,
        "target_selection": row.target_selection,
        "targets": row.targets,
        "description": row.description,
        "comment": row.comment,
        "created_at": row.created_at,
        "last_updated_at": row.last_updated_at,
        "completed_at": row.completed_at,
    }


NOTICES_QUEUED = NoticesQueued()
CONFIGURATIONS_CHANGED = ConfigurationsChanged()
ROLLOUT_QUEUED = RolloutQueued()
DELETION_REQUESTED = DeletionRequested()

Listener = Callable[[list[Any]], None]


class EventHub:
    def __init__(self) -> None:
        self._domain: list[Listener] = []

    def subscribe_domain(self, listener: Listener) -> None:
        """``listener(events)`` receives the events of each committed transaction."""
        self._domain.append(listener)

    def wake_on(self, kind: type, wakeup: asyncio.Event) -> None:
        """Set ``wakeup`` whenever a committed transaction recorded an event of ``kind``: how a
        background loop hears of work this instance just queued, without waiting for its poll."""

        def listener(committed: list[Any]) -> None:
            if any(isinstance(e, kind) for e in committed):
                wakeup.set()

        self.subscribe_domain(listener)

    def dispatch(self, events: list[Any]) -> None:
        for listener in self._domain:
            listener(events)
