"""The AWS IoT Jobs MQTT topic layout (JOBS_API.md §5.1), parsed without I/O."""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "$aws/things/"
# Every request and response topic of every thing; what the gateway subscribes to.
REQUEST_FILTER = "$aws/things/+/jobs/#"

GET_PENDING = "GetPendingJobExecutions"
START_NEXT = "StartNextPendingJobExecution"
DESCRIBE = "DescribeJobExecution"
UPDATE = "UpdateJobExecution"


@dataclass(frozen=True)
class Request:
    operation: str
    thing_name: str
    job_id: str | None = None


@dataclass(frozen=True)
class NotARequest:
    """Something published under the jobs namespace that is ours (a response or notification)."""


@dataclass(frozen=True)
class InvalidTopic:
    thing_name: str


def parse(topic: str) -> Request | NotARequest | InvalidTopic | None:
    """Classify a topic under ``$aws/things/<thing>/jobs/``; None for anything outside it."""
    if not topic.startswith(PREFIX):
        return None
    parts = topic[len(PREFIX) :].split("/")
    if len(parts) < 3 or parts[1] != "jobs" or not parts[0]:
        return None
    thing, rest = parts[0], parts[2:]
    if rest[-1] in ("accepted", "rejected") or rest[0].startswith("notify"):
        return NotARequest()
    if rest == ["get"]:
        return Request(GET_PENDING, thing)
    if rest == ["start-next"]:
        return Request(START_NEXT, thing)
    if len(rest) == 2 and rest[0] and rest[1] == "get":
        return Request(DESCRIBE, thing, rest[0])
    if len(rest) == 2 and rest[0] and rest[1] == "update":
        return Request(UPDATE, thing, rest[0])
    return InvalidTopic(thing)


def jobs_topic(thing: str, suffix: str) -> str:
    return f"{PREFIX}{thing}/jobs/{suffix}"
