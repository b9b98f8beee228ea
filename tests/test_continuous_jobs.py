"""Continuous jobs follow group membership; snapshot jobs do not (JOBS_API.md §4.11)."""

from __future__ import annotations

import pytest

from tests.fleet import Fleet, group_arn, thing_arn
from tests.mqtt_device import Device


def statuses(iot, job_id: str) -> dict[str, list[tuple[int, str]]]:  # type: ignore[no-untyped-def]
    out: dict[str, list[tuple[int, str]]] = {}
    for page in iot.get_paginator("list_job_executions_for_job").paginate(jobId=job_id):
        for s in page["executionSummaries"]:
            thing = s["thingArn"].rsplit("/", 1)[1]
            out.setdefault(thing, []).append(
                (s["jobExecutionSummary"]["executionNumber"], s["jobExecutionSummary"]["status"])
            )
    return {t: sorted(v) for t, v in out.items()}


def continuous_job(fleet: Fleet, targets: list[str], selection: str = "CONTINUOUS") -> str:
    job_id = fleet.job(targets, targetSelection=selection)
    return job_id


@pytest.fixture
def fleet(iot):  # type: ignore[no-untyped-def]
    return Fleet(iot)


def test_a_thing_joining_a_nested_target_group_gets_an_execution(iot, fleet) -> None:  # type: ignore[no-untyped-def]
    early, late = fleet.things(2)
    parent = fleet.group("parent", [early])
    child = fleet.group("child", parent=parent)
    job = continuous_job(fleet, [group_arn(parent)])
    assert statuses(iot, job) == {early: [(1, "QUEUED")]}
    iot.add_thing_to_thing_group(thingGroupName=child, thingName=late)
    assert statuses(iot, job) == {early: [(1, "QUEUED")], late: [(1, "QUEUED")]}
    details = iot.describe_job(jobId=job)["job"]["jobProcessDetails"]
    assert details["numberOfQueuedThings"] == 2


def test_leaving_every_target_removes_and_rejoining_requeues(iot, fleet) -> None:  # type: ignore[no-untyped-def]
    (thing,) = fleet.things(1)
    a = fleet.group("a", [thing])
    b = fleet.group("b", [thing])
    job = continuous_job(fleet, [group_arn(a), group_arn(b)])
    # Still reached through b: nothing changes.
    iot.remove_thing_from_thing_group(thingGroupName=a, thingName=thing)
    assert statuses(iot, job) == {thing: [(1, "QUEUED")]}
    iot.remove_thing_from_thing_group(thingGroupName=b, thingName=thing)
    assert statuses(iot, job) == {thing: [(1, "REMOVED")]}
    details = iot.describe_job(jobId=job)["job"]["jobProcessDetails"]
    assert details["numberOfRemovedThings"] == 1 and details["numberOfQueuedThings"] == 0
    assert iot.describe_job(jobId=job)["job"]["status"] == "IN_PROGRESS"  # continuous: never completes
    iot.add_thing_to_thing_group(thingGroupName=a, thingName=thing)
    assert statuses(iot, job) == {thing: [(1, "REMOVED"), (2, "QUEUED")]}


def test_a_thing_that_ran_the_job_is_not_run_again_on_rejoining(iot, fleet, server) -> None:  # type: ignore[no-untyped-def]
    (thing,) = fleet.things(1)
    g = fleet.group("g", [thing])
    other = fleet.group("other")
    job = continuous_job(fleet, [group_arn(g), group_arn(other)])
    device = server.client("iot-jobs-data")
    device.update_job_execution(thingName=thing, jobId=job, status="SUCCEEDED")
    iot.add_thing_to_thing_group(thingGroupName=other, thingName=thing)
    assert statuses(iot, job) == {thing: [(1, "SUCCEEDED")]}


def test_a_direct_thing_target_is_not_removed_by_leaving_a_group(iot, fleet) -> None:  # type: ignore[no-untyped-def]
    (thing,) = fleet.things(1)
    g = fleet.group("g", [thing])
    job = continuous_job(fleet, [group_arn(g), thing_arn(thing)])
    iot.remove_thing_from_thing_group(thingGroupName=g, thingName=thing)
    assert statuses(iot, job) == {thing: [(1, "QUEUED")]}


def test_snapshot_jobs_ignore_later_members(iot, fleet) -> None:  # type: ignore[no-untyped-def]
    first, later = fleet.things(2)
    g = fleet.group("g", [first])
    job = continuous_job(fleet, [group_arn(g)], selection="SNAPSHOT")
    iot.add_thing_to_thing_group(thingGroupName=g, thingName=later)
    iot.remove_thing_from_thing_group(thingGroupName=g, thingName=first)
    assert statuses(iot, job) == {first: [(1, "QUEUED")]}


def test_deleting_the_group_or_the_thing_removes_executions(iot, fleet) -> None:  # type: ignore[no-untyped-def]
    one, two = fleet.things(2)
    g = fleet.group("g", [one, two])
    job = continuous_job(fleet, [group_arn(g)])
    iot.delete_thing(thingName=two)
    assert statuses(iot, job)[two] == [(1, "REMOVED")]
    iot.delete_thing_group(thingGroupName=g)
    assert statuses(iot, job)[one] == [(1, "REMOVED")]


def test_a_device_joining_hears_of_its_new_job_over_mqtt(mqtt_server) -> None:  # type: ignore[no-untyped-def]
    iot = mqtt_server.client("iot")
    fleet = Fleet(iot)
    (thing,) = fleet.things(1)
    g = fleet.group("g")
    job = continuous_job(fleet, [group_arn(g)])
    device = Device("127.0.0.1", mqtt_server.mqtt_port, thing)
    try:
        iot.add_thing_to_thing_group(thingGroupName=g, thingName=thing)
        _, doc = device.wait_for(lambda t, d: t.endswith("/notify-next") and "execution" in d)
        assert doc["execution"]["jobId"] == job and doc["execution"]["status"] == "QUEUED"
        iot.remove_thing_from_thing_group(thingGroupName=g, thingName=thing)
        _, doc = device.wait_for(lambda t, d: t.endswith("/notify-next") and "execution" not in d)
        assert set(doc) == {"timestamp"}
    finally:
        device.close()
