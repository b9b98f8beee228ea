"""Registry rules (fleetjobs.domain.registry): AttributePayload semantics, thing-group properties, quotas."""

from __future__ import annotations

import pytest

from fleetjobs.domain.errors import InvalidRequest
from fleetjobs.domain.registry import (
    apply_attribute_payload,
    check_attribute_count,
    check_searchable_attributes,
    merged_group_properties,
    normalize_group_properties,
    payload_attributes,
)


def attrs(n: int) -> dict[str, str]:
    return {f"a{i}": str(i) for i in range(n)}


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (None, {}),
        ({}, {}),
        ({"attributes": None}, {}),
        ({"attributes": {"a": "1", "b": ""}, "merge": True}, {"a": "1"}),
    ],
)
def test_payload_attributes(payload, expected):
    assert payload_attributes(payload) == expected


CURRENT = {"a": "1", "b": "2"}


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (None, CURRENT),
        ({"merge": True}, CURRENT),  # no attributes: nothing changes
        ({"attributes": None, "merge": False}, CURRENT),
        ({"attributes": {"c": "3"}}, {"c": "3"}),  # merge defaults to false: replace
        ({"attributes": {"c": "3"}, "merge": False}, {"c": "3"}),
        ({"attributes": {}}, {}),
        ({"attributes": {"c": "3", "a": "9"}, "merge": True}, {"a": "9", "b": "2", "c": "3"}),
        ({"attributes": {"a": ""}, "merge": True}, {"b": "2"}),  # empty value removes
        ({"attributes": {"zz": ""}, "merge": True}, CURRENT),
        ({"attributes": {"a": "", "c": "3"}}, {"c": "3"}),
    ],
)
def test_apply_attribute_payload(payload, expected):
    before = dict(CURRENT)
    result = apply_attribute_payload(CURRENT, payload)
    assert result == expected
    assert result is not CURRENT
    assert before == CURRENT


@pytest.mark.parametrize(("type_name", "limit"), [(None, 3), ("", 3), ("sensor", 50)])
def test_attribute_count_limit(type_name, limit):
    assert check_attribute_count(attrs(limit), type_name) is None
    kind = "with" if type_name else "without"
    with pytest.raises(
        InvalidRequest, match=f"A thing {kind} a thing type can have at most {limit} attributes; .* {limit + 1}"
    ):
        check_attribute_count(attrs(limit + 1), type_name)


def test_searchable_attributes_limit():
    assert check_searchable_attributes({}) is None
    assert check_searchable_attributes({"searchableAttributes": None}) is None
    assert check_searchable_attributes({"searchableAttributes": ["a", "b", "c"]}) is None
    with pytest.raises(InvalidRequest, match="at most 3 searchable attributes; 4 were given"):
        check_searchable_attributes({"searchableAttributes": ["a", "b", "c", "d"]})


# -- thing groups -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("props", "expected"),
    [
        (None, {}),
        ({}, {}),
        ({"thingGroupDescription": "", "attributePayload": {"attributes": {}, "merge": True}}, {}),
        ({"attributePayload": {"attributes": {"x": ""}}}, {}),
        (
            {"thingGroupDescription": "d", "attributePayload": {"attributes": {"x": "1", "y": ""}, "merge": True}},
            {"thingGroupDescription": "d", "attributePayload": {"attributes": {"x": "1"}}},
        ),
    ],
)
def test_normalize_group_properties(props, expected):
    assert normalize_group_properties(props) == expected


def test_normalize_group_properties_attribute_limit():
    fifty = normalize_group_properties({"attributePayload": {"attributes": attrs(50)}})
    assert fifty == {"attributePayload": {"attributes": attrs(50)}}
    with pytest.raises(InvalidRequest, match="at most 50 attributes; 51 were given"):
        normalize_group_properties({"attributePayload": {"attributes": attrs(51)}})


GROUP = {"thingGroupDescription": "old", "attributePayload": {"attributes": {"a": "1"}}}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, GROUP),
        ({"thingGroupDescription": "new"}, {**GROUP, "thingGroupDescription": "new"}),
        ({"thingGroupDescription": ""}, {"attributePayload": {"attributes": {"a": "1"}}}),
        ({"thingGroupDescription": None}, {"attributePayload": {"attributes": {"a": "1"}}}),
        (
            {"attributePayload": {"attributes": {"b": "2"}, "merge": True}},
            {"thingGroupDescription": "old", "attributePayload": {"attributes": {"a": "1", "b": "2"}}},
        ),
        (
            {"attributePayload": {"attributes": {"b": "2"}}},
            {"thingGroupDescription": "old", "attributePayload": {"attributes": {"b": "2"}}},
        ),
        ({"attributePayload": {"attributes": {"a": ""}, "merge": True}}, {"thingGroupDescription": "old"}),
        ({"attributePayload": {"merge": True}}, GROUP),
    ],
)
def test_merged_group_properties(given, expected):
    snapshot = {"thingGroupDescription": "old", "attributePayload": {"attributes": {"a": "1"}}}
    assert merged_group_properties(GROUP, given) == expected
    assert snapshot == GROUP


def test_merged_group_properties_from_nothing():
    assert merged_group_properties(None, {"thingGroupDescription": ""}) == {}
    assert merged_group_properties(None, {"attributePayload": {"attributes": {"x": "1"}}}) == {
        "attributePayload": {"attributes": {"x": "1"}}
    }


def test_merged_group_properties_attribute_limit():
    current = {"attributePayload": {"attributes": attrs(49)}}
    merged = merged_group_properties(current, {"attributePayload": {"attributes": {"new": "1"}, "merge": True}})
    assert len(merged["attributePayload"]["attributes"]) == 50
    with pytest.raises(InvalidRequest, match="at most 50 attributes; 51 were given"):
        merged_group_properties(current, {"attributePayload": {"attributes": {"n1": "1", "n2": "2"}, "merge": True}})
