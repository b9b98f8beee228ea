"""Opaque, keyset-based ``nextToken``s: stable while rows are inserted or deleted mid-walk."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from fleetjobs.domain.errors import InvalidRequest

DEFAULT_PAGE = 50
R = TypeVar("R")


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


def page_size(req: Mapping[str, Any], default: int = DEFAULT_PAGE) -> int:
    return int(req.get("maxResults") or default)


def page(rows: Sequence[R], size: int, key_of: Callable[[R], Any]) -> tuple[list[R], str | None]:
    """Trim a ``size + 1`` fetch to ``size`` rows and give the token for the next page."""
    if len(rows) > size:
        kept = list(rows[:size])
        return kept, encode_token(key_of(kept[-1]))
    return list(rows), None


def compact(doc: dict[str, Any]) -> dict[str, Any]:
    """Drop ``None`` members: AWS omits absent members rather than sending nulls."""
    return {k: v for k, v in doc.items() if v is not None}


def token_id(req: Mapping[str, Any]) -> int | None:
    """The last row id of the previous page, from an id-keyed ``nextToken``."""
    after = decode_token(req.get("nextToken"))
    if after is not None and (isinstance(after, bool) or not isinstance(after, int) or not 0 <= after < 2**63):
        raise InvalidRequest("The nextToken is invalid")
    return after


def token_time_and_name(req: Mapping[str, Any]) -> tuple[float, str] | None:
    """The (creation time, name) of the last row of the previous page, for listings newest first."""
    after = decode_token(req.get("nextToken"))
    if after is None:
        return None
    if not (
        isinstance(after, list)
        and len(after) == 2
        and isinstance(after[0], int | float)
        and not isinstance(after[0], bool)
        and math.isfinite(after[0])
        and isinstance(after[1], str)
    ):
        raise InvalidRequest("The nextToken is invalid")
    return float(after[0]), after[1]


def token_str(req: Mapping[str, Any]) -> str | None:
    """The last name of the previous page, from a name-keyed ``nextToken`` (a token of another
    listing, keyed otherwise, is as invalid as a forged one)."""
    after = decode_token(req.get("nextToken"))
    if after is not None and not isinstance(after, str):
        raise InvalidRequest("The nextToken is invalid")
    return after
