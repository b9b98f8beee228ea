"""Static thing groups through boto3 and the AWS CLI over real HTTP (JOBS_API.md §1.7).

Every test makes its own uniquely named groups and things; group listings are narrowed with
``namePrefixFilter`` or ``parentGroup`` because the server is shared by the whole session.
"""

from __future__ import annotations

import datetime
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.harness import ACCOUNT, REGION, Server, unique

GROUP_ID = re.compile(r"^[a-zA-Z0-9\-]+$")


def group_arn(name: str) -> str:
    return f"arn:aws:iot:{REGION}:{ACCOUNT}:thinggroup/{name}"


def thing_arn(name: str) -> str:
    return f"arn:aws:iot:{REGION}:{ACCOUNT}:thing/{name}"


def described(iot: Any, name: str) -> dict[str, Any]:
    out = iot.describe_thing_group(thingGroupName=name)
    out.pop("ResponseMetadata")
    return out


def collect(iot: Any, operation: str, key: str, page_size: int | None = None, **kwargs: Any) -> list[Any]:
    config = {"PageSize": page_size} if page_size else {}
    out: list[Any] = []
    for page in iot.get_paginator(operation).paginate(PaginationConfig=config, **kwargs):
        out.extend(page[key])
    return out


def group_names(iot: Any, **kwargs: Any) -> list[str]:
    return [g["groupName"] for g in collect(iot, "list_thing_groups", "thingGroups", **kwargs)]


def groups_of(iot: Any, thing: str) -> list[str]:
    return [g["groupName"] for g in collect(iot, "list_thing_groups_for_thing", "thingGroups", thingName=thing)]


def members(iot: Any, group: str, recursive: bool = False, page_size: int | None = None) -> list[str]:
    return collect(iot, "list_things_in_thing_group", "things", page_size, thingGroupName=group, recursive=recursive)


def things(iot: Any, n: int, prefix: str | None = None) -> list[str]:
    prefix = prefix or unique("thing")
    names = [f"{prefix}-{i:02d}" for i in range(n)]
    for name in names:
        iot.create_thing(thingName=name)
    return names


def chain(iot: Any, prefix: str, depth: int) -> list[str]:
    """``depth`` groups, each the child of the previous one; root first."""
    names = [f"{prefix}-l{i}" for i in range(1, depth + 1)]
    parent = None
    for name in names:
        iot.create_thing_group(thingGroupName=name, **({"parentGroupName": parent} if parent else {}))
        parent = name
    return names


# -- CreateThingGroup / DescribeThingGroup ------------------------------------------------------------------


def test_create_and_describe_a_root_group(iot: Any) -> None:
    name = unique("group")
    props = {"thingGroupDescription": "Bulbs in building 7", "attributePayload": {"attributes": {"floor": "3"}}}
    out = iot.create_thing_group(thingGroupName=name, thingGroupProperties=props, tags=[{"Key": "k", "Value": "v"}])
    assert out["thingGroupName"] == name and out["thingGroupArn"] == group_arn(name)
    assert GROUP_ID.match(out["thingGroupId"])
    d = described(iot, name)
    assert d["thingGroupName"] == name
    assert d["thingGroupId"] == out["thingGroupId"]
    assert d["thingGroupArn"] == group_arn(name)
    assert d["version"] == 1
    assert d["thingGroupProperties"] == props
    assert isinstance(d["thingGroupMetadata"]["creationDate"], datetime.datetime)
    assert "parentGroupName" not in d["thingGroupMetadata"]
    assert "rootToParentThingGroups" not in d["thingGroupMetadata"]
    assert "queryString" not in d and "status" not in d


def test_group_without_properties(iot: Any) -> None:
    name = unique("group")
    iot.create_thing_group(thingGroupName=name)
    assert described(iot, name)["thingGroupProperties"] == {}


