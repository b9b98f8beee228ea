"""The ASGI application: authenticate, route by the botocore model, validate, call the service.

One port serves both ``iot`` (control plane) and ``iot-jobs-data`` (device HTTPS API).  They
share paths (``GET /things/{t}/jobs[/{j}]``), so the request's SigV4 signing name, not the
path, decides which service answers.

Nothing unauthenticated is read into memory: a request is refused on its headers alone when its
Authorization header is missing or wrong in any way the body cannot change, or when it declares a
body larger than its service's limit (:func:`body_limit`); only then is the body read, counted
as it arrives and cut off at that limit, and the signature (which covers the body's hash) checked.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote

from fleetjobs.api import sigv4
from fleetjobs.api.routes import router
from fleetjobs.api.wire import error_body, parse_request, serialize_response
from fleetjobs.clock import Clock
from fleetjobs.domain.errors import AuthError, ServiceError
from fleetjobs.model import SERVICES, SIGNING_NAMES, error_status, service_model
from fleetjobs.model.validation import validate_input
from fleetjobs.store.database import DatabaseUnavailable

log = logging.getLogger("fleetjobs.api")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


# The longest JSON text one character of a string member can become on the wire: a code point
# outside the BMP written as two \uXXXX escapes (boto3 and the AWS CLI escape all non-ASCII).
JSON_ESCAPE_FACTOR = 12
# Room for the members next to the largest one (names, ARNs, flags, small maps).
BODY_SLACK = 64 * 1024
# The floor: where the model bounds nothing (iot-data payloads, iot-jobs-data status details) the
# documented quotas (MQTT messages 128 KB, shadows 8 KB, status details 10 x 1 KB) fit well below it.
MIN_BODY_LIMIT = 1024 * 1024
TOO_LARGE = "RequestEntityTooLargeException"  # iot-data's 413, the model's only error for a body too big


class BodyTooLarge(Exception):
    """A request body over its service's limit: answered 413 without reading (or keeping) the rest."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"The payload exceeds the maximum size allowed ({limit} bytes)")
        self.limit = limit


def body_limit(service: str, operations: Iterable[str]) -> int:
    """The most bytes a legitimate request body to ``service`` can take, from the botocore model.

    The largest ``max`` length of any string or blob member that travels in the body of one of
    ``operations`` (for ``iot``: ``CreateJob.document``, 32768 characters), at its longest JSON
    escaping, plus slack for the other members; never less than :data:`MIN_BODY_LIMIT`.
    """
    model = service_model(service)
    largest = 0
    seen: set[str] = set()

    def walk(shape: Any) -> None:
        nonlocal largest
        if shape.type_name in ("string", "blob"):
            largest = max(largest, int(shape.metadata.get("max", 0)))
        elif shape.type_name == "structure" and shape.name not in seen:
            seen.add(shape.name)
            for member in shape.members.values():
                if member.serialization.get("location") not in ("uri", "querystring", "header", "headers"):
                    walk(member)
        elif shape.type_name == "list":
            walk(shape.member)
        elif shape.type_name == "map":
            walk(shape.value)

    for name in operations:
        input_shape = model.operation_model(name).input_shape
        if input_shape is not None:
            walk(input_shape)
    return max(MIN_BODY_LIMIT, largest * JSON_ESCAPE_FACTOR + BODY_SLACK)


