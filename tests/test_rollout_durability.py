"""The rollout engine keeps its state in the database: ``kill -9`` loses no release and no timer,
and several instances over one PostgreSQL share a rollout without a leader (JOBS_API.md §4.10)."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.fleet import Fleet, group_arn
from tests.harness import Server, unique


def populate(iot: Any, n: int) -> tuple[list[str], str]:
    fleet = Fleet(iot)
    group = fleet.group("g")
    names = [f"{fleet.prefix}-d{i:05d}" for i in range(n)]

    def add(name: str) -> None:
        iot.create_thing(thingName=name)
        iot.add_thing_to_thing_group(thingGroupName=group, thingName=name)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(add, names))
    return names, group


def execution_things(iot: Any, job_id: str) -> list[tuple[str, int]]:
    out = []
    for page in iot.get_paginator("list_job_executions_for_job").paginate(jobId=job_id):
        for s in page["executionSummaries"]:
            out.append((s["thingArn"].rsplit("/", 1)[1], s["jobExecutionSummary"]["executionNumber"]))
    return out


def released(iot: Any, job_id: str) -> int:
    details = iot.describe_job(jobId=job_id)["job"]["jobProcessDetails"]
    return sum(v for k, v in details.items() if k.startswith("numberOf"))


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def assert_released_once(iot: Any, job_id: str, names: list[str]) -> None:
    got = execution_things(iot, job_id)
    assert len(got) == len(names), f"{len(got)} executions for {len(names)} things"
    assert sorted(t for t, _ in got) == sorted(names)  # none twice, none skipped
    assert {n for _, n in got} == {1}
    job = iot.describe_job(jobId=job_id)["job"]
    assert "processingTargets" not in job["jobProcessDetails"] and job["isConcurrent"] is False


def test_kill_9_mid_rollout_then_restart_resumes_it(backends) -> None:  # type: ignore[no-untyped-def]
    srv = backends.server().start()
    try:
        iot = srv.client("iot")
        names, group = populate(iot, 300)
        job_id = unique("roll")
        # 1,200 a minute: 20 a second, about 15 s for 300 things.
        iot.create_job(
            jobId=job_id,
            targets=[group_arn(group)],
            document='{"op":"x"}',
            jobExecutionsRolloutConfig={"maximumPerMinute": 1200},
        )
        wait_until(lambda: released(iot, job_id) >= 40, 30, "the rollout to start")
        srv.stop(kill=True)
        srv.start()
        iot = srv.client("iot")
        before_restart = released(iot, job_id)
        assert 40 <= before_restart < 300
        wait_until(lambda: released(iot, job_id) == 300, 60, "the rollout to finish after the restart")
        assert_released_once(iot, job_id, names)
    finally:
        srv.stop()


def _clock(server: Server, body: dict[str, Any] | None = None) -> float:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(server.endpoint + "/_fleetjobs/clock", data=data, method="POST" if data else "GET")
    with urllib.request.urlopen(req, timeout=60) as resp:
        return float(json.load(resp)["now"])


def test_timers_survive_kill_9(backends) -> None:  # type: ignore[no-untyped-def]
    start = 1_800_000_000
    srv = backends.server(extra_args=["--manual-clock", str(start)]).start()
    try:
        iot = srv.client("iot")
        fleet = Fleet(iot)
        things = fleet.things(2)
        group = fleet.group("g", things)
        job_id = fleet.job([group_arn(group)], timeoutConfig={"inProgressTimeoutInMinutes": 10})
        device = srv.client("iot-jobs-data")
        device.start_next_pending_job_execution(thingName=things[0])
        device.start_next_pending_job_execution(thingName=things[1], stepTimeoutInMinutes=2)
        _clock(srv, {"advance": 60})
        now = _clock(srv)
        srv.stop(kill=True)
        srv.extra_args = ["--manual-clock", str(now)]
        srv.start()
        iot = srv.client("iot")

        def status(thing: str) -> str:
            return iot.describe_job_execution(jobId=job_id, thingName=thing)["execution"]["status"]

        _clock(srv, {"advance": 59})  # the step timer (2 min) is one second away
        assert status(things[1]) == "IN_PROGRESS"
        _clock(srv, {"advance": 1})
        assert status(things[1]) == "TIMED_OUT" and status(things[0]) == "IN_PROGRESS"
        _clock(srv, {"advance": 8 * 60 - 1})  # the in-progress timer (10 min) is one second away
        assert status(things[0]) == "IN_PROGRESS"
        _clock(srv, {"advance": 1})
        assert status(things[0]) == "TIMED_OUT"
        job = iot.describe_job(jobId=job_id)["job"]
        assert job["status"] == "COMPLETED" and job["jobProcessDetails"]["numberOfTimedOutThings"] == 2
    finally:
        srv.stop()


def test_two_instances_share_a_rollout_and_one_finishes_it_alone(backends) -> None:  # type: ignore[no-untyped-def]
    if backends.kind != "postgres":
        pytest.skip("several instances share one PostgreSQL; SQLite is one process's database")
    url = backends.new_database()
    a = backends.server(database_url=url).start()
    b = backends.server(database_url=url).start()
    try:
        iot_a, iot_b = a.client("iot"), b.client("iot")
        names, group = populate(iot_a, 2000)
        job_id = unique("shared")
        # 6,000 a minute: 100 a second, about 20 s for the fleet.
        iot_b.create_job(
            jobId=job_id,
            targets=[group_arn(group)],
            document='{"op":"x"}',
            jobExecutionsRolloutConfig={"maximumPerMinute": 6000},
        )
        # The fleet: devices take and finish their executions through either instance.
        stop = threading.Event()
        done: set[str] = set()
        errors: list[BaseException] = []

        def devices(first: Server, mine: list[str]) -> None:
            """A quarter of the fleet; devices talking to instance A move to B once A is gone."""
            server = first
            client = server.client("iot-jobs-data")
            while not stop.is_set() and len(done) < len(names):
                for thing in mine:
                    if thing in done or stop.is_set():
                        continue
                    try:
                        got = client.start_next_pending_job_execution(thingName=thing).get("execution")
                        if got:
                            client.update_job_execution(thingName=thing, jobId=job_id, status="SUCCEEDED")
                            done.add(thing)
                    except Exception as e:
                        if server is b:
                            errors.append(e)
                        else:  # A was killed under this device: it reconnects to B
                            server = b
                            client = server.client("iot-jobs-data")
                time.sleep(0.05)

        workers = [
            threading.Thread(target=devices, args=(a if i < 2 else b, names[i::4]), daemon=True) for i in range(4)
        ]
        for w in workers:
            w.start()
        wait_until(lambda: released(iot_b, job_id) >= 300, 60, "the rollout to be under way")
        a.stop(kill=True)
        wait_until(lambda: released(iot_b, job_id) == 2000, 120, "the surviving instance to finish the rollout")
        wait_until(lambda: iot_b.describe_job(jobId=job_id)["job"]["status"] == "COMPLETED", 120, "completion")
        stop.set()
        for w in workers:
            w.join(10)
        assert not errors, errors[:3]
        assert_released_once(iot_b, job_id, names)
        details = iot_b.describe_job(jobId=job_id)["job"]["jobProcessDetails"]
        assert details["numberOfSucceededThings"] == 2000
    finally:
        a.stop()
        b.stop()
