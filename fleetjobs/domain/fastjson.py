"""JSON on the hot paths (device payloads, API bodies) through orjson, with the standard library's
meaning kept exactly.

orjson parses and writes several times faster than :mod:`json`, but differs on some inputs: it
refuses ``NaN`` and lone surrogate escapes, its nesting limit (1,024) is not the standard library's
(about 1,000, where it raises RecursionError), and it turns integers beyond 64 bits into floats (an
``executionNumber`` of 99999999999999999999 would become 1e20 and pass as a number).  Those inputs
(any run of 20 digits; 900 or more brackets, which any deep nesting needs) go to :mod:`json`, so every answer
(and every error) is the one the service gave before; only the common case is faster.
Output is compact and UTF-8 (not ``\\u``-escaped): the same JSON value.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# 20 digits in a row may be an integer beyond unsigned 64 bits (19 always fit).
_LONG_DIGITS = re.compile(rb"[0-9]{20}")
_LONG_DIGITS_TEXT = re.compile(r"[0-9]{20}")
# Nesting near the standard library's limit needs at least this many brackets.
_BRACKETS = 900


def loads(data: bytes | str) -> Any:
    """Like :func:`json.loads` (same values, same ``ValueError`` / ``RecursionError``)."""
    if isinstance(data, bytes):
        exact = _LONG_DIGITS.search(data) is not None or data.count(b"{") + data.count(b"[") >= _BRACKETS
    else:
        exact = _LONG_DIGITS_TEXT.search(data) is not None or data.count("{") + data.count("[") >= _BRACKETS
    if not exact:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(data)


def dumps(value: Any) -> bytes:
    """Compact JSON bytes of ``value``, as ``json.dumps(value, separators=(",", ":"))`` means it."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # integers beyond 64 bits, subclasses orjson does not know
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
