"""SigV4 authentication over real HTTP: signed requests work, everything else is refused unchanged.

boto3 cases go through botocore end to end. The cases boto3 cannot produce (a stale date, a body
altered after signing, another service's signing name, another SDK's choice of signed headers)
are signed here with botocore's own ``SigV4Auth`` and sent with ``http.client``, so the status
code and the ``x-amzn-ErrorType`` header are checked as they travel on the wire.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import botocore
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.fleet import DOC, thing_arn
from tests.harness import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, Server, unique

AUTH_ERRORS = {
    "MissingAuthenticationTokenException",
    "InvalidSignatureException",
    "UnrecognizedClientException",
    "IncompleteSignatureException",
    "AccessDeniedException",
}

# How a boto3 client can be wrong, and the AWS error each mistake earns (all HTTP 403).
BOTO3_REFUSALS: dict[str, tuple[dict[str, Any], str]] = {
    "unsigned": ({"config": Config(signature_version=botocore.UNSIGNED)}, "MissingAuthenticationTokenException"),
    "wrong-secret": ({"secret_access_key": "not-the-secret-" + "x" * 25}, "InvalidSignatureException"),
    "unknown-access-key": ({"access_key_id": "AKIDNOBODYKNOWS00000"}, "UnrecognizedClientException"),
}


# --- raw HTTP helpers -------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    error_type: str | None
    body: dict[str, Any]


class SignsEveryHeader(SigV4Auth):
    """Signs ``User-Agent`` as well, as the AWS SDK for Java v1 does (botocore leaves it out)."""

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        header_map = HTTPHeaders()
        for name, value in request.headers.items():
            header_map[name.lower()] = value
        return header_map


def sign(
    server: Server,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    service: str = "iot",
    secret: str = SECRET_ACCESS_KEY,
    signed_at: dt.datetime | None = None,
    headers: dict[str, str] | None = None,
    signer: type[SigV4Auth] = SigV4Auth,
) -> dict[str, str]:
    """The headers botocore's SigV4 signer puts on this request (with an optional signing time)."""
    request = AWSRequest(
        method=method,
        url=server.endpoint + path,
        data=body,
        headers={"Host": f"127.0.0.1:{server.port}", "Content-Type": "application/json", **(headers or {})},
    )
    auth = signer(Credentials(ACCESS_KEY_ID, secret), service, REGION)
    if signed_at is None:
        auth.add_auth(request)
    else:
        with mock.patch("botocore.auth.get_current_datetime", return_value=signed_at):
            auth.add_auth(request)
    return dict(request.headers.items())


def send(server: Server, method: str, path: str, body: bytes, headers: dict[str, str]) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        return Reply(resp.status, resp.getheader("x-amzn-ErrorType"), json.loads(raw) if raw else {})
    finally:
        conn.close()


def create_thing_request(name: str) -> tuple[str, str, bytes]:
    return "POST", f"/things/{name}", json.dumps({"attributePayload": {"attributes": {"k": "v"}}}).encode()


def create_job_request(job_id: str, thing: str) -> tuple[str, str, bytes]:
    return "PUT", f"/jobs/{job_id}", json.dumps({"targets": [thing_arn(thing)], "document": DOC}).encode()


def assert_refused(reply: Reply, code: str, status: int = 403) -> None:
    assert (reply.status, reply.error_type) == (status, code), reply
    assert reply.body.get("message"), reply
    assert set(reply.body) <= {"message", "code", "__type"}, reply  # an error, never data


def assert_no_thing(iot: Any, name: str) -> None:
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing(thingName=name)


def assert_no_job(iot: Any, job_id: str, thing: str) -> None:
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_job(jobId=job_id)
    assert iot.list_job_executions_for_thing(thingName=thing)["executionSummaries"] == []


def stale() -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(minutes=20)


# --- boto3 --------------------------------------------------------------------------------------


def test_correctly_signed_boto3_requests_are_served(server: Server, iot: Any) -> None:
    out = iot.list_jobs()
    assert out["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert out["jobs"] == [] or all("jobArn" in j for j in out["jobs"])


def test_correctly_signed_write_is_applied_and_read_back(iot: Any) -> None:
    name = unique("auth")
    iot.create_thing(thingName=name)
    assert iot.describe_thing(thingName=name)["thingName"] == name


def aws_cli(server: Server, *args: str, secret: str = SECRET_ACCESS_KEY) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_MAX_ATTEMPTS": "1",
    }
    aws = str(Path(sys.executable).with_name("aws"))
    cmd = [aws, *args, "--endpoint-url", server.endpoint, "--output", "json"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)


def test_aws_cli_signed_requests_work_and_a_wrong_secret_is_refused(server: Server, iot: Any) -> None:
    ok = aws_cli(server, "iot", "list-jobs")
    assert ok.returncode == 0, ok.stderr
    assert "jobs" in json.loads(ok.stdout)
    name = unique("auth")
    bad = aws_cli(server, "iot", "create-thing", "--thing-name", name, secret="wrong-" + "z" * 34)
    assert bad.returncode != 0
    assert "InvalidSignatureException" in bad.stderr
    assert_no_thing(iot, name)


