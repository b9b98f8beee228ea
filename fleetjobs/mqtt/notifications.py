"""``notify`` and ``notify-next`` (JOBS_API.md §5.5), decided by comparing before and after.

AWS publishes ``notify`` only when an execution enters or leaves a thing's pending list, and
``notify-next`` only when the execution that ``$next`` designates changes; a status change of
the current head (QUEUED -> IN_PROGRESS) publishes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MAX_LISTED = 10


@dataclass(frozen=True)
class PendingView:
    pending: frozenset[tuple[str, int]]
    head: tuple[str, int] | None
    listing: dict[str, Any]

    @classmethod
    def of(cls, listing: dict[str, Any]) -> PendingView:
        in_progress = listing.get("inProgressJobs", [])
        queued = listing.get("queuedJobs", [])
        pending = frozenset((j["jobId"], j["executionNumber"]) for j in [*in_progress, *queued])
        first = (in_progress or queued or [None])[0]
        head = (first["jobId"], first["executionNumber"]) if first else None
        return cls(pending, head, listing)


def notify_payload(view: PendingView, now: float) -> bytes:
    jobs: dict[str, Any] = {}
    in_progress = view.listing.get("inProgressJobs", [])[:MAX_LISTED]
    queued = view.listing.get("queuedJobs", [])[: max(0, MAX_LISTED - len(in_progress))]
    if in_progress:
        jobs["IN_PROGRESS"] = in_progress
    if queued:
        jobs["QUEUED"] = queued
    return json.dumps({"timestamp": int(now), "jobs": jobs}, separators=(",", ":")).encode()


def notify_next_payload(execution: dict[str, Any] | None, now: float) -> bytes:
    doc: dict[str, Any] = {"timestamp": int(now)}
    if execution is not None:
        doc["execution"] = execution
    return json.dumps(doc, separators=(",", ":")).encode()


def changes(before: PendingView, after: PendingView) -> tuple[bool, bool]:
    """(publish notify?, publish notify-next?)"""
    return before.pending != after.pending, before.head != after.head
