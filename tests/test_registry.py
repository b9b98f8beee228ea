"""Things, thing types and static thing groups through boto3 (JOBS_API.md §1.5-§1.7)."""

from __future__ import annotations

import pytest

from tests.fleet import Fleet, group_arn, thing_arn
from tests.harness import unique


def test_thing_lifecycle(iot) -> None:  # type: ignore[no-untyped-def]
    name = unique("thing")
    out = iot.create_thing(thingName=name, attributePayload={"attributes": {"color": "red"}})
    assert out["thingName"] == name and out["thingArn"] == thing_arn(name) and out["thingId"]
    # Idempotent for identical configuration, refused for a different one (and nothing changes).
    assert (
        iot.create_thing(thingName=name, attributePayload={"attributes": {"color": "red"}})["thingId"] == out["thingId"]
    )
    with pytest.raises(iot.exceptions.ResourceAlreadyExistsException):
        iot.create_thing(thingName=name, attributePayload={"attributes": {"color": "blue"}})
    d = iot.describe_thing(thingName=name)
    assert d["attributes"] == {"color": "red"} and d["version"] == 1 and d["defaultClientId"] == name
    # merge=false replaces; merge=true merges; "" removes.
    iot.update_thing(thingName=name, attributePayload={"attributes": {"size": "L"}})
    assert iot.describe_thing(thingName=name)["attributes"] == {"size": "L"}
    iot.update_thing(thingName=name, attributePayload={"attributes": {"color": "green"}, "merge": True})
    assert iot.describe_thing(thingName=name)["attributes"] == {"size": "L", "color": "green"}
    iot.update_thing(thingName=name, attributePayload={"attributes": {"size": ""}, "merge": True})
    d = iot.describe_thing(thingName=name)
    assert d["attributes"] == {"color": "green"} and d["version"] == 4
    with pytest.raises(iot.exceptions.VersionConflictException):
        iot.update_thing(thingName=name, expectedVersion=1, attributePayload={"attributes": {"x": "y"}})
    assert iot.describe_thing(thingName=name)["attributes"] == {"color": "green"}
    iot.update_thing(thingName=name, expectedVersion=4, attributePayload={"attributes": {"x": "y"}, "merge": True})
    with pytest.raises(iot.exceptions.VersionConflictException):
        iot.delete_thing(thingName=name, expectedVersion=1)
    iot.delete_thing(thingName=name, expectedVersion=5)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing(thingName=name)
    iot.delete_thing(thingName=name)  # deleting a missing thing succeeds
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.update_thing(thingName=name, attributePayload={"attributes": {"a": "b"}})


def test_thing_validation_and_limits(iot, iot_raw) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot_raw.create_thing(thingName="bad name!")
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot_raw.create_thing(thingName="x" * 129)
    name = unique("thing")
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.create_thing(thingName=name, attributePayload={"attributes": {f"a{i}": "v" for i in range(4)}})
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.create_thing(thingName=name, thingTypeName=unique("notype"))
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing(thingName=name)


def test_list_things_filters_and_paginator(iot) -> None:  # type: ignore[no-untyped-def]
    tag = unique("v")
    ttype = unique("type")
    iot.create_thing_type(thingTypeName=ttype)
    names = [unique("lt") for _ in range(5)]
    for i, n in enumerate(names):
        kwargs = {"thingTypeName": ttype} if i < 2 else {}
        iot.create_thing(thingName=n, attributePayload={"attributes": {"batch": f"{tag}-{i % 2}"}}, **kwargs)
    pages = iot.get_paginator("list_things").paginate(
        attributeName="batch", attributeValue=tag, usePrefixAttributeValue=True, PaginationConfig={"PageSize": 2}
    )
    assert sorted(t["thingName"] for p in pages for t in p["things"]) == sorted(names)
    exact = iot.list_things(attributeName="batch", attributeValue=f"{tag}-1")["things"]
    assert sorted(t["thingName"] for t in exact) == sorted(names[1::2])
    typed = iot.list_things(thingTypeName=ttype)["things"]
    assert sorted(t["thingName"] for t in typed) == sorted(names[:2])
    assert all(t["thingArn"] == thing_arn(t["thingName"]) for t in typed)


