"""Input validation from the model's constraints, with AWS's own wording.

boto3 checks only required members and minimums on the client side; everything else
(maximum lengths, patterns, enums, ranges) is the server's job, and AWS reports it as
``1 validation error detected: Value 'x' at 'jobId' failed to satisfy constraint: ...``.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import regex
from botocore.model import Shape

from fleetjobs.domain.errors import InvalidRequest

# Java's POSIX classes are ASCII-only; the `regex` module's are Unicode-aware, so translate.
_JAVA_POSIX = {
    r"\p{Graph}": r"\x21-\x7E",
    r"\p{Upper}": "A-Z",
    r"\p{Digit}": "0-9",
    r"\p{Cntrl}": r"\x00-\x1F\x7F",
}

# What the model's integer types hold on the wire (Java's int and long): a larger number is refused
# as AWS refuses it, before it can reach a database column.
INT_RANGES = {"integer": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


@functools.cache
def _compile(pattern: str) -> regex.Pattern[str]:
    translated = pattern
    for java, ours in _JAVA_POSIX.items():
        translated = translated.replace(java, ours)
    return regex.compile(translated, regex.DOTALL)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str) and len(value) > 200:
        return value[:200] + "..."
    return str(value)


class Validator:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def fail(self, value: Any, path: str, constraint: str) -> None:
        self.errors.append(f"Value '{_fmt(value)}' at '{path}' failed to satisfy constraint: {constraint}")

    def check(self, shape: Shape, value: Any, path: str) -> Any:
        """Validate and return the value (with JSON numbers coerced where the model allows)."""
        t = shape.type_name
        meta = shape.metadata
        if t == "structure":
            if not isinstance(value, dict):
                self.fail(value, path, "Member must be a structure")
                return value
            out = {}
            for req in shape.required_members:
                if value.get(req) is None:
                    self.errors.append(
                        f"Value null at '{self._join(path, req)}' failed to satisfy constraint: Member must not be null"
                    )
            for name, member in shape.members.items():
                if name in value and value[name] is not None:
                    out[name] = self.check(member, value[name], self._join(path, name))
            return out
        if t == "list":
            if not isinstance(value, list):
                self.fail(value, path, "Member must be a list")
                return value
            self._length(value, len(value), meta, path)
            return [self.check(shape.member, v, f"{path}.{i + 1}.member") for i, v in enumerate(value)]
        if t == "map":
            if not isinstance(value, dict):
                self.fail(value, path, "Member must be a map")
                return value
            self._length(value, len(value), meta, path)
            out_map = {}
            for k, v in value.items():
                self.check(shape.key, k, f"{path}.key")
                out_map[k] = self.check(shape.value, v, f"{path}.value")
            return out_map
        if t == "string":
            if not isinstance(value, str):
                self.fail(value, path, "Member must be a string")
                return value
            self._length(value, len(value), meta, path)
            if shape.enum and value not in shape.enum:
                self.fail(value, path, f"Member must satisfy enum value set: [{', '.join(shape.enum)}]")
            pattern = meta.get("pattern")
            if pattern and not _compile(pattern).fullmatch(value):
                self.fail(value, path, f"Member must satisfy regular expression pattern: {pattern}")
            return value
        if t in ("integer", "long"):
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                else:
                    self.fail(value, path, "Member must be an integer")
                    return value
            low, high = INT_RANGES[t]
            if value > high:
                self.fail(value, path, f"Member must have value less than or equal to {high}")
                return value
            if value < low:
                self.fail(value, path, f"Member must have value greater than or equal to {low}")
                return value
            self._range(value, meta, path)
            return value
        if t in ("double", "float"):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                self.fail(value, path, "Member must be a number")
                return value
            self._range(value, meta, path)
            return float(value)
        if t == "boolean":
            if not isinstance(value, bool):
                self.fail(value, path, "Member must be a boolean")
            return value
        if t == "timestamp":
            if isinstance(value, bool) or not isinstance(value, int | float):
                self.fail(value, path, "Member must be a timestamp")
            return value
        return value

    @staticmethod
    def _join(path: str, name: str) -> str:
        return f"{path}.{name}" if path else name

    def _length(self, value: Any, n: int, meta: dict[str, Any], path: str) -> None:
        if "min" in meta and n < meta["min"]:
            self.fail(value, path, f"Member must have length greater than or equal to {meta['min']}")
        if "max" in meta and n > meta["max"]:
            self.fail(value, path, f"Member must have length less than or equal to {meta['max']}")

    def _range(self, value: float, meta: dict[str, Any], path: str) -> None:
        if "min" in meta and value < meta["min"]:
            self.fail(value, path, f"Member must have value greater than or equal to {meta['min']}")
        if "max" in meta and value > meta["max"]:
            self.fail(value, path, f"Member must have value less than or equal to {meta['max']}")


def validate_input(shape: Shape | None, params: dict[str, Any]) -> dict[str, Any]:
    if shape is None:
        return {}
    v = Validator()
    out = v.check(shape, params, "")
    if v.errors:
        n = len(v.errors)
        raise InvalidRequest(f"{n} validation error{'s' if n > 1 else ''} detected: " + "; ".join(v.errors))
    return out