def test_device_api_signed_for_iot_jobs_data_is_authenticated(server: Server) -> None:
    jobs_data = server.client("iot-jobs-data")
    try:
        jobs_data.get_pending_job_executions(thingName=unique("nobody"))
    except ClientError as e:  # the service may say the thing is unknown; it must not be an auth refusal
        assert e.response["Error"]["Code"] not in AUTH_ERRORS, e.response
    unsigned = server.client("iot-jobs-data", config=Config(signature_version=botocore.UNSIGNED))
    with pytest.raises(ClientError) as refused:
        unsigned.get_pending_job_executions(thingName=unique("nobody"))
    assert refused.value.response["Error"]["Code"] == "MissingAuthenticationTokenException"
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


@pytest.mark.parametrize("case", list(BOTO3_REFUSALS))
def test_boto3_read_is_refused_with_the_aws_error(server: Server, case: str) -> None:
    kwargs, code = BOTO3_REFUSALS[case]
    bad = server.client("iot", **kwargs)
    with pytest.raises(ClientError) as e:
        bad.list_jobs()
    assert e.value.response["Error"]["Code"] == code
    assert e.value.response["Error"]["Message"]
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert "jobs" not in e.value.response


@pytest.mark.parametrize("case", list(BOTO3_REFUSALS))
def test_refused_boto3_create_thing_creates_nothing(server: Server, iot: Any, case: str) -> None:
    kwargs, code = BOTO3_REFUSALS[case]
    bad = server.client("iot", **kwargs)
    name = unique("auth")
    with pytest.raises(ClientError) as e:
        bad.create_thing(thingName=name)
    assert e.value.response["Error"]["Code"] == code
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert_no_thing(iot, name)


@pytest.mark.parametrize("case", list(BOTO3_REFUSALS))
def test_refused_boto3_create_job_creates_nothing(server: Server, iot: Any, case: str) -> None:
    kwargs, code = BOTO3_REFUSALS[case]
    thing = unique("auth")
    iot.create_thing(thingName=thing)
    bad = server.client("iot", **kwargs)
    job_id = unique("job")
    with pytest.raises(ClientError) as e:
        bad.create_job(jobId=job_id, targets=[thing_arn(thing)], document=DOC)
    assert e.value.response["Error"]["Code"] == code
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert_no_job(iot, job_id, thing)


# --- raw HTTP -----------------------------------------------------------------------------------


def test_raw_request_signed_now_is_served(server: Server, iot: Any) -> None:
    """The control for the raw cases below: the same helper, unaltered, is accepted."""
    name = unique("auth")
    method, path, body = create_thing_request(name)
    reply = send(server, method, path, body, sign(server, method, path, body))
    assert reply.status == 200, reply
    assert reply.error_type is None
    assert reply.body["thingName"] == name
    assert iot.describe_thing(thingName=name)["attributes"] == {"k": "v"}


def test_read_signed_twenty_minutes_ago_is_refused_as_expired(server: Server) -> None:
    headers = sign(server, "GET", "/jobs", signed_at=stale())
    reply = send(server, "GET", "/jobs", b"", headers)
    assert_refused(reply, "InvalidSignatureException")
    assert reply.body["message"].startswith("Signature expired")


def test_stale_create_thing_is_refused_and_creates_nothing(server: Server, iot: Any) -> None:
    name = unique("auth")
    method, path, body = create_thing_request(name)
    reply = send(server, method, path, body, sign(server, method, path, body, signed_at=stale()))
    assert_refused(reply, "InvalidSignatureException")
    assert "Signature expired" in reply.body["message"]
    assert_no_thing(iot, name)


def test_request_signed_twenty_minutes_ahead_is_refused(server: Server, iot: Any) -> None:
    name = unique("auth")
    method, path, body = create_thing_request(name)
    ahead = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=20)
    reply = send(server, method, path, body, sign(server, method, path, body, signed_at=ahead))
    assert_refused(reply, "InvalidSignatureException")
    assert_no_thing(iot, name)


def test_stale_create_job_is_refused_and_creates_nothing(server: Server, iot: Any) -> None:
    thing = unique("auth")
    iot.create_thing(thingName=thing)
    job_id = unique("job")
    method, path, body = create_job_request(job_id, thing)
    reply = send(server, method, path, body, sign(server, method, path, body, signed_at=stale()))
    assert_refused(reply, "InvalidSignatureException")
    assert "Signature expired" in reply.body["message"]
    assert_no_job(iot, job_id, thing)


