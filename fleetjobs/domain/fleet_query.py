"""The AWS IoT fleet indexing query language, evaluated in memory.

SearchIndex and dynamic thing groups (``CreateDynamicThingGroup`` ``queryString``) both take a
query in the fleet indexing language, a Lucene dialect documented in the AWS IoT developer guide
("Query syntax" and "Example thing queries").  Clients written against AWS send those strings
unchanged, so this module accepts the same syntax and answers the same way AWS documents:

* ``field:value`` terms; values bare, ``"quoted"`` (spaces allowed) or with ``\\`` escapes;
  ``*`` and ``?`` wildcards in bare values (``thingName:pump*``, ``attributes.model:x?1``);
  ``field:*`` means "the field has a value", and a lone ``*`` matches every thing.
* ranges ``field:[a TO b]`` (inclusive), ``field:{a TO b}`` (exclusive), mixed brackets, ``*``
  as an open bound; comparisons ``field<x``, ``field>x``, ``field<=x``, ``field>=x`` (also
  written ``field:>x``).  They compare numerically when both sides are numbers, else as strings.
* ``AND``, ``OR``, ``NOT``, ``-`` (exclusion, as in ``thingName:(tv* AND -plasma)``), implicit
  AND between adjacent clauses, parentheses and field grouping ``field:(a OR b*)``.  Precedence
  is NOT > AND > OR, so ``a OR b AND NOT c`` is ``a OR (b AND (NOT c))``; AWS's own example
  ``attributes.attr1:abc AND attributes.attr2<5 NOT attributes.attr3>10`` reads as three ANDed
  clauses, the last negated.
* a bare term without a field (``abc``) searches every registry and shadow value, as AWS does.

Matching is case insensitive ("Search is case insensitive" in the AWS guide); field names are
case sensitive.  Shadow booleans and numbers match by their JSON value: ``shadow.reported.on:true``,
``shadow.reported.temp>30`` and ``shadow.reported.temp:30`` (which also matches ``30.0``).  A path
may reach into nested objects, and an array on the way matches if any element matches.

Parsing is separate from matching so that a dynamic group parses its query once and then
evaluates it against every thing that changes; :attr:`FleetQuery.fields` tells the caller which
fields can change the result.  Everything here is pure: no I/O, no clock.

Not enforced (AWS quotas rather than syntax): at most one leading-wildcard term per query, at
most 12 terms, and geo queries, which this module does not implement.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleetjobs.domain import shadow_state
from fleetjobs.domain.errors import ServiceError

__all__ = ["FleetQuery", "InvalidQueryError", "ThingRecord"]


class InvalidQueryError(ServiceError):
    """A query string that the fleet indexing language cannot parse.

    AWS answers SearchIndex and CreateDynamicThingGroup with ``InvalidQueryException`` (HTTP 400)
    for these; the message names the position and what was expected so the user can fix it.
    """

    code = "InvalidQueryException"

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


@dataclass(frozen=True)
class ThingRecord:
    """What a query is evaluated against: one thing's indexed registry, shadow and connectivity data.

    ``shadow`` and each ``named_shadows`` value may be a shadow document as GetThingShadow returns
    it (``{"state": {"reported": ..., "desired": ...}, "metadata": ...}``) or just the state
    (``{"reported": ..., "desired": ...}``).  ``connectivity`` is None when connectivity is not
    indexed for the thing; a caller that wants ``connectivity.connected:false`` to match things
    that never connected should pass ``{"connected": False}``.
    """

    thing_name: str
    thing_id: str = ""
    thing_type_name: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    thing_group_names: Sequence[str] = ()
    shadow: Mapping[str, Any] | None = None
    named_shadows: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    connectivity: Mapping[str, Any] | None = None


# --------------------------------------------------------------------------------------------
# Values: how a JSON or registry value compares with a query value.

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_MAX_DEPTH = 64  # nesting of parentheses/NOTs; deeper input is rejected rather than overflowing the stack


def _as_number(text: str) -> float | None:
    """The number a query or attribute string spells, or None: attributes are strings in AWS."""
    if _NUMBER.fullmatch(text):
        value = float(text)
        return value if math.isfinite(value) else None
    return None


def _render(value: Any) -> str:
    """The indexed text of a scalar, lower-cased because fleet indexing search is case insensitive."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value.lower()
    return str(value).lower()