def snake_case(operation: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()


def bind_handlers(service: str, implementations: Iterable[object]) -> dict[str, Handler]:
    """Find, for every operation of a service model, the service-layer method of the same name."""
    handlers: dict[str, Handler] = {}
    for op_name in router(service).model.operation_names:
        method_name = snake_case(op_name)
        for impl in implementations:
            fn = getattr(impl, method_name, None)
            if fn is not None:
                handlers[op_name] = fn
                break
    return handlers


class AwsApi:
    def __init__(
        self,
        *,
        handlers: Mapping[str, Mapping[str, Handler]],
        credentials: Callable[[], Mapping[str, str]],
        clock: Clock,
        region: str | None = None,
        extra_routes: Mapping[str, Callable[[Scope, Receive, Send], Awaitable[None]]] | None = None,
        on_startup: Callable[[], Awaitable[None]] | None = None,
        on_shutdown: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.handlers = handlers
        self.credentials = credentials
        self.clock = clock
        self.region = region
        self.extra_routes = dict(extra_routes or {})
        self.on_startup = on_startup
        self.on_shutdown = on_shutdown
        # Per service: what its answered operations can carry (every operation of a service with none).
        self.body_limits = {
            service: body_limit(service, handlers.get(service) or service_model(service).operation_names)
            for service in SIGNING_NAMES.values()
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        for prefix, app in self.extra_routes.items():
            if path.startswith(prefix):
                await app(scope, receive, send)
                return
        body = RequestBody(scope, receive)
        status, headers, payload = await self.handle(scope, body)
        if not body.consumed:
            # Refused before its body was read: closing is cheaper than taking in the rest to discard it.
            headers["connection"] = "close"
        headers["x-amzn-requestid"] = str(uuid.uuid4())
        headers["content-length"] = str(len(payload))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def handle(self, scope: Scope, request_body: RequestBody) -> tuple[int, dict[str, str], bytes]:
        service = "iot"
        op: Any = None
        try:
            method: str = scope["method"]
            raw_path_b = scope.get("raw_path")
            raw_path = raw_path_b.decode("latin-1") if raw_path_b else quote(scope["path"])
            raw_query = scope.get("query_string", b"").decode("latin-1")
            headers: dict[str, str] = {}
            for k, v in scope["headers"]:
                name = k.decode("latin-1").lower()
                value = v.decode("latin-1")
                headers[name] = f"{headers[name]},{value}" if name in headers else value
            pending = sigv4.check_headers(
                headers=headers, credentials=self.credentials(), now=self.clock.now(), region=self.region
            )
            if pending.service not in SERVICES:
                raise AuthError(
                    "InvalidSignatureException",
                    f"Credential should be scoped to correct service: one of {', '.join(SERVICES)}",
                )
            service = SIGNING_NAMES[pending.service]
            body = await request_body.read(self.body_limits[service])
            sigv4.verify_signature(
                pending, method=method, raw_path=raw_path, raw_query=raw_query, headers=headers, body=body
            )
            query = parse_qsl(raw_query, keep_blank_values=True)
            matched = router(service).match(method, raw_path.split("?", 1)[0], {k for k, _ in query})
            if matched is None:
                return (
                    404,
                    {"x-amzn-errortype": "UnknownOperationException", "content-type": "application/json"},
                    (error_body("UnknownOperationException", f"No operation matches {method} {scope['path']}")),
                )
            op, path_params = matched
            handler = self.handlers.get(service, {}).get(op.name)
            if handler is None:
                # An operation of the model that fleetjobs does not serve is answered as an AWS
                # REST-JSON service answers one it has no route for (smithy's server framework:
                # HTTP 404, UnknownOperationException), before its input is read: it is not the
                # caller's mistake, as InvalidRequestException would say.
                return (
                    404,
                    _error_headers(UNKNOWN_OPERATION),
                    error_body(UNKNOWN_OPERATION, f"{op.name} is not an operation fleetjobs serves"),
                )
            params = validate_input(op.input_shape, parse_request(op, path_params, query, headers, body))
            result = await handler(params)
            return serialize_response(op, result)
        except AuthError as e:
            return e.status, _error_headers(e.code), error_body(e.code, e.message)
        except BodyTooLarge as e:
            return 413, _error_headers(TOO_LARGE), error_body(TOO_LARGE, str(e))
        except ServiceError as e:
            code = _validation_code(op, e.code)
            status = error_status(service, code, 500 if code == "InternalFailureException" else 400)
            return status, _error_headers(code), error_body(code, e.message, e.extra)
        except Exception:
            log.exception("unhandled error")
            code = _internal_error_code(op)
            status = 503 if code == "ServiceUnavailableException" else 500
            return status, _error_headers(code), error_body(code, "An internal error occurred; retry.")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if self.on_startup:
                        await self.on_startup()
                except DatabaseUnavailable as e:
                    # The operator's problem, not ours: one line that says what and where, no traceback.
                    print(f"fleetjobs serve: error: {e}", file=sys.stderr, flush=True)
                    await send({"type": "lifespan.startup.failed", "message": ""})
                    return
                except Exception as e:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(e)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.on_shutdown:
                    await self.on_shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _internal_error_code(op: Any) -> str:
    """The error the operation's model declares for a server fault (iot-jobs-data has no InternalFailure)."""
    declared = {shape.name for shape in op.error_shapes} if op is not None else set()
    for code in ("InternalFailureException", "InternalServerException", "ServiceUnavailableException"):
        if code in declared:
            return code
    return "InternalFailureException"


def _validation_code(op: Any, code: str) -> str:
    """Newer operations (the package catalog) report bad input as ValidationException, not InvalidRequestException."""
    if code != "InvalidRequestException" or op is None:
        return code
    declared = {shape.name for shape in op.error_shapes}
    return "ValidationException" if "ValidationException" in declared and code not in declared else code


UNKNOWN_OPERATION = "UnknownOperationException"


def _error_headers(code: str) -> dict[str, str]:
    return {"x-amzn-errortype": code, "content-type": "application/json"}


class RequestBody:
    """A request's body, read only when asked and never past a limit.

    A declared ``Content-Length`` over the limit is refused before anything is read; a chunked
    body (no length) is counted as it arrives and refused on the first chunk that crosses it.
    ``consumed`` says whether the connection can be kept: whether all of it has been read.
    """

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.receive = receive
        length: int | None = None
        chunked = False
        for k, v in scope.get("headers", []):
            name = k.lower()
            if name == b"content-length":
                try:
                    length = int(v)
                except ValueError:
                    length = None
            elif name == b"transfer-encoding":
                chunked = True
        self.declared_length = length
        self.consumed = not chunked and not length

    async def read(self, limit: int) -> bytes:
        if self.declared_length is not None and self.declared_length > limit:
            raise BodyTooLarge(limit)
        body = await read_body(self.receive, limit)
        self.consumed = True
        return body


async def read_body(receive: Receive, limit: int | None = None) -> bytes:
    """The whole body; ``BodyTooLarge`` as soon as more than ``limit`` bytes have come (None: no limit)."""
    chunks = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if limit is not None and size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def json_response(send: Send, status: int, doc: Any) -> None:
    payload = json.dumps(doc).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})
