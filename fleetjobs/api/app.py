"""The ASGI application: authenticate, route by the botocore model, validate, call the service.

One port serves both ``iot`` (control plane) and ``iot-jobs-data`` (device HTTPS API).  They
share paths (``GET /things/{t}/jobs[/{j}]``), so the request's SigV4 signing name, not the
path, decides which service answers.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote

from fleetjobs.api import sigv4
from fleetjobs.api.routes import router
from fleetjobs.api.wire import error_body, parse_request, serialize_response
from fleetjobs.clock import Clock
from fleetjobs.domain.errors import AuthError, InvalidRequest, ServiceError
from fleetjobs.model import SERVICES, SIGNING_NAMES, error_status
from fleetjobs.model.validation import validate_input

log = logging.getLogger("fleetjobs.api")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


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
        body = await read_body(receive)
        status, headers, payload = await self.handle(scope, body)
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

    async def handle(self, scope: Scope, body: bytes) -> tuple[int, dict[str, str], bytes]:
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
            signed = sigv4.verify(
                method=method,
                raw_path=raw_path,
                raw_query=raw_query,
                headers=headers,
                body=body,
                credentials=self.credentials(),
                now=self.clock.now(),
                region=self.region,
            )
            if signed.service not in SERVICES:
                raise AuthError(
                    "InvalidSignatureException",
                    f"Credential should be scoped to correct service: one of {', '.join(SERVICES)}",
                )
            service = SIGNING_NAMES[signed.service]
            query = parse_qsl(raw_query, keep_blank_values=True)
            matched = router(service).match(method, raw_path.split("?", 1)[0], {k for k, _ in query})
            if matched is None:
                return (
                    404,
                    {"x-amzn-errortype": "UnknownOperationException", "content-type": "application/json"},
                    (error_body("UnknownOperationException", f"No operation matches {method} {scope['path']}")),
                )
            op, path_params = matched
            params = validate_input(op.input_shape, parse_request(op, path_params, query, headers, body))
            handler = self.handlers.get(service, {}).get(op.name)
            if handler is None:
                raise InvalidRequest(f"{op.name} is not supported by fleetjobs")
            result = await handler(params)
            return serialize_response(op, result)
        except AuthError as e:
            return e.status, _error_headers(e.code), error_body(e.code, e.message)
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


def _error_headers(code: str) -> dict[str, str]:
    return {"x-amzn-errortype": code, "content-type": "application/json"}


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
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
