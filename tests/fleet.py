"""Small builders for test fleets, through the public API only."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tests.harness import ACCOUNT, REGION, unique

DOC = json.dumps({"operation": "install", "version": "1.2.3"})


def thing_arn(name: str) -> str:
    return f"arn:aws:iot:{REGION}:{ACCOUNT}:thing/{name}"


def group_arn(name: str) -> str:
    return f"arn:aws:iot:{REGION}:{ACCOUNT}:thinggroup/{name}"


@dataclass
class Fleet:
    iot: Any
    prefix: str = field(default_factory=lambda: unique("f"))

    def things(self, n: int, tag: str = "d") -> list[str]:
        names = [f"{self.prefix}-{tag}{i:03d}" for i in range(n)]
        for name in names:
            self.iot.create_thing(thingName=name)
        return names

    def group(self, tag: str, members: list[str] = (), parent: str | None = None) -> str:  # type: ignore[assignment]
        name = f"{self.prefix}-{tag}"
        kwargs = {"parentGroupName": parent} if parent else {}
        self.iot.create_thing_group(thingGroupName=name, **kwargs)
        for m in members:
            self.iot.add_thing_to_thing_group(thingGroupName=name, thingName=m)
        return name

    def job(self, targets: list[str], **kwargs: Any) -> str:
        job_id = kwargs.pop("jobId", None) or unique("job")
        kwargs.setdefault("document", DOC)
        self.iot.create_job(jobId=job_id, targets=targets, **kwargs)
        return job_id


def executions(iot: Any, job_id: str, **kwargs: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for page in iot.get_paginator("list_job_executions_for_job").paginate(jobId=job_id, **kwargs):
        out.extend(page["executionSummaries"])
    return out


def thing_names(summaries: list[dict[str, Any]]) -> list[str]:
    return [s["thingArn"].rsplit("/", 1)[1] for s in summaries]


def details(iot: Any, job_id: str) -> dict[str, Any]:
    return iot.describe_job(jobId=job_id)["job"]["jobProcessDetails"]
