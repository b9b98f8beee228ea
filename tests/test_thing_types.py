"""Thing types through boto3 and the AWS CLI over real HTTP (JOBS_API.md §1.6).

Every test makes its own uniquely named types; listings are narrowed with the ``thingTypeName``
filter, which AWS (and fleetjobs) apply as a name prefix.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

import pytest

from tests.harness import ACCOUNT, REGION, Server, unique

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
PROPS = {"thingTypeDescription": "Smart light bulbs", "searchableAttributes": ["wattage", "model"]}


def type_arn(name: str) -> str:
    return f"arn:aws:iot:{REGION}:{ACCOUNT}:thingtype/{name}"


def described(iot: Any, name: str) -> dict[str, Any]:
    out = iot.describe_thing_type(thingTypeName=name)
    out.pop("ResponseMetadata")
    return out


def listed(iot: Any, prefix: str, page_size: int | None = None) -> list[dict[str, Any]]:
    config = {"PageSize": page_size} if page_size else {}
    out: list[dict[str, Any]] = []
    for page in iot.get_paginator("list_thing_types").paginate(thingTypeName=prefix, PaginationConfig=config):
        out.extend(page["thingTypes"])
    return out


# -- CreateThingType / DescribeThingType ----------------------------------------------------------------


def test_create_and_describe_thing_type(iot: Any) -> None:
    name = unique("type")
    out = iot.create_thing_type(thingTypeName=name, thingTypeProperties=PROPS, tags=[{"Key": "k", "Value": "v"}])
    assert out["thingTypeName"] == name and out["thingTypeArn"] == type_arn(name)
    assert UUID.match(out["thingTypeId"])
    d = described(iot, name)
    assert d["thingTypeName"] == name
    assert d["thingTypeId"] == out["thingTypeId"]
    assert d["thingTypeArn"] == type_arn(name)
    assert d["thingTypeProperties"] == PROPS
    meta = d["thingTypeMetadata"]
    assert meta["deprecated"] is False
    assert isinstance(meta["creationDate"], datetime.datetime)
    assert "deprecationDate" not in meta


def test_thing_type_without_properties(iot: Any) -> None:
    name = unique("type")
    iot.create_thing_type(thingTypeName=name)
    assert described(iot, name)["thingTypeProperties"] == {}


def test_create_thing_type_is_idempotent_for_identical_properties(iot: Any) -> None:
    name = unique("type")
    first = iot.create_thing_type(thingTypeName=name, thingTypeProperties=PROPS)
    again = iot.create_thing_type(thingTypeName=name, thingTypeProperties=dict(PROPS))
    assert again["thingTypeId"] == first["thingTypeId"]
    before = described(iot, name)
    with pytest.raises(iot.exceptions.ResourceAlreadyExistsException) as e:
        iot.create_thing_type(thingTypeName=name, thingTypeProperties={"thingTypeDescription": "other"})
    assert e.value.response["resourceId"] == first["thingTypeId"]
    assert e.value.response["resourceArn"] == type_arn(name)
    assert described(iot, name) == before


def test_at_most_three_searchable_attributes(iot: Any) -> None:
    name = unique("type")
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.create_thing_type(thingTypeName=name, thingTypeProperties={"searchableAttributes": ["a", "b", "c", "d"]})
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing_type(thingTypeName=name)
    iot.create_thing_type(thingTypeName=name, thingTypeProperties={"searchableAttributes": ["a", "b", "c"]})
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.update_thing_type(thingTypeName=name, thingTypeProperties={"searchableAttributes": ["a", "b", "c", "d"]})
    assert described(iot, name)["thingTypeProperties"] == {"searchableAttributes": ["a", "b", "c"]}


def test_describe_unknown_thing_type_is_not_found(iot: Any) -> None:
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing_type(thingTypeName=unique("ghost"))


# -- ListThingTypes ----------------------------------------------------------------------------------------


def test_list_thing_types_filters_by_name_prefix_and_paginates(iot: Any) -> None:
    prefix = unique("lt")
    made = [f"{prefix}-{i:02d}" for i in range(5)]
    for name in reversed(made):
        iot.create_thing_type(thingTypeName=name, thingTypeProperties={"thingTypeDescription": name})
    iot.create_thing_type(thingTypeName=unique("other"))
    pages = list(iot.get_paginator("list_thing_types").paginate(thingTypeName=prefix, PaginationConfig={"PageSize": 2}))
    assert [len(p["thingTypes"]) for p in pages] == [2, 2, 1]
    types = [t for p in pages for t in p["thingTypes"]]
    assert [t["thingTypeName"] for t in types] == made
    first = types[0]
    assert first["thingTypeArn"] == type_arn(made[0])
    assert first["thingTypeProperties"] == {"thingTypeDescription": made[0]}
    assert first["thingTypeMetadata"]["deprecated"] is False
    assert [t["thingTypeName"] for t in listed(iot, made[3])] == [made[3]]
    assert listed(iot, prefix.upper()) == []


# -- UpdateThingType / DeprecateThingType ----------------------------------------------------------------


def test_update_thing_type_replaces_the_given_properties(iot: Any) -> None:
    name = unique("type")
    iot.create_thing_type(thingTypeName=name, thingTypeProperties=PROPS)
    iot.update_thing_type(thingTypeName=name, thingTypeProperties={"thingTypeDescription": "Bulbs v2"})
    assert described(iot, name)["thingTypeProperties"] == {
        "thingTypeDescription": "Bulbs v2",
        "searchableAttributes": ["wattage", "model"],
    }
    mqtt5 = {"propagatingAttributes": [{"userPropertyKey": "model", "thingAttribute": "model"}]}
    iot.update_thing_type(thingTypeName=name, thingTypeProperties={"mqtt5Configuration": mqtt5})
    assert described(iot, name)["thingTypeProperties"]["mqtt5Configuration"] == mqtt5
    iot.update_thing_type(thingTypeName=name, thingTypeProperties={"searchableAttributes": []})
    assert "searchableAttributes" not in described(iot, name)["thingTypeProperties"]


def test_update_unknown_thing_type_is_not_found(iot: Any) -> None:
    name = unique("ghost")
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.update_thing_type(thingTypeName=name, thingTypeProperties={"thingTypeDescription": "x"})
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing_type(thingTypeName=name)


def test_deprecate_and_undeprecate(iot: Any) -> None:
    name = unique("type")
    iot.create_thing_type(thingTypeName=name)
    iot.deprecate_thing_type(thingTypeName=name)
    meta = described(iot, name)["thingTypeMetadata"]
    assert meta["deprecated"] is True
    assert meta["deprecationDate"] >= meta["creationDate"]
    iot.deprecate_thing_type(thingTypeName=name)  # again: still deprecated, same date
    assert described(iot, name)["thingTypeMetadata"] == meta
    assert listed(iot, name)[0]["thingTypeMetadata"]["deprecated"] is True

    thing = unique("thing")
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.create_thing(thingName=thing, thingTypeName=name)
    iot.deprecate_thing_type(thingTypeName=name, undoDeprecate=True)
    meta = described(iot, name)["thingTypeMetadata"]
    assert meta["deprecated"] is False and "deprecationDate" not in meta
    iot.create_thing(thingName=thing, thingTypeName=name)  # usable again
    assert iot.describe_thing(thingName=thing)["thingTypeName"] == name


def test_deprecate_unknown_thing_type_is_not_found(iot: Any) -> None:
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.deprecate_thing_type(thingTypeName=unique("ghost"))


# -- DeleteThingType ----------------------------------------------------------------------------------------


def test_delete_thing_type_must_be_deprecated_first(iot: Any) -> None:
    name = unique("type")
    iot.create_thing_type(thingTypeName=name, thingTypeProperties=PROPS)
    before = described(iot, name)
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.delete_thing_type(thingTypeName=name)
    assert described(iot, name) == before
    iot.deprecate_thing_type(thingTypeName=name)
    iot.delete_thing_type(thingTypeName=name)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing_type(thingTypeName=name)
    assert listed(iot, name) == []


def test_delete_thing_type_refused_while_things_use_it(iot: Any) -> None:
    name = unique("type")
    iot.create_thing_type(thingTypeName=name)
    thing = unique("thing")
    iot.create_thing(thingName=thing, thingTypeName=name)
    iot.deprecate_thing_type(thingTypeName=name)
    before = described(iot, name)
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.delete_thing_type(thingTypeName=name)
    assert described(iot, name) == before
    assert iot.describe_thing(thingName=thing)["thingTypeName"] == name
    iot.update_thing(thingName=thing, removeThingType=True)
    iot.delete_thing_type(thingTypeName=name)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing_type(thingTypeName=name)
    # A type of the same name can be made again, and is a new type.
    again = iot.create_thing_type(thingTypeName=name)
    assert again["thingTypeId"] != before["thingTypeId"]


def test_delete_unknown_thing_type_is_not_found(iot: Any) -> None:
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.delete_thing_type(thingTypeName=unique("ghost"))


# -- the AWS CLI --------------------------------------------------------------------------------------------


def test_thing_types_through_the_aws_cli(server: Server) -> None:
    name = unique("cli-type")
    out = server.cli(
        "iot",
        "create-thing-type",
        "--thing-type-name",
        name,
        "--thing-type-properties",
        "thingTypeDescription=from the CLI,searchableAttributes=a,b",
    )
    assert out["thingTypeArn"] == type_arn(name)
    d = server.cli("iot", "describe-thing-type", "--thing-type-name", name)
    assert d["thingTypeProperties"] == {"thingTypeDescription": "from the CLI", "searchableAttributes": ["a", "b"]}
    assert d["thingTypeMetadata"]["deprecated"] is False
    assert [
        t["thingTypeName"] for t in server.cli("iot", "list-thing-types", "--thing-type-name", name)["thingTypes"]
    ] == [name]
    proc = server.cli("iot", "delete-thing-type", "--thing-type-name", name, check=False)
    assert proc.returncode != 0 and "InvalidRequestException" in proc.stderr
    server.cli("iot", "deprecate-thing-type", "--thing-type-name", name)
    assert server.cli("iot", "describe-thing-type", "--thing-type-name", name)["thingTypeMetadata"]["deprecated"]
    server.cli("iot", "delete-thing-type", "--thing-type-name", name)
    proc = server.cli("iot", "describe-thing-type", "--thing-type-name", name, check=False)
    assert proc.returncode != 0 and "ResourceNotFoundException" in proc.stderr
