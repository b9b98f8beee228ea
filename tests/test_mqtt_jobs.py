"""The Jobs MQTT API through a real broker (Mosquitto started by the test) and paho devices.

fleetjobs joins the broker as a client (``FLEETJOBS_MQTT_URL``) and answers on the AWS topics.
"""

from __future__ import annotations

import json

import pytest

from tests.fleet import Fleet, thing_arn
from tests.harness import unique


@pytest.fixture
def iot(mqtt_server):  # type: ignore[no-untyped-def]
    return mqtt_server.client("iot")


def test_whole_workflow_over_mqtt(iot, device_factory) -> None:  # type: ignore[no-untyped-def]
    fleet = Fleet(iot)
    thing = fleet.things(1)[0]
    dev = device_factory(thing)
    job_id = fleet.job([thing_arn(thing)], document=json.dumps({"operation": "install", "v": 2}))

    kind, doc = dev.request("get")
    assert kind == "accepted"
    assert [j["jobId"] for j in doc["queuedJobs"]] == [job_id] and doc["inProgressJobs"] == []
    assert isinstance(doc["timestamp"], int)

    kind, doc = dev.request("$next/get")
    assert kind == "accepted" and doc["execution"]["jobDocument"] == {"operation": "install", "v": 2}

    kind, doc = dev.request("start-next", {"statusDetails": {"step": "download"}, "stepTimeoutInMinutes": 5})
    assert kind == "accepted"
    ex = doc["execution"]
    assert ex["jobId"] == job_id and ex["status"] == "IN_PROGRESS" and ex["versionNumber"] == 2
    assert ex["jobDocument"] == {"operation": "install", "v": 2} and ex["statusDetails"] == {"step": "download"}

    kind, doc = dev.request(f"{job_id}/update", {"status": "IN_PROGRESS", "statusDetails": {"percent": "50"}})
    assert kind == "accepted" and "executionState" not in doc
    dev.drain()
    kind, doc = dev.request(
        f"{job_id}/update",
        {"status": "SUCCEEDED", "expectedVersion": "3", "includeJobExecutionState": True, "includeJobDocument": True},
    )
    assert kind == "accepted"
    assert doc["executionState"] == {"status": "SUCCEEDED", "statusDetails": {"percent": "50"}, "versionNumber": 4}
    assert doc["jobDocument"] == {"operation": "install", "v": 2}
    # The queue became empty: notify-next carries only a timestamp, notify an empty job map.
    _, nxt = dev.wait_for(lambda t, d: t.endswith("/notify-next"))
    assert set(nxt) == {"timestamp"}
    _, notify = dev.wait_for(lambda t, d: t.endswith("/notify"))
    assert notify["jobs"] == {}
    job = iot.describe_job(jobId=job_id)["job"]
    assert job["status"] == "COMPLETED" and job["jobProcessDetails"]["numberOfSucceededThings"] == 1


def test_notify_next_moves_to_the_following_job(iot, device_factory) -> None:  # type: ignore[no-untyped-def]
    fleet = Fleet(iot)
    thing = fleet.things(1)[0]
    dev = device_factory(thing)
    first = fleet.job([thing_arn(thing)])
    second = fleet.job([thing_arn(thing)])
    # Both creations have been announced before the device starts.
    dev.wait_for(lambda t, d: t.endswith("/notify") and len(d["jobs"].get("QUEUED", [])) == 2)
    assert dev.request("start-next")[1]["execution"]["jobId"] == first
    dev.drain()
    kind, _ = dev.request(f"{first}/update", {"status": "FAILED", "statusDetails": {"reason": "disk full"}})
    assert kind == "accepted"
    _, nxt = dev.wait_for(lambda t, d: t.endswith("/notify-next"))
    assert nxt["execution"]["jobId"] == second and nxt["execution"]["status"] == "QUEUED"
    assert "jobDocument" in nxt["execution"]
    # A creation notice still in the drain may publish the list as it was before the update: the
    # list this test waits for is the one after it.
    _, notify = dev.wait_for(lambda t, d: t.endswith("/notify") and "IN_PROGRESS" not in d["jobs"])
    assert [j["jobId"] for j in notify["jobs"]["QUEUED"]] == [second]
    assert iot.describe_job(jobId=first)["job"]["jobProcessDetails"]["numberOfFailedThings"] == 1


