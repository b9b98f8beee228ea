"""Provisioning templates of bulk registration (fleetjobs.domain.provisioning_template), free of I/O.

What the whole task is refused for (parse) and what only a line fails for (evaluate) are kept apart:
a template that no line could use must never start a task that fails a million lines.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from fleetjobs.domain.errors import InvalidRequest, ResourceAlreadyExists
from fleetjobs.domain.provisioning_template import (
    Overrides,
    ProvisioningTemplate,
    ResourceConflicts,
    ThingSpec,
    existing_thing_conflict,
)


def template(properties: dict[str, Any], parameters: dict[str, Any] | None = None, **sections: Any) -> str:
    doc: dict[str, Any] = {
        "Parameters": parameters if parameters is not None else {"ThingName": {"Type": "String"}},
        "Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": properties}},
    }
    doc.update(sections)
    return json.dumps(doc)


def parse(body: str) -> ProvisioningTemplate:
    return ProvisioningTemplate.parse(body, region="eu-west-1", account="111122223333")


def one(properties: dict[str, Any], values: dict[str, Any], parameters: dict[str, Any] | None = None, **kw: Any) -> Any:
    return parse(template(properties, parameters, **kw)).evaluate(values)


NAME = {"ThingName": {"Ref": "ThingName"}}


# -- evaluation ----------------------------------------------------------------------------------------


def test_the_guides_bulk_template_without_its_certificate() -> None:
    params = {
        "ThingName": {"Type": "String"},
        "SerialNumber": {"Type": "String"},
        "Location": {"Type": "String", "Default": "WA"},
    }
    props = {
        **NAME,
        "AttributePayload": {"version": "v1", "serialNumber": {"Ref": "SerialNumber"}},
        "ThingTypeName": "lightBulb-versionA",
        "ThingGroups": ["v1-lightbulbs", {"Ref": "Location"}],
    }
    spec = one(props, {"ThingName": "foo", "SerialNumber": "123"}, params)
    assert spec == ThingSpec(
        "foo", "lightBulb-versionA", {"version": "v1", "serialNumber": "123"}, ("v1-lightbulbs", "WA")
    )
    assert one(props, {"ThingName": "bar", "SerialNumber": "456", "Location": "OR"}, params).groups == (
        "v1-lightbulbs",
        "OR",
    )


def test_join_sub_select_split_and_pseudo_parameters() -> None:
    params = {"ThingName": {"Type": "String"}, "Serial": {"Type": "Number"}, "Tags": {"Type": "String"}}
    props = {
        "ThingName": {"Fn::Join": ["-", ["dev", {"Ref": "ThingName"}, {"Ref": "Serial"}]]},
        "AttributePayload": {
            "where": {"Fn::Sub": "${AWS::Region}/${AWS::AccountId}/${ThingName}"},
            "literal": {"Fn::Sub": ["${!NotAVar}-${x}", {"x": "v"}]},
            "second": {"Fn::Select": [1, {"Fn::Split": [",", {"Ref": "Tags"}]}]},
        },
    }
    spec = one(props, {"ThingName": "a", "Serial": 7, "Tags": "p,q,r"}, params)
    assert spec.thing_name == "dev-a-7"
    assert spec.attributes == {"where": "eu-west-1/111122223333/a", "literal": "${NotAVar}-v", "second": "q"}


def test_conditions_if_and_no_value() -> None:
    params = {"ThingName": {"Type": "String"}, "Kind": {"Type": "String", "Default": "plain"}}
    conditions = {
        "IsSensor": {"Fn::Equals": [{"Ref": "Kind"}, "sensor"]},
        "NotSensor": {"Fn::Not": [{"Condition": "IsSensor"}]},
        "Either": {"Fn::Or": [{"Condition": "IsSensor"}, {"Fn::Equals": [{"Ref": "Kind"}, "meter"]}]},
    }
    props = {
        **NAME,
        "ThingTypeName": {"Fn::If": ["IsSensor", "sensor-type", {"Ref": "AWS::NoValue"}]},
        "AttributePayload": {"kind": {"Fn::If": ["Either", {"Ref": "Kind"}, {"Ref": "AWS::NoValue"}]}},
        "ThingGroups": [{"Fn::If": ["NotSensor", "others", {"Ref": "AWS::NoValue"}]}],
    }
    sensor = one(props, {"ThingName": "s", "Kind": "sensor"}, params, Conditions=conditions)
    assert (sensor.thing_type_name, sensor.attributes, sensor.groups) == ("sensor-type", {"kind": "sensor"}, ())
    meter = one(props, {"ThingName": "m", "Kind": "meter"}, params, Conditions=conditions)
    assert (meter.thing_type_name, meter.attributes, meter.groups) == (None, {"kind": "meter"}, ("others",))
    plain = one(props, {"ThingName": "p"}, params, Conditions=conditions)
    assert (plain.attributes, plain.groups) == ({}, ("others",))


def test_a_resource_condition_that_is_false_registers_nothing() -> None:
    body = json.dumps(
        {
            "Parameters": {"ThingName": {"Type": "String"}, "Skip": {"Type": "String", "Default": "no"}},
            "Conditions": {"Wanted": {"Fn::Equals": [{"Ref": "Skip"}, "no"]}},
            "Resources": {"thing": {"Type": "AWS::IoT::Thing", "Condition": "Wanted", "Properties": NAME}},
        }
    )
    t = parse(body)
    assert t.evaluate({"ThingName": "a", "Skip": "yes"}) is None
    assert t.evaluate({"ThingName": "a"}) == ThingSpec("a", None, {}, ())


def test_find_in_map_and_comma_delimited_groups() -> None:
    params = {"ThingName": {"Type": "String"}, "Site": {"Type": "String"}, "Groups": {"Type": "CommaDelimitedList"}}
    mappings = {"Sites": {"sea": {"Region": "west"}, "nyc": {"Region": "east"}}}
    props = {
        **NAME,
        "AttributePayload": {"region": {"Fn::FindInMap": ["Sites", {"Ref": "Site"}, "Region"]}},
        "ThingGroups": ["all", {"Ref": "Groups"}],
    }
    t = parse(template(props, params, Mappings=mappings))
    spec = t.evaluate({"ThingName": "a", "Site": "nyc", "Groups": "x,y,all"})
    assert spec is not None
    assert (spec.attributes, spec.groups) == ({"region": "east"}, ("all", "x", "y"))
    assert t.evaluate({"ThingName": "a", "Site": "sea", "Groups": ["z"]}).groups == ("all", "z")  # type: ignore[union-attr]
    with pytest.raises(InvalidRequest, match="no entry"):
        t.evaluate({"ThingName": "a", "Site": "ams", "Groups": "x"})


def test_attribute_payload_forms_and_values() -> None:
    flat = one({**NAME, "AttributePayload": {"n": 5, "b": True, "gone": ""}}, {"ThingName": "a"})
    assert flat.attributes == {"n": "5", "b": "true"}  # an empty value is no attribute, as in CreateThing
    cfn = one({**NAME, "AttributePayload": {"Attributes": {"k": "v"}}}, {"ThingName": "a"})
    assert cfn.attributes == {"k": "v"}
    with pytest.raises(InvalidRequest, match="Attribute k"):
        one({**NAME, "AttributePayload": {"k": ["list"]}}, {"ThingName": "a"})


@pytest.mark.parametrize(
    ("parameters", "values", "match"),
    [
        ({"ThingName": {"Type": "String"}}, {}, "Parameter ThingName is required"),
        ({"ThingName": {"Type": "String"}}, {"ThingName": {"no": 1}}, "must be a string"),
        ({"ThingName": {"Type": "String"}, "N": {"Type": "Number"}}, {"ThingName": "a", "N": "x"}, "must be a number"),
        (
            {"ThingName": {"Type": "String", "AllowedValues": ["a", "b"]}},
            {"ThingName": "c"},
            "must be one of a, b",
        ),
        ({"ThingName": {"Type": "String", "AllowedPattern": "[a-z]+"}}, {"ThingName": "A1"}, "must match"),
        ({"ThingName": {"Type": "String", "MaxLength": 2}}, {"ThingName": "abc"}, "at most 2"),
    ],
)
def test_per_line_errors(parameters: dict[str, Any], values: dict[str, Any], match: str) -> None:
    t = parse(template(NAME, parameters))
    with pytest.raises(InvalidRequest, match=match):
        t.evaluate(values)


def test_per_line_errors_of_functions() -> None:
    params = {"ThingName": {"Type": "String"}, "L": {"Type": "String", "Default": "a,b"}}
    t = parse(template({"ThingName": {"Fn::Select": [5, {"Fn::Split": [",", {"Ref": "L"}]}]}}, params))
    with pytest.raises(InvalidRequest, match="out of range"):
        t.evaluate({"ThingName": "x"})
    t = parse(template({"ThingName": {"Fn::Split": [",", {"Ref": "ThingName"}]}}))
    with pytest.raises(InvalidRequest, match="ThingName must evaluate to a string"):
        t.evaluate({"ThingName": "a,b"})


# -- refused at parse (the task is refused) ------------------------------------------------------------------


CERTIFICATE = {
    "Type": "AWS::IoT::Certificate",
    "Properties": {"CertificateSigningRequest": {"Ref": "CSR"}, "Status": "ACTIVE"},
}


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "must be a JSON object"),
        (json.dumps({"Parameters": {}}), "Resources must be a JSON object"),
        (json.dumps({"Resources": {}}), "must declare Resources"),
        (
            json.dumps(
                {"Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": NAME}, "certificate": CERTIFICATE}}
            ),
            "AWS::IoT::Certificate is not supported",
        ),
        (
            json.dumps({"Resources": {"policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "p"}}}}),
            "AWS::IoT::Policy is not supported",
        ),
        (json.dumps({"Resources": {"x": {"Type": "AWS::S3::Bucket"}}}), "has type 'AWS::S3::Bucket'"),
        (
            json.dumps(
                {
                    "Resources": {
                        "a": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": "a"}},
                        "b": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": "b"}},
                    }
                }
            ),
            "exactly one AWS::IoT::Thing resource, not 2",
        ),
        (template({"AttributePayload": {}}), "must have a ThingName"),
        (template({"ThingName": {"Ref": "Nope"}}), "refers to 'Nope'"),
        (template({"ThingName": {"Fn::Sub": "x-${Nope}"}}), r"refers to \$\{Nope\}"),
        (template({"ThingName": {"Fn::Join": ["-"]}}), "Fn::Join takes"),
        (template({"ThingName": {"Fn::GetAtt": ["a", "b"]}}), "Fn::GetAtt is not supported"),
        (template({"ThingName": {"Fn::If": ["Missing", "a", "b"]}}), "condition 'Missing'"),
        (template({**NAME, "BillingGroup": "b"}), "Billing groups are not supported"),
        (template({**NAME, "Principals": []}), "not supported: Principals"),
        (template(NAME, {"ThingName": {"Type": "List<Number>"}}), "has Type 'List<Number>'"),
        (template(NAME, {"ThingName": {"Default": "a"}}), "has Type None"),
        (template(NAME, DeviceConfiguration={"a": 1}), "DeviceConfiguration"),
        (
            template(NAME, Conditions={"A": {"Condition": "B"}, "B": {"Condition": "A"}}),
            "cycle",
        ),
        (template(NAME, {"ThingName": {"Type": "String", "AllowedValues": ["a"], "Default": "b"}}), "must be one of"),
    ],
)
def test_templates_refused_for_the_whole_task(body: str, match: str) -> None:
    with pytest.raises(InvalidRequest, match=match):
        parse(body)


@pytest.mark.parametrize("setting", ["REPLACE", "MERGE"])
def test_override_settings_that_would_rewrite_a_thing_are_refused(setting: str) -> None:
    body = json.dumps(
        {
            "Parameters": {"ThingName": {"Type": "String"}},
            "Resources": {
                "thing": {
                    "Type": "AWS::IoT::Thing",
                    "Properties": NAME,
                    "OverrideSettings": {"AttributePayload": setting},
                }
            },
        }
    )
    with pytest.raises(InvalidRequest, match=f"{setting} is not supported"):
        parse(body)


# -- a thing that exists already ------------------------------------------------------------------------------


SPEC = ThingSpec("t", "type-a", {"k": "v"}, ("g",))


def test_an_existing_thing_with_the_same_configuration_is_success() -> None:
    assert existing_thing_conflict(SPEC, "type-a", {"k": "v"}, Overrides()) is None


@pytest.mark.parametrize(
    ("current_type", "current_attrs"), [("type-b", {"k": "v"}), ("type-a", {"k": "w"}), (None, {})]
)
def test_an_existing_thing_that_differs_is_already_existing(
    current_type: str | None, current_attrs: dict[str, str]
) -> None:
    err = existing_thing_conflict(SPEC, current_type, current_attrs, Overrides())
    assert isinstance(err, ResourceAlreadyExists)
    assert err.code == "ResourceAlreadyExistsException"


def test_override_settings_do_nothing_and_fail() -> None:
    keep = Overrides(attribute_payload="DO_NOTHING", thing_type_name="DO_NOTHING")
    assert existing_thing_conflict(SPEC, "type-b", {"other": "x"}, keep) is None
    strict = Overrides(attribute_payload="FAIL")
    err = existing_thing_conflict(SPEC, "type-a", {"k": "w"}, strict)
    assert isinstance(err, ResourceConflicts) and err.code == "ResourceConflictsException"
    assert existing_thing_conflict(SPEC, "type-a", {"k": "v"}, strict) is None  # nothing differs: nothing fails
    body = json.dumps(
        {
            "Parameters": {"ThingName": {"Type": "String"}},
            "Resources": {
                "thing": {
                    "Type": "AWS::IoT::Thing",
                    "Properties": NAME,
                    "OverrideSettings": {"ATTRIBUTE_PAYLOAD": "DO_NOTHING", "ThingGroups": "FAIL"},
                }
            },
        }
    )
    assert parse(body).overrides == Overrides(attribute_payload="DO_NOTHING", thing_groups="FAIL")