def test_nested_groups_describe_their_ancestry(iot: Any) -> None:
    root, mid, leaf = chain(iot, unique("nest"), 3)
    meta = described(iot, leaf)["thingGroupMetadata"]
    assert meta["parentGroupName"] == mid
    assert meta["rootToParentThingGroups"] == [
        {"groupName": root, "groupArn": group_arn(root)},
        {"groupName": mid, "groupArn": group_arn(mid)},
    ]
    meta = described(iot, mid)["thingGroupMetadata"]
    assert meta["parentGroupName"] == root
    assert meta["rootToParentThingGroups"] == [{"groupName": root, "groupArn": group_arn(root)}]


def test_create_thing_group_is_idempotent_for_identical_input(iot: Any) -> None:
    parent = unique("group")
    iot.create_thing_group(thingGroupName=parent)
    name = unique("group")
    props = {"thingGroupDescription": "d", "attributePayload": {"attributes": {"a": "1"}}}
    first = iot.create_thing_group(thingGroupName=name, parentGroupName=parent, thingGroupProperties=props)
    again = iot.create_thing_group(thingGroupName=name, parentGroupName=parent, thingGroupProperties=props)
    assert again["thingGroupId"] == first["thingGroupId"]
    assert described(iot, name)["version"] == 1


def test_create_thing_group_with_different_input_is_refused(iot: Any) -> None:
    parent, other_parent = unique("group"), unique("group")
    iot.create_thing_group(thingGroupName=parent)
    iot.create_thing_group(thingGroupName=other_parent)
    name = unique("group")
    first = iot.create_thing_group(
        thingGroupName=name, parentGroupName=parent, thingGroupProperties={"thingGroupDescription": "d"}
    )
    before = described(iot, name)
    for kwargs in (
        {"parentGroupName": parent, "thingGroupProperties": {"thingGroupDescription": "other"}},
        {"parentGroupName": other_parent, "thingGroupProperties": {"thingGroupDescription": "d"}},
        {"thingGroupProperties": {"thingGroupDescription": "d"}},
    ):
        with pytest.raises(iot.exceptions.ResourceAlreadyExistsException) as e:
            iot.create_thing_group(thingGroupName=name, **kwargs)
        assert e.value.response["resourceId"] == first["thingGroupId"]
        assert e.value.response["resourceArn"] == group_arn(name)
    assert described(iot, name) == before


def test_create_thing_group_under_unknown_parent_is_not_found(iot: Any) -> None:
    name = unique("group")
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.create_thing_group(thingGroupName=name, parentGroupName=unique("ghost"))
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing_group(thingGroupName=name)


def test_hierarchy_is_at_most_seven_levels_deep(iot: Any) -> None:
    levels = chain(iot, unique("deep"), 7)
    assert len(described(iot, levels[-1])["thingGroupMetadata"]["rootToParentThingGroups"]) == 6
    eighth = unique("group")
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.create_thing_group(thingGroupName=eighth, parentGroupName=levels[-1])
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing_group(thingGroupName=eighth)
    iot.create_thing_group(thingGroupName=eighth, parentGroupName=levels[-2])  # a 7th-level sibling is fine


def test_describe_unknown_group_is_not_found(iot: Any) -> None:
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing_group(thingGroupName=unique("ghost"))


# -- ListThingGroups -----------------------------------------------------------------------------------------


def test_list_thing_groups_by_parent_prefix_and_recursion(iot: Any) -> None:
    p = unique("tree")
    # p-a ─┬─ p-a-x ── p-a-x-y
    #      └─ p-a-z
    # p-b
    for name, parent in ((f"{p}-a", None), (f"{p}-b", None), (f"{p}-a-x", f"{p}-a"), (f"{p}-a-z", f"{p}-a")):
        iot.create_thing_group(thingGroupName=name, **({"parentGroupName": parent} if parent else {}))
    iot.create_thing_group(thingGroupName=f"{p}-a-x-y", parentGroupName=f"{p}-a-x")

    everything = [f"{p}-a", f"{p}-a-x", f"{p}-a-x-y", f"{p}-a-z", f"{p}-b"]
    assert group_names(iot, namePrefixFilter=p) == everything
    assert group_names(iot, namePrefixFilter=p, recursive=True) == everything
    assert group_names(iot, namePrefixFilter=p, recursive=False) == [f"{p}-a", f"{p}-b"]
    assert group_names(iot, parentGroup=f"{p}-a", recursive=False) == [f"{p}-a-x", f"{p}-a-z"]
    assert group_names(iot, parentGroup=f"{p}-a", recursive=True) == [f"{p}-a-x", f"{p}-a-x-y", f"{p}-a-z"]
    assert group_names(iot, parentGroup=f"{p}-a") == [f"{p}-a-x", f"{p}-a-x-y", f"{p}-a-z"]
    assert group_names(iot, parentGroup=f"{p}-a", namePrefixFilter=f"{p}-a-x") == [f"{p}-a-x", f"{p}-a-x-y"]
    assert group_names(iot, parentGroup=f"{p}-b") == []
    listed = iot.list_thing_groups(namePrefixFilter=f"{p}-b")["thingGroups"]
    assert listed == [{"groupName": f"{p}-b", "groupArn": group_arn(f"{p}-b")}]
    assert group_names(iot, namePrefixFilter=p.upper()) == []
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.list_thing_groups(parentGroup=unique("ghost"))


