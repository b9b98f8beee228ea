"""Operations of the model that fleetjobs does not serve are answered as an AWS REST-JSON service
answers an operation it has no route for: HTTP 404 with ``x-amzn-ErrorType:
UnknownOperationException`` (smithy's server framework, ``aws-smithy-http-server``'s restJson1
router), not InvalidRequestException, which a client reads as a mistake in its own request.
"""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.harness import Server


def unknown_operation(call: Any, **kwargs: Any) -> ClientError:
    with pytest.raises(ClientError) as e:
        call(**kwargs)
    err = e.value
    assert err.response["Error"]["Code"] == "UnknownOperationException", err.response
    assert err.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    return err


def test_an_unserved_iot_operation_is_an_unknown_operation(iot: Any) -> None:
    err = unknown_operation(iot.list_audit_findings)
    assert "ListAuditFindings" in err.response["Error"]["Message"]
    # Not one of the operation's modelled errors: the client gets no InvalidRequestException.
    assert not isinstance(err, iot.exceptions.InvalidRequestException)


def test_input_is_not_read_for_an_unserved_operation(iot_raw: Any) -> None:
    """Even input the model refuses gets the unknown-operation answer: there is no operation here to
    validate it for."""
    unknown_operation(iot_raw.create_topic_rule, ruleName="bad name!", topicRulePayload={})


def test_unserved_operations_of_the_device_and_data_planes(server: Server) -> None:
    unknown_operation(server.client("iot-jobs-data").start_command_execution, targetArn="x", commandArn="y")
    unknown_operation(server.client("iot-data").list_retained_messages)


def test_the_aws_cli_reports_the_unknown_operation(server: Server) -> None:
    proc = server.cli("iot", "list-audit-findings", check=False)
    assert proc.returncode != 0
    assert "UnknownOperationException" in proc.stderr and "ListAuditFindings" in proc.stderr


def test_served_operations_are_not_affected(iot: Any) -> None:
    assert "endpointAddress" in iot.describe_endpoint(endpointType="iot:Data-ATS")
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_job(jobId="no-such-job-anywhere")
