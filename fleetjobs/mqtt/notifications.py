"""``notify`` and ``notify-next`` payloads (JOBS_API.md §5.5); when to publish them is
``fleetjobs.domain.pending``'s decision."""

from __future__ import annotations

from typing import Any

from fleetjobs.domain import fastjson

MAX_LISTED = 10


def notify_payload(listing: dict[str, Any], now: float) -> bytes:
    """``listing`` is GetPendingJobExecutions' answer; notify lists at most ten, IN_PROGRESS first."""
    jobs: dict[str, Any] = {}
    in_progress = listing.get("inProgressJobs", [])[:MAX_LISTED]
    queued = listing.get("queuedJobs", [])[: max(0, MAX_LISTED - len(in_progress))]
    if in_progress:
        jobs["IN_PROGRESS"] = in_progress
    if queued:
        jobs["QUEUED"] = queued
    return fastjson.dumps({"timestamp": int(now), "jobs": jobs})


def notify_next_payload(execution: dict[str, Any] | None, now: float) -> bytes:
    doc: dict[str, Any] = {"timestamp": int(now)}
    if execution is not None:
        doc["execution"] = execution
    return fastjson.dumps(doc)
