"""AWS Signature Version 4 verification.

The signature is recomputed with botocore's own ``SigV4Auth`` over exactly the bytes that
arrived (raw path, raw query string, signed headers, body), so whatever boto3 and the CLI
sign is what we check; nothing is re-encoded on the way.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials

from fleetjobs.domain.errors import AuthError

MAX_SKEW_SECONDS = 15 * 60


@dataclass(frozen=True)
class SignedRequest:
    access_key_id: str
    service: str
    region: str


class _Verifier(SigV4Auth):
    """botocore's signer, but over exactly the headers the client says it signed.

    ``SigV4Auth.headers_to_sign`` leaves out ``user-agent``, ``expect`` and ``transfer-encoding``
    (botocore never signs them), but other SDKs do: the AWS SDK for Java v1 signs ``User-Agent``.
    The client's ``SignedHeaders`` list is the truth, so the canonical request is built from it.
    """

    def __init__(self, credentials: Credentials, service: str, region: str, signed_names: list[str]) -> None:
        super().__init__(credentials, service, region)
        self._signed_names = signed_names

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        header_map = HTTPHeaders()
        for name in self._signed_names:
            header_map[name] = request.headers[name]
        return header_map


def _parse_authorization(value: str) -> dict[str, str]:
    algo, _, rest = value.partition(" ")
    if algo != "AWS4-HMAC-SHA256":
        raise AuthError("IncompleteSignatureException", f"Unsupported authorization type: {algo}", 400)
    fields: dict[str, str] = {}
    for part in rest.split(","):
        k, _, v = part.strip().partition("=")
        fields[k] = v
    for required in ("Credential", "SignedHeaders", "Signature"):
        if not fields.get(required):
            raise AuthError(
                "IncompleteSignatureException",
                f"Authorization header requires '{required}' parameter. Authorization={value}",
                400,
            )
    return fields


@dataclass(frozen=True)
class SignedHeaders:
    """A request whose headers passed every check that needs no body: its signature is still unchecked.

    The signature covers the payload's hash, so it can only be checked once the body is in; but
    everything else (an Authorization header at all, a well-formed credential scope, a known access
    key, the date and its skew) is decided from the headers, so a request that fails any of that is
    refused before a byte of its body is read.
    """

    access_key_id: str
    secret: str = field(repr=False)  # never in a log line
    service: str
    region: str
    amz_date: str
    signature: str
    signed_names: tuple[str, ...]
    signed_values: Mapping[str, str]


def verify(
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    body: bytes,
    credentials: Mapping[str, str],
    now: float,
    region: str | None = None,
) -> SignedRequest:
    """Check a request's signature; raise ``AuthError`` with the AWS error code otherwise.
    ``region``: the one region a credential scope may name (None: any)."""
    pending = check_headers(headers=headers, credentials=credentials, now=now, region=region)
    return verify_signature(pending, method=method, raw_path=raw_path, raw_query=raw_query, headers=headers, body=body)


def check_headers(
    *,
    headers: Mapping[str, str],
    credentials: Mapping[str, str],
    now: float,
    region: str | None = None,
) -> SignedHeaders:
    """The checks of :func:`verify` that need only the headers (raise ``AuthError`` as it does)."""
    auth = headers.get("authorization")
    if not auth:
        raise AuthError("MissingAuthenticationTokenException", "Missing Authentication Token")
    fields = _parse_authorization(auth)
    scope = fields["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise AuthError("IncompleteSignatureException", f"Credential scope is malformed: {fields['Credential']}", 400)
    akid, datestamp, scope_region, service, _ = scope
    if region is not None and scope_region != region:
        raise AuthError(
            "InvalidSignatureException", f"Credential should be scoped to a valid region, not '{scope_region}'."
        )
    secret = credentials.get(akid)
    if secret is None:
        raise AuthError("UnrecognizedClientException", "The security token included in the request is invalid.")
    amz_date = headers.get("x-amz-date")
    if not amz_date:
        raise AuthError(
            "IncompleteSignatureException",
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
            400,
        )
    try:
        signed_at = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        raise AuthError("IncompleteSignatureException", f"Invalid X-Amz-Date: {amz_date}", 400) from None
    if not amz_date.startswith(datestamp):
        raise AuthError(
            "InvalidSignatureException",
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP",
        )
    if abs(now - signed_at) > MAX_SKEW_SECONDS:
        now_s = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        raise AuthError(
            "InvalidSignatureException",
            f"Signature expired: {amz_date} is now earlier than {now_s} ({now_s} - 15 min.)"
            if signed_at < now
            else f"Signature not yet current: {amz_date} is still later than {now_s} ({now_s} + 15 min.)",
        )

    signed_names = [name.strip().lower() for name in fields["SignedHeaders"].split(";")]
    if "host" not in signed_names:
        # Unsigned, the Host header could be changed in flight without breaking the signature.
        raise AuthError(
            "InvalidSignatureException", "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
        )
    request_headers: dict[str, str] = {}
    for name in signed_names:
        if name not in headers:
            raise AuthError("InvalidSignatureException", f"Signed header '{name}' is missing from the request")
        request_headers[name] = headers[name]
    return SignedHeaders(
        akid, secret, service, scope_region, amz_date, fields["Signature"], tuple(signed_names), request_headers
    )


def verify_signature(
    pending: SignedHeaders,
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    body: bytes,
) -> SignedRequest:
    """Check the signature of a request whose headers passed :func:`check_headers`, over its body."""
    # botocore trusts a request's x-amz-content-sha256 header in place of hashing the body, so a
    # body swapped after signing would pass if we let it: the header must describe this body.
    declared = headers.get("x-amz-content-sha256")
    if declared is not None and declared.strip().lower() != hashlib.sha256(body).hexdigest():
        raise AuthError(
            "InvalidSignatureException", "The provided 'x-amz-content-sha256' header does not match what was computed."
        )
    url = f"http://{headers.get('host', 'localhost')}{raw_path}"
    if raw_query:
        url += f"?{raw_query}"
    request = AWSRequest(method=method, url=url, headers=dict(pending.signed_values), data=body)
    request.context["timestamp"] = pending.amz_date
    signer = _Verifier(
        Credentials(pending.access_key_id, pending.secret), pending.service, pending.region, list(pending.signed_names)
    )
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected.encode(), pending.signature.encode("utf-8", "replace")):
        raise AuthError(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
        )
    return SignedRequest(pending.access_key_id, pending.service, pending.region)