def test_list_thing_groups_paginates(iot: Any) -> None:
    p = unique("pg")
    made = [f"{p}-{i:02d}" for i in range(5)]
    for name in reversed(made):
        iot.create_thing_group(thingGroupName=name)
    pages = list(iot.get_paginator("list_thing_groups").paginate(namePrefixFilter=p, PaginationConfig={"PageSize": 2}))
    assert [len(page["thingGroups"]) for page in pages] == [2, 2, 1]
    assert [g["groupName"] for page in pages for g in page["thingGroups"]] == made
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.list_thing_groups(nextToken="garbage!")


# -- UpdateThingGroup ---------------------------------------------------------------------------------------------


def test_update_thing_group_properties_and_version(iot: Any) -> None:
    name = unique("group")
    iot.create_thing_group(
        thingGroupName=name,
        thingGroupProperties={"thingGroupDescription": "d1", "attributePayload": {"attributes": {"a": "1", "b": "2"}}},
    )
    out = iot.update_thing_group(
        thingGroupName=name,
        thingGroupProperties={"attributePayload": {"attributes": {"b": "", "c": "3"}, "merge": True}},
    )
    assert out["version"] == 2
    d = described(iot, name)
    assert d["version"] == 2
    assert d["thingGroupProperties"] == {
        "thingGroupDescription": "d1",
        "attributePayload": {"attributes": {"a": "1", "c": "3"}},
    }
    out = iot.update_thing_group(
        thingGroupName=name,
        thingGroupProperties={"thingGroupDescription": "d2", "attributePayload": {"attributes": {"z": "9"}}},
        expectedVersion=2,
    )
    assert out["version"] == 3
    assert described(iot, name)["thingGroupProperties"] == {
        "thingGroupDescription": "d2",
        "attributePayload": {"attributes": {"z": "9"}},
    }
    iot.update_thing_group(thingGroupName=name, thingGroupProperties={"attributePayload": {"attributes": {}}})
    assert described(iot, name)["thingGroupProperties"] == {"thingGroupDescription": "d2"}


def test_update_thing_group_refusals_change_nothing(iot: Any) -> None:
    name = unique("group")
    iot.create_thing_group(thingGroupName=name, thingGroupProperties={"thingGroupDescription": "d"})
    before = described(iot, name)
    with pytest.raises(iot.exceptions.VersionConflictException):
        iot.update_thing_group(
            thingGroupName=name, thingGroupProperties={"thingGroupDescription": "x"}, expectedVersion=5
        )
    too_many = {"attributes": {f"k{i}": "v" for i in range(51)}}
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.update_thing_group(thingGroupName=name, thingGroupProperties={"attributePayload": too_many})
    assert described(iot, name) == before
    ghost = unique("ghost")
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.update_thing_group(thingGroupName=ghost, thingGroupProperties={"thingGroupDescription": "x"})
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing_group(thingGroupName=ghost)


# -- DeleteThingGroup ---------------------------------------------------------------------------------------------