def test_body_changed_after_signing_is_refused_and_changes_nothing(server: Server, iot: Any) -> None:
    """Signed for a job on one thing, sent as a job on another: refused, neither job exists."""
    signed_for, sent_for = unique("auth"), unique("auth")
    for t in (signed_for, sent_for):
        iot.create_thing(thingName=t)
    job_id = unique("job")
    method, path, body = create_job_request(job_id, signed_for)
    headers = sign(server, method, path, body)
    _, _, tampered = create_job_request(job_id, sent_for)
    reply = send(server, method, path, tampered, headers)
    assert_refused(reply, "InvalidSignatureException")
    assert_no_job(iot, job_id, signed_for)
    assert_no_job(iot, job_id, sent_for)


def test_body_changed_under_a_signed_content_hash_header_is_refused(server: Server, iot: Any) -> None:
    """A signed ``x-amz-content-sha256`` of the original body does not vouch for another body."""
    signed_for, sent_for = unique("auth"), unique("auth")
    for t in (signed_for, sent_for):
        iot.create_thing(thingName=t)
    job_id = unique("job")
    method, path, body = create_job_request(job_id, signed_for)
    headers = sign(server, method, path, body, headers={"X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()})
    _, _, tampered = create_job_request(job_id, sent_for)
    reply = send(server, method, path, tampered, headers)
    assert_refused(reply, "InvalidSignatureException")
    assert_no_job(iot, job_id, sent_for)


def test_unsigned_payload_claim_is_refused(server: Server, iot: Any) -> None:
    name = unique("auth")
    method, path, body = create_thing_request(name)
    headers = sign(server, method, path, body, headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    reply = send(server, method, path, body, headers)
    assert_refused(reply, "InvalidSignatureException")
    assert_no_thing(iot, name)


def test_path_changed_after_signing_is_refused(server: Server, iot: Any) -> None:
    signed_name, sent_name = unique("auth"), unique("auth")
    method, path, body = create_thing_request(signed_name)
    headers = sign(server, method, path, body)
    reply = send(server, method, f"/things/{sent_name}", body, headers)
    assert_refused(reply, "InvalidSignatureException")
    assert_no_thing(iot, signed_name)
    assert_no_thing(iot, sent_name)


def test_wrong_secret_over_raw_http(server: Server, iot: Any) -> None:
    name = unique("auth")
    method, path, body = create_thing_request(name)
    reply = send(server, method, path, body, sign(server, method, path, body, secret="wrong-" + "y" * 34))
    assert_refused(reply, "InvalidSignatureException")
    assert_no_thing(iot, name)


def test_no_authorization_header_over_raw_http(server: Server, iot: Any) -> None:
    name = unique("auth")
    method, path, body = create_thing_request(name)
    reply = send(server, method, path, body, {"Content-Type": "application/json"})
    assert_refused(reply, "MissingAuthenticationTokenException")
    assert_no_thing(iot, name)


@pytest.mark.parametrize("service", ["s3", "execute-api"])
def test_request_signed_for_another_service_is_refused(server: Server, iot: Any, service: str) -> None:
    reply = send(server, "GET", "/jobs", b"", sign(server, "GET", "/jobs", service=service))
    assert_refused(reply, "InvalidSignatureException")
    name = unique("auth")
    method, path, body = create_thing_request(name)
    reply = send(server, method, path, body, sign(server, method, path, body, service=service))
    assert_refused(reply, "InvalidSignatureException")
    assert_no_thing(iot, name)


def test_malformed_authorization_is_refused(server: Server, iot: Any) -> None:
    name = unique("auth")
    method, path, body = create_thing_request(name)
    headers = sign(server, method, path, body)
    headers["Authorization"] = headers["Authorization"].split(", Signature=")[0]
    reply = send(server, method, path, body, headers)
    assert_refused(reply, "IncompleteSignatureException", status=400)
    assert_no_thing(iot, name)


def test_non_ascii_signature_is_refused_not_a_server_error(server: Server, iot: Any) -> None:
    name = unique("auth")
    method, path, body = create_thing_request(name)
    headers = sign(server, method, path, body)
    headers["Authorization"] = headers["Authorization"].rsplit("=", 1)[0] + "=\u00e9" * 64
    reply = send(server, method, path, body, headers)
    assert_refused(reply, "InvalidSignatureException")
    assert_no_thing(iot, name)


def test_signature_over_user_agent_as_other_sdks_sign_is_accepted(server: Server, iot: Any) -> None:
    """The AWS SDK for Java v1 also signs ``User-Agent``; its SignedHeaders list is what counts."""
    name = unique("auth")
    method, path, body = create_thing_request(name)
    headers = sign(server, method, path, body, headers={"User-Agent": "aws-sdk-java/1.12.0"}, signer=SignsEveryHeader)
    assert "user-agent" in headers["Authorization"]
    reply = send(server, method, path, body, headers)
    assert reply.status == 200, reply
    assert iot.describe_thing(thingName=name)["thingName"] == name
