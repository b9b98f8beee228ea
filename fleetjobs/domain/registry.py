"""Registry rules free of I/O: attribute payloads, thing-group properties, AWS IoT registry quotas.

The ``AttributePayload`` rules hold for things and thing groups alike: ``merge=false`` replaces the
stored attributes, ``merge=true`` merges into them, and an empty-string value removes an attribute
(so no stored attribute is ever empty).  Stored properties drop empty members, so that an absent
member and an empty one compare equal when CreateThing / CreateThingGroup decide idempotency.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fleetjobs.domain.errors import InvalidRequest

# AWS IoT quotas.
MAX_ATTRIBUTES_WITHOUT_TYPE = 3
MAX_ATTRIBUTES_WITH_TYPE = 50
MAX_SEARCHABLE_ATTRIBUTES = 3
MAX_GROUP_ATTRIBUTES = 50
MAX_HIERARCHY_DEPTH = 7
MAX_GROUPS_PER_THING = 10


def payload_attributes(payload: Mapping[str, Any] | None) -> dict[str, str]:
    """The attributes of a create request's payload; empty values mean "no attribute"."""
    attrs: dict[str, str] = (payload or {}).get("attributes") or {}
    return {k: v for k, v in attrs.items() if v != ""}


def apply_attribute_payload(current: dict[str, str], payload: Mapping[str, Any] | None) -> dict[str, str]:
    """The attributes after an update with ``payload`` (AWS ``AttributePayload`` semantics).

    A payload without ``attributes`` changes nothing; ``merge`` (default false) decides between
    merging into and replacing the stored attributes; an empty value removes that attribute.
    """
    if not payload or payload.get("attributes") is None:
        return dict(current)
    attrs: dict[str, str] = payload["attributes"]
    merged = {**current, **attrs} if payload.get("merge") else dict(attrs)
    return {k: v for k, v in merged.items() if v != ""}


def check_attribute_count(attributes: dict[str, str], thing_type_name: str | None) -> None:
    limit = MAX_ATTRIBUTES_WITH_TYPE if thing_type_name else MAX_ATTRIBUTES_WITHOUT_TYPE
    if len(attributes) > limit:
        kind = "with" if thing_type_name else "without"
        raise InvalidRequest(
            f"A thing {kind} a thing type can have at most {limit} attributes; this request gives it {len(attributes)}."
        )


def normalize_type_properties(props: Mapping[str, Any] | None) -> dict[str, Any]:
    """Stored form of ThingTypeProperties: members that carry something (so absent == empty)."""
    return {k: v for k, v in (props or {}).items() if v not in (None, "", [], {})}


def check_searchable_attributes(props: Mapping[str, Any]) -> None:
    n = len(props.get("searchableAttributes") or [])
    if n > MAX_SEARCHABLE_ATTRIBUTES:
        raise InvalidRequest(
            f"A thing type can have at most {MAX_SEARCHABLE_ATTRIBUTES} searchable attributes; {n} were given."
        )


def normalize_group_properties(props: Mapping[str, Any] | None) -> dict[str, Any]:
    """Stored form of ThingGroupProperties: a description and non-empty attributes, nothing else
    (``merge`` only means something to an update), so absent and empty compare equal."""
    props = props or {}
    out: dict[str, Any] = {}
    if props.get("thingGroupDescription"):
        out["thingGroupDescription"] = props["thingGroupDescription"]
    attributes = payload_attributes(props.get("attributePayload"))
    if attributes:
        out["attributePayload"] = {"attributes": attributes}
    check_group_attributes(out)
    return out


def check_group_attributes(props: dict[str, Any]) -> None:
    n = len(props.get("attributePayload", {}).get("attributes", {}))
    if n > MAX_GROUP_ATTRIBUTES:
        raise InvalidRequest(f"A thing group can have at most {MAX_GROUP_ATTRIBUTES} attributes; {n} were given.")


def merged_group_properties(current: Mapping[str, Any] | None, given: Mapping[str, Any]) -> dict[str, Any]:
    """UpdateThingGroup / UpdateDynamicThingGroup: a given description replaces the old one (empty
    removes it); a given attribute payload merges into the attributes (``merge`` semantics)."""
    props = dict(current or {})
    if "thingGroupDescription" in given:
        if given["thingGroupDescription"]:
            props["thingGroupDescription"] = given["thingGroupDescription"]
        else:
            props.pop("thingGroupDescription", None)
    if "attributePayload" in given:
        attributes = apply_attribute_payload(
            props.get("attributePayload", {}).get("attributes", {}), given["attributePayload"]
        )
        if attributes:
            props["attributePayload"] = {"attributes": attributes}
        else:
            props.pop("attributePayload", None)
    check_group_attributes(props)
    return props