def test_delete_thing_group(iot: Any) -> None:
    parent, child = chain(iot, unique("del"), 2)
    [thing] = things(iot, 1)
    iot.add_thing_to_thing_group(thingGroupName=child, thingName=thing)
    before = described(iot, parent)
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.delete_thing_group(thingGroupName=parent)  # it still has a child group
    assert described(iot, parent) == before
    with pytest.raises(iot.exceptions.VersionConflictException):
        iot.delete_thing_group(thingGroupName=child, expectedVersion=2)
    assert members(iot, child) == [thing]
    iot.delete_thing_group(thingGroupName=child, expectedVersion=1)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing_group(thingGroupName=child)
    assert groups_of(iot, thing) == []
    iot.delete_thing_group(thingGroupName=parent)
    iot.delete_thing_group(thingGroupName=parent)  # deleting a group that does not exist succeeds
    assert group_names(iot, namePrefixFilter=parent) == []


# -- AddThingToThingGroup / RemoveThingFromThingGroup ------------------------------------------------------------


def test_add_and_remove_by_name_and_by_arn(iot: Any) -> None:
    group = unique("group")
    iot.create_thing_group(thingGroupName=group)
    a, b = things(iot, 2)
    iot.add_thing_to_thing_group(thingGroupName=group, thingName=a)
    iot.add_thing_to_thing_group(thingGroupArn=group_arn(group), thingArn=thing_arn(b))
    iot.add_thing_to_thing_group(thingGroupName=group, thingGroupArn=group_arn(group), thingName=a)  # again: no-op
    assert members(iot, group) == [a, b]
    assert groups_of(iot, a) == [group]
    iot.remove_thing_from_thing_group(thingGroupArn=group_arn(group), thingName=a)
    iot.remove_thing_from_thing_group(thingGroupName=group, thingArn=thing_arn(a))  # not a member: no-op
    assert members(iot, group) == [b]
    assert groups_of(iot, a) == []


def test_add_and_remove_refusals(iot: Any) -> None:
    group = unique("group")
    iot.create_thing_group(thingGroupName=group)
    [thing] = things(iot, 1)
    iot.add_thing_to_thing_group(thingGroupName=group, thingName=thing)
    for op in (iot.add_thing_to_thing_group, iot.remove_thing_from_thing_group):
        with pytest.raises(iot.exceptions.ResourceNotFoundException):
            op(thingGroupName=unique("ghost"), thingName=thing)
        with pytest.raises(iot.exceptions.ResourceNotFoundException):
            op(thingGroupName=group, thingName=unique("ghost"))
        with pytest.raises(iot.exceptions.ResourceNotFoundException):
            op(thingGroupArn=group_arn(unique("ghost")), thingName=thing)
        with pytest.raises(iot.exceptions.ResourceNotFoundException):  # another account's group is not here
            op(thingGroupArn=group_arn(group).replace(ACCOUNT, "999999999999"), thingName=thing)
        with pytest.raises(iot.exceptions.InvalidRequestException):
            op(thingName=thing)
        with pytest.raises(iot.exceptions.InvalidRequestException):
            op(thingGroupName=group)
        with pytest.raises(iot.exceptions.InvalidRequestException):
            op(thingGroupName=group, thingGroupArn=group_arn(unique("other")), thingName=thing)
        with pytest.raises(iot.exceptions.InvalidRequestException):
            op(thingGroupArn=thing_arn(thing), thingName=thing)
    assert members(iot, group) == [thing]


def test_a_thing_is_in_at_most_ten_groups(iot: Any) -> None:
    p = unique("ten")
    groups = [f"{p}-{i:02d}" for i in range(11)]
    for g in groups:
        iot.create_thing_group(thingGroupName=g)
    [thing] = things(iot, 1)
    for g in groups[:10]:
        iot.add_thing_to_thing_group(thingGroupName=g, thingName=thing)
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.add_thing_to_thing_group(thingGroupName=groups[10], thingName=thing)
    assert groups_of(iot, thing) == groups[:10]
    assert members(iot, groups[10]) == []
    iot.add_thing_to_thing_group(thingGroupName=groups[0], thingName=thing)  # already a member: still fine