def _numeric(value: Any) -> float | None:
    """A value's number for ranges: JSON numbers, and strings that spell one (registry attributes)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return _as_number(value)
    return None


_SCALARS = (str, int, float, bool)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, _SCALARS)


def _has_leaf(value: Any) -> bool:
    """Whether a value indexes anything: a scalar, or a container holding one (as ``exists`` does)."""
    if value is None:
        return False
    if isinstance(value, Mapping):
        return any(_has_leaf(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_leaf(v) for v in value)
    return True


ScalarTest = Callable[[Any], bool]


def _exact(text: str) -> ScalarTest:
    """Equality: JSON numbers by value when the query is a number, everything else by lowered text."""
    lowered = text.lower()
    number = _as_number(text)

    def test(value: Any) -> bool:
        if number is not None and not isinstance(value, bool | str) and isinstance(value, int | float):
            return value == number
        return _render(value) == lowered

    return test


def _wildcard(regex: str, literal_prefix: str, prefix_only: bool) -> ScalarTest:
    """Wildcard match on the lowered text; ``abc*`` is a plain prefix test because it is the common case."""
    if prefix_only:
        prefix = literal_prefix.lower()
        return lambda value: _render(value).startswith(prefix)
    compiled = re.compile(regex, re.DOTALL | re.IGNORECASE)
    return lambda value: compiled.fullmatch(_render(value)) is not None


@dataclass(frozen=True)
class _Bound:
    text: str
    inclusive: bool


def _range(low: _Bound | None, high: _Bound | None) -> ScalarTest:
    """A range test: numeric when the value and every given bound are numbers, else on lowered strings."""
    low_num = _as_number(low.text) if low else None
    high_num = _as_number(high.text) if high else None
    numeric_bounds = (low is None or low_num is not None) and (high is None or high_num is not None)
    low_text = low.text.lower() if low else ""
    high_text = high.text.lower() if high else ""

    def within(value: Any, lo: Any, hi: Any) -> bool:
        if low is not None and (value < lo if low.inclusive else value <= lo):
            return False
        return high is None or (value <= hi if high.inclusive else value < hi)

    def test(value: Any) -> bool:
        if numeric_bounds:
            number = _numeric(value)
            if number is not None:
                return within(number, low_num, high_num)
        return within(_render(value), low_text, high_text)

    return test


# --------------------------------------------------------------------------------------------
# Fields: where a field path finds its values on a ThingRecord.

Resolver = Callable[[ThingRecord], list[Any]]


def _flatten(values: list[Any]) -> list[Any]:
    """Arrays match if any element matches, so a path's values are its array elements, recursively."""
    out: list[Any] = []
    stack = list(reversed(values))
    while stack:
        item = stack.pop()
        if isinstance(item, list | tuple):
            stack.extend(reversed(item))
        elif item is not None:
            out.append(item)
    return out


def _walk(root: Any, parts: Sequence[str]) -> list[Any]:
    """The values at ``parts`` below ``root``, stepping through arrays of objects on the way."""
    current = root
    for index, part in enumerate(parts):  # fast path: plain nested objects, the usual shadow shape
        if isinstance(current, Mapping):
            current = current.get(part)
        elif isinstance(current, list | tuple):
            return _walk_arrays(current, parts[index:])
        else:
            return []
    if current is None:
        return []
    return _flatten([current]) if isinstance(current, list | tuple) else [current]


def _walk_arrays(root: Any, parts: Sequence[str]) -> list[Any]:
    """The general walk, once an array is met: every element is followed, and arrays flatten."""
    current = _flatten([root])
    for part in parts:
        following = [item[part] for item in current if isinstance(item, Mapping) and part in item]
        current = _flatten(following)
        if not current:
            break
    return current


