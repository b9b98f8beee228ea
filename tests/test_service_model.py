"""Routing and validation come from botocore's model; check the tricky corners without a server."""

from __future__ import annotations

import pytest

from fleetjobs.api.routes import router
from fleetjobs.domain.errors import InvalidRequest
from fleetjobs.model import error_status
from fleetjobs.model.validation import validate_input


def test_literal_segments_win_over_labels() -> None:
    op, params = router("iot").match("PUT", "/thing-groups/addThingToThingGroup", set())
    assert op.name == "AddThingToThingGroup" and params == {}
    op, params = router("iot").match("POST", "/thing-groups/addThingToThingGroup", set())
    assert op.name == "CreateThingGroup" and params == {"thingGroupName": "addThingToThingGroup"}


def test_shared_paths_resolve_per_service() -> None:
    iot_op, _ = router("iot").match("GET", "/things/t1/jobs/j1", set())
    data_op, _ = router("iot-jobs-data").match("GET", "/things/t1/jobs/j1", set())
    assert iot_op.name == "DescribeJobExecution" and data_op.name == "DescribeJobExecution"
    assert iot_op.service_model.service_name == "iot"
    assert data_op.service_model.service_name == "iot-jobs-data"
    op, _ = router("iot-jobs-data").match("PUT", "/things/t1/jobs/$next", set())
    assert op.name == "StartNextPendingJobExecution"


def test_labels_are_percent_decoded() -> None:
    _, params = router("iot").match("GET", "/things/a%3Ab/jobs", set())
    assert params == {"thingName": "a:b"}


def test_error_status_from_model() -> None:
    assert error_status("iot", "LimitExceededException") == 410
    assert error_status("iot", "ResourceAlreadyExistsException") == 409
    assert error_status("iot-jobs-data", "TerminalStateException") == 410
    assert error_status("iot", "NoSuchThing", 400) == 400


def test_validation_messages_match_aws_wording() -> None:
    shape = router("iot").model.operation_model("CreateJob").input_shape
    with pytest.raises(InvalidRequest) as e:
        validate_input(shape, {"jobId": "bad/id", "targets": [], "description": "x" * 3000})
    msg = e.value.message
    assert msg.startswith("3 validation errors detected: ")
    assert "Value 'bad/id' at 'jobId' failed to satisfy constraint: Member must satisfy regular expression" in msg
    assert "at 'targets' failed to satisfy constraint: Member must have length greater than or equal to 1" in msg
    assert "at 'description' failed to satisfy constraint: Member must have length less than or equal to 2028" in msg


def test_java_posix_classes_are_ascii() -> None:
    shape = router("iot").model.operation_model("CancelJob").input_shape
    validate_input(shape, {"jobId": "j", "reasonCode": "FIRMWARE_BAD_2"})
    with pytest.raises(InvalidRequest):
        validate_input(shape, {"jobId": "j", "reasonCode": "lowercase"})
    with pytest.raises(InvalidRequest):
        validate_input(shape, {"jobId": "j", "reasonCode": "ÄÖ"})


def test_enum_and_range() -> None:
    shape = router("iot").model.operation_model("ListJobs").input_shape
    with pytest.raises(InvalidRequest, match="enum value set"):
        validate_input(shape, {"status": "RUNNING"})
    with pytest.raises(InvalidRequest, match="less than or equal to 250"):
        validate_input(shape, {"maxResults": 251})