def test_a_thing_is_in_at_most_one_group_of_a_hierarchy(iot: Any) -> None:
    p = unique("hier")
    root, child = chain(iot, p, 2)
    sibling, other_root = f"{p}-sibling", f"{p}-other"
    iot.create_thing_group(thingGroupName=sibling, parentGroupName=root)
    iot.create_thing_group(thingGroupName=other_root)
    [thing] = things(iot, 1)
    iot.add_thing_to_thing_group(thingGroupName=child, thingName=thing)
    for g in (root, sibling):
        with pytest.raises(iot.exceptions.InvalidRequestException):
            iot.add_thing_to_thing_group(thingGroupName=g, thingName=thing)
    iot.add_thing_to_thing_group(thingGroupName=other_root, thingName=thing)  # another hierarchy is fine
    assert sorted(groups_of(iot, thing)) == sorted([child, other_root])


def test_concurrent_adds_respect_the_hierarchy_rule(server: Server, iot: Any) -> None:
    p = unique("race")
    root = f"{p}-root"
    iot.create_thing_group(thingGroupName=root)
    children = [f"{p}-c{i}" for i in range(6)]
    for c in children:
        iot.create_thing_group(thingGroupName=c, parentGroupName=root)
    [thing] = things(iot, 1)

    def add(group: str) -> bool:
        try:
            server.client("iot").add_thing_to_thing_group(thingGroupName=group, thingName=thing)
            return True
        except ClientError as e:
            assert e.response["Error"]["Code"] == "InvalidRequestException"
            return False

    with ThreadPoolExecutor(len(children)) as pool:
        outcomes = list(pool.map(add, children))
    assert outcomes.count(True) == 1
    assert groups_of(iot, thing) == [children[outcomes.index(True)]]


# -- ListThingsInThingGroup / ListThingGroupsForThing -------------------------------------------------------------


def test_list_things_in_thing_group_recursively(iot: Any) -> None:
    p = unique("rec")
    root, mid, leaf = chain(iot, p, 3)
    side = f"{p}-side"
    iot.create_thing_group(thingGroupName=side, parentGroupName=root)
    made = things(iot, 8, prefix=f"{p}-t")
    placement = {root: made[0:2], mid: made[2:4], leaf: made[4:7], side: made[7:8]}
    for g, ts in placement.items():
        for t in ts:
            iot.add_thing_to_thing_group(thingGroupName=g, thingName=t)
    assert members(iot, root) == made[0:2]
    assert members(iot, mid) == made[2:4]
    assert members(iot, root, recursive=True, page_size=3) == made
    assert members(iot, mid, recursive=True, page_size=2) == made[2:7]
    assert members(iot, leaf, recursive=True) == made[4:7]
    pages = list(
        iot.get_paginator("list_things_in_thing_group").paginate(
            thingGroupName=root, recursive=True, PaginationConfig={"PageSize": 3}
        )
    )
    assert [len(page["things"]) for page in pages] == [3, 3, 2]
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.list_things_in_thing_group(thingGroupName=unique("ghost"))


def test_list_thing_groups_for_thing(iot: Any) -> None:
    p = unique("for")
    groups = [f"{p}-{i}" for i in range(4)]
    for g in groups:
        iot.create_thing_group(thingGroupName=g)
    [thing] = things(iot, 1)
    for g in reversed(groups):
        iot.add_thing_to_thing_group(thingGroupName=g, thingName=thing)
    pages = list(
        iot.get_paginator("list_thing_groups_for_thing").paginate(thingName=thing, PaginationConfig={"PageSize": 3})
    )
    assert [len(page["thingGroups"]) for page in pages] == [3, 1]
    assert [g for page in pages for g in page["thingGroups"]] == [
        {"groupName": g, "groupArn": group_arn(g)} for g in groups
    ]
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.list_thing_groups_for_thing(thingName=unique("ghost"))


# -- UpdateThingGroupsForThing -------------------------------------------------------------------------------------


