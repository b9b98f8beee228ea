"""Fleet-indexing rules (fleetjobs.domain.indexing): the configuration, and what the index holds of a thing."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from fleetjobs.domain.errors import InvalidRequest
from fleetjobs.domain.fleet_query import FleetQuery
from fleetjobs.domain.indexing import (
    IndexView,
    ThingDoc,
    check_dynamic_group_query,
    default_configuration,
    groups_indexed,
    normalize_thing_config,
    schema_of,
    shadow_json,
    things_indexed,
)

HAS_DELTA = FleetQuery.parse("shadow.hasDelta:true")
NO_DELTA = FleetQuery.parse("shadow.hasDelta:false")


def test_default_configuration_is_all_off():
    config = default_configuration()
    assert config == {
        "thingIndexingConfiguration": {"thingIndexingMode": "OFF", "thingConnectivityIndexingMode": "OFF"},
        "thingGroupIndexingConfiguration": {"thingGroupIndexingMode": "OFF"},
    }
    config["thingIndexingConfiguration"]["thingIndexingMode"] = "REGISTRY"
    assert default_configuration()["thingIndexingConfiguration"]["thingIndexingMode"] == "OFF"
    assert things_indexed(default_configuration()) is False
    assert groups_indexed(default_configuration()) is False


@pytest.mark.parametrize(
    ("config", "things", "groups"),
    [
        ({}, False, False),
        ({"thingIndexingConfiguration": {"thingIndexingMode": "REGISTRY"}}, True, False),
        ({"thingIndexingConfiguration": {"thingIndexingMode": "REGISTRY_AND_SHADOW"}}, True, False),
        ({"thingGroupIndexingConfiguration": {"thingGroupIndexingMode": "ON"}}, False, True),
    ],
)
def test_things_and_groups_indexed(config, things, groups):
    assert things_indexed(config) is things
    assert groups_indexed(config) is groups


# -- normalize_thing_config / schema_of / check_dynamic_group_query ---------------------------------


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"thingIndexingMode": "SHADOW"}, "thingIndexingMode must be one of OFF, REGISTRY, REGISTRY_AND_SHADOW"),
        ({"thingIndexingMode": "OFF", "thingConnectivityIndexingMode": "STATUS"}, r"\(thingConnectivityIndexingMode\)"),
        ({"thingIndexingMode": "OFF", "namedShadowIndexingMode": "ON"}, r"\(namedShadowIndexingMode\)"),
        ({"thingIndexingMode": "OFF", "deviceDefenderIndexingMode": "VIOLATIONS"}, r"\(deviceDefenderIndexingMode\)"),
        ({"thingIndexingMode": "OFF", "customFields": [{"name": "attributes.x"}]}, r"\(customFields/filter\)"),
        ({"thingIndexingMode": "OFF", "filter": {"namedShadowNames": ["a"]}}, r"\(customFields/filter\)"),
        (
            {"thingIndexingMode": "REGISTRY", "namedShadowIndexingMode": "ON"},
            "requires thingIndexingMode REGISTRY_AND_SHADOW",
        ),
        (
            {
                "thingIndexingMode": "REGISTRY_AND_SHADOW",
                "namedShadowIndexingMode": "ON",
                "filter": {"namedShadowNames": [f"s{i}" for i in range(11)]},
            },
            "at most 10 shadow names",
        ),
    ],
)
def test_normalize_thing_config_refusals(given, message):
    with pytest.raises(InvalidRequest, match=message):
        normalize_thing_config(given)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"thingIndexingMode": "REGISTRY"}, {"thingIndexingMode": "REGISTRY", "thingConnectivityIndexingMode": "OFF"}),
        (
            {"thingIndexingMode": "OFF", "customFields": [], "filter": {}, "namedShadowIndexingMode": None},
            {"thingIndexingMode": "OFF", "thingConnectivityIndexingMode": "OFF"},
        ),
        (
            {"thingIndexingMode": "OFF", "namedShadowIndexingMode": "OFF"},
            {"thingIndexingMode": "OFF", "namedShadowIndexingMode": "OFF", "thingConnectivityIndexingMode": "OFF"},
        ),
        (
            {
                "thingIndexingMode": "REGISTRY_AND_SHADOW",
                "thingConnectivityIndexingMode": "STATUS",
                "namedShadowIndexingMode": "ON",
                "filter": {"namedShadowNames": [f"s{i}" for i in range(10)]},
            },
            {
                "thingIndexingMode": "REGISTRY_AND_SHADOW",
                "thingConnectivityIndexingMode": "STATUS",
                "namedShadowIndexingMode": "ON",
                "filter": {"namedShadowNames": [f"s{i}" for i in range(10)]},
            },
        ),
    ],
)
def test_normalize_thing_config_accepted(given, expected):
    assert normalize_thing_config(given) == expected


@pytest.mark.parametrize(
    ("config", "schema"),
    [
        ({}, "OFF"),
        ({"thingIndexingMode": "REGISTRY"}, "REGISTRY"),
        (
            {"thingIndexingMode": "REGISTRY", "thingConnectivityIndexingMode": "STATUS"},
            "REGISTRY_AND_CONNECTIVITY_STATUS",
        ),
        ({"thingIndexingMode": "REGISTRY_AND_SHADOW", "thingConnectivityIndexingMode": "OFF"}, "REGISTRY_AND_SHADOW"),
        (
            {"thingIndexingMode": "REGISTRY_AND_SHADOW", "thingConnectivityIndexingMode": "STATUS"},
            "REGISTRY_AND_SHADOW_AND_CONNECTIVITY_STATUS",
        ),
        ({"thingIndexingMode": "REGISTRY_AND_SHADOW", "namedShadowIndexingMode": "ON"}, "MULTI_INDEXING_MODE"),
        ({"thingIndexingMode": "REGISTRY", "deviceDefenderIndexingMode": "VIOLATIONS"}, "MULTI_INDEXING_MODE"),
        ({"thingIndexingMode": "REGISTRY", "deviceDefenderIndexingMode": "OFF"}, "REGISTRY"),
    ],
)
def test_schema_of(config, schema):
    assert schema_of(config) == schema


def test_check_dynamic_group_query():
    assert check_dynamic_group_query(None, None) == ("AWS_Things", "2017-09-30")
    assert check_dynamic_group_query("AWS_Things", "2017-09-30") == ("AWS_Things", "2017-09-30")
    with pytest.raises(InvalidRequest, match="index AWS_Things only, not AWS_ThingGroups"):
        check_dynamic_group_query("AWS_ThingGroups", None)
    with pytest.raises(InvalidRequest, match="Query version 2020-01-01 is not supported; use 2017-09-30"):
        check_dynamic_group_query(None, "2020-01-01")


# -- IndexView / ThingDoc ---------------------------------------------------------------------------


def view(mode="REGISTRY_AND_SHADOW", **extra) -> IndexView:
    return IndexView({"thingIndexingConfiguration": {"thingIndexingMode": mode, **extra}})


@pytest.mark.parametrize(
    ("config", "shadow", "named", "connectivity"),
    [
        (default_configuration()["thingIndexingConfiguration"], False, frozenset(), False),
        ({}, False, frozenset(), False),
        ({"thingIndexingMode": "REGISTRY_AND_SHADOW"}, True, frozenset(), False),
        (
            {
                "thingIndexingMode": "REGISTRY_AND_SHADOW",
                "namedShadowIndexingMode": "ON",
                "filter": {"namedShadowNames": ["$package", "cfg"]},
            },
            True,
            frozenset({"$package", "cfg"}),
            False,
        ),
        (
            {"thingIndexingMode": "REGISTRY_AND_SHADOW", "filter": {"namedShadowNames": ["cfg"]}},
            True,
            frozenset(),
            False,
        ),
        (
            {"thingIndexingMode": "REGISTRY", "namedShadowIndexingMode": "ON", "filter": {"namedShadowNames": ["cfg"]}},
            False,
            frozenset(),
            False,
        ),
        ({"thingIndexingMode": "REGISTRY", "thingConnectivityIndexingMode": "STATUS"}, False, frozenset(), True),
    ],
)
def test_index_view(config, shadow, named, connectivity):
    v = IndexView({"thingIndexingConfiguration": config})
    assert (v.shadow, v.named, v.connectivity) == (shadow, named, connectivity)


@dataclass
class Row:
    id: int = 1
    thing_name: str = "pump-1"
    thing_id: str = "tid-1"
    thing_type_name: str | None = "pump"
    attributes: dict[str, str] | None = None


def thing(shadow=None, **named) -> ThingDoc:
    doc = ThingDoc(Row(attributes={"model": "x"}))
    doc.all_groups = ["zeta", "alpha", "dyn"]
    doc.static_groups = ["zeta", "alpha"]
    if shadow is not None:
        doc.shadows[""] = shadow
    doc.shadows.update(named)
    return doc


def test_record_groups_shadows_and_connectivity():
    doc = thing({"reported": {"on": True}}, cfg={"desired": {"x": 1}})
    rec = doc.record(view(), static_only=True)
    assert (rec.thing_name, rec.thing_id, rec.thing_type_name) == ("pump-1", "tid-1", "pump")
    assert rec.attributes == {"model": "x"}
    assert rec.thing_group_names == ("zeta", "alpha")
    assert doc.record(view(), static_only=False).thing_group_names == ("zeta", "alpha", "dyn")
    assert rec.shadow == {"reported": {"on": True}}
    assert rec.named_shadows == {"cfg": {"desired": {"x": 1}}}
    assert rec.connectivity is None
    assert doc.record(view(thingConnectivityIndexingMode="STATUS"), static_only=True).connectivity == {
        "connected": False
    }


def test_record_of_bare_thing():
    rec = ThingDoc(Row(thing_type_name=None)).record(view("REGISTRY"), static_only=False)
    assert (rec.attributes, rec.thing_group_names, rec.shadow, rec.named_shadows) == ({}, (), None, {})
    assert FleetQuery.parse("shadow.hasDelta:*").matches(rec) is False


def test_document_of_bare_thing_drops_empty_members():
    assert ThingDoc(Row(thing_type_name=None)).document(view("REGISTRY")) == {"thingName": "pump-1", "thingId": "tid-1"}


def test_document_fields():
    doc = thing({"reported": {"on": True}, "desired": {"on": True}}, cfg={"desired": {"x": 1}})
    out = doc.document(view(thingConnectivityIndexingMode="STATUS"))
    assert set(out) == {
        "thingName",
        "thingId",
        "thingTypeName",
        "thingGroupNames",
        "attributes",
        "shadow",
        "connectivity",
    }
    assert out["thingGroupNames"] == ["alpha", "dyn", "zeta"]
    assert out["attributes"] == {"model": "x"}
    assert out["connectivity"] == {"connected": False}
    assert " " not in out["shadow"]  # compact JSON
    assert json.loads(out["shadow"]) == {
        "reported": {"on": True},
        "desired": {"on": True},
        "hasDelta": False,
        "name": {"cfg": {"desired": {"x": 1}, "hasDelta": True}},
    }


def test_document_with_named_shadow_only():
    out = thing(None, cfg={"reported": {"x": 1}}).document(view())
    assert json.loads(out["shadow"]) == {"name": {"cfg": {"reported": {"x": 1}, "hasDelta": False}}}


def test_nested_subset_desired_has_no_delta_in_document_and_query():
    doc = thing({"desired": {"cfg": {"mode": "eco"}}, "reported": {"cfg": {"mode": "eco", "level": 3}, "on": True}})
    assert json.loads(doc.document(view())["shadow"])["hasDelta"] is False
    rec = doc.record(view(), static_only=False)
    assert NO_DELTA.matches(rec) is True
    assert HAS_DELTA.matches(rec) is False


def test_bool_desired_int_reported_has_delta_in_document_and_query():
    doc = thing({"desired": {"on": True}, "reported": {"on": 1}})
    assert json.loads(doc.document(view())["shadow"])["hasDelta"] is True
    rec = doc.record(view(), static_only=False)
    assert HAS_DELTA.matches(rec) is True
    assert NO_DELTA.matches(rec) is False


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ({}, {"hasDelta": False}),
        ({"reported": None, "desired": {"a": 1}}, {"desired": {"a": 1}, "hasDelta": True}),
        ({"reported": {"a": 1}}, {"reported": {"a": 1}, "hasDelta": False}),
        ({"reported": {"a": 1}, "desired": {"a": 2}}, {"reported": {"a": 1}, "desired": {"a": 2}, "hasDelta": True}),
    ],
)
def test_shadow_json(state, expected):
    assert shadow_json(state) == expected