def test_rejections_carry_code_token_and_state(iot, device_factory) -> None:  # type: ignore[no-untyped-def]
    fleet = Fleet(iot)
    thing = fleet.things(1)[0]
    dev = device_factory(thing)
    job_id = fleet.job([thing_arn(thing)])

    kind, doc = dev.request(f"{unique('nojob')}/get")
    assert kind == "rejected" and doc["code"] == "ResourceNotFound" and doc["clientToken"]

    kind, doc = dev.request(f"{job_id}/update", {"status": "QUEUED"})
    assert kind == "rejected" and doc["code"] == "InvalidRequest"
    kind, doc = dev.request(f"{job_id}/update", {"status": "IN_PROGRESS", "statusDetails": {"k": 5}})
    assert kind == "rejected" and doc["code"] == "InvalidRequest"
    kind, doc = dev.request(f"{job_id}/update", {"status": "IN_PROGRESS", "expectedVersion": "abc"})
    assert kind == "rejected" and doc["code"] == "InvalidRequest"

    kind, doc = dev.request(f"{job_id}/update", {"status": "IN_PROGRESS", "expectedVersion": 7})
    assert kind == "rejected" and doc["code"] == "VersionMismatch"
    assert doc["executionState"] == {"status": "QUEUED", "versionNumber": 1}

    assert dev.request(f"{job_id}/update", {"status": "SUCCEEDED"})[0] == "accepted"
    kind, doc = dev.request(f"{job_id}/update", {"status": "IN_PROGRESS"})
    assert kind == "rejected" and doc["code"] == "InvalidStateTransition"
    assert doc["executionState"]["status"] == "SUCCEEDED"

    _, doc = dev.raw_response("get", b"{not json")
    assert doc["code"] == "InvalidJson"
    kind, doc = dev.request("nonsense/extra/parts")
    assert kind == "rejected" and doc["code"] == "InvalidTopic"
    # Nothing above changed the execution beyond the one accepted update.
    ex = iot.describe_job_execution(jobId=job_id, thingName=thing)["execution"]
    assert ex["status"] == "SUCCEEDED" and ex["versionNumber"] == 2
    # The gateway is still serving.
    assert dev.request("get")[0] == "accepted"


def test_start_next_with_nothing_pending(device_factory) -> None:  # type: ignore[no-untyped-def]
    dev = device_factory(unique("idle"))
    kind, doc = dev.request("start-next")
    assert kind == "accepted" and "execution" not in doc
    kind, doc = dev.request("$next/get")
    assert kind == "rejected" and doc["code"] == "ResourceNotFound"


def test_control_plane_changes_notify_the_device(iot, device_factory) -> None:  # type: ignore[no-untyped-def]
    fleet = Fleet(iot)
    thing = fleet.things(1)[0]
    dev = device_factory(thing)
    # A new job: notify lists it, notify-next carries it with its document.
    job_id = fleet.job([thing_arn(thing)], document=json.dumps({"op": "reboot"}))
    _, nxt = dev.wait_for(lambda t, d: t.endswith("/notify-next"))
    assert nxt["execution"]["jobId"] == job_id and nxt["execution"]["jobDocument"] == {"op": "reboot"}
    _, notify = dev.wait_for(lambda t, d: t.endswith("/notify"))
    assert [j["jobId"] for j in notify["jobs"]["QUEUED"]] == [job_id]
    # A second job queues behind it: notify changes, notify-next does not.
    second = fleet.job([thing_arn(thing)])
    _, notify = dev.wait_for(lambda t, d: t.endswith("/notify"))
    assert [j["jobId"] for j in notify["jobs"]["QUEUED"]] == [job_id, second]
    with pytest.raises(TimeoutError):
        dev.wait_for(lambda t, d: t.endswith("/notify-next"), timeout=1.5)
    # Canceling the first job moves the device on to the second.
    iot.cancel_job(jobId=job_id)
    _, nxt = dev.wait_for(lambda t, d: t.endswith("/notify-next") and d.get("execution", {}).get("jobId") == second)
    assert nxt["execution"]["status"] == "QUEUED"
    # Canceling the last execution empties the queue.
    iot.cancel_job_execution(jobId=second, thingName=thing)
    dev.wait_for(lambda t, d: t.endswith("/notify-next") and "execution" not in d)
    _, notify = dev.wait_for(lambda t, d: t.endswith("/notify") and d["jobs"] == {})


