"""Several ``fleetjobs serve`` processes over one database give one consistent answer.

No process keeps truth in memory: what one acknowledges, the other serves at once, and a race
between them on the same resource has exactly one winner.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.fleet import DOC, Fleet, thing_arn
from tests.harness import Server, unique


@pytest.fixture(scope="module")
def pair(backends):  # type: ignore[no-untyped-def]
    first = backends.server().start()
    second = Server(data_dir=first.data_dir, database_url=first.database_url).start()
    backends._servers.append(second)
    return first, second


def test_writes_on_one_instance_are_read_on_the_other(pair) -> None:  # type: ignore[no-untyped-def]
    a, b = (s.client("iot") for s in pair)
    fleet = Fleet(a)
    things = fleet.things(3)
    job_id = fleet.job([thing_arn(t) for t in things])
    assert b.describe_job(jobId=job_id)["job"]["jobProcessDetails"]["numberOfQueuedThings"] == 3
    b.cancel_job_execution(jobId=job_id, thingName=things[0])
    assert a.describe_job_execution(jobId=job_id, thingName=things[0])["execution"]["status"] == "CANCELED"
    assert a.describe_job(jobId=job_id)["job"]["jobProcessDetails"]["numberOfCanceledThings"] == 1


def test_racing_creates_of_one_job_id_have_one_winner(pair) -> None:  # type: ignore[no-untyped-def]
    clients = [s.client("iot") for s in pair]
    things = Fleet(clients[0]).things(2)
    for _ in range(5):
        job_id = unique("race")

        def create(i: int, job_id: str = job_id) -> str:
            c = clients[i % 2]
            try:
                c.create_job(jobId=job_id, targets=[thing_arn(things[i % 2])], document=DOC)
                return "ok"
            except c.exceptions.ResourceAlreadyExistsException:
                return "exists"

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(create, range(8)))
        assert results.count("ok") == 1, results
        details = clients[1].describe_job(jobId=job_id)["job"]["jobProcessDetails"]
        assert details["numberOfQueuedThings"] == 1


def test_racing_cancels_of_one_execution_have_one_winner(pair) -> None:  # type: ignore[no-untyped-def]
    clients = [s.client("iot") for s in pair]
    fleet = Fleet(clients[0])
    things = fleet.things(1)
    job_id = fleet.job([thing_arn(things[0])])

    def cancel(i: int) -> str:
        c = clients[i % 2]
        try:
            c.cancel_job_execution(jobId=job_id, thingName=things[0], expectedVersion=1)
            return "ok"
        except (c.exceptions.VersionConflictException, c.exceptions.InvalidStateTransitionException):
            return "lost"

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(cancel, range(8)))
    assert results.count("ok") == 1, results
    job = clients[1].describe_job(jobId=job_id)["job"]
    assert job["jobProcessDetails"]["numberOfCanceledThings"] == 1
    assert job["jobProcessDetails"]["numberOfQueuedThings"] == 0
    assert job["status"] == "COMPLETED"
