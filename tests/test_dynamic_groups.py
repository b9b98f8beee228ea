"""Fleet indexing (SearchIndex, indexing configuration) and dynamic thing groups (JOBS_API.md §1.8-§1.9).

The tests share one server of their own, so that ``*`` searches and the account-wide indexing
configuration are not disturbed by (and do not disturb) the rest of the suite.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.fleet import Fleet, group_arn
from tests.harness import unique

FRESH: dict[str, Any] = {}


def code_of(call: Any, **kwargs: Any) -> str:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    return info.value.response["Error"]["Code"]


@pytest.fixture(scope="module")
def srv(backends):  # type: ignore[no-untyped-def]
    server = backends.server().start()
    iot = server.client("iot")
    # What a fresh account answers, recorded before indexing is turned on for the rest of the module.
    FRESH["config"] = iot.get_indexing_configuration()
    FRESH["indices"] = iot.list_indices()["indexNames"]
    FRESH["search"] = code_of(iot.search_index, queryString="*")
    FRESH["describe"] = code_of(iot.describe_index, indexName="AWS_Things")
    FRESH["dynamic"] = code_of(iot.create_dynamic_thing_group, thingGroupName=unique("dg"), queryString="*")
    iot.update_indexing_configuration(
        thingIndexingConfiguration={
            "thingIndexingMode": "REGISTRY_AND_SHADOW",
            "namedShadowIndexingMode": "ON",
            "filter": {"namedShadowNames": ["$package", "cfg"]},
        }
    )
    return server


@pytest.fixture
def iot(srv):  # type: ignore[no-untyped-def]
    return srv.client("iot")


@pytest.fixture
def fleet(iot):  # type: ignore[no-untyped-def]
    return Fleet(iot)


def search(iot: Any, query: str, **kwargs: Any) -> list[str]:
    names: list[str] = []
    token = None
    while True:
        page = iot.search_index(queryString=query, **kwargs, **({"nextToken": token} if token else {}))
        names += [t["thingName"] for t in page["things"]]
        token = page.get("nextToken")
        if not token:
            return names


def members(iot: Any, group: str) -> list[str]:
    out: list[str] = []
    for page in iot.get_paginator("list_things_in_thing_group").paginate(thingGroupName=group):
        out += page["things"]
    return sorted(out)


def statuses(iot: Any, job_id: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for page in iot.get_paginator("list_job_executions_for_job").paginate(jobId=job_id):
        for s in page["executionSummaries"]:
            out.setdefault(s["thingArn"].rsplit("/", 1)[1], []).append(s["jobExecutionSummary"]["status"])
    return out


# -- indexing configuration -----------------------------------------------------------------------------


def test_a_fresh_account_has_no_index(srv) -> None:  # type: ignore[no-untyped-def]
    assert FRESH["config"]["thingIndexingConfiguration"]["thingIndexingMode"] == "OFF"
    assert FRESH["config"]["thingGroupIndexingConfiguration"]["thingGroupIndexingMode"] == "OFF"
    assert FRESH["indices"] == []
    assert FRESH["search"] == "ResourceNotFoundException"
    assert FRESH["describe"] == "ResourceNotFoundException"
    assert FRESH["dynamic"] == "ResourceNotFoundException"


def test_configuration_round_trip_and_index_description(iot) -> None:  # type: ignore[no-untyped-def]
    config = iot.get_indexing_configuration()["thingIndexingConfiguration"]
    assert config["thingIndexingMode"] == "REGISTRY_AND_SHADOW"
    assert config["namedShadowIndexingMode"] == "ON"
    assert config["filter"] == {"namedShadowNames": ["$package", "cfg"]}
    assert iot.list_indices()["indexNames"] == ["AWS_Things"]
    index = iot.describe_index(indexName="AWS_Things")
    assert (index["indexStatus"], index["schema"]) == ("ACTIVE", "MULTI_INDEXING_MODE")
    assert code_of(iot.describe_index, indexName="AWS_ThingGroups") == "ResourceNotFoundException"
    # Inconsistent settings are refused and change nothing.
    bad = [
        {"thingIndexingMode": "OFF", "thingConnectivityIndexingMode": "STATUS"},
        {"thingIndexingMode": "REGISTRY", "namedShadowIndexingMode": "ON"},
    ]
    for cfg in bad:
        assert code_of(iot.update_indexing_configuration, thingIndexingConfiguration=cfg) == "InvalidRequestException"
    assert iot.get_indexing_configuration()["thingIndexingConfiguration"] == config


# -- SearchIndex ------------------------------------------------------------------------------------------


def test_search_registry_fields(iot, fleet) -> None:  # type: ignore[no-untyped-def]
    p = fleet.prefix
    type_name = unique("type")
    iot.create_thing_type(thingTypeName=type_name)
    specs = {
        "a1": ({"model": "m1", "fw": "2"}, type_name),
        "a2": ({"model": "m1", "fw": "7"}, None),
        "b1": ({"model": "m2", "fw": "4"}, type_name),
        "b2": ({"model": "m2:pro"}, None),
    }
    for tag, (attrs, tname) in specs.items():
        typed = {"thingTypeName": tname} if tname else {}
        iot.create_thing(thingName=f"{p}-{tag}", attributePayload={"attributes": attrs}, **typed)
    group = fleet.group("g", [f"{p}-a2", f"{p}-b1"])

    def q(query: str) -> list[str]:
        return sorted(n.rsplit("-", 1)[1] for n in search(iot, f"thingName:{p}-* AND ({query})"))

    assert q("thingName:*-a?") == ["a1", "a2"]
    assert q("attributes.model:m1") == ["a1", "a2"]
    assert q('attributes.model:"m2:pro"') == ["b2"]
    assert q(f"thingTypeName:{type_name}") == ["a1", "b1"]
    assert q(f"thingGroupNames:{group}") == ["a2", "b1"]
    assert q("attributes.fw:[2 TO 5]") == ["a1", "b1"]
    assert q("attributes.fw>3") == ["a2", "b1"]
    assert q("NOT attributes.model:m1") == ["b1", "b2"]
    assert q("attributes.model:m1 OR attributes.fw:4") == ["a1", "a2", "b1"]
    assert q("attributes.fw:*") == ["a1", "a2", "b1"]

    (doc,) = iot.search_index(queryString=f"thingName:{p}-b1")["things"]
    described = iot.describe_thing(thingName=f"{p}-b1")
    assert doc["thingId"] == described["thingId"]
    assert doc["thingTypeName"] == type_name
    assert doc["attributes"] == {"model": "m2", "fw": "4"}
    assert doc["thingGroupNames"] == [group]


def test_search_pagination(iot, fleet) -> None:  # type: ignore[no-untyped-def]
    names = fleet.things(7)
    query = f"thingName:{fleet.prefix}-*"
    pages = []
    token = None
    while True:
        page = iot.search_index(queryString=query, maxResults=3, **({"nextToken": token} if token else {}))
        pages.append([t["thingName"] for t in page["things"]])
        token = page.get("nextToken")
        if not token:
            break
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [n for p in pages for n in p] == sorted(names)
    # The AWS CLI pages through the same way.
    out = iot.search_index(queryString=query, maxResults=100)
    assert "nextToken" not in out and len(out["things"]) == 7


def test_search_errors(iot) -> None:  # type: ignore[no-untyped-def]
    assert code_of(iot.search_index, queryString="thingName:(a OR") == "InvalidQueryException"
    assert code_of(iot.search_index, queryString="attributes.x:[1 TO") == "InvalidQueryException"
    assert code_of(iot.search_index, indexName="nope", queryString="*") == "ResourceNotFoundException"
    assert code_of(iot.search_index, queryString="*", nextToken="garbage!") == "InvalidRequestException"


# -- dynamic thing groups -----------------------------------------------------------------------------------


def test_a_dynamic_group_collects_existing_things(iot, fleet) -> None:  # type: ignore[no-untyped-def]
    p = fleet.prefix
    for tag, model in (("x1", "alpha"), ("x2", "alpha"), ("x3", "beta")):
        iot.create_thing(thingName=f"{p}-{tag}", attributePayload={"attributes": {"model": model}})
    name = f"{p}-dyn"
    query = f"thingName:{p}-* AND attributes.model:alpha"
    created = iot.create_dynamic_thing_group(
        thingGroupName=name, queryString=query, thingGroupProperties={"thingGroupDescription": "alphas"}
    )
    assert created["indexName"] == "AWS_Things" and created["queryVersion"] == "2017-09-30"
    assert created["queryString"] == query and created["thingGroupArn"] == group_arn(name)
    assert members(iot, name) == [f"{p}-x1", f"{p}-x2"]
    described = iot.describe_thing_group(thingGroupName=name)
    assert (described["queryString"], described["indexName"], described["status"]) == (query, "AWS_Things", "ACTIVE")
    assert described["thingGroupProperties"]["thingGroupDescription"] == "alphas"
    groups = iot.list_thing_groups_for_thing(thingName=f"{p}-x1")["thingGroups"]
    assert [g["groupName"] for g in groups] == [name]
    # The group's name is searchable on its members.
    assert sorted(search(iot, f"thingGroupNames:{name}")) == [f"{p}-x1", f"{p}-x2"]

    # Idempotent with the same query; a different one is a conflict.
    again = iot.create_dynamic_thing_group(
        thingGroupName=name, queryString=query, thingGroupProperties={"thingGroupDescription": "alphas"}
    )
    assert again["thingGroupId"] == created["thingGroupId"]
    assert code_of(iot.create_dynamic_thing_group, thingGroupName=name, queryString="*") == (
        "ResourceAlreadyExistsException"
    )
    # Membership follows the query only; no hierarchy.
    for call, kwargs in (
        (iot.add_thing_to_thing_group, {"thingGroupName": name, "thingName": f"{p}-x3"}),
        (iot.remove_thing_from_thing_group, {"thingGroupName": name, "thingName": f"{p}-x1"}),
        (iot.create_thing_group, {"thingGroupName": f"{p}-child", "parentGroupName": name}),
    ):
        assert code_of(call, **kwargs) == "InvalidRequestException"
    assert members(iot, name) == [f"{p}-x1", f"{p}-x2"]
    assert code_of(iot.create_dynamic_thing_group, thingGroupName=f"{p}-bad", queryString="a:(") == (
        "InvalidQueryException"
    )
    # A static group is not deleted through the dynamic API, and indexing cannot be turned off under a dynamic group.
    static = fleet.group("static")
    assert code_of(iot.delete_dynamic_thing_group, thingGroupName=static) == "InvalidRequestException"
    assert code_of(iot.update_indexing_configuration, thingIndexingConfiguration={"thingIndexingMode": "OFF"}) == (
        "InvalidRequestException"
    )

    iot.delete_dynamic_thing_group(thingGroupName=name)
    assert code_of(iot.describe_thing_group, thingGroupName=name) == "ResourceNotFoundException"
    assert iot.list_thing_groups_for_thing(thingName=f"{p}-x1")["thingGroups"] == []
    iot.delete_dynamic_thing_group(thingGroupName=name)  # deleting again succeeds, as on AWS


def test_things_join_and_leave_as_their_attributes_change(iot, fleet) -> None:  # type: ignore[no-untyped-def]
    p = fleet.prefix
    name = f"{p}-hot"
    iot.create_dynamic_thing_group(thingGroupName=name, queryString=f"attributes.zone:{p} AND attributes.temp>30")
    iot.create_thing(thingName=f"{p}-new", attributePayload={"attributes": {"zone": p, "temp": "35"}})
    assert members(iot, name) == [f"{p}-new"]  # CreateThing evaluates
    iot.update_thing(thingName=f"{p}-new", attributePayload={"attributes": {"temp": "20"}, "merge": True})
    assert members(iot, name) == []
    iot.update_thing(thingName=f"{p}-new", attributePayload={"attributes": {"temp": "31"}, "merge": True})
    assert members(iot, name) == [f"{p}-new"]
    iot.delete_thing(thingName=f"{p}-new")
    assert members(iot, name) == []


def test_a_static_group_named_by_the_query(iot, fleet) -> None:  # type: ignore[no-untyped-def]
    p = fleet.prefix
    (thing,) = fleet.things(1)
    static = fleet.group("canary")
    name = f"{p}-canary-dyn"
    iot.create_dynamic_thing_group(thingGroupName=name, queryString=f"thingGroupNames:{static}")
    assert members(iot, name) == []
    iot.add_thing_to_thing_group(thingGroupName=static, thingName=thing)
    assert members(iot, name) == [thing]
    assert sorted(g["groupName"] for g in iot.list_thing_groups_for_thing(thingName=thing)["thingGroups"]) == sorted(
        [static, name]
    )
    iot.remove_thing_from_thing_group(thingGroupName=static, thingName=thing)
    assert members(iot, name) == []
    iot.update_thing_groups_for_thing(thingName=thing, thingGroupsToAdd=[static])
    assert members(iot, name) == [thing]
    iot.delete_thing_group(thingGroupName=static)
    assert members(iot, name) == []


def test_updating_the_query_re_evaluates(iot, fleet) -> None:  # type: ignore[no-untyped-def]
    p = fleet.prefix
    for tag, tier in (("t1", "gold"), ("t2", "silver")):
        iot.create_thing(thingName=f"{p}-{tag}", attributePayload={"attributes": {"tier": tier}})
    name = f"{p}-tier"
    iot.create_dynamic_thing_group(thingGroupName=name, queryString=f"thingName:{p}-* AND attributes.tier:gold")
    assert members(iot, name) == [f"{p}-t1"]
    version = iot.describe_thing_group(thingGroupName=name)["version"]
    out = iot.update_dynamic_thing_group(
        thingGroupName=name,
        thingGroupProperties={"thingGroupDescription": "silver now"},
        queryString=f"thingName:{p}-* AND attributes.tier:silver",
        expectedVersion=version,
    )
    assert out["version"] == version + 1
    assert members(iot, name) == [f"{p}-t2"]
    described = iot.describe_thing_group(thingGroupName=name)
    assert described["queryString"].endswith("attributes.tier:silver")
    assert described["thingGroupProperties"]["thingGroupDescription"] == "silver now"
    assert code_of(
        iot.update_dynamic_thing_group, thingGroupName=name, thingGroupProperties={}, expectedVersion=version
    ) == ("VersionConflictException")
    assert code_of(iot.update_dynamic_thing_group, thingGroupName=name, thingGroupProperties={}, queryString="x:(") == (
        "InvalidQueryException"
    )


def test_a_continuous_job_follows_a_dynamic_group(iot, fleet) -> None:  # type: ignore[no-untyped-def]
    p = fleet.prefix
    iot.create_thing(thingName=f"{p}-in", attributePayload={"attributes": {"ring": p}})
    iot.create_thing(thingName=f"{p}-out", attributePayload={"attributes": {"ring": "other"}})
    name = f"{p}-ring"
    iot.create_dynamic_thing_group(thingGroupName=name, queryString=f"attributes.ring:{p}")
    job = fleet.job([group_arn(name)], targetSelection="CONTINUOUS")
    assert statuses(iot, job) == {f"{p}-in": ["QUEUED"]}
    # A thing that starts matching gets an execution at once ...
    iot.update_thing(thingName=f"{p}-out", attributePayload={"attributes": {"ring": p}})
    assert statuses(iot, job) == {f"{p}-in": ["QUEUED"], f"{p}-out": ["QUEUED"]}
    # ... one that stops matching has its pending execution REMOVED.
    iot.update_thing(thingName=f"{p}-in", attributePayload={"attributes": {"ring": "gone"}})
    assert statuses(iot, job) == {f"{p}-in": ["REMOVED"], f"{p}-out": ["QUEUED"]}
    details = iot.describe_job(jobId=job)["job"]["jobProcessDetails"]
    assert (details["numberOfQueuedThings"], details["numberOfRemovedThings"]) == (1, 1)
    # Deleting the group removes what is still pending through it.
    iot.delete_dynamic_thing_group(thingGroupName=name)
    assert statuses(iot, job) == {f"{p}-in": ["REMOVED"], f"{p}-out": ["REMOVED"]}


# -- shadows --------------------------------------------------------------------------------------------------


def _iot_data(srv: Any) -> Any:
    from fleetjobs.service import shadows

    if not hasattr(getattr(shadows, "Shadows", None), "update_thing_shadow"):
        pytest.skip("iot-data not wired yet")
    return srv.client("iot-data")


def test_shadows_are_searchable_and_drive_dynamic_groups(srv, iot, fleet) -> None:  # type: ignore[no-untyped-def]
    data = _iot_data(srv)
    p = fleet.prefix
    hot, cold = fleet.things(2)
    name = f"{p}-shadow-dyn"
    iot.create_dynamic_thing_group(thingGroupName=name, queryString=f"thingName:{p}-* AND shadow.reported.temp>30")

    def report(thing: str, state: dict[str, Any], shadow: str | None = None) -> None:
        extra = {"shadowName": shadow} if shadow else {}
        data.update_thing_shadow(thingName=thing, payload=json.dumps({"state": {"reported": state}}), **extra)

    report(hot, {"temp": 35})
    report(cold, {"temp": 10})
    assert members(iot, name) == [hot]
    assert search(iot, f"thingName:{p}-* AND shadow.reported.temp<20") == [cold]
    (doc,) = iot.search_index(queryString=f"thingName:{hot}")["things"]
    assert json.loads(doc["shadow"])["reported"] == {"temp": 35}
    report(hot, {"temp": 25})
    assert members(iot, name) == []

    # Named shadows: only those in the configuration's filter are indexed.
    report(cold, {"mode": "eco"}, "cfg")
    report(cold, {"mode": "eco"}, "secret")
    assert search(iot, f"thingName:{p}-* AND shadow.name.cfg.reported.mode:eco") == [cold]
    assert search(iot, f"thingName:{p}-* AND shadow.name.secret.reported.mode:eco") == []
    report(hot, {"agent": {"version": "1.2.0"}}, "$package")
    assert search(iot, f"thingName:{p}-* AND shadow.name.$package.reported.agent.version:1.2.0") == [hot]


def test_has_delta_is_the_same_in_queries_documents_and_shadows(srv, iot, fleet) -> None:  # type: ignore[no-untyped-def]
    """One shadow delta: a thing that matches ``shadow.hasDelta:false`` comes back with
    ``"hasDelta": false``, and GetThingShadow shows the same delta (JSON ``true`` is not ``1``)."""
    data = _iot_data(srv)
    p = fleet.prefix
    subset, typed = fleet.things(2)

    def put(thing: str, desired: dict[str, Any], reported: dict[str, Any]) -> None:
        payload = json.dumps({"state": {"desired": desired, "reported": reported}})
        data.update_thing_shadow(thingName=thing, payload=payload)

    # desired is a nested subset of reported: no delta anywhere.
    put(subset, {"cfg": {"a": 1}}, {"cfg": {"a": 1, "b": 2}})
    # true and 1 are different JSON values: a delta everywhere.
    put(typed, {"on": True}, {"on": 1})

    assert search(iot, f"thingName:{p}-* AND shadow.hasDelta:false") == [subset]
    assert search(iot, f"thingName:{p}-* AND shadow.hasDelta:true") == [typed]
    docs = {d["thingName"]: json.loads(d["shadow"]) for d in iot.search_index(queryString=f"thingName:{p}-*")["things"]}
    assert docs[subset]["hasDelta"] is False
    assert docs[typed]["hasDelta"] is True
    shadow_of = {t: json.loads(data.get_thing_shadow(thingName=t)["payload"].read()) for t in (subset, typed)}
    assert "delta" not in shadow_of[subset]["state"]
    assert shadow_of[typed]["state"]["delta"] == {"on": True}
