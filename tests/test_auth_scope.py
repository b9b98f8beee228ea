"""SigV4 details AWS enforces: the signature covers ``Host``; the credential scope names this region."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.exceptions import ClientError

from tests.harness import ACCESS_KEY_ID, SECRET_ACCESS_KEY, Server, unique
from tests.test_auth import assert_no_thing, assert_refused, create_thing_request, send, sign


class LeavesOutHost(SigV4Auth):
    """A signer that does not sign the Host header (so Host could be changed in flight)."""

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        header_map = super().headers_to_sign(request)
        del header_map["host"]
        return header_map


def test_a_signature_that_does_not_cover_host_is_refused(server: Server, iot: Any) -> None:
    name = unique("auth")
    method, path, body = create_thing_request(name)
    headers = sign(server, method, path, body, signer=LeavesOutHost)
    assert "host" not in headers["Authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    reply = send(server, method, path, body, headers)
    assert_refused(reply, "InvalidSignatureException")
    assert "Host" in reply.body["message"]
    assert_no_thing(iot, name)


def test_a_credential_scoped_to_another_region_is_refused(server: Server, iot: Any) -> None:
    name = unique("auth")
    other = boto3.client(
        "iot",
        endpoint_url=server.endpoint,
        region_name="eu-west-3",
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )
    try:
        other.create_thing(thingName=name)
    except ClientError as e:
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert e.response["Error"]["Code"] == "InvalidSignatureException"
        assert e.response["Error"]["Message"] == "Credential should be scoped to a valid region, not 'eu-west-3'."
    else:
        raise AssertionError("a request signed for eu-west-3 was served")
    assert_no_thing(iot, name)
    iot.create_thing(thingName=name)  # the same key in the server's region is fine
    assert iot.describe_thing(thingName=name)["thingName"] == name
