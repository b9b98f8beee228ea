"""Tags on resources (TagResource, UntagResource, ListTagsForResource, ``tags`` on creates).

The botocore model already bounds each key (1-128 characters of ``[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]``)
and value (0-256), and a package's tag map to 50 entries; what it cannot say, and the developer
guide does ("Tagging your AWS IoT resources", tag restrictions), is checked here:

* at most 50 tags on a resource;
* keys are unique on a resource (a repeated key in one request is refused rather than silently
  resolved, because the caller cannot have meant both values);
* the ``aws:`` prefix is reserved for AWS: a key may not start with it (in any letter case), and
  such a key cannot be removed either.

Tags are stored in the resource's own row (a ``tags`` JSON column, a list of ``{"Key", "Value"}``
as the API speaks it), so they live and die with the resource and every instance sees them.

Which ARNs can carry tags here is decided by :func:`tagged_resource`: the kinds fleetjobs keeps
that the model gives ``tags`` on their create (jobs, job templates, static and dynamic thing groups,
thing types, software packages and package versions).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fleetjobs.domain.arns import Partition, parse_arn
from fleetjobs.domain.errors import InvalidRequest, LimitExceeded

MAX_TAGS_PER_RESOURCE = 50
RESERVED_PREFIX = "aws:"

JOB = "job"
JOB_TEMPLATE = "jobtemplate"
THING_GROUP = "thinggroup"
THING_TYPE = "thingtype"
PACKAGE = "package"
PACKAGE_VERSION = "packageversion"
TAGGABLE = (JOB, JOB_TEMPLATE, THING_GROUP, THING_TYPE, PACKAGE)

Tag = dict[str, str]


@dataclass(frozen=True)
class TaggedResource:
    """A resource named by an ARN: its kind (one of the constants above) and its name(s)."""

    kind: str
    name: str
    version: str | None = None  # package versions only


def tagged_resource(arn: str, partition: Partition) -> TaggedResource:
    """The resource an ARN names, if it is one fleetjobs keeps tags on, in this account and region.

    A malformed ARN, one of another account or region, or one of a kind that takes no tags here
    (a thing: AWS IoT does not tag things either) is an InvalidRequest; whether the resource
    exists is for the caller to find out (ResourceNotFound).
    """
    parsed = parse_arn(arn)
    if not partition.owns(parsed):
        raise InvalidRequest(f"{arn} is not a resource of account {partition.account} in {partition.region}.")
    kind, rid = parsed.resource_type, parsed.resource_id
    if kind == PACKAGE and "/" in rid:
        name, sep, version = rid.partition("/version/")
        if not sep or not name or not version or "/" in name or "/" in version:
            raise InvalidRequest(f"{arn} is not a valid package or package version ARN.")
        return TaggedResource(PACKAGE_VERSION, name, version)
    if kind not in TAGGABLE:
        raise InvalidRequest(
            f"Resources of type {kind} cannot be tagged; fleetjobs tags jobs, job templates, thing groups, "
            "thing types, packages and package versions."
        )
    if "/" in rid:
        raise InvalidRequest(f"{arn} is not a valid {kind} ARN.")
    return TaggedResource(kind, rid)


def checked_tags(tags: Sequence[Mapping[str, Any]] | None, *, bounded: bool = True) -> list[Tag]:
    """The tags a request gives (CreateX ``tags`` or TagResource), checked and in API form.

    ``bounded``: more than 50 is refused here (a create); TagResource leaves the bound to
    :func:`merged`, which counts what the resource already has.
    """
    out: list[Tag] = []
    seen: set[str] = set()
    for tag in tags or ():
        key = tag["Key"]
        if key.lower().startswith(RESERVED_PREFIX):
            raise InvalidRequest(f"Tag keys starting with '{RESERVED_PREFIX}' are reserved for AWS use: {key}")
        if key in seen:
            raise InvalidRequest(f"Tag key {key} is given more than once; the keys of a resource are unique.")
        seen.add(key)
        out.append(_tag(key, tag.get("Value")))
    if bounded and len(out) > MAX_TAGS_PER_RESOURCE:
        raise InvalidRequest(f"{len(out)} tags were given; a resource can have at most {MAX_TAGS_PER_RESOURCE} tags.")
    return out


def tags_from_map(tags: Mapping[str, str] | None) -> list[Tag]:
    """A package's tag map (CreatePackage, CreatePackageVersion) in the list form rows keep."""
    return checked_tags([{"Key": k, "Value": v} for k, v in (tags or {}).items()])


def merged(current: Iterable[Mapping[str, Any]] | None, new: Sequence[Tag]) -> list[Tag]:
    """TagResource: a given key replaces that key's value, other keys are added; the result may
    hold at most 50 tags (LimitExceeded, and nothing changes)."""
    by_key = {t["Key"]: _tag(t["Key"], t.get("Value")) for t in current or ()}
    for tag in new:
        by_key[tag["Key"]] = tag
    if len(by_key) > MAX_TAGS_PER_RESOURCE:
        raise LimitExceeded(
            f"The resource would have {len(by_key)} tags; a resource can have at most {MAX_TAGS_PER_RESOURCE} tags."
        )
    return list(by_key.values())


def without(current: Iterable[Mapping[str, Any]] | None, keys: Sequence[str]) -> list[Tag]:
    """UntagResource: the tags left once ``keys`` are removed (keys the resource lacks are ignored,
    as on AWS); a reserved key cannot be removed."""
    for key in keys:
        if key.lower().startswith(RESERVED_PREFIX):
            raise InvalidRequest(f"Tag keys starting with '{RESERVED_PREFIX}' are reserved for AWS use: {key}")
    gone = set(keys)
    return [_tag(t["Key"], t.get("Value")) for t in current or () if t["Key"] not in gone]


def sorted_tags(current: Iterable[Mapping[str, Any]] | None) -> list[Tag]:
    """ListTagsForResource's order: by key, so that a key-based nextToken resumes exactly."""
    by_key = {t["Key"]: _tag(t["Key"], t.get("Value")) for t in current or ()}
    return [by_key[k] for k in sorted(by_key)]


def _tag(key: str, value: str | None) -> Tag:
    # The model makes Value optional; a tag given without one is returned without one.
    return {"Key": key} if value is None else {"Key": key, "Value": value}