def _shadow_section(document: Mapping[str, Any] | None, section: str) -> Any:
    """One section of a shadow given either as a full document (``{"state": ...}``) or as its state."""
    if not isinstance(document, Mapping):
        return None
    state = document.get("state")
    state = state if isinstance(state, Mapping) else document
    if section == "metadata":
        return document.get("metadata", state.get("metadata"))
    if section == "delta":
        if "delta" in state:
            return state["delta"]
        return shadow_state.delta(state.get("desired"), state.get("reported")) or None
    if section == "hasDelta":
        flag = document.get("hasDelta", state.get("hasDelta"))
        if isinstance(flag, bool):
            return flag
        return bool(_shadow_section(document, "delta"))
    return state.get(section)


_SHADOW_SECTIONS = ("reported", "desired", "delta", "metadata")
_FIELD_ROOTS = (
    "thingName, thingId, thingTypeName, thingGroupNames, attributes.<name>, "
    "shadow.reported|desired|delta|metadata.<path>, shadow.hasDelta, "
    "shadow.name.<shadowName>.reported|desired|delta|metadata.<path>, shadow.name.<shadowName>.hasDelta, "
    "connectivity.connected|timestamp|disconnectReason"
)


def _shadow_resolver(pick: Callable[[ThingRecord], Mapping[str, Any] | None], rest: list[str]) -> Resolver | None:
    """Resolver for the part of a shadow field after ``shadow.`` or ``shadow.name.<name>.``."""
    if rest == ["hasDelta"]:

        def has_delta(thing: ThingRecord) -> list[Any]:
            document = pick(thing)
            return [] if document is None else [_shadow_section(document, "hasDelta")]

        return has_delta
    if not rest or rest[0] not in _SHADOW_SECTIONS:
        return None
    section, path = rest[0], rest[1:]
    return lambda thing: _walk(_shadow_section(pick(thing), section), path)


def _resolver(name: str) -> Resolver | None:
    """Map a field name to the values it indexes on a thing, or None for a field AWS does not index."""
    if name == "thingName":
        return lambda thing: [thing.thing_name]
    if name == "thingId":
        return lambda thing: [thing.thing_id] if thing.thing_id else []
    if name == "thingTypeName":
        return lambda thing: [thing.thing_type_name] if thing.thing_type_name else []
    if name == "thingGroupNames":
        return lambda thing: list(thing.thing_group_names)
    if name.startswith("attributes."):
        key = name[len("attributes.") :]  # attribute names may themselves contain dots
        if not key:
            return None
        return lambda thing: [thing.attributes[key]] if key in thing.attributes else []
    if name.startswith("connectivity."):
        parts = name.split(".")[1:]
        if not all(parts):
            return None
        return lambda thing: _walk(thing.connectivity, parts) if thing.connectivity is not None else []
    if name.startswith("shadow.name."):
        parts = name.split(".")[2:]
        if len(parts) < 2 or not parts[0]:
            return None
        shadow_name = parts[0]
        return _shadow_resolver(lambda thing: thing.named_shadows.get(shadow_name), parts[1:])
    if name.startswith("shadow."):
        return _shadow_resolver(lambda thing: thing.shadow, name.split(".")[1:])
    return None


def _all_values(thing: ThingRecord) -> Iterator[Any]:
    """Every value an unfielded term searches: registry fields and shadow reported/desired leaves."""
    yield thing.thing_name
    if thing.thing_id:
        yield thing.thing_id
    if thing.thing_type_name:
        yield thing.thing_type_name
    yield from thing.attributes.values()
    yield from thing.thing_group_names
    documents = [thing.shadow, *thing.named_shadows.values()]
    stack = [_shadow_section(doc, section) for doc in documents for section in ("reported", "desired")]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif item is not None:
            yield item


# --------------------------------------------------------------------------------------------
# Parsing: a recursive-descent parser straight over the characters, because what ends a token
# depends on where it is (``-`` negates a clause but is a sign inside ``temp:-5``).

Predicate = Callable[[ThingRecord], bool]
_KEYWORD = re.compile(r"(AND|OR|NOT|&&|\|\|)(?=[\s()]|$)")
_TO = re.compile(r"TO(?=\s|$)")
_VALUE_END = frozenset(" \t\r\n\f\v()")
_FIELD_END = _VALUE_END | frozenset(':<>"')
_RANGE_END = _VALUE_END | frozenset("]}")


