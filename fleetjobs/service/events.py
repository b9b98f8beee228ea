"""Pending-list changes the service layer announces, for whoever tells devices about them.

The MQTT gateway listens and publishes ``notify`` / ``notify-next``; without a gateway nobody
listens and announcing costs nothing.  Listeners must not block: they schedule their work.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

JOB_CREATED = "created"
JOB_CANCELED = "canceled"
JOB_DELETED = "deleted"


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


class PendingListener(Protocol):
    def job_changed(self, job_id: str, reason: str) -> None:
        """Executions of this job entered or left their things' pending lists."""
        ...

    def things_changed(self, thing_names: Iterable[str]) -> None:
        """These things' pending lists (and perhaps their next execution) changed."""
        ...


class EventHub:
    def __init__(self) -> None:
        self._listeners: list[PendingListener] = []
        self._domain: list[Any] = []

    def subscribe(self, listener: PendingListener) -> None:
        self._listeners.append(listener)

    def subscribe_domain(self, listener: Any) -> None:
        """``listener(events)`` receives committed JobEvent / ExecutionEvent lists."""
        self._domain.append(listener)

    def dispatch(self, events: list[Any]) -> None:
        for listener in self._domain:
            listener(events)

    def job_changed(self, job_id: str, reason: str) -> None:
        for listener in self._listeners:
            listener.job_changed(job_id, reason)

    def things_changed(self, thing_names: Iterable[str]) -> None:
        names = list(thing_names)
        if names:
            for listener in self._listeners:
                listener.things_changed(names)
