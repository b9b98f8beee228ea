"""Things through boto3 and the AWS CLI over real HTTP (JOBS_API.md §1.5).

The server is shared by every test of a session, so each test makes its own uniquely named things
and filters listings down to them (by attribute value or thing type) instead of assuming an empty
registry.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.harness import ACCOUNT, REGION, Server, unique

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def thing_arn(name: str) -> str:
    return f"arn:aws:iot:{REGION}:{ACCOUNT}:thing/{name}"


def attrs(**kw: str) -> dict[str, Any]:
    return {"attributes": kw}


def collect(iot: Any, **kwargs: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for page in iot.get_paginator("list_things").paginate(**kwargs):
        out.extend(page["things"])
    return out


def names(things: list[dict[str, Any]]) -> list[str]:
    return [t["thingName"] for t in things]


def described(iot: Any, name: str) -> dict[str, Any]:
    """DescribeThing without the per-request ResponseMetadata, for before/after comparisons."""
    out = iot.describe_thing(thingName=name)
    out.pop("ResponseMetadata")
    return out


def new_type(iot: Any, **kwargs: Any) -> str:
    name = unique("type")
    iot.create_thing_type(thingTypeName=name, **kwargs)
    return name


# -- CreateThing / DescribeThing ------------------------------------------------------------------------


def test_create_and_describe_thing(iot: Any) -> None:
    name = unique("thing")
    out = iot.create_thing(thingName=name, attributePayload=attrs(color="red", model="x1"))
    assert out["thingName"] == name
    assert out["thingArn"] == thing_arn(name)
    assert UUID.match(out["thingId"])
    d = iot.describe_thing(thingName=name)
    assert d["thingName"] == name
    assert d["defaultClientId"] == name
    assert d["thingId"] == out["thingId"]
    assert d["thingArn"] == thing_arn(name)
    assert d["attributes"] == {"color": "red", "model": "x1"}
    assert d["version"] == 1
    assert "thingTypeName" not in d and "billingGroupName" not in d


def test_thing_without_attributes_describes_empty_attributes(iot: Any) -> None:
    name = unique("thing")
    iot.create_thing(thingName=name)
    d = iot.describe_thing(thingName=name)
    assert d["attributes"] == {} and d["version"] == 1


def test_create_thing_is_idempotent_for_identical_configuration(iot: Any) -> None:
    name = unique("thing")
    first = iot.create_thing(thingName=name, attributePayload=attrs(a="1", b="2"))
    again = iot.create_thing(thingName=name, attributePayload=attrs(b="2", a="1"))
    assert {k: again[k] for k in ("thingName", "thingArn", "thingId")} == {
        k: first[k] for k in ("thingName", "thingArn", "thingId")
    }
    assert iot.describe_thing(thingName=name)["version"] == 1


def test_create_thing_with_different_configuration_is_refused(iot: Any) -> None:
    name = unique("thing")
    thing_type = new_type(iot)
    thing_id = iot.create_thing(thingName=name, attributePayload=attrs(a="1"))["thingId"]
    for kwargs in (
        {"attributePayload": attrs(a="2")},
        {"attributePayload": attrs(a="1", b="2")},
        {},
        {"attributePayload": attrs(a="1"), "thingTypeName": thing_type},
    ):
        with pytest.raises(iot.exceptions.ResourceAlreadyExistsException) as e:
            iot.create_thing(thingName=name, **kwargs)
        assert e.value.response["resourceId"] == thing_id
        assert e.value.response["resourceArn"] == thing_arn(name)
    d = iot.describe_thing(thingName=name)
    assert d["attributes"] == {"a": "1"} and d["version"] == 1 and "thingTypeName" not in d


def test_concurrent_identical_creates_all_succeed_with_one_thing(server: Server) -> None:
    name = unique("thing")

    def create(_: int) -> str:
        return server.client("iot").create_thing(thingName=name, attributePayload=attrs(k="v"))["thingId"]

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(create, range(8)))
    assert len(ids) == 1
    assert server.client("iot").describe_thing(thingName=name)["thingId"] == ids.pop()


def test_create_thing_with_a_thing_type(iot: Any) -> None:
    thing_type = new_type(iot)
    name = unique("thing")
    iot.create_thing(thingName=name, thingTypeName=thing_type)
    assert iot.describe_thing(thingName=name)["thingTypeName"] == thing_type


def test_create_thing_with_unknown_thing_type_is_not_found(iot: Any) -> None:
    name = unique("thing")
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.create_thing(thingName=name, thingTypeName=unique("no-such-type"))
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing(thingName=name)


def test_create_thing_with_deprecated_thing_type_is_refused(iot: Any) -> None:
    thing_type = new_type(iot)
    iot.deprecate_thing_type(thingTypeName=thing_type)
    name = unique("thing")
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.create_thing(thingName=name, thingTypeName=thing_type)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing(thingName=name)


def test_attribute_limits_depend_on_the_thing_type(iot: Any) -> None:
    untyped = unique("thing")
    iot.create_thing(thingName=untyped, attributePayload=attrs(a="1", b="2", c="3"))
    too_many = unique("thing")
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.create_thing(thingName=too_many, attributePayload=attrs(a="1", b="2", c="3", d="4"))
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing(thingName=too_many)

    untyped_before = described(iot, untyped)
    thing_type = new_type(iot)
    typed = unique("thing")
    fifty = {"attributes": {f"k{i}": str(i) for i in range(50)}}
    iot.create_thing(thingName=typed, thingTypeName=thing_type, attributePayload=fifty)
    assert len(iot.describe_thing(thingName=typed)["attributes"]) == 50
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.update_thing(thingName=typed, attributePayload={"attributes": {"k50": "x"}, "merge": True})
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.update_thing(thingName=untyped, attributePayload={"attributes": {"d": "4"}, "merge": True})
    assert described(iot, untyped) == untyped_before
    typed_after = described(iot, typed)
    assert typed_after["version"] == 1 and typed_after["attributes"] == fifty["attributes"]


def test_billing_groups_are_refused(iot: Any) -> None:
    name = unique("thing")
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.create_thing(thingName=name, billingGroupName="bg")
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing(thingName=name)


def test_describe_unknown_thing_is_not_found(iot: Any) -> None:
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing(thingName=unique("ghost"))


def test_server_side_validation_refuses_bad_input_and_creates_nothing(iot: Any, iot_raw: Any) -> None:
    too_long = unique("bad") + "x" * 128
    bad_key, bad_value = unique("thing"), unique("thing")
    with pytest.raises(iot_raw.exceptions.InvalidRequestException):
        iot_raw.create_thing(thingName=too_long)
    with pytest.raises(iot_raw.exceptions.InvalidRequestException):
        iot_raw.create_thing(thingName=bad_key, attributePayload=attrs(**{"bad key": "v"}))
    with pytest.raises(iot_raw.exceptions.InvalidRequestException):
        iot_raw.create_thing(thingName=bad_value, attributePayload=attrs(k="no spaces allowed"))
    for name in (bad_key, bad_value):
        with pytest.raises(iot.exceptions.ResourceNotFoundException):
            iot.describe_thing(thingName=name)


# -- UpdateThing --------------------------------------------------------------------------------------


def test_update_thing_merges_replaces_and_removes_attributes(iot: Any) -> None:
    name = unique("thing")
    iot.create_thing(thingName=name, attributePayload=attrs(a="1", b="2"))
    iot.update_thing(thingName=name, attributePayload={"attributes": {"b": "", "c": "3"}, "merge": True})
    d = iot.describe_thing(thingName=name)
    assert d["attributes"] == {"a": "1", "c": "3"} and d["version"] == 2
    iot.update_thing(thingName=name, attributePayload={"attributes": {"d": "4", "e": ""}})  # merge defaults to false
    d = iot.describe_thing(thingName=name)
    assert d["attributes"] == {"d": "4"} and d["version"] == 3
    iot.update_thing(thingName=name)  # nothing to change still counts as an update
    d = iot.describe_thing(thingName=name)
    assert d["attributes"] == {"d": "4"} and d["version"] == 4
    iot.update_thing(thingName=name, attributePayload={"attributes": {}, "merge": False})
    assert iot.describe_thing(thingName=name)["attributes"] == {}


def test_update_thing_sets_and_removes_the_thing_type(iot: Any) -> None:
    first, second = new_type(iot), new_type(iot)
    name = unique("thing")
    iot.create_thing(thingName=name)
    iot.update_thing(thingName=name, thingTypeName=first)
    assert iot.describe_thing(thingName=name)["thingTypeName"] == first
    iot.update_thing(thingName=name, thingTypeName=second)
    assert iot.describe_thing(thingName=name)["thingTypeName"] == second
    iot.update_thing(thingName=name, removeThingType=True)
    d = iot.describe_thing(thingName=name)
    assert "thingTypeName" not in d and d["version"] == 4


def test_update_thing_refusals_change_nothing(iot: Any) -> None:
    thing_type, deprecated = new_type(iot), new_type(iot)
    iot.deprecate_thing_type(thingTypeName=deprecated)
    name = unique("thing")
    iot.create_thing(thingName=name, thingTypeName=thing_type, attributePayload=attrs(a="1", b="2", c="3", d="4"))
    before = described(iot, name)
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.update_thing(thingName=name, thingTypeName=thing_type, removeThingType=True)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.update_thing(thingName=name, thingTypeName=unique("no-such-type"))
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.update_thing(thingName=name, thingTypeName=deprecated)
    with pytest.raises(iot.exceptions.InvalidRequestException):  # 4 attributes are too many without a type
        iot.update_thing(thingName=name, removeThingType=True)
    with pytest.raises(iot.exceptions.VersionConflictException):
        iot.update_thing(thingName=name, expectedVersion=7, attributePayload=attrs(a="9"))
    assert described(iot, name) == before


def test_update_thing_with_expected_version(iot: Any) -> None:
    name = unique("thing")
    iot.create_thing(thingName=name)
    iot.update_thing(thingName=name, expectedVersion=1, attributePayload=attrs(a="1"))
    with pytest.raises(iot.exceptions.VersionConflictException):
        iot.update_thing(thingName=name, expectedVersion=1, attributePayload=attrs(a="2"))
    iot.update_thing(thingName=name, expectedVersion=2, attributePayload=attrs(a="3"))
    d = iot.describe_thing(thingName=name)
    assert d["attributes"] == {"a": "3"} and d["version"] == 3


def test_a_thing_keeps_a_thing_type_that_became_deprecated(iot: Any) -> None:
    thing_type = new_type(iot)
    name = unique("thing")
    iot.create_thing(thingName=name, thingTypeName=thing_type)
    iot.deprecate_thing_type(thingTypeName=thing_type)
    iot.update_thing(thingName=name, thingTypeName=thing_type, attributePayload=attrs(a="1"))
    d = iot.describe_thing(thingName=name)
    assert d["thingTypeName"] == thing_type and d["attributes"] == {"a": "1"}


def test_update_unknown_thing_is_not_found(iot: Any) -> None:
    name = unique("ghost")
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.update_thing(thingName=name, attributePayload=attrs(a="1"))
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing(thingName=name)


# -- DeleteThing ---------------------------------------------------------------------------------------


def test_delete_thing(iot: Any) -> None:
    name = unique("thing")
    iot.create_thing(thingName=name)
    iot.delete_thing(thingName=name)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing(thingName=name)
    iot.delete_thing(thingName=name)  # deleting a thing that does not exist succeeds
    iot.delete_thing(thingName=unique("ghost"), expectedVersion=3)


def test_delete_thing_with_expected_version(iot: Any) -> None:
    name = unique("thing")
    iot.create_thing(thingName=name)
    iot.update_thing(thingName=name, attributePayload=attrs(a="1"))
    with pytest.raises(iot.exceptions.VersionConflictException):
        iot.delete_thing(thingName=name, expectedVersion=1)
    assert iot.describe_thing(thingName=name)["version"] == 2
    iot.delete_thing(thingName=name, expectedVersion=2)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing(thingName=name)


def test_delete_thing_drops_group_memberships(iot: Any) -> None:
    name, group = unique("thing"), unique("group")
    iot.create_thing(thingName=name)
    iot.create_thing_group(thingGroupName=group)
    iot.add_thing_to_thing_group(thingGroupName=group, thingName=name)
    iot.delete_thing(thingName=name)
    assert iot.list_things_in_thing_group(thingGroupName=group)["things"] == []
    iot.create_thing(thingName=name)  # a new thing of the same name starts with no groups
    assert iot.list_thing_groups_for_thing(thingName=name)["thingGroups"] == []
    assert iot.list_things_in_thing_group(thingGroupName=group)["things"] == []


def test_delete_thing_removes_its_pending_job_executions(iot: Any) -> None:
    kept, deleted = unique("thing"), unique("thing")
    iot.create_thing(thingName=kept)
    iot.create_thing(thingName=deleted)
    job_id = unique("job")
    iot.create_job(jobId=job_id, targets=[thing_arn(kept), thing_arn(deleted)], document=json.dumps({"op": "x"}))
    iot.delete_thing(thingName=deleted)
    statuses = {
        s["thingArn"]: s["jobExecutionSummary"]["status"]
        for page in iot.get_paginator("list_job_executions_for_job").paginate(jobId=job_id)
        for s in page["executionSummaries"]
    }
    assert statuses == {thing_arn(kept): "QUEUED", thing_arn(deleted): "REMOVED"}
    details = iot.describe_job(jobId=job_id)["job"]["jobProcessDetails"]
    assert details["numberOfRemovedThings"] == 1 and details["numberOfQueuedThings"] == 1


# -- ListThings -----------------------------------------------------------------------------------------


def test_list_things_by_attribute_exact_and_prefix(iot: Any) -> None:
    tag = unique("v")
    made = {
        f"{tag}-a": f"{tag}_1",
        f"{tag}-b": f"{tag}_12",
        f"{tag}-c": f"{tag}x1",  # `_` must not act as a LIKE wildcard
        f"{tag}-d": f"{tag}_1=[a]",
    }
    for name, value in made.items():
        iot.create_thing(thingName=name, attributePayload=attrs(batch=value))
    exact = collect(iot, attributeName="batch", attributeValue=f"{tag}_1")
    assert names(exact) == [f"{tag}-a"]
    assert exact[0] == {
        "thingName": f"{tag}-a",
        "thingArn": thing_arn(f"{tag}-a"),
        "attributes": {"batch": f"{tag}_1"},
        "version": 1,
    }
    prefixed = collect(iot, attributeName="batch", attributeValue=f"{tag}_1", usePrefixAttributeValue=True)
    assert sorted(names(prefixed)) == [f"{tag}-a", f"{tag}-b", f"{tag}-d"]
    assert names(collect(iot, attributeName="batch", attributeValue=f"{tag}_1=[a]")) == [f"{tag}-d"]
    upper = collect(iot, attributeName="batch", attributeValue=tag.upper(), usePrefixAttributeValue=True)
    assert upper == []  # prefix matching is case-sensitive on both backends
    assert collect(iot, attributeName="Batch", attributeValue=f"{tag}_1") == []


def test_list_things_by_attribute_name_with_punctuation(iot: Any) -> None:
    key, value = "a.b/c@d:e#f,g-h_" + unique("k").replace("-", "_"), unique("v")
    name = unique("thing")
    iot.create_thing(thingName=name, attributePayload={"attributes": {key: value}})
    assert names(collect(iot, attributeName=key, attributeValue=value)) == [name]
    assert name in names(collect(iot, attributeName=key))  # attributeName alone: things having it


def test_list_things_by_thing_type_and_attribute(iot: Any) -> None:
    thing_type = new_type(iot)
    tag = unique("v")
    typed_red, typed_blue, untyped_red = unique("thing"), unique("thing"), unique("thing")
    iot.create_thing(thingName=typed_red, thingTypeName=thing_type, attributePayload=attrs(color=f"{tag}red"))
    iot.create_thing(thingName=typed_blue, thingTypeName=thing_type, attributePayload=attrs(color=f"{tag}blue"))
    iot.create_thing(thingName=untyped_red, attributePayload=attrs(color=f"{tag}red"))
    typed = collect(iot, thingTypeName=thing_type)
    assert sorted(names(typed)) == sorted([typed_red, typed_blue])
    assert {t["thingTypeName"] for t in typed} == {thing_type}
    assert names(collect(iot, thingTypeName=thing_type, attributeName="color", attributeValue=f"{tag}red")) == [
        typed_red
    ]
    assert sorted(names(collect(iot, attributeName="color", attributeValue=f"{tag}red"))) == sorted(
        [typed_red, untyped_red]
    )


def test_list_things_paginates_with_a_boto3_paginator(iot: Any) -> None:
    tag = unique("page")
    made = [f"{tag}-{i:02d}" for i in range(7)]
    for name in reversed(made):
        iot.create_thing(thingName=name, attributePayload=attrs(page=tag))
    pages = list(
        iot.get_paginator("list_things").paginate(
            attributeName="page", attributeValue=tag, PaginationConfig={"PageSize": 3}
        )
    )
    assert [len(p["things"]) for p in pages] == [3, 3, 1]
    assert [t["thingName"] for p in pages for t in p["things"]] == made
    first = iot.list_things(attributeName="page", attributeValue=tag, maxResults=7)
    assert len(first["things"]) == 7 and "nextToken" not in first


def test_list_things_refuses_bad_requests(iot: Any) -> None:
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.list_things(nextToken="not-a-token!")
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.list_things(attributeValue="red")


# -- the AWS CLI --------------------------------------------------------------------------------------------


def test_things_through_the_aws_cli(server: Server) -> None:
    name = unique("cli")
    out = server.cli("iot", "create-thing", "--thing-name", name, "--attribute-payload", '{"attributes":{"k":"v1"}}')
    assert out["thingName"] == name and out["thingArn"] == thing_arn(name)
    server.cli(
        "iot",
        "update-thing",
        "--thing-name",
        name,
        "--attribute-payload",
        '{"attributes":{"k2":"v2"},"merge":true}',
        "--expected-version",
        "1",
    )
    d = server.cli("iot", "describe-thing", "--thing-name", name)
    assert d["attributes"] == {"k": "v1", "k2": "v2"} and d["version"] == 2
    listed = server.cli("iot", "list-things", "--attribute-name", "k2", "--attribute-value", "v2")
    assert name in [t["thingName"] for t in listed["things"]]
    proc = server.cli("iot", "delete-thing", "--thing-name", name, "--expected-version", "1", check=False)
    assert proc.returncode != 0 and "VersionConflictException" in proc.stderr
    server.cli("iot", "delete-thing", "--thing-name", name)
    proc = server.cli("iot", "describe-thing", "--thing-name", name, check=False)
    assert proc.returncode != 0 and "ResourceNotFoundException" in proc.stderr
