"""Repeated device requests (JOBS_API.md §5): a redelivered request is answered once, and a later
request with the same bytes is handled afresh, as AWS does (it only echoes the clientToken).

The stored answer of a change is valid only while the execution it addressed is still the one the
request would address, at the version that answer produced.  Firmware that reuses a clientToken (a
constant, or a counter that restarts) must never be told a change was applied when it was not.
"""

from __future__ import annotations

from typing import Any

from tests.fleet import DOC, Fleet, thing_arn

RETRY_ON_FAILURE = {"criteriaList": [{"failureType": "FAILED", "numberOfRetries": 1}]}


def execution(iot: Any, job_id: str, thing: str, number: int | None = None) -> dict[str, Any]:
    extra = {"executionNumber": number} if number is not None else {}
    return iot.describe_job_execution(jobId=job_id, thingName=thing, **extra)["execution"]


def test_a_reused_client_token_after_the_job_finished_gets_the_next_job(mqtt_server, device_factory) -> None:  # type: ignore[no-untyped-def]
    iot = mqtt_server.client("iot")
    fleet = Fleet(iot)
    (thing,) = fleet.things(1)
    first = fleet.job([thing_arn(thing)])
    second = fleet.job([thing_arn(thing)])
    dev = device_factory(thing)
    kind, doc = dev.request("start-next", {}, token="constant")
    assert kind == "accepted" and doc["execution"]["jobId"] == first
    kind, _ = dev.request(f"{first}/update", {"status": "SUCCEEDED"}, token="constant")
    assert kind == "accepted"
    # The same bytes again: the first answer (job 1 IN_PROGRESS) would be a lie now.
    kind, doc = dev.request("start-next", {}, token="constant")
    assert kind == "accepted" and doc["execution"]["jobId"] == second
    assert doc["execution"]["status"] == "IN_PROGRESS"
    assert execution(iot, first, thing)["status"] == "SUCCEEDED"
    assert execution(iot, second, thing)["status"] == "IN_PROGRESS"


def test_a_failed_update_on_a_retried_execution_applies_to_the_current_one(mqtt_server, device_factory) -> None:  # type: ignore[no-untyped-def]
    iot = mqtt_server.client("iot")
    fleet = Fleet(iot)
    (thing,) = fleet.things(1)
    job_id = fleet.job([thing_arn(thing)], document=DOC, jobExecutionsRetryConfig=RETRY_ON_FAILURE)
    dev = device_factory(thing)
    assert dev.request("start-next", {})[1]["execution"]["executionNumber"] == 1
    kind, _ = dev.request(f"{job_id}/update", {"status": "FAILED"}, token="k")
    assert kind == "accepted"
    retry = execution(iot, job_id, thing)
    assert (retry["executionNumber"], retry["status"]) == (2, "QUEUED")
    assert dev.request("start-next", {})[1]["execution"]["executionNumber"] == 2
    # Execution #2 fails the same way, and the firmware sends the very same bytes.
    kind, _ = dev.request(f"{job_id}/update", {"status": "FAILED"}, token="k")
    assert kind == "accepted"
    assert execution(iot, job_id, thing, 2)["status"] == "FAILED"
    assert execution(iot, job_id, thing, 1)["status"] == "FAILED"


def test_a_repeated_request_of_an_applied_change_is_answered_once(mqtt_server, device_factory) -> None:  # type: ignore[no-untyped-def]
    """The same bytes twice (a broker's redelivery, or a device retrying after a lost answer)
    while nothing else changed: both are accepted, the change is applied once."""
    iot = mqtt_server.client("iot")
    fleet = Fleet(iot)
    (thing,) = fleet.things(1)
    job_id = fleet.job([thing_arn(thing)])
    dev = device_factory(thing)
    assert dev.request("start-next", {})[0] == "accepted"
    progress = {"status": "IN_PROGRESS", "statusDetails": {"percent": "50"}, "includeJobExecutionState": True}
    first = dev.request(f"{job_id}/update", progress, token="p")
    again = dev.request(f"{job_id}/update", progress, token="p")
    assert first[0] == again[0] == "accepted"
    assert first[1]["executionState"] == again[1]["executionState"]
    assert execution(iot, job_id, thing)["versionNumber"] == first[1]["executionState"]["versionNumber"] == 3
    # Once something else changed the execution, the same bytes are a new request.
    assert dev.request(f"{job_id}/update", {"status": "IN_PROGRESS", "statusDetails": {"percent": "60"}})[0] == (
        "accepted"
    )
    third = dev.request(f"{job_id}/update", progress, token="p")
    assert third[0] == "accepted" and third[1]["executionState"]["versionNumber"] == 5
    assert execution(iot, job_id, thing)["statusDetails"] == {"detailsMap": {"percent": "50"}}
