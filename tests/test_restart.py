"""What fleetjobs acknowledged survives ``kill -9``.

Each test runs its own server (SQLite and PostgreSQL), writes through boto3, SIGKILLs the
process as soon as the responses are in (no graceful shutdown, nothing flushed on the way out),
restarts it on the same data dir and database, and reads everything back, for several rounds of
writes interleaved with kills.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from tests.fleet import executions, group_arn, thing_arn, thing_names
from tests.harness import Server, unique

DOCUMENT = '{"op":"x"}'
ROUNDS = 3


@dataclass
class Acknowledged:
    """Everything the server said yes to, as the test expects to read it back."""

    things: set[str] = field(default_factory=set)
    groups: dict[str, set[str]] = field(default_factory=dict)  # group -> member things
    jobs: dict[str, dict[str, str]] = field(default_factory=dict)  # job -> thing -> execution status
    job_targets: dict[str, list[str]] = field(default_factory=dict)


def collect(iot: Any, operation: str, key: str, **kwargs: Any) -> list[Any]:
    out: list[Any] = []
    for page in iot.get_paginator(operation).paginate(**kwargs):
        out.extend(page[key])
    return out


def kill_and_restart(backends: Any, srv: Server) -> Server:
    srv.stop(kill=True)
    assert srv.proc is not None and srv.proc.returncode == -9
    return backends.server(data_dir=srv.data_dir, database_url=srv.database_url, port=srv.port).start()


def write_round(iot: Any, prefix: str, r: int, ack: Acknowledged) -> None:
    """Things, a group with members, a job on the group, and an update to an older job."""
    things = [f"{prefix}-r{r}-t{i}" for i in range(4)]
    for t in things:
        iot.create_thing(thingName=t, attributePayload={"attributes": {"round": str(r)}})
        ack.things.add(t)
    group = f"{prefix}-r{r}-g"
    arn = iot.create_thing_group(thingGroupName=group)["thingGroupArn"]
    assert arn == group_arn(group)
    ack.groups[group] = set()
    members = list(things)
    if r > 0:
        members.append(f"{prefix}-r{r - 1}-t0")  # a thing in two groups
    for t in members:
        iot.add_thing_to_thing_group(thingGroupName=group, thingName=t)
        ack.groups[group].add(t)

    job = f"{prefix}-r{r}-job"
    iot.create_job(jobId=job, targets=[arn], document=DOCUMENT)
    ack.jobs[job] = dict.fromkeys(members, "QUEUED")
    ack.job_targets[job] = [arn]

    direct = f"{prefix}-r{r}-direct"
    iot.create_job(jobId=direct, targets=[thing_arn(things[0]), thing_arn(things[1])], document=DOCUMENT)
    ack.jobs[direct] = dict.fromkeys(things[:2], "QUEUED")
    ack.job_targets[direct] = [thing_arn(things[0]), thing_arn(things[1])]

    if r > 0:  # an acknowledged update must survive as well as a create
        older, victim = f"{prefix}-r{r - 1}-job", f"{prefix}-r{r - 1}-t1"
        iot.cancel_job_execution(jobId=older, thingName=victim)
        ack.jobs[older][victim] = "CANCELED"


def assert_everything_is_there(iot: Any, ack: Acknowledged) -> None:
    for t in sorted(ack.things):
        assert iot.describe_thing(thingName=t)["thingName"] == t
        in_groups = {g["groupName"] for g in collect(iot, "list_thing_groups_for_thing", "thingGroups", thingName=t)}
        assert in_groups == {g for g, members in ack.groups.items() if t in members}, t
    for g, members in sorted(ack.groups.items()):
        assert iot.describe_thing_group(thingGroupName=g)["thingGroupArn"] == group_arn(g)
        assert set(collect(iot, "list_things_in_thing_group", "things", thingGroupName=g)) == members, g
    for job_id, expected in sorted(ack.jobs.items()):
        job = iot.describe_job(jobId=job_id)["job"]
        assert job["targets"] == ack.job_targets[job_id]
        assert job["status"] == "IN_PROGRESS", job
        statuses = list(expected.values())
        details = job["jobProcessDetails"]
        assert details["numberOfQueuedThings"] == statuses.count("QUEUED"), (job_id, details)
        assert details.get("numberOfCanceledThings", 0) == statuses.count("CANCELED"), (job_id, details)
        listed = executions(iot, job_id)
        got = {name: s["jobExecutionSummary"]["status"] for name, s in zip(thing_names(listed), listed, strict=True)}
        assert got == expected, job_id
        assert len(listed) == len(expected)
    assert iot.get_job_document(jobId=next(iter(ack.jobs)))["document"] == DOCUMENT


def test_acknowledged_writes_survive_kill_9_round_after_round(backends: Any) -> None:
    srv = backends.server().start()
    prefix = unique("rs")
    ack = Acknowledged()
    for r in range(ROUNDS):
        write_round(srv.client("iot"), prefix, r, ack)
        srv = kill_and_restart(backends, srv)  # killed straight after the last response
        assert_everything_is_there(srv.client("iot"), ack)


def test_a_restart_with_nothing_written_since_changes_nothing(backends: Any) -> None:
    srv = backends.server().start()
    ack = Acknowledged()
    write_round(srv.client("iot"), unique("rs"), 0, ack)
    for _ in range(2):
        srv = kill_and_restart(backends, srv)
        assert_everything_is_there(srv.client("iot"), ack)
    srv.stop()  # and a graceful stop loses nothing either
    srv = backends.server(data_dir=srv.data_dir, database_url=srv.database_url, port=srv.port).start()
    assert_everything_is_there(srv.client("iot"), ack)


@dataclass
class Writer:
    """Creates a thing and a job on a group of things, over and over, until the server dies."""

    iot: Any
    group: str
    prefix: str
    wanted: int
    acknowledged: list[str] = field(default_factory=list)
    in_flight: str | None = None
    enough: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def run(self) -> None:
        i = 0
        try:
            while True:
                job_id = f"{self.prefix}-job{i:04d}"
                self.in_flight = job_id
                self.iot.create_job(jobId=job_id, targets=[group_arn(self.group)], document=DOCUMENT)
                self.acknowledged.append(job_id)
                self.in_flight = None
                if len(self.acknowledged) >= self.wanted:
                    self.enough.set()
                i += 1
        except (BotoCoreError, ClientError) as e:  # the kill: connection refused / reset
            self.error = e
        finally:
            self.enough.set()


def test_jobs_acknowledged_while_the_server_is_killed_mid_stream_survive_whole(backends: Any) -> None:
    """A writer keeps creating jobs on a 30-thing group; kill -9 lands while it is writing. Every
    acknowledged job is there with all 30 executions; the one in flight is there whole or not at all."""
    srv = backends.server().start()
    iot = srv.client("iot")
    prefix = unique("mid")
    group = f"{prefix}-g"
    iot.create_thing_group(thingGroupName=group)
    members = [f"{prefix}-t{i:02d}" for i in range(30)]
    for t in members:
        iot.create_thing(thingName=t)
        iot.add_thing_to_thing_group(thingGroupName=group, thingName=t)

    writer = Writer(srv.client("iot"), group, prefix, wanted=5)
    thread = threading.Thread(target=writer.run)
    thread.start()
    writer.enough.wait(timeout=120)
    srv.stop(kill=True)
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert len(writer.acknowledged) >= 5, writer.error
    assert writer.error is not None  # it was stopped by the kill, not by a refusal
    if isinstance(writer.error, ClientError):
        pytest.fail(f"the server refused a write before the kill: {writer.error}")

    srv = backends.server(data_dir=srv.data_dir, database_url=srv.database_url, port=srv.port).start()
    iot = srv.client("iot")
    for job_id in writer.acknowledged:
        details = iot.describe_job(jobId=job_id)["job"]["jobProcessDetails"]
        assert details["numberOfQueuedThings"] == len(members), job_id
        assert sorted(thing_names(executions(iot, job_id))) == members, job_id
    if writer.in_flight is not None:
        try:
            details = iot.describe_job(jobId=writer.in_flight)["job"]["jobProcessDetails"]
        except iot.exceptions.ResourceNotFoundException:
            pass
        else:  # committed just before the kill: then it is complete
            assert details["numberOfQueuedThings"] == len(members)
            assert sorted(thing_names(executions(iot, writer.in_flight))) == members
    # and the restarted server takes new writes
    iot.create_job(jobId=f"{prefix}-after", targets=[group_arn(group)], document=DOCUMENT)
    assert iot.describe_job(jobId=f"{prefix}-after")["job"]["jobProcessDetails"]["numberOfQueuedThings"] == 30
