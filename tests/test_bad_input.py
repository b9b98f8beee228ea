"""Bad input gets the documented AWS error, never InternalError or a 5xx, and changes nothing
(issue 12's audit cases that fleetjobs answered wrongly)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.fleet import Fleet, thing_arn
from tests.test_auth import send, sign

TOO_BIG = 99999999999999999999  # above int64
DEEP = 1000


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def token(raw_json: str) -> str:
    return base64.urlsafe_b64encode(raw_json.encode()).decode().rstrip("=")


CRAFTED_TOKENS = [
    token('{"k":"x"}'),
    token('{"k":[1]}'),
    token('{"k":true}'),
    token('{"k":' + str(2**70) + "}"),
    token('{"k":1e400}'),
    token('{"k":["x",1]}'),
]


def code_of(call: Any, **kwargs: Any) -> tuple[int, str]:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    return info.value.response["ResponseMetadata"]["HTTPStatusCode"], info.value.response["Error"]["Code"]


# -- MQTT ---------------------------------------------------------------------------------------------


def test_mqtt_bad_numbers_and_nesting_are_invalid_requests(mqtt_server, device_factory) -> None:  # type: ignore[no-untyped-def]
    iot = mqtt_server.client("iot")
    fleet = Fleet(iot)
    (thing,) = fleet.things(1)
    job_id = fleet.job([thing_arn(thing)])
    dev = device_factory(thing)
    for version in ("²", "①", "٣"):  # digits to str.isdigit, not to the API
        kind, doc = dev.request(f"{job_id}/update", {"status": "IN_PROGRESS", "expectedVersion": version})
        assert (kind, doc["code"]) == ("rejected", "InvalidRequest"), version
    kind, doc = dev.request(f"{job_id}/get", {"executionNumber": TOO_BIG})
    assert (kind, doc["code"]) == ("rejected", "InvalidRequest")
    kind, doc = dev.request(f"{job_id}/update", {"status": "IN_PROGRESS", "executionNumber": TOO_BIG})
    assert (kind, doc["code"]) == ("rejected", "InvalidRequest")
    kind, doc = dev.raw_response("get", nested(DEEP).encode())
    assert (kind.rsplit("/", 1)[1], doc["code"]) == ("rejected", "InvalidJson")
    execution = iot.describe_job_execution(jobId=job_id, thingName=thing)["execution"]
    assert (execution["status"], execution["versionNumber"]) == ("QUEUED", 1)


# -- HTTPS --------------------------------------------------------------------------------------------


def test_https_execution_number_above_int64_is_an_invalid_request(server) -> None:  # type: ignore[no-untyped-def]
    iot = server.client("iot")
    fleet = Fleet(iot)
    (thing,) = fleet.things(1)
    job_id = fleet.job([thing_arn(thing)])
    data = server.client("iot-jobs-data", validate=False)
    status, code = code_of(data.describe_job_execution, jobId=job_id, thingName=thing, executionNumber=TOO_BIG)
    assert (status, code) == (400, "InvalidRequestException")
    control = server.client("iot", validate=False)
    status, code = code_of(control.describe_job_execution, jobId=job_id, thingName=thing, executionNumber=TOO_BIG)
    assert (status, code) == (400, "InvalidRequestException")


def test_https_body_nested_too_deep_is_an_invalid_request(server) -> None:  # type: ignore[no-untyped-def]
    body = ('{"thingName":"deep","attributePayload":' + nested(DEEP) + "}").encode()
    reply = send(server, "POST", "/things/deep", body, sign(server, "POST", "/things/deep", body))
    assert (reply.status, reply.error_type) == (400, "InvalidRequestException")
    status, code = code_of(server.client("iot").describe_thing, thingName="deep")
    assert (status, code) == (404, "ResourceNotFoundException")


@pytest.mark.parametrize("crafted", CRAFTED_TOKENS)
def test_crafted_next_tokens_are_invalid_requests(server, crafted: str) -> None:  # type: ignore[no-untyped-def]
    iot = server.client("iot")
    fleet = Fleet(iot)
    (thing,) = fleet.things(1)
    job_id = fleet.job([thing_arn(thing)])
    calls = [
        (iot.list_jobs, {}),
        (iot.list_job_executions_for_job, {"jobId": job_id}),
        (iot.list_job_executions_for_thing, {"thingName": thing}),
        (iot.list_job_templates, {}),
    ]
    for call, kwargs in calls:
        status, code = code_of(call, nextToken=crafted, **kwargs)
        assert (status, code) == (400, "InvalidRequestException"), (call.__name__, json.dumps(crafted))
