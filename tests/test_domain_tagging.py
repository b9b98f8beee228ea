"""The tagging rules (fleetjobs.domain.tagging) at their boundaries, without a server."""

from __future__ import annotations

import pytest

from fleetjobs.domain.arns import Partition
from fleetjobs.domain.errors import InvalidRequest, LimitExceeded
from fleetjobs.domain.tagging import (
    JOB,
    PACKAGE,
    PACKAGE_VERSION,
    THING_GROUP,
    TaggedResource,
    checked_tags,
    merged,
    sorted_tags,
    tagged_resource,
    tags_from_map,
    without,
)

HERE = Partition("us-east-1", "123456789012")
ARN = "arn:aws:iot:us-east-1:123456789012"


def keys(n: int, prefix: str = "k") -> list[dict[str, str]]:
    return [{"Key": f"{prefix}{i}", "Value": str(i)} for i in range(n)]


def test_arns_name_their_resource() -> None:
    assert tagged_resource(f"{ARN}:job/j1", HERE) == TaggedResource(JOB, "j1")
    assert tagged_resource(f"{ARN}:thinggroup/g", HERE) == TaggedResource(THING_GROUP, "g")
    assert tagged_resource(f"{ARN}:package/p", HERE) == TaggedResource(PACKAGE, "p")
    assert tagged_resource(f"{ARN}:package/p/version/1.0", HERE) == TaggedResource(PACKAGE_VERSION, "p", "1.0")


@pytest.mark.parametrize(
    "arn",
    [
        "nope",
        f"{ARN}:thing/t",
        f"{ARN}:job/a/b",
        f"{ARN}:package/p/versions/1",
        f"{ARN}:package/p/version/",
        "arn:aws:iot:us-east-1:999999999999:job/j",
        "arn:aws:iot:eu-west-1:123456789012:job/j",
    ],
)
def test_other_arns_are_invalid(arn: str) -> None:
    with pytest.raises(InvalidRequest):
        tagged_resource(arn, HERE)


def test_create_tags_bound_unique_and_reserved() -> None:
    assert len(checked_tags(keys(50))) == 50
    with pytest.raises(InvalidRequest, match="at most 50"):
        checked_tags(keys(51))
    assert len(checked_tags(keys(51), bounded=False)) == 51  # TagResource: merged() decides
    with pytest.raises(InvalidRequest, match="more than once"):
        checked_tags([{"Key": "a", "Value": "1"}, {"Key": "a", "Value": "1"}])
    with pytest.raises(InvalidRequest, match="reserved"):
        checked_tags([{"Key": "AwS:x", "Value": "1"}])
    assert checked_tags([{"Key": "flag"}]) == [{"Key": "flag"}]
    assert tags_from_map({"a": "1"}) == [{"Key": "a", "Value": "1"}]
    assert checked_tags(None) == [] and tags_from_map(None) == []


def test_merge_replaces_adds_and_counts_the_result() -> None:
    current = keys(49)
    out = merged(current, [{"Key": "k0", "Value": "new"}, {"Key": "extra", "Value": "x"}])
    assert len(out) == 50 and {"Key": "k0", "Value": "new"} in out
    with pytest.raises(LimitExceeded):
        merged(out, [{"Key": "one-more", "Value": "x"}])
    assert merged(out, [{"Key": "k1", "Value": "again"}])[1] == {"Key": "k1", "Value": "again"}


def test_untag_ignores_absent_keys_and_refuses_reserved_ones() -> None:
    assert without(keys(3), ["k1", "absent"]) == [{"Key": "k0", "Value": "0"}, {"Key": "k2", "Value": "2"}]
    with pytest.raises(InvalidRequest, match="reserved"):
        without(keys(3), ["aws:x"])


def test_listing_is_in_key_order_without_repeats() -> None:
    stored = [{"Key": "b", "Value": "1"}, {"Key": "a", "Value": "2"}, {"Key": "b", "Value": "3"}]
    assert sorted_tags(stored) == [{"Key": "a", "Value": "2"}, {"Key": "b", "Value": "3"}]