def test_thing_types(iot) -> None:  # type: ignore[no-untyped-def]
    name = unique("type")
    props = {"thingTypeDescription": "sensors", "searchableAttributes": ["model"]}
    out = iot.create_thing_type(thingTypeName=name, thingTypeProperties=props)
    assert out["thingTypeArn"].endswith(f":thingtype/{name}")
    assert iot.create_thing_type(thingTypeName=name, thingTypeProperties=props)["thingTypeId"] == out["thingTypeId"]
    with pytest.raises(iot.exceptions.ResourceAlreadyExistsException):
        iot.create_thing_type(thingTypeName=name, thingTypeProperties={"thingTypeDescription": "other"})
    d = iot.describe_thing_type(thingTypeName=name)
    assert d["thingTypeProperties"]["thingTypeDescription"] == "sensors"
    assert d["thingTypeMetadata"]["deprecated"] is False
    listed = iot.list_thing_types(thingTypeName=name)["thingTypes"]
    assert [t["thingTypeName"] for t in listed] == [name]
    thing = unique("typed")
    # A typed thing may carry more than three attributes.
    iot.create_thing(
        thingName=thing, thingTypeName=name, attributePayload={"attributes": {f"a{i}": "v" for i in range(5)}}
    )
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.delete_thing_type(thingTypeName=name)  # not deprecated
    iot.deprecate_thing_type(thingTypeName=name)
    assert iot.describe_thing_type(thingTypeName=name)["thingTypeMetadata"]["deprecated"] is True
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.create_thing(thingName=unique("t"), thingTypeName=name)
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.delete_thing_type(thingTypeName=name)  # still used by a thing
    iot.update_thing(thingName=thing, removeThingType=True, attributePayload={"attributes": {"a0": "v"}})
    iot.deprecate_thing_type(thingTypeName=name, undoDeprecate=True)
    assert iot.describe_thing_type(thingTypeName=name)["thingTypeMetadata"]["deprecated"] is False
    iot.deprecate_thing_type(thingTypeName=name)
    iot.delete_thing_type(thingTypeName=name)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing_type(thingTypeName=name)


def test_thing_group_lifecycle_and_nesting(iot) -> None:  # type: ignore[no-untyped-def]
    fleet = Fleet(iot)
    root = fleet.group("root")
    mid = fleet.group("mid", parent=root)
    leaf = fleet.group("leaf", parent=mid)
    d = iot.describe_thing_group(thingGroupName=leaf)
    assert d["thingGroupArn"] == group_arn(leaf) and d["version"] == 1
    assert d["thingGroupMetadata"]["parentGroupName"] == mid
    assert [g["groupName"] for g in d["thingGroupMetadata"]["rootToParentThingGroups"]] == [root, mid]
    # Idempotent create; different configuration refused.
    iot.create_thing_group(thingGroupName=leaf, parentGroupName=mid)
    with pytest.raises(iot.exceptions.ResourceAlreadyExistsException):
        iot.create_thing_group(thingGroupName=leaf, parentGroupName=root)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.create_thing_group(thingGroupName=unique("g"), parentGroupName=unique("ghost"))
    # Listing by parent, recursive or not, and by prefix, with a paginator.
    direct = iot.list_thing_groups(parentGroup=root, recursive=False)["thingGroups"]
    assert [g["groupName"] for g in direct] == [mid]
    below = iot.list_thing_groups(parentGroup=root, recursive=True)["thingGroups"]
    assert sorted(g["groupName"] for g in below) == sorted([mid, leaf])
    pages = iot.get_paginator("list_thing_groups").paginate(
        namePrefixFilter=fleet.prefix, PaginationConfig={"PageSize": 1}
    )
    assert sorted(g["groupName"] for p in pages for g in p["thingGroups"]) == sorted([root, mid, leaf])
    # Update with expectedVersion.
    out = iot.update_thing_group(
        thingGroupName=leaf,
        thingGroupProperties={"thingGroupDescription": "leaf", "attributePayload": {"attributes": {"site": "a"}}},
        expectedVersion=1,
    )
    assert out["version"] == 2
    with pytest.raises(iot.exceptions.VersionConflictException):
        iot.update_thing_group(
            thingGroupName=leaf, thingGroupProperties={"thingGroupDescription": "x"}, expectedVersion=1
        )
    props = iot.describe_thing_group(thingGroupName=leaf)["thingGroupProperties"]
    assert props == {"thingGroupDescription": "leaf", "attributePayload": {"attributes": {"site": "a"}}}
    # A group with children cannot be deleted.
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.delete_thing_group(thingGroupName=mid)
    with pytest.raises(iot.exceptions.VersionConflictException):
        iot.delete_thing_group(thingGroupName=leaf, expectedVersion=1)
    iot.delete_thing_group(thingGroupName=leaf)
    iot.delete_thing_group(thingGroupName=leaf)  # already gone: no error
    iot.delete_thing_group(thingGroupName=mid)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing_group(thingGroupName=mid)