def test_update_thing_groups_for_thing(iot: Any) -> None:
    p = unique("upd")
    root, a = chain(iot, p, 2)
    b, other = f"{p}-b", f"{p}-other"
    iot.create_thing_group(thingGroupName=b, parentGroupName=root)
    iot.create_thing_group(thingGroupName=other)
    [thing] = things(iot, 1)
    iot.update_thing_groups_for_thing(thingName=thing, thingGroupsToAdd=[a, other])
    assert sorted(groups_of(iot, thing)) == sorted([a, other])
    # Moving between two groups of one hierarchy works in a single call (removals go first).
    iot.update_thing_groups_for_thing(thingName=thing, thingGroupsToAdd=[b], thingGroupsToRemove=[a])
    assert sorted(groups_of(iot, thing)) == sorted([b, other])
    iot.update_thing_groups_for_thing(thingName=thing, thingGroupsToRemove=[other, a])
    assert groups_of(iot, thing) == [b]


def test_update_thing_groups_for_thing_refusals_change_nothing(iot: Any) -> None:
    p = unique("updr")
    root, a = chain(iot, p, 2)
    b, other = f"{p}-b", f"{p}-other"
    iot.create_thing_group(thingGroupName=b, parentGroupName=root)
    iot.create_thing_group(thingGroupName=other)
    [thing] = things(iot, 1)
    iot.add_thing_to_thing_group(thingGroupName=a, thingName=thing)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):  # the known removal must not happen either
        iot.update_thing_groups_for_thing(thingName=thing, thingGroupsToAdd=[unique("ghost")], thingGroupsToRemove=[a])
    with pytest.raises(iot.exceptions.InvalidRequestException):  # b is in a's hierarchy
        iot.update_thing_groups_for_thing(thingName=thing, thingGroupsToAdd=[other, b])
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.update_thing_groups_for_thing(thingName=thing, thingGroupsToAdd=[other], thingGroupsToRemove=[other])
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.update_thing_groups_for_thing(thingName=unique("ghost"), thingGroupsToAdd=[other])
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.update_thing_groups_for_thing(thingGroupsToAdd=[other])
    assert groups_of(iot, thing) == [a]
    assert members(iot, other) == [] and members(iot, b) == []


# -- the AWS CLI -----------------------------------------------------------------------------------------------------


def test_thing_groups_through_the_aws_cli(server: Server) -> None:
    p = unique("cli")
    parent, child, thing = f"{p}-parent", f"{p}-child", f"{p}-thing"
    out = server.cli("iot", "create-thing-group", "--thing-group-name", parent)
    assert out["thingGroupArn"] == group_arn(parent)
    server.cli(
        "iot",
        "create-thing-group",
        "--thing-group-name",
        child,
        "--parent-group-name",
        parent,
        "--thing-group-properties",
        "thingGroupDescription=made by the CLI",
    )
    server.cli("iot", "create-thing", "--thing-name", thing)
    server.cli("iot", "add-thing-to-thing-group", "--thing-group-name", child, "--thing-name", thing)
    d = server.cli("iot", "describe-thing-group", "--thing-group-name", child)
    assert d["thingGroupMetadata"]["parentGroupName"] == parent
    assert d["thingGroupProperties"] == {"thingGroupDescription": "made by the CLI"}
    assert server.cli("iot", "list-things-in-thing-group", "--thing-group-name", parent)["things"] == []
    listed = server.cli("iot", "list-things-in-thing-group", "--thing-group-name", parent, "--recursive")
    assert listed["things"] == [thing]
    groups = server.cli("iot", "list-thing-groups", "--parent-group", parent, "--no-recursive")["thingGroups"]
    assert groups == [{"groupName": child, "groupArn": group_arn(child)}]
    out = server.cli(
        "iot",
        "update-thing-group",
        "--thing-group-name",
        child,
        "--thing-group-properties",
        '{"attributePayload": {"attributes": {"floor": "2"}}}',
        "--expected-version",
        "1",
    )
    assert out["version"] == 2
    proc = server.cli("iot", "delete-thing-group", "--thing-group-name", parent, check=False)
    assert proc.returncode != 0 and "InvalidRequestException" in proc.stderr
    server.cli("iot", "delete-thing-group", "--thing-group-name", child)
    server.cli("iot", "delete-thing-group", "--thing-group-name", parent)
    assert server.cli("iot", "list-thing-groups-for-thing", "--thing-name", thing)["thingGroups"] == []
