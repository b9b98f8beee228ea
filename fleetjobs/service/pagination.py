"""Opaque, keyset-based ``nextToken``s: stable while rows are inserted or deleted mid-walk."""

from __future__ import annotations

import base64
import json
from typing import Any

from fleetjobs.domain.errors import InvalidRequest

DEFAULT_PAGE = 50


def encode_token(key: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps({"k": key}, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_token(token: str | None) -> Any:
    if token is None:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        return json.loads(base64.urlsafe_b64decode(padded.encode()))["k"]
    except (ValueError, KeyError, TypeError):
        raise InvalidRequest("The nextToken is invalid") from None


def page_size(req: dict[str, Any], default: int = DEFAULT_PAGE) -> int:
    return int(req.get("maxResults") or default)


def page(rows: list[Any], size: int, key_of: Any) -> tuple[list[Any], str | None]:
    """Trim a ``size + 1`` fetch to ``size`` rows and give the token for the next page."""
    if len(rows) > size:
        rows = rows[:size]
        return rows, encode_token(key_of(rows[-1]))
    return rows, None


def compact(doc: dict[str, Any]) -> dict[str, Any]:
    """Drop ``None`` members: AWS omits absent members rather than sending nulls."""
    return {k: v for k, v in doc.items() if v is not None}
