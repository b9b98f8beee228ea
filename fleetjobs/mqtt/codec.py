"""MQTT payloads of the Jobs API: requests in, accepted / rejected / notifications out.

Requests are validated with botocore's ``iot-jobs-data`` model (the HTTPS twin of each MQTT
request), so both device APIs refuse exactly the same inputs with the same messages.
"""

from __future__ import annotations

import hashlib
from typing import Any

from fleetjobs.domain import fastjson
from fleetjobs.domain.errors import InvalidRequest, ServiceError
from fleetjobs.model import service_model
from fleetjobs.model.validation import validate_input

# MQTT rejection codes for the service layer's errors (JOBS_API.md §5.4).
REJECTION_CODE = {
    "InvalidRequestException": "InvalidRequest",
    "ResourceNotFoundException": "ResourceNotFound",
    "InvalidStateTransitionException": "InvalidStateTransition",
    "VersionConflictException": "VersionMismatch",
    "ThrottlingException": "RequestThrottled",
    "TerminalStateException": "TerminalStateReached",
}
# Members of each request payload (the rest, e.g. clientToken, is not passed to the service).
PAYLOAD_MEMBERS = {
    "GetPendingJobExecutions": (),
    "StartNextPendingJobExecution": ("statusDetails", "stepTimeoutInMinutes"),
    "DescribeJobExecution": ("executionNumber", "includeJobDocument"),
    "UpdateJobExecution": (
        "status",
        "statusDetails",
        "expectedVersion",
        "executionNumber",
        "includeJobExecutionState",
        "includeJobDocument",
        "stepTimeoutInMinutes",
    ),
}


class InvalidJson(Exception):
    pass


# AWS IoT caps an MQTT message at 128 KiB.
MAX_PAYLOAD = 128 * 1024


def decode(payload: bytes) -> dict[str, Any]:
    """The request document; InvalidJson for bytes that are not UTF-8 JSON, InvalidRequest for JSON
    that is not an object or a payload over the size limit."""
    if len(payload) > MAX_PAYLOAD:
        raise InvalidRequest(f"The payload is {len(payload)} bytes; the limit is {MAX_PAYLOAD}")
    try:
        doc = fastjson.loads(payload.decode("utf-8")) if payload.strip() else {}
    except (UnicodeDecodeError, ValueError):
        raise InvalidJson("The payload is not valid UTF-8 JSON") from None
    except RecursionError:  # nested deeper than the parser goes
        raise InvalidJson("The payload is nested too deeply") from None
    if not isinstance(doc, dict):
        raise InvalidRequest("The payload must be a JSON object")
    return doc


def request_key(topic: str, payload: bytes) -> str:
    """Identifies one request: the same topic and the same bytes (clientToken included)."""
    return hashlib.sha256(topic.encode() + b"\n" + payload).hexdigest()


def client_token(doc: dict[str, Any]) -> str | None:
    token = doc.get("clientToken")
    return token if isinstance(token, str) else None


def build_request(operation: str, thing: str, job_id: str | None, doc: dict[str, Any]) -> dict[str, Any]:
    """The service-layer request for an MQTT payload; unknown members are ignored (as AWS does)."""
    req: dict[str, Any] = {"thingName": thing}
    if job_id is not None:
        req["jobId"] = job_id
    for member in PAYLOAD_MEMBERS[operation]:
        if member in doc and doc[member] is not None:
            req[member] = doc[member]
    # Devices (Greengrass among them) send expectedVersion as a numeric string.
    expected = req.get("expectedVersion")
    if isinstance(expected, str):
        if not (expected.isascii() and expected.isdigit()):  # "²" and "①" are digits to str.isdigit
            raise InvalidRequest(f"expectedVersion must be a number, not '{expected}'")
        req["expectedVersion"] = int(expected)
    shape = service_model("iot-jobs-data").operation_model(operation).input_shape
    return validate_input(shape, req)


def document_object(document: str | None) -> Any:
    if document is None:
        return None
    try:
        return fastjson.loads(document)
    except ValueError:
        return document


def accepted(result: dict[str, Any], token: str | None, now: float) -> bytes:
    doc = dict(result)
    execution = doc.get("execution")
    if isinstance(execution, dict) and "jobDocument" in execution:
        doc["execution"] = {**execution, "jobDocument": document_object(execution["jobDocument"])}
    if "jobDocument" in doc:
        doc["jobDocument"] = document_object(doc["jobDocument"])
    doc["timestamp"] = int(now)
    if token is not None:
        doc["clientToken"] = token
    return fastjson.dumps(doc)


def rejected(code: str, message: str, token: str | None, now: float, state: dict[str, Any] | None = None) -> bytes:
    doc: dict[str, Any] = {"code": code, "message": message, "timestamp": int(now)}
    if token is not None:
        doc["clientToken"] = token
    if state is not None and code in ("InvalidStateTransition", "VersionMismatch"):
        doc["executionState"] = state
    return fastjson.dumps(doc)


def rejection_for(error: ServiceError) -> tuple[str, dict[str, Any] | None]:
    return REJECTION_CODE.get(error.code, "InternalError"), error.extra.get("executionState")
