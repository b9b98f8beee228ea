"""REST-JSON request parsing and response serialisation, by the operation's model shapes."""

from __future__ import annotations

import datetime as dt
from typing import Any

from botocore.model import OperationModel, Shape

from fleetjobs.domain import fastjson
from fleetjobs.domain.errors import InvalidRequest


def _scalar(shape: Shape, raw: str, name: str) -> Any:
    t = shape.type_name
    if t in ("integer", "long"):
        try:
            return int(raw)
        except ValueError:
            raise InvalidRequest(
                f"Value '{raw}' at '{name}' failed to satisfy constraint: Member must be a number"
            ) from None
    if t in ("double", "float"):
        try:
            return float(raw)
        except ValueError:
            raise InvalidRequest(
                f"Value '{raw}' at '{name}' failed to satisfy constraint: Member must be a number"
            ) from None
    if t == "boolean":
        low = raw.lower()
        if low not in ("true", "false"):
            raise InvalidRequest(f"Value '{raw}' at '{name}' failed to satisfy constraint: Member must be a boolean")
        return low == "true"
    if t == "timestamp":
        try:
            return float(raw)
        except ValueError:
            try:
                return dt.datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
            except ValueError:
                raise InvalidRequest(f"Value '{raw}' at '{name}' is not a timestamp") from None
    return raw


def parse_request(
    op: OperationModel,
    path_params: dict[str, str],
    query: list[tuple[str, str]],
    headers: dict[str, str],
    body: bytes,
) -> dict[str, Any]:
    shape = op.input_shape
    if shape is None:
        return {}
    params: dict[str, Any] = {}
    body_members = {}
    for name, member in shape.members.items():
        loc = member.serialization.get("location")
        wire_name = member.serialization.get("name", name)
        if loc == "uri":
            if wire_name in path_params:
                params[name] = _scalar(member, path_params[wire_name], name)
        elif loc == "querystring":
            if member.type_name == "list":
                values = [v for k, v in query if k == wire_name]
                if values:
                    params[name] = [_scalar(member.member, v, name) for v in values]
            elif member.type_name == "map":
                params[name] = {k: v for k, v in query}
            else:
                for k, v in query:
                    if k == wire_name:
                        params[name] = _scalar(member, v, name)
                        break
        elif loc == "header":
            raw = headers.get(wire_name.lower())
            if raw is not None:
                params[name] = _scalar(member, raw, name)
        elif loc == "headers":
            prefix = wire_name.lower()
            params[name] = {k[len(prefix) :]: v for k, v in headers.items() if k.startswith(prefix)}
        else:
            body_members[name] = member
    payload_name = shape.serialization.get("payload")
    if payload_name:
        member = shape.members[payload_name]
        if member.type_name in ("blob", "string"):
            params[payload_name] = body
            return params
        body_members = {payload_name: member}
    if body_members and body.strip():
        try:
            doc = fastjson.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise InvalidRequest("Request body is not valid JSON") from None
        except RecursionError:  # nested deeper than the parser goes
            raise InvalidRequest("Request body is nested too deeply") from None
        if not isinstance(doc, dict):
            raise InvalidRequest("Request body must be a JSON object")
        if payload_name:
            params[payload_name] = doc
        else:
            for name in body_members:
                if name in doc:
                    params[name] = doc[name]
    return params


def serialize_response(op: OperationModel, result: dict[str, Any] | None) -> tuple[int, dict[str, str], bytes]:
    """Split a result dict into headers and JSON body as the output shape says."""
    status = 200
    headers: dict[str, str] = {"content-type": "application/json"}
    shape = op.output_shape
    if not result or shape is None:
        return status, headers, b"{}"
    payload_name = shape.serialization.get("payload")
    if payload_name and shape.members[payload_name].type_name == "blob":
        # iot-data's shadow documents: the HTTP body is the raw blob (JSON bytes the service made).
        raw = result.get(payload_name) or b""
        return status, headers, raw.encode() if isinstance(raw, str) else bytes(raw)
    body: dict[str, Any] = {}
    members = shape.members
    for name, value in result.items():
        if value is None:
            continue
        member = members.get(name)
        loc = member.serialization.get("location") if member is not None else None
        if loc == "header":
            headers[member.serialization.get("name", name).lower()] = str(value)
        elif loc == "statusCode":
            status = int(value)
        else:
            body[name] = value
    return status, headers, fastjson.dumps(body)


def error_body(code: str, message: str, extra: dict[str, Any] | None = None) -> bytes:
    doc: dict[str, Any] = {"message": message}
    if extra:
        doc.update(extra)
    return fastjson.dumps(doc)
