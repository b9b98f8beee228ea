"""Pending-list changes the service layer announces, for whoever tells devices about them.

The MQTT gateway listens and publishes ``notify`` / ``notify-next``; without a gateway nobody
listens and announcing costs nothing.  Listeners must not block: they schedule their work.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

JOB_CREATED = "created"
JOB_CANCELED = "canceled"
JOB_DELETED = "deleted"


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

    def subscribe(self, listener: PendingListener) -> None:
        self._listeners.append(listener)

    def job_changed(self, job_id: str, reason: str) -> None:
        for listener in self._listeners:
            listener.job_changed(job_id, reason)

    def things_changed(self, thing_names: Iterable[str]) -> None:
        names = list(thing_names)
        if names:
            for listener in self._listeners:
                listener.things_changed(names)
