"""The shadow delta and JSON equality of fleetjobs.domain.shadow_state (GetThingShadow, fleet index)."""

from __future__ import annotations

import pytest

from fleetjobs.domain.shadow_state import delta, json_equal


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        (True, 1, False),
        (1, True, False),
        (False, 0, False),
        (True, True, True),
        (False, True, False),
        (1, 1.0, True),
        ("1", 1, False),
        (None, None, True),
        (None, 0, False),
        ({"a": [1, {"b": True}]}, {"a": [1, {"b": True}]}, True),
        ({"a": [1, {"b": True}]}, {"a": [1, {"b": 1}]}, False),
        ({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}}, False),
        ([1, 2], [1, 2, 3], False),
        ([1, 2], [2, 1], False),
        ([True], [1], False),
        ({"a": 1}, [("a", 1)], False),
    ],
)
def test_json_equal(a, b, equal):
    assert json_equal(a, b) is equal
    assert json_equal(b, a) is equal


@pytest.mark.parametrize(
    ("desired", "reported", "expected"),
    [
        (None, {"a": 1}, {}),
        ({}, {"a": 1}, {}),
        ({"a": 1}, None, {"a": 1}),
        ({"a": 1}, {"a": 1, "b": 2}, {}),
        ({"on": True}, {"on": 1}, {"on": True}),
        ({"on": 1}, {"on": True}, {"on": 1}),
        ({"t": 20}, {"t": 20.0}, {}),
        ({"cfg": {"a": 1, "b": 2}}, {"cfg": {"a": 1, "b": 3, "c": 4}}, {"cfg": {"b": 2}}),
        ({"cfg": {"a": {"deep": "x"}}}, {"cfg": {"a": {"deep": "x"}, "z": 1}}, {}),
        ({"cfg": {"a": 1}}, {"cfg": "flat"}, {"cfg": {"a": 1}}),
        ({"cfg": "flat"}, {"cfg": {"a": 1}}, {"cfg": "flat"}),
        ({"l": [1, 2]}, {"l": [1, 2]}, {}),
        ({"l": [1, 2]}, {"l": [2, 1]}, {"l": [1, 2]}),
        ({"l": [{"a": 1}]}, {"l": [{"a": 1, "b": 2}]}, {"l": [{"a": 1}]}),  # lists compare whole, not as subsets
        ({"l": [True]}, {"l": [1]}, {"l": [True]}),
        ({"x": None, "y": 1}, {}, {"y": 1}),  # null in desired is skipped
        ({"x": None}, {"x": 5}, {}),
        ({"cfg": {"x": None, "y": 1}}, {"cfg": {"y": 1}}, {}),
    ],
)
def test_delta(desired, reported, expected):
    assert delta(desired, reported) == expected
