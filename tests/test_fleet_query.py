"""The fleet indexing query language (SearchIndex, CreateDynamicThingGroup queryString).

Pure unit tests: each syntax feature with a thing it must match and one it must not, the error
messages users see, and the whole language on a generated 10,000-thing fleet compared against a
straightforward Python filter of the same things, so that precedence, wildcards, ranges and
nested shadow paths agree with what a person reading the query would expect.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from fleetjobs.domain.fleet_query import FleetQuery, InvalidQueryError, ThingRecord

PUMP = ThingRecord(
    thing_name="pump-01",
    thing_id="id-pump-01",
    thing_type_name="pump",
    attributes={"model": "x71", "version": "12", "region": "us-east", "serial.no": "abce", "site name": "a b"},
    thing_group_names=("plant-a", "east"),
    shadow={
        "state": {
            "reported": {
                "temp": 31.5,
                "on": True,
                "count": 30,
                "firmware": {"version": "1.2.0"},
                "sensors": [{"type": "temp", "ok": True}, {"type": "hum", "ok": False}],
                "tags": ["a", "b"],
            },
            "desired": {"on": False},
        }
    },
    named_shadows={"$package": {"reported": {"firmware": {"version": "1.5.09"}}}},
    connectivity={"connected": True, "timestamp": 1_700_000_000_000},
)
VALVE = ThingRecord(
    thing_name="valve-7",
    thing_type_name="valve",
    attributes={"model": "y10", "version": "9"},
    connectivity={"connected": False, "timestamp": 1_600_000_000_000, "disconnectReason": "MQTT_KEEP_ALIVE_TIMEOUT"},
)


def match(query: str, thing: ThingRecord = PUMP) -> bool:
    return FleetQuery.parse(query).matches(thing)


@pytest.mark.parametrize(
    ("query", "pump", "valve"),
    [
        # terms, quoting, case insensitivity
        ("thingName:pump-01", True, False),
        ("thingName:PUMP-01", True, False),
        ("thingName:pump", False, False),
        ('thingName:"pump-01"', True, False),
        ('attributes.site\\ name:"a b"', True, False),
        ("thingId:id-pump-01", True, False),
        ("thingTypeName:valve", False, True),
        ("thingGroupNames:east", True, False),
        ("thingGroupNames:plant*", True, False),
        ("thingGroupNames:west", False, False),
        ("attributes.serial.no:abce", True, False),
        # wildcards
        ("thingName:pump*", True, False),
        ("thingName:*-7", False, True),
        ("thingName:*mp*", True, False),
        ("attributes.model:x?1", True, False),
        ("attributes.model:x?", False, False),
        ("attributes.model:y1?", False, True),
        ("thingName:pump\\*", False, False),
        # existence and match-all
        ("*", True, True),
        ("thingName:*", True, True),
        ("attributes.region:*", True, False),
        ("thingTypeName:*", True, True),
        ("shadow.reported.firmware:*", True, False),
        ("shadow.reported:*", True, False),
        ("connectivity.disconnectReason:*", False, True),
        # ranges
        ("attributes.version:[9 TO 12]", True, True),
        ("attributes.version:{9 TO 12}", False, False),
        ("attributes.version:{9 TO 12]", True, False),
        ("attributes.version:[9 TO 12}", False, True),
        ("attributes.version:[10 TO *]", True, False),
        ("attributes.version:[* TO 10]", False, True),
        ('attributes.serial.no:["abcd" TO "abcf"]', True, False),
        ("attributes.model:[x TO z]", True, True),
        ("attributes.model:[a TO x]", False, False),
        # comparisons: numeric for numbers (9 < 12 although "9" > "12" as text), else strings
        ("attributes.version<10", False, True),
        ("attributes.version>10", True, False),
        ("attributes.version>=12", True, False),
        ("attributes.version<=9", False, True),
        ("attributes.version>12", False, False),
        ("attributes.version:>=9", True, True),
        ("attributes.model>x", True, True),
        ("attributes.model<y", True, False),
        ("shadow.reported.temp > 30", True, False),
        ("shadow.reported.temp < 31.5", False, False),
        ("shadow.reported.temp <= 31.5", True, False),
        ("connectivity.timestamp > 1650000000000", True, False),
        # shadow values by JSON value, nested objects, arrays
        ("shadow.reported.on:true", True, False),
        ("shadow.reported.on:false", False, False),
        ("shadow.reported.count:30", True, False),
        ("shadow.reported.count:30.0", True, False),
        ("shadow.reported.temp:31.5", True, False),
        ("shadow.reported.firmware.version:1.2.0", True, False),
        ("shadow.reported.firmware.version:1.2*", True, False),
        ("shadow.reported.sensors.type:hum", True, False),
        ("shadow.reported.sensors.type:wind", False, False),
        ("shadow.reported.sensors.ok:false", True, False),
        ("shadow.reported.tags:b", True, False),
        ("shadow.desired.on:false", True, False),
        ("shadow.hasDelta:true", True, False),
        ("shadow.hasDelta:false", False, False),
        ("shadow.delta.on:false", True, False),
        ("shadow.name.$package.reported.firmware.version:1.5.09", True, False),
        ("shadow.name.$package.reported.firmware.version:1.5.1", False, False),
        ("shadow.name.other.reported.firmware.version:*", False, False),
        # connectivity
        ("connectivity.connected:true", True, False),
        ("connectivity.connected:false", False, True),
        ("connectivity.disconnectReason:MQTT_KEEP_ALIVE_TIMEOUT", False, True),
        # booleans, grouping, exclusion
        ("thingName:pump* AND attributes.model:x71", True, False),
        ("thingName:pump* attributes.model:x71", True, False),
        ("thingName:pump* AND attributes.model:y10", False, False),
        ("thingName:pump* OR thingName:valve*", True, True),
        ("NOT thingName:pump*", False, True),
        ("-thingName:pump*", False, True),
        ("thingName:(pump* OR valve*)", True, True),
        ("thingName:(*-* AND -valve*)", True, False),
        ("attributes.version:([1 TO 9] OR 12)", True, True),
        ("(thingTypeName:pump OR thingTypeName:valve) AND connectivity.connected:false", False, True),
        ("attributes.model:x71 AND attributes.version<13 NOT attributes.region:us-east", False, False),
        ("NOT attributes.model:legacy", True, True),
        ("NOT NOT thingName:pump-01", True, False),
        ("thingName:pump* && thingName:*01", True, False),
        ("thingName:valve* || thingName:*01", True, True),
        # unfielded terms search every value
        ("x71", True, False),
        ("hum", True, False),
        ("1.5.09", True, False),
        ("Y1*", False, True),
        ("nowhere", False, False),
    ],
)
def test_syntax(query: str, pump: bool, valve: bool) -> None:
    assert (match(query, PUMP), match(query, VALVE)) == (pump, valve)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # NOT binds tighter than AND, AND tighter than OR.
        ("thingName:valve-7 OR thingName:pump-01 AND attributes.model:y10", False),
        ("(thingName:valve-7 OR thingName:pump-01) AND attributes.model:x71", True),
        ("thingName:pump-01 AND attributes.model:y10 OR thingTypeName:pump", True),
        ("NOT thingName:pump-01 OR thingTypeName:pump", True),
        ("NOT (thingName:pump-01 OR thingTypeName:valve)", False),
        ("NOT thingName:pump-01 AND thingTypeName:pump", False),
        ("thingTypeName:valve OR NOT thingName:pump-01 OR attributes.model:x71", True),
    ],
)
def test_precedence(query: str, expected: bool) -> None:
    assert match(query) is expected


def test_fields_lists_what_the_query_reads() -> None:
    query = FleetQuery.parse(
        "thingName:pump* AND (attributes.model:x71 OR shadow.name.$package.reported.firmware.version:1.5.09)"
        " NOT connectivity.connected:false"
    )
    assert query.fields == {
        "thingName",
        "attributes.model",
        "shadow.name.$package.reported.firmware.version",
        "connectivity.connected",
    }
    assert FleetQuery.parse("*").fields == frozenset()
    assert FleetQuery.parse("abc thingName:x").fields == {"*", "thingName"}


def test_shadow_shapes_and_missing_data() -> None:
    """Full documents and bare states both work; a thing without a shadow or connectivity matches no such term."""
    bare = ThingRecord("t", shadow={"reported": {"x": 1}, "desired": {"x": 1}})
    assert match("shadow.reported.x:1", bare)
    assert match("shadow.hasDelta:false", bare)
    assert not match("shadow.delta.x:*", bare)
    nothing = ThingRecord("t")
    for query in ("shadow.reported.x:*", "shadow.hasDelta:false", "connectivity.connected:false", "thingId:*"):
        assert not match(query, nothing)
        assert match(f"NOT {query}", nothing)
    explicit = ThingRecord("t", shadow={"state": {"reported": {}}, "hasDelta": True})
    assert match("shadow.hasDelta:true", explicit)
    nested = ThingRecord(
        "t", shadow={"state": {"desired": {"a": {"b": 1, "c": 2}}, "reported": {"a": {"b": 1, "c": 3}}}}
    )
    assert match("shadow.delta.a.c:2", nested)
    assert not match("shadow.delta.a.b:*", nested)


def test_query_equality_and_repr() -> None:
    assert FleetQuery.parse("thingName:a") == FleetQuery.parse("thingName:a")
    assert repr(FleetQuery.parse("thingName:a")) == "FleetQuery('thingName:a')"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "the query is empty"),
        ("   ", "the query is empty"),
        ("(thingName:a", "expected ')' to close the '(' at position 0, found end of query"),
        ("thingName:a)", "unbalanced ')'"),
        ("((thingName:a)", "expected ')' to close the '(' at position 0"),
        ("thingName:a AND", "position 15: expected a term, found end of query"),
        ("thingName:a OR", "expected a term, found end of query"),
        ("AND thingName:a", "position 0: expected a term, found operator 'AND'"),
        ("thingName:a OR OR thingName:b", "found operator 'OR'"),
        ("NOT", "expected a term to negate"),
        ("()", "expected a term inside '( )'"),
        ("thingName:", "expected a value for field 'thingName', found end of query"),
        ("thingName:AND", "found operator 'AND'"),
        ("thingName:[1 TO", "expected an upper bound, found end of query"),
        ("thingName:[1 5]", "expected 'TO' in the range that starts at position 10, found '5'"),
        ("thingName:[1 TO 5", "expected ']' or '}' to close the range at position 10"),
        ("thingName:[TO 5]", "expected a lower bound before 'TO'"),
        ("thingName:[1 TO ]", "expected an upper bound, found ']'"),
        ("attributes.version<", "expected a value after '<'"),
        ("attributes.version>=a*", "a comparison needs a plain value"),
        ('thingName:"abc', "unterminated quoted string"),
        ("thingName:abc\\", "expected a character after '\\'"),
        ("thingname:abc", "unknown field 'thingname'"),
        ("attributes.:x", "unknown field 'attributes.'"),
        ("shadow.name.x:1", "unknown field"),
        ("shadow.foo.x:1", "unknown field"),
        ("thing*:x", "field names cannot contain wildcards"),
        ("(" * 100 + "thingName:a" + ")" * 100, "nested more than"),
    ],
)
def test_invalid_queries(query: str, message: str) -> None:
    with pytest.raises(InvalidQueryError) as caught:
        FleetQuery.parse(query)
    assert message in caught.value.message
    assert caught.value.code == "InvalidQueryException"
    assert caught.value.position is not None


# --------------------------------------------------------------------------------------------
# The language on a 10,000-thing fleet against a hand-written filter of the same things.

MODELS = ("x71", "x81", "y10", "legacy", "Z-9")
REGIONS = ("us-east", "us-west", "eu-central", "ap south")
GROUPS = ("plant-a", "plant-b", "east", "west", "canary", "beta")


def _fleet(size: int = 10_000, seed: int = 20240501) -> list[ThingRecord]:
    """A deterministic fleet with every kind of data the language can reach, some of it missing."""
    rng = random.Random(seed)
    things: list[ThingRecord] = []
    for i in range(size):
        kind = rng.choice(("pump", "valve", "meter"))
        attributes: dict[str, str] = {}
        if rng.random() < 0.9:
            attributes["model"] = rng.choice(MODELS)
        if rng.random() < 0.85:
            attributes["version"] = str(rng.randint(1, 120))
        if rng.random() < 0.7:
            attributes["region"] = rng.choice(REGIONS)
        shadow: dict[str, Any] | None = None
        if rng.random() < 0.8:
            reported: dict[str, Any] = {
                "temp": round(rng.uniform(-10, 60), 1),
                "on": rng.random() < 0.5,
                "fw": {
                    "version": f"1.{rng.randint(0, 5)}.{rng.randint(0, 9)}",
                    "channel": rng.choice(("stable", "beta")),
                },
                "sensors": [{"type": rng.choice(("temp", "hum", "co2")), "ok": rng.random() < 0.9} for _ in range(3)],
            }
            if rng.random() < 0.5:
                reported["count"] = rng.randint(0, 50)
            desired = {"on": rng.random() < 0.5} if rng.random() < 0.5 else {}
            shadow = {"state": {"reported": reported, "desired": desired}}
        named: dict[str, dict[str, Any]] = {}
        if rng.random() < 0.6:
            named["$package"] = {"state": {"reported": {"firmware": {"version": f"1.5.{rng.randint(0, 12):02d}"}}}}
        connectivity: dict[str, Any] | None = None
        if rng.random() < 0.9:
            connected = rng.random() < 0.6
            connectivity = {"connected": connected, "timestamp": 1_700_000_000_000 + rng.randint(0, 10**9)}
            if not connected:
                connectivity["disconnectReason"] = rng.choice(
                    ("CLIENT_INITIATED_DISCONNECT", "MQTT_KEEP_ALIVE_TIMEOUT")
                )
        things.append(
            ThingRecord(
                thing_name=f"{kind}-{i:05d}",
                thing_id=f"id-{i}",
                thing_type_name=kind if rng.random() < 0.9 else None,
                attributes=attributes,
                thing_group_names=tuple(rng.sample(GROUPS, rng.randint(0, 3))),
                shadow=shadow,
                named_shadows=named,
                connectivity=connectivity,
            )
        )
    return things


def _reported(t: ThingRecord) -> dict[str, Any]:
    return t.shadow["state"]["reported"] if t.shadow else {}


def _version(t: ThingRecord) -> int | None:
    return int(t.attributes["version"]) if "version" in t.attributes else None


def _package(t: ThingRecord) -> str | None:
    package = t.named_shadows.get("$package")
    return package["state"]["reported"]["firmware"]["version"] if package else None


def _has_delta(t: ThingRecord) -> bool:
    if not t.shadow:
        return False
    state = t.shadow["state"]
    return any(state["reported"].get(k) != v for k, v in state["desired"].items())


def _conn(t: ThingRecord, key: str) -> Any:
    return (t.connectivity or {}).get(key)


def _in(value: int | None, low: int, high: int) -> bool:
    return value is not None and low <= value <= high


FilterCase = tuple[str, Callable[[ThingRecord], bool]]
FLEET_CASES: list[FilterCase] = [
    ("*", lambda t: True),
    ("thingName:pump*", lambda t: t.thing_name.startswith("pump-")),
    ("thingName:valve-0?00?", lambda t: t.thing_name.startswith("valve-0") and t.thing_name[8:10] == "00"),
    ("thingTypeName:meter", lambda t: t.thing_type_name == "meter"),
    ("NOT thingTypeName:*", lambda t: t.thing_type_name is None),
    ("attributes.model:x?1", lambda t: t.attributes.get("model") in ("x71", "x81")),
    ("attributes.model:z-9", lambda t: t.attributes.get("model") == "Z-9"),
    ('attributes.region:"ap south"', lambda t: t.attributes.get("region") == "ap south"),
    ("attributes.region:us-*", lambda t: t.attributes.get("region", "").startswith("us-")),
    ("attributes.version:[10 TO 20]", lambda t: _in(_version(t), 10, 20)),
    ("attributes.version:{10 TO 20}", lambda t: _in(_version(t), 11, 19)),
    ("attributes.version>=100", lambda t: _in(_version(t), 100, 10**9)),
    ("attributes.version<5 OR attributes.version>115", lambda t: (_version(t) or 50) < 5 or (_version(t) or 0) > 115),
    ("thingGroupNames:plant-*", lambda t: any(g.startswith("plant-") for g in t.thing_group_names)),
    (
        "thingGroupNames:canary AND NOT thingGroupNames:beta",
        lambda t: "canary" in t.thing_group_names and "beta" not in t.thing_group_names,
    ),
    ("shadow.reported.temp > 50", lambda t: "temp" in _reported(t) and _reported(t)["temp"] > 50),
    ("shadow.reported.temp:[-5 TO 0.5]", lambda t: "temp" in _reported(t) and -5 <= _reported(t)["temp"] <= 0.5),
    (
        "shadow.reported.on:true AND shadow.reported.count:*",
        lambda t: _reported(t).get("on") is True and "count" in _reported(t),
    ),
    ("shadow.reported.count:7", lambda t: _reported(t).get("count") == 7),
    (
        "shadow.reported.fw.version:1.3.* AND shadow.reported.fw.channel:beta",
        lambda t: (
            _reported(t).get("fw", {}).get("version", "").startswith("1.3.") and _reported(t)["fw"]["channel"] == "beta"
        ),
    ),
    ("shadow.reported.sensors.ok:false", lambda t: any(not s["ok"] for s in _reported(t).get("sensors", []))),
    (
        "shadow.reported.sensors.type:co2 -shadow.reported.sensors.type:hum",
        lambda t: (
            {"co2"} <= {s["type"] for s in _reported(t).get("sensors", [])}
            and "hum" not in {s["type"] for s in _reported(t).get("sensors", [])}
        ),
    ),
    ("shadow.hasDelta:true", _has_delta),
    ("shadow.name.$package.reported.firmware.version:1.5.09", lambda t: _package(t) == "1.5.09"),
    ("shadow.name.$package.reported.firmware.version<1.5.05", lambda t: (_package(t) or "9") < "1.5.05"),
    (
        "connectivity.connected:false AND connectivity.disconnectReason:MQTT*",
        lambda t: _conn(t, "connected") is False and _conn(t, "disconnectReason") == "MQTT_KEEP_ALIVE_TIMEOUT",
    ),
    (
        "connectivity.timestamp:[1700000000000 TO 1700100000000}",
        lambda t: _conn(t, "timestamp") is not None and _conn(t, "timestamp") < 1_700_100_000_000,
    ),
    (
        "(thingTypeName:pump OR thingTypeName:valve) AND attributes.model:(x71 OR legacy)"
        " NOT connectivity.connected:true",
        lambda t: (
            t.thing_type_name in ("pump", "valve")
            and t.attributes.get("model") in ("x71", "legacy")
            and _conn(t, "connected") is not True
        ),
    ),
    (
        "thingName:meter* OR attributes.model:y10 AND shadow.reported.on:false",
        lambda t: (
            t.thing_name.startswith("meter") or (t.attributes.get("model") == "y10" and _reported(t).get("on") is False)
        ),
    ),
    ("stable", lambda t: _reported(t).get("fw", {}).get("channel") == "stable"),
]


@pytest.fixture(scope="module")
def fleet() -> list[ThingRecord]:
    return _fleet()


@pytest.mark.parametrize(("query", "expected"), FLEET_CASES, ids=[q for q, _ in FLEET_CASES])
def test_fleet_matches_python_filter(
    fleet: list[ThingRecord], query: str, expected: Callable[[ThingRecord], bool]
) -> None:
    parsed = FleetQuery.parse(query)
    got = [t.thing_name for t in fleet if parsed.matches(t)]
    want = [t.thing_name for t in fleet if expected(t)]
    assert got == want
    # Every query selects a real subset, so a filter that is always true or always false fails here.
    assert query == "*" or 0 < len(want) < len(fleet)
