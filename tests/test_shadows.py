"""Device shadows through boto3's ``iot-data`` client over real HTTP (JOBS_API.md §1.13, §6)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from fleetjobs.domain import shadow_state
from tests.harness import Server, unique


@pytest.fixture
def data(server: Server) -> Any:
    return server.client("iot-data")


@pytest.fixture
def thing(iot: Any) -> str:
    name = unique("dev")
    iot.create_thing(thingName=name)
    return name


def update(data: Any, thing: str, doc: dict[str, Any], **kw: Any) -> dict[str, Any]:
    out = data.update_thing_shadow(thingName=thing, payload=json.dumps(doc).encode(), **kw)
    return json.loads(out["payload"].read())


def get(data: Any, thing: str, **kw: Any) -> dict[str, Any]:
    return json.loads(data.get_thing_shadow(thingName=thing, **kw)["payload"].read())


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


def status_of(exc: pytest.ExceptionInfo[ClientError]) -> int:
    return exc.value.response["ResponseMetadata"]["HTTPStatusCode"]


class TestClassicShadow:
    def test_create_and_get(self, data: Any, thing: str) -> None:
        out = update(data, thing, {"state": {"desired": {"color": "red"}, "reported": {"color": "blue"}}})
        assert out["state"] == {"desired": {"color": "red"}, "reported": {"color": "blue"}}
        assert out["version"] == 1
        assert isinstance(out["timestamp"], int)
        assert out["metadata"]["desired"]["color"]["timestamp"] == out["timestamp"]
        doc = get(data, thing)
        assert doc["state"] == {"desired": {"color": "red"}, "reported": {"color": "blue"}, "delta": {"color": "red"}}
        assert doc["version"] == 1
        assert set(doc["metadata"]) == {"desired", "reported"}
        assert doc["metadata"]["reported"]["color"]["timestamp"] == out["timestamp"]

    def test_merge_and_null_delete(self, data: Any, thing: str) -> None:
        update(data, thing, {"state": {"reported": {"a": 1, "nested": {"x": 1, "y": 2}, "list": [1, 2]}}})
        out = update(data, thing, {"state": {"reported": {"a": None, "nested": {"y": 3, "z": 4}, "list": [9]}}})
        assert out["version"] == 2
        assert out["state"]["reported"]["a"] is None  # the answer echoes the request
        doc = get(data, thing)
        assert doc["state"]["reported"] == {"nested": {"x": 1, "y": 3, "z": 4}, "list": [9]}
        assert set(doc["metadata"]["reported"]["nested"]) == {"x", "y", "z"}
        assert len(doc["metadata"]["reported"]["list"]) == 1
        # a section set to null is cleared; the shadow stays
        update(data, thing, {"state": {"desired": {"on": True}}})
        update(data, thing, {"state": {"desired": None}})
        doc = get(data, thing)
        assert "desired" not in doc["state"] and "delta" not in doc["state"]
        assert doc["version"] == 4
        # state null clears everything, the version keeps counting
        update(data, thing, {"state": None})
        doc = get(data, thing)
        assert doc["state"] == {} and doc["version"] == 5

    def test_delta(self, data: Any, thing: str) -> None:
        update(
            data,
            thing,
            {
                "state": {
                    "desired": {"temp": 20, "mode": "eco", "fan": {"speed": 2, "dir": "in"}},
                    "reported": {"temp": 20, "mode": "boost", "fan": {"speed": 1, "dir": "in"}},
                }
            },
        )
        assert get(data, thing)["state"]["delta"] == {"mode": "eco", "fan": {"speed": 2}}
        update(data, thing, {"state": {"reported": {"mode": "eco", "fan": {"speed": 2}}}})
        assert "delta" not in get(data, thing)["state"]

    def test_version_conflict(self, data: Any, thing: str) -> None:
        update(data, thing, {"state": {"reported": {"a": 1}}})
        out = update(data, thing, {"state": {"reported": {"a": 2}}, "version": 1, "clientToken": "tok-1"})
        assert out["version"] == 2 and out["clientToken"] == "tok-1"
        with pytest.raises(ClientError) as e:
            update(data, thing, {"state": {"reported": {"a": 3}}, "version": 1})
        assert error_code(e) == "ConflictException"
        assert status_of(e) == 409
        assert get(data, thing)["state"]["reported"] == {"a": 2}

    def test_invalid_documents(self, data: Any, thing: str) -> None:
        bad: list[bytes] = [
            b"not json",
            b"[]",
            json.dumps({"desired": {"a": 1}}).encode(),
            json.dumps({"state": {"delta": {"a": 1}}}).encode(),
            json.dumps({"state": {"desired": 5}}).encode(),
            json.dumps({"state": {"reported": {"a": 1}}, "version": "x"}).encode(),
            json.dumps({"state": {"reported": {"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}}}).encode(),
        ]
        for payload in bad:
            with pytest.raises(ClientError) as e:
                data.update_thing_shadow(thingName=thing, payload=payload)
            assert error_code(e) == "InvalidRequestException", payload
        with pytest.raises(ClientError) as e:
            data.update_thing_shadow(thingName=thing, payload=json.dumps({"state": {"reported": {"a": "x" * 9000}}}))
        assert error_code(e) == "RequestEntityTooLargeException"
        assert status_of(e) == 413

    def test_delete(self, data: Any, thing: str) -> None:
        update(data, thing, {"state": {"reported": {"a": 1}}})
        update(data, thing, {"state": {"reported": {"a": 2}}})
        out = json.loads(data.delete_thing_shadow(thingName=thing)["payload"].read())
        assert out["version"] == 2 and isinstance(out["timestamp"], int)
        with pytest.raises(ClientError) as e:
            data.get_thing_shadow(thingName=thing)
        assert error_code(e) == "ResourceNotFoundException"
        with pytest.raises(ClientError) as e:
            data.delete_thing_shadow(thingName=thing)
        assert error_code(e) == "ResourceNotFoundException"

    def test_unknown_thing(self, data: Any) -> None:
        name = unique("ghost")
        with pytest.raises(ClientError) as e:
            data.get_thing_shadow(thingName=name)
        assert error_code(e) == "ResourceNotFoundException"
        assert status_of(e) == 404
        assert name in e.value.response["Error"]["Message"]
        with pytest.raises(ClientError) as e:
            data.delete_thing_shadow(thingName=name, shadowName="cfg")
        assert error_code(e) == "ResourceNotFoundException"
        assert data.list_named_shadows_for_thing(thingName=name)["results"] == []

    def test_delete_thing_deletes_its_shadows(self, iot: Any, data: Any, thing: str) -> None:
        update(data, thing, {"state": {"reported": {"a": 1}}})
        update(data, thing, {"state": {"reported": {"a": 1}}}, shadowName="cfg")
        iot.delete_thing(thingName=thing)
        for kw in ({}, {"shadowName": "cfg"}):
            with pytest.raises(ClientError) as e:
                data.get_thing_shadow(thingName=thing, **kw)
            assert error_code(e) == "ResourceNotFoundException"
        assert data.list_named_shadows_for_thing(thingName=thing)["results"] == []


class TestNamedShadows:
    def test_named_shadows_are_separate(self, data: Any, thing: str) -> None:
        update(data, thing, {"state": {"reported": {"where": "classic"}}})
        out = update(data, thing, {"state": {"reported": {"where": "cfg"}}}, shadowName="cfg")
        assert out["version"] == 1
        assert get(data, thing)["state"]["reported"] == {"where": "classic"}
        assert get(data, thing, shadowName="cfg")["state"]["reported"] == {"where": "cfg"}
        with pytest.raises(ClientError) as e:
            data.get_thing_shadow(thingName=thing, shadowName="other")
        assert error_code(e) == "ResourceNotFoundException"
        data.delete_thing_shadow(thingName=thing, shadowName="cfg")
        assert get(data, thing)["state"]["reported"] == {"where": "classic"}

    def test_list_named_shadows(self, data: Any, thing: str) -> None:
        names = ["a-1", "b-2", "c-3", "d-4", "e-5"]
        update(data, thing, {"state": {"reported": {"x": 1}}})  # the classic shadow is not listed
        for n in reversed(names):
            update(data, thing, {"state": {"reported": {"x": 1}}}, shadowName=n)
        out = data.list_named_shadows_for_thing(thingName=thing)
        assert out["results"] == names and "nextToken" not in out and out["timestamp"]
        listed: list[str] = []
        token = None
        pages = 0
        while True:
            kw = {"nextToken": token} if token else {}
            out = data.list_named_shadows_for_thing(thingName=thing, pageSize=2, **kw)
            assert len(out["results"]) <= 2
            listed += out["results"]
            pages += 1
            token = out.get("nextToken")
            if not token:
                break
        assert listed == names and pages == 3


class TestPackageShadow:
    def test_accepts_version_and_attributes(self, data: Any, thing: str) -> None:
        doc = {"state": {"reported": {"fw": {"version": "1.2.3", "attributes": {"channel": "beta"}}}}}
        update(data, thing, doc, shadowName="$package")
        assert get(data, thing, shadowName="$package")["state"]["reported"] == doc["state"]["reported"]
        update(data, thing, {"state": {"reported": {"fw": None}}}, shadowName="$package")
        assert get(data, thing, shadowName="$package")["state"] == {}  # an emptied section is not shown
        assert "$package" in data.list_named_shadows_for_thing(thingName=thing)["results"]

    @pytest.mark.parametrize(
        "state",
        [
            {"reported": {"fw": {"version": "1.0", "extra": "no"}}},
            {"reported": {"fw": "1.0"}},
            {"reported": {"fw": {"version": 1}}},
            {"reported": {"fw": {"attributes": {"a": 1}}}},
            {"desired": {"fw": {"version": "1.0"}}},
        ],
    )
    def test_rejects_other_keys(self, data: Any, thing: str, state: dict[str, Any]) -> None:
        with pytest.raises(ClientError) as e:
            update(data, thing, {"state": state}, shadowName="$package")
        assert error_code(e) == "InvalidRequestException"
        # the same document is fine in any other shadow
        update(data, thing, {"state": state}, shadowName="pkg-like")


class TestDomainRules:
    """The pure merge / delta rules, without a server."""

    def test_merge(self) -> None:
        assert shadow_state.merge({"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"b": None, "e": 3}, "d": [1]}) == {
            "a": {"c": 2, "e": 3},
            "d": [1],
        }

    def test_delta(self) -> None:
        assert shadow_state.delta({"a": 1, "b": {"c": 1, "d": 2}}, {"a": 1, "b": {"c": 1}}) == {"b": {"d": 2}}
        assert shadow_state.delta({"a": [1, 2]}, {"a": [1]}) == {"a": [1, 2]}
        assert shadow_state.delta(None, {"a": 1}) == {}