def test_group_membership(iot) -> None:  # type: ignore[no-untyped-def]
    fleet = Fleet(iot)
    things = fleet.things(4)
    parent = fleet.group("p", things[:1])
    child = fleet.group("c", things[1:3], parent=parent)
    other = fleet.group("o")
    # By ARN as well as by name.
    iot.add_thing_to_thing_group(thingGroupArn=group_arn(other), thingArn=thing_arn(things[3]))
    assert iot.list_things_in_thing_group(thingGroupName=other)["things"] == [things[3]]
    assert iot.list_things_in_thing_group(thingGroupName=parent)["things"] == things[:1]
    pages = iot.get_paginator("list_things_in_thing_group").paginate(
        thingGroupName=parent, recursive=True, PaginationConfig={"PageSize": 2}
    )
    assert sorted(t for p in pages for t in p["things"]) == sorted(things[:3])
    groups = iot.list_thing_groups_for_thing(thingName=things[3])["thingGroups"]
    assert groups == [{"groupName": other, "groupArn": group_arn(other)}]
    # Two groups of one hierarchy: refused.
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.add_thing_to_thing_group(thingGroupName=child, thingName=things[0])
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.add_thing_to_thing_group(thingGroupName=unique("ghost"), thingName=things[0])
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.add_thing_to_thing_group(thingGroupName=other, thingName=unique("ghost"))
    iot.remove_thing_from_thing_group(thingGroupName=child, thingName=things[1])
    assert iot.list_things_in_thing_group(thingGroupName=child)["things"] == [things[2]]
    # UpdateThingGroupsForThing moves a thing between groups in one call.
    iot.update_thing_groups_for_thing(thingName=things[3], thingGroupsToAdd=[parent], thingGroupsToRemove=[other])
    names = [g["groupName"] for g in iot.list_thing_groups_for_thing(thingName=things[3])["thingGroups"]]
    assert names == [parent]
    # A deleted thing leaves its groups.
    iot.delete_thing(thingName=things[2])
    assert iot.list_things_in_thing_group(thingGroupName=child)["things"] == []


def test_at_most_ten_groups_per_thing(iot) -> None:  # type: ignore[no-untyped-def]
    fleet = Fleet(iot)
    thing = fleet.things(1)[0]
    for i in range(10):
        fleet.group(f"g{i}", [thing])
    extra = fleet.group("g10")
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.add_thing_to_thing_group(thingGroupName=extra, thingName=thing)
    assert len(iot.list_thing_groups_for_thing(thingName=thing)["thingGroups"]) == 10


def test_deleting_a_thing_removes_its_pending_executions(iot) -> None:  # type: ignore[no-untyped-def]
    fleet = Fleet(iot)
    things = fleet.things(2)
    job_id = fleet.job([thing_arn(t) for t in things])
    iot.delete_thing(thingName=things[0])
    assert iot.describe_job_execution(jobId=job_id, thingName=things[0])["execution"]["status"] == "REMOVED"
    d = iot.describe_job(jobId=job_id)["job"]["jobProcessDetails"]
    assert d["numberOfRemovedThings"] == 1 and d["numberOfQueuedThings"] == 1


def test_registry_through_the_aws_cli(server) -> None:  # type: ignore[no-untyped-def]
    name = unique("cli")
    out = server.cli("iot", "create-thing", "--thing-name", name, "--attribute-payload", '{"attributes":{"k":"v"}}')
    assert out["thingArn"] == thing_arn(name)
    assert server.cli("iot", "describe-thing", "--thing-name", name)["attributes"] == {"k": "v"}
    group = unique("cligroup")
    server.cli("iot", "create-thing-group", "--thing-group-name", group)
    server.cli("iot", "add-thing-to-thing-group", "--thing-group-name", group, "--thing-name", name)
    assert server.cli("iot", "list-things-in-thing-group", "--thing-group-name", group)["things"] == [name]
