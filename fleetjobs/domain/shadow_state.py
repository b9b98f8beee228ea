"""Device shadow documents (iot-data): the AWS merge, metadata and delta rules, free of I/O.

A stored shadow is ``state = {"desired": {...}, "reported": {...}}`` plus ``meta`` of the same shape
whose leaves are ``{"timestamp": <epoch seconds>}``.  An update's ``desired`` / ``reported`` is merged
in: nested objects merge key by key, arrays and scalars replace, ``null`` removes a key, and a
section (or the whole ``state``) set to ``null`` is cleared.  ``delta`` is what ``desired`` says that
``reported`` does not (yet).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fleetjobs.domain.errors import InvalidRequest, ServiceError

SECTIONS = ("desired", "reported")
# AWS IoT Device Shadow service quotas: document size and depth of desired/reported.
MAX_PAYLOAD_BYTES = 8 * 1024
MAX_DEPTH = 6
MAX_CLIENT_TOKEN = 64
# The reserved named shadow the Software Package Catalog reports installed versions in.
PACKAGE_SHADOW = "$package"
PACKAGE_KEYS = ("version", "attributes")


class RequestEntityTooLarge(ServiceError):
    code = "RequestEntityTooLargeException"


def parse_update(payload: bytes, shadow_name: str) -> dict[str, Any]:
    """The UpdateThingShadow request document, checked as AWS checks it (InvalidRequestException)."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise RequestEntityTooLarge("The payload exceeds the maximum size allowed")
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("Payload contains invalid json") from None
    if not isinstance(doc, dict):
        raise InvalidRequest("Payload contains invalid json")
    if "state" not in doc:
        raise InvalidRequest("Missing required node: state")
    state = doc["state"]
    if state is not None:
        if not isinstance(state, dict):
            raise InvalidRequest("State node must be an object")
        for key, value in state.items():
            if key not in SECTIONS:
                raise InvalidRequest(f"State contains an invalid node: '{key}'")
            if value is not None and not isinstance(value, dict):
                raise InvalidRequest(f"{key.capitalize()} node must be an object")
            if value is not None and _depth(value) > MAX_DEPTH:
                raise InvalidRequest(f"JSON contains too many levels of nesting; maximum is {MAX_DEPTH}")
    version = doc.get("version")
    if "version" in doc and (isinstance(version, bool) or not isinstance(version, int) or version < 0):
        raise InvalidRequest("Invalid version")
    token = doc.get("clientToken")
    if token is not None and (not isinstance(token, str) or len(token.encode()) > MAX_CLIENT_TOKEN):
        raise InvalidRequest(f"clientToken must be a string of at most {MAX_CLIENT_TOKEN} bytes")
    if shadow_name == PACKAGE_SHADOW:
        check_package_state(state)
    return doc


def check_package_state(state: dict[str, Any] | None) -> None:
    """``$package`` holds only ``reported.<package>.{version, attributes}`` (JOBS_API.md §6)."""
    if state is None:
        return
    if state.get("desired") is not None:
        raise InvalidRequest("The $package shadow accepts only reported state")
    for package, entry in (state.get("reported") or {}).items():
        if entry is None:
            continue
        if not isinstance(entry, dict):
            raise InvalidRequest(f"The $package shadow entry for {package} must be an object")
        for key, value in entry.items():
            if key not in PACKAGE_KEYS:
                raise InvalidRequest(
                    f"The $package shadow entry for {package} may only contain the keys version and attributes;"
                    f" '{key}' is not allowed"
                )
            if key == "version" and value is not None and not isinstance(value, str):
                raise InvalidRequest(f"The $package shadow version of {package} must be a string")
            if key == "attributes" and value is not None:
                if not isinstance(value, dict) or not all(v is None or isinstance(v, str) for v in value.values()):
                    raise InvalidRequest(f"The $package shadow attributes of {package} must be an object of strings")


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return max((_depth(v) for v in value), default=0)
    return 0


def merge(current: Any, patch: dict[str, Any]) -> dict[str, Any]:
    """``patch`` merged into ``current`` (a new object): nested objects merge, ``null`` removes."""
    out = dict(current) if isinstance(current, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            out[key] = merge(out.get(key), value)
        else:
            out[key] = value
    return out


def leaf_metadata(value: Any, ts: int) -> Any:
    """The metadata of a value written at ``ts``: same shape, ``{"timestamp": ts}`` at every leaf."""
    if isinstance(value, dict):
        return {k: leaf_metadata(v, ts) for k, v in value.items()}
    if isinstance(value, list):
        return [leaf_metadata(v, ts) for v in value]
    return {"timestamp": ts}


def merge_metadata(current: Any, patch: dict[str, Any], ts: int) -> dict[str, Any]:
    """The stored metadata after ``patch`` was merged into the state it describes."""
    out = dict(current) if isinstance(current, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            old = out.get(key)
            out[key] = merge_metadata(old if isinstance(old, dict) and "timestamp" not in old else None, value, ts)
        else:
            out[key] = leaf_metadata(value, ts)
    return out


def apply_update(
    state: dict[str, Any], meta: dict[str, Any], update_state: dict[str, Any] | None, ts: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The shadow's (state, meta) after an update's ``state`` node."""
    if update_state is None:
        return {}, {}
    state, meta = dict(state), dict(meta)
    for section in SECTIONS:
        if section not in update_state:
            continue
        patch = update_state[section]
        if patch is None:
            state.pop(section, None)
            meta.pop(section, None)
            continue
        state[section] = merge(state.get(section), patch)
        meta[section] = merge_metadata(meta.get(section), patch, ts)
    return state, meta


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: ``true`` is not ``1`` (Python says it is), containers compare deeply."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def delta(desired: Any, reported: Any) -> dict[str, Any]:
    """The shadow delta as AWS computes it: the desired keys that reported lacks or disagrees with,
    recursively for nested objects.  The one implementation: GetThingShadow's ``delta``, the fleet
    index's ``shadow.delta.*`` / ``shadow.hasDelta`` and SearchIndex's documents all use it."""
    out: dict[str, Any] = {}
    if not isinstance(desired, Mapping):
        return out
    reported_map = reported if isinstance(reported, Mapping) else {}
    for key, want in desired.items():
        if want is None:
            continue
        if key not in reported_map:
            out[key] = want
        elif isinstance(want, Mapping) and isinstance(reported_map[key], Mapping):
            nested = delta(want, reported_map[key])
            if nested:
                out[key] = nested
        elif not json_equal(want, reported_map[key]):
            out[key] = want
    return out


def document(state: dict[str, Any], meta: dict[str, Any], version: int, ts: int) -> dict[str, Any]:
    """The GetThingShadow document: state (with delta), metadata, version, timestamp."""
    shown = {s: state[s] for s in SECTIONS if state.get(s)}
    d = delta(state.get("desired"), state.get("reported"))
    if d:
        shown["delta"] = d
    metadata = {s: meta[s] for s in SECTIONS if meta.get(s)}
    return {"state": shown, "metadata": metadata, "version": version, "timestamp": ts}


def update_response(
    update_state: dict[str, Any] | None, version: int, ts: int, client_token: str | None
) -> dict[str, Any]:
    """The UpdateThingShadow answer: the request's state, the metadata of what it wrote, version, timestamp."""
    doc: dict[str, Any] = {"state": update_state}
    if update_state:
        doc["metadata"] = {s: leaf_metadata(update_state[s], ts) for s in SECTIONS if s in update_state}
    doc["version"] = version
    doc["timestamp"] = ts
    if client_token is not None:
        doc["clientToken"] = client_token
    return doc