@dataclass
class _Word:
    """A scanned value: its unescaped text, and the regex it means if it has unescaped wildcards."""

    text: str
    regex: str
    wild: bool
    quoted: bool
    prefix_only: bool  # ``abc*``: one trailing star and no other wildcard

    def test(self) -> ScalarTest:
        if not self.wild:
            return _exact(self.text)
        return _wildcard(self.regex, self.text[:-1], self.prefix_only)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0
        self.fields: set[str] = set()

    # -- errors and scanning -------------------------------------------------------------------

    def error(self, message: str, position: int | None = None) -> InvalidQueryError:
        at = self.pos if position is None else position
        return InvalidQueryError(f"Invalid query at position {at}: {message} (query: {self.text!r})", at)

    def found(self) -> str:
        if self.pos >= len(self.text):
            return "end of query"
        keyword = _KEYWORD.match(self.text, self.pos)
        if keyword:
            return f"operator {keyword.group(1)!r}"
        return f"{self.text[self.pos]!r}"

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def keyword(self) -> str | None:
        """The boolean operator at the current position, if any (``&&``/``||`` are Lucene spellings)."""
        match = _KEYWORD.match(self.text, self.pos)
        if not match:
            return None
        return {"&&": "AND", "||": "OR"}.get(match.group(1), match.group(1))

    def nest(self) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise self.error(f"query is nested more than {_MAX_DEPTH} levels deep")

    def scan_quoted(self) -> _Word:
        start = self.pos
        self.pos += 1
        chars: list[str] = []
        while True:
            if self.pos >= len(self.text):
                raise self.error("unterminated quoted string; expected '\"'", start)
            char = self.text[self.pos]
            if char == "\\":
                if self.pos + 1 >= len(self.text):
                    raise self.error("expected a character after '\\'")
                chars.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            self.pos += 1
            if char == '"':
                text = "".join(chars)
                return _Word(text, re.escape(text), wild=False, quoted=True, prefix_only=False)
            chars.append(char)

    def scan_word(self, stop: frozenset[str]) -> _Word:
        """A bare word up to a stop character, honouring ``\\`` escapes and noting ``*``/``?`` wildcards."""
        chars: list[str] = []
        regex: list[str] = []
        wildcards: list[int] = []
        while self.pos < len(self.text) and self.text[self.pos] not in stop:
            char = self.text[self.pos]
            if char == "\\":
                if self.pos + 1 >= len(self.text):
                    raise self.error("expected a character after '\\'")
                char = self.text[self.pos + 1]
                chars.append(char)
                regex.append(re.escape(char))
                self.pos += 2
                continue
            if char in "*?":
                wildcards.append(len(chars))
                regex.append(".*" if char == "*" else ".")
            else:
                regex.append(re.escape(char))
            chars.append(char)
            self.pos += 1
        text = "".join(chars)
        prefix_only = wildcards == [len(text) - 1] and text.endswith("*")
        return _Word(text, "".join(regex), wild=bool(wildcards), quoted=False, prefix_only=prefix_only)

    def scan_value(self, stop: frozenset[str], what: str) -> _Word:
        self.skip_ws()
        if self.peek() == '"':
            return self.scan_quoted()
        start = self.pos
        word = self.scan_word(stop)
        if not word.text and self.pos == start:
            raise self.error(f"expected {what}, found {self.found()}")
        return word

    # -- grammar ------------------------------------------------------------------------------

    def parse(self) -> Predicate:
        self.skip_ws()
        if self.pos >= len(self.text):
            raise self.error("the query is empty; expected a term such as thingName:*")
        predicate = self.parse_or(None)
        self.skip_ws()
        if self.pos < len(self.text):
            if self.peek() == ")":
                raise self.error("unbalanced ')': no '(' to close")
            raise self.error(f"expected an operator or end of query, found {self.found()}")
        return predicate

    def parse_or(self, default_field: str | None) -> Predicate:
        """``or_expr := and_expr (OR and_expr)*``; default_field is set inside ``field:( ... )``."""
        parts = [self.parse_and(default_field)]
        while True:
            self.skip_ws()
            if self.keyword() != "OR":
                break
            self.pos += 2  # "OR" and "||" are both two characters
            parts.append(self.parse_and(default_field))
        if len(parts) == 1:
            return parts[0]
        return lambda thing: any(part(thing) for part in parts)

    def parse_and(self, default_field: str | None) -> Predicate:
        """``and_expr := unary ((AND)? unary)*``: adjacent clauses are ANDed, AWS's default operator."""
        parts = [self.parse_unary(default_field)]
        while True:
            self.skip_ws()
            keyword = self.keyword()
            if keyword == "AND":
                self.pos += 3 if self.text.startswith("AND", self.pos) else 2
                parts.append(self.parse_unary(default_field))
            elif keyword == "NOT" or (keyword is None and self.pos < len(self.text) and self.peek() != ")"):
                parts.append(self.parse_unary(default_field))
            else:
                break
        if len(parts) == 1:
            return parts[0]
        return lambda thing: all(part(thing) for part in parts)

    def parse_unary(self, default_field: str | None) -> Predicate:
        """``unary := (NOT | '-') unary | primary``."""
        self.skip_ws()
        keyword = self.keyword()
        negate = False
        if keyword == "NOT":
            self.pos += 3
            negate = True
        elif self.peek() == "-" and self.pos + 1 < len(self.text) and not self.text[self.pos + 1].isspace():
            self.pos += 1
            negate = True
        elif keyword is not None:
            raise self.error(f"expected a term, found operator {keyword!r}")
        if negate:
            self.nest()
            self.skip_ws()
            if self.pos >= len(self.text) or self.peek() == ")":
                raise self.error(f"expected a term to negate, found {self.found()}")
            inner = self.parse_unary(default_field)
            self.depth -= 1
            return lambda thing: not inner(thing)
        return self.parse_primary(default_field)

    def parse_primary(self, default_field: str | None) -> Predicate:
        self.skip_ws()
        if self.pos >= len(self.text):
            raise self.error("expected a term, found end of query")
        char = self.peek()
        if char == "(":
            return self.parse_group(default_field)
        if char == ")":
            raise self.error("expected a term, found ')'")
        if default_field is not None:
            return self.parse_value(default_field)
        return self.parse_clause()

    def parse_group(self, default_field: str | None) -> Predicate:
        opened = self.pos
        self.pos += 1
        self.nest()
        self.skip_ws()
        if self.peek() == ")":
            raise self.error("expected a term inside '( )', found ')'")
        inner = self.parse_or(default_field)
        self.skip_ws()
        if self.peek() != ")":
            raise self.error(f"expected ')' to close the '(' at position {opened}, found {self.found()}")
        self.pos += 1
        self.depth -= 1
        return inner

    def parse_clause(self) -> Predicate:
        """A clause without a default field: ``field:value``, ``field<x``, or an unfielded term."""
        start = self.pos
        if self.peek() == '"':
            return self.unfielded(self.scan_quoted())
        word = self.scan_word(_FIELD_END)
        after_word = self.pos
        self.skip_ws()
        char = self.peek()
        if char not in (":", "<", ">") or not word.text:
            if not word.text:
                raise self.error(f"expected a term, found {self.found()}")
            self.pos = after_word
            return self.unfielded(word)
        if word.wild:
            raise self.error(f"field names cannot contain wildcards: {word.text!r}", start)
        name = word.text
        resolver = _resolver(name)
        if resolver is None:
            raise self.error(f"unknown field {name!r}; expected one of {_FIELD_ROOTS}", start)
        self.fields.add(name)
        if char == ":":
            self.pos += 1
            self.skip_ws()
            if self.peek() in ("<", ">"):
                return self.comparison(name)
            return self.parse_value(name)
        return self.comparison(name)

    def comparison(self, name: str) -> Predicate:
        """``field<x``, ``field<=x``, ``field>x``, ``field>=x`` as half-open ranges."""
        operator = self.peek()
        self.pos += 1
        inclusive = self.peek() == "="
        if inclusive:
            self.pos += 1
        value = self.scan_value(_VALUE_END, f"a value after '{operator}{'=' if inclusive else ''}'")
        if value.wild:
            raise self.error(f"a comparison needs a plain value, not the wildcard {value.text!r}")
        bound = _Bound(value.text, inclusive)
        test = _range(bound, None) if operator == ">" else _range(None, bound)
        return self.term(name, test)

    def parse_value(self, name: str) -> Predicate:
        """What follows ``field:``: a value, a range, or a parenthesised group over the same field."""
        self.skip_ws()
        char = self.peek()
        if char == "(":
            return self.parse_group(name)
        if char in ("[", "{"):
            return self.parse_range(name)
        if char in ("<", ">"):
            return self.comparison(name)
        if not char or char == ")" or self.keyword() is not None:
            # An operator where a value belongs is almost always a typo; quote it to search for it.
            raise self.error(f"expected a value for field {name!r}, found {self.found()}")
        word = self.scan_value(_VALUE_END, f"a value for field {name!r}")
        if word.wild and word.regex == ".*":
            return self.exists(name)
        return self.term(name, word.test())

    def parse_range(self, name: str) -> Predicate:
        opened = self.pos
        low_inclusive = self.peek() == "["
        self.pos += 1
        low = self.range_bound("a lower bound")
        self.skip_ws()
        if not _TO.match(self.text, self.pos):
            raise self.error(f"expected 'TO' in the range that starts at position {opened}, found {self.found()}")
        self.pos += 2
        high = self.range_bound("an upper bound")
        self.skip_ws()
        closer = self.peek()
        if closer not in ("]", "}"):
            raise self.error(f"expected ']' or '}}' to close the range at position {opened}, found {self.found()}")
        self.pos += 1
        low_bound = None if low is None else _Bound(low, low_inclusive)
        high_bound = None if high is None else _Bound(high, closer == "]")
        if low_bound is None and high_bound is None:
            return self.exists(name)
        return self.term(name, _range(low_bound, high_bound))

    def range_bound(self, what: str) -> str | None:
        """A range bound's text, or None for ``*`` (open); wildcards mean nothing else here."""
        self.skip_ws()
        if _TO.match(self.text, self.pos) and what == "a lower bound":
            raise self.error(f"expected {what} before 'TO'")
        word = self.scan_value(_RANGE_END, what)
        if not word.quoted and word.text == "*":
            return None
        return word.text

    # -- building predicates ------------------------------------------------------------------

    def term(self, name: str, test: ScalarTest) -> Predicate:
        resolve = _resolver(name)
        assert resolve is not None  # checked in parse_clause

        def predicate(thing: ThingRecord) -> bool:
            for value in resolve(thing):
                if isinstance(value, _SCALARS) and test(value):
                    return True
            return False

        return predicate

    def exists(self, name: str) -> Predicate:
        resolve = _resolver(name)
        assert resolve is not None
        return lambda thing: any(_has_leaf(value) for value in resolve(thing))

    def unfielded(self, word: _Word) -> Predicate:
        """A term with no field searches every value; a lone ``*`` matches every thing."""
        if word.wild and word.regex == ".*":
            return lambda thing: True
        self.fields.add("*")
        test = word.test()
        return lambda thing: any(test(value) for value in _all_values(thing) if _is_scalar(value))


class FleetQuery:
    """A parsed fleet indexing query: parse once, then :meth:`matches` any number of things.

    :attr:`fields` lists the field names the query reads (``"*"`` for an unfielded term, which
    reads every field), so a dynamic thing group re-evaluates a thing only when one of those changes.
    """

    __slots__ = ("_fields", "_predicate", "text")

    def __init__(self, text: str, predicate: Predicate, fields: frozenset[str]) -> None:
        self.text = text
        self._predicate = predicate
        self._fields = fields

    @classmethod
    def parse(cls, text: str) -> FleetQuery:
        """Parse ``text``; raises :class:`InvalidQueryError` naming the position and what was expected."""
        if not isinstance(text, str):
            raise InvalidQueryError("the query string must be a string")
        parser = _Parser(text)
        predicate = parser.parse()
        return cls(text, predicate, frozenset(parser.fields))

    def matches(self, thing: ThingRecord) -> bool:
        return self._predicate(thing)

    @property
    def fields(self) -> frozenset[str]:
        return self._fields

    def __repr__(self) -> str:
        return f"FleetQuery({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FleetQuery) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)
