"""Domain events: what a committed transaction tells the edges (``$aws/events``, notify / notify-next).

Services record them on the transaction (``record_event``); they reach listeners only after
commit.  Without a gateway nobody listens and they cost nothing.  Listeners must not block: they
schedule their work.
"""

from __future__ import annotations

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


class EventHub:
    def __init__(self) -> None:
        self._domain: list[Any] = []

    def subscribe_domain(self, listener: Any) -> None:
        """``listener(events)`` receives committed JobEvent / ExecutionEvent lists."""
        self._domain.append(listener)

    def dispatch(self, events: list[Any]) -> None:
        for listener in self._domain:
            listener(events)
