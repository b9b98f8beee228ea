"""fastjson means what the standard library's json means, including its edge cases."""

from __future__ import annotations

import json

import pytest

from fleetjobs.domain import fastjson


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1, "b": [true, null, 2.5], "c": "é"}',
        '{"n": 99999999999999999999}',  # beyond 64 bits: orjson refuses, json takes it
        '{"x": NaN}',
        '{"s": "\\ud800"}',  # a lone surrogate escape
        '{"k": 1, "k": 2}',  # the last duplicate wins
        "[]",
    ],
)
def test_loads_gives_the_standard_librarys_value(text: str) -> None:
    got, want = fastjson.loads(text), json.loads(text)
    assert repr(got) == repr(want)  # repr: NaN != NaN
    assert fastjson.loads(text.encode()) is not None


@pytest.mark.parametrize("text", ["{", '{"a": }', "nul", '{"a": 1} x', ""])
def test_loads_refuses_what_json_refuses_with_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        fastjson.loads(text)


@pytest.mark.parametrize("depth", [1000, 1020, 100_000])  # 1000 and 1020: within orjson's limit of 1024
def test_deep_nesting_fails_as_json_does(depth: int) -> None:
    text = '{"a":' * depth + "1" + "}" * depth
    with pytest.raises(RecursionError):
        json.loads(text)
    with pytest.raises(RecursionError):
        fastjson.loads(text)
    with pytest.raises(RecursionError):
        fastjson.loads(text.encode())


def test_moderate_nesting_parses() -> None:
    shallow = "[" * 900 + "]" * 900
    assert fastjson.loads(shallow) == json.loads(shallow)


def test_integers_beyond_64_bits_stay_integers() -> None:
    doc = fastjson.loads(b'{"executionNumber": 99999999999999999999, "ok": 18446744073709551615}')
    assert doc == {"executionNumber": 99999999999999999999, "ok": 2**64 - 1}
    assert all(isinstance(v, int) for v in doc.values())


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1, "b": [True, None, 2.5], "c": "é"},
        {"big": 2**70},
        {1: "int key"},
        {"nested": {"x": [1, {"y": "z"}]}},
    ],
)
def test_dumps_is_compact_json_of_the_same_value(value: object) -> None:
    out = fastjson.dumps(value)
    assert isinstance(out, bytes)
    assert b", " not in out and b": " not in out
    assert json.loads(out) == json.loads(json.dumps(value))