def test_malformed_requests_never_change_state_or_stop_the_gateway(iot, device_factory) -> None:  # type: ignore[no-untyped-def]
    fleet = Fleet(iot)
    thing = fleet.things(1)[0]
    dev = device_factory(thing)
    job_id = fleet.job([thing_arn(thing)])
    _, doc = dev.raw_response(f"{job_id}/update", b"[1, 2, 3]")
    assert doc["code"] == "InvalidRequest"
    _, doc = dev.raw_response(f"{job_id}/update", b"\xff\xfe not utf-8")
    assert doc["code"] == "InvalidJson"
    _, doc = dev.raw_response(f"{job_id}/update", b'{"status": "SUCCEEDED", "pad": "' + b"x" * 140_000 + b'"}')
    assert doc["code"] == "InvalidRequest"
    wrong_types = [
        {"status": "IN_PROGRESS", "statusDetails": ["a"]},
        {"status": "IN_PROGRESS", "stepTimeoutInMinutes": "soon"},
        {"status": "IN_PROGRESS", "includeJobDocument": "yes"},
        {"status": 7},
        {"status": "IN_PROGRESS", "statusDetails": {"k": "v" * 1025}},
        {"status": "IN_PROGRESS", "statusDetails": {f"k{i}": "v" for i in range(11)}},
    ]
    for payload in wrong_types:
        kind, doc = dev.request(f"{job_id}/update", payload)
        assert kind == "rejected" and doc["code"] == "InvalidRequest", payload
    ex = iot.describe_job_execution(jobId=job_id, thingName=thing)["execution"]
    assert ex["status"] == "QUEUED" and ex["versionNumber"] == 1
    assert dev.request(f"{job_id}/update", {"status": "SUCCEEDED"})[0] == "accepted"


def test_a_redelivered_request_gets_the_same_answer_and_runs_once(iot, device_factory) -> None:  # type: ignore[no-untyped-def]
    """What the broker does when fleetjobs died after handling a request but before acknowledging it."""
    fleet = Fleet(iot)
    thing = fleet.things(1)[0]
    dev = device_factory(thing)
    job_id = fleet.job([thing_arn(thing)])
    body = json.dumps({"status": "SUCCEEDED", "includeJobExecutionState": True, "clientToken": "t-1"}).encode()
    first = dev.raw_response(f"{job_id}/update", body)
    again = dev.raw_response(f"{job_id}/update", body)
    assert first[0].endswith("/accepted") and again[0].endswith("/accepted")
    assert again[1]["executionState"] == first[1]["executionState"] == {"status": "SUCCEEDED", "versionNumber": 2}
    assert iot.describe_job_execution(jobId=job_id, thingName=thing)["execution"]["versionNumber"] == 2
    # A different request that reuses the token is a new request, judged on its own.
    other = json.dumps({"status": "IN_PROGRESS", "clientToken": "t-1"}).encode()
    _, doc = dev.raw_response(f"{job_id}/update", other)
    assert doc["code"] == "InvalidStateTransition"
