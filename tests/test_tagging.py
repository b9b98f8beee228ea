"""Tagging (JOBS_API.md §1.12) through boto3: ``tags`` on every create that takes them, read back by
ListTagsForResource, changed by TagResource / UntagResource, for each kind of resource fleetjobs
keeps (jobs, job templates, static and dynamic thing groups, thing types, packages, package
versions); the developer guide's restrictions (50 tags, unique keys, the reserved ``aws:``
prefix) and the model's (key and value lengths); AWS's errors; tags deleted with the resource and
seen by every instance.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.fleet import Fleet, thing_arn
from tests.harness import ACCOUNT, REGION, Server, unique

DOC = json.dumps({"op": "x"})
ARN = f"arn:aws:iot:{REGION}:{ACCOUNT}"


@pytest.fixture(scope="module")
def srv(backends) -> Server:  # type: ignore[no-untyped-def]
    """A server of this module's own, with fleet indexing on (dynamic thing groups need it)."""
    server = backends.server().start()
    server.client("iot").update_indexing_configuration(thingIndexingConfiguration={"thingIndexingMode": "REGISTRY"})
    return server


@pytest.fixture
def iot(srv: Server) -> Any:
    return srv.client("iot")


def tag_list(**tags: str) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def tags_of(iot: Any, arn: str) -> dict[str, str | None]:
    """Every tag of the resource, through the paginator (as a careful client reads them)."""
    out: dict[str, str | None] = {}
    for page in iot.get_paginator("list_tags_for_resource").paginate(resourceArn=arn):
        for tag in page["tags"]:
            assert tag["Key"] not in out, "a tag was listed twice"
            out[tag["Key"]] = tag.get("Value")
    return out


# -- one creator per kind: (create with tags) -> ARN ----------------------------------------------


def make_job(iot: Any, tags: list[dict[str, str]] | None) -> str:
    (thing,) = Fleet(iot).things(1)
    extra = {"tags": tags} if tags is not None else {}
    return iot.create_job(jobId=unique("job"), targets=[thing_arn(thing)], document=DOC, **extra)["jobArn"]


def make_template(iot: Any, tags: list[dict[str, str]] | None) -> str:
    extra = {"tags": tags} if tags is not None else {}
    return iot.create_job_template(jobTemplateId=unique("tpl"), description="d", document=DOC, **extra)[
        "jobTemplateArn"
    ]


def make_group(iot: Any, tags: list[dict[str, str]] | None) -> str:
    extra = {"tags": tags} if tags is not None else {}
    return iot.create_thing_group(thingGroupName=unique("grp"), **extra)["thingGroupArn"]


def make_dynamic_group(iot: Any, tags: list[dict[str, str]] | None) -> str:
    extra = {"tags": tags} if tags is not None else {}
    return iot.create_dynamic_thing_group(thingGroupName=unique("dyn"), queryString="attributes.x:1", **extra)[
        "thingGroupArn"
    ]


def make_thing_type(iot: Any, tags: list[dict[str, str]] | None) -> str:
    extra = {"tags": tags} if tags is not None else {}
    return iot.create_thing_type(thingTypeName=unique("type"), **extra)["thingTypeArn"]


def make_package(iot: Any, tags: list[dict[str, str]] | None) -> str:
    extra = {"tags": {t["Key"]: t["Value"] for t in tags}} if tags else {}
    return iot.create_package(packageName=unique("pkg"), **extra)["packageArn"]


def make_package_version(iot: Any, tags: list[dict[str, str]] | None) -> str:
    name = unique("pkg")
    iot.create_package(packageName=name)
    extra = {"tags": {t["Key"]: t["Value"] for t in tags}} if tags else {}
    return iot.create_package_version(packageName=name, versionName="1.0", **extra)["packageVersionArn"]


KINDS: dict[str, Callable[[Any, list[dict[str, str]] | None], str]] = {
    "job": make_job,
    "job template": make_template,
    "thing group": make_group,
    "dynamic thing group": make_dynamic_group,
    "thing type": make_thing_type,
    "package": make_package,
    "package version": make_package_version,
}


@pytest.mark.parametrize("kind", KINDS)
def test_create_tags_are_listed_and_changed(iot: Any, kind: str) -> None:
    arn = KINDS[kind](iot, tag_list(team="pumps", env="prod"))
    assert tags_of(iot, arn) == {"team": "pumps", "env": "prod"}
    # A given key replaces its value, others are added; an empty value is a value.
    iot.tag_resource(resourceArn=arn, tags=tag_list(env="staging", owner="ops", note=""))
    assert tags_of(iot, arn) == {"team": "pumps", "env": "staging", "owner": "ops", "note": ""}
    # Keys it does not have are ignored.
    iot.untag_resource(resourceArn=arn, tagKeys=["team", "absent"])
    assert tags_of(iot, arn) == {"env": "staging", "owner": "ops", "note": ""}
    iot.untag_resource(resourceArn=arn, tagKeys=["env", "owner", "note"])
    assert iot.list_tags_for_resource(resourceArn=arn)["tags"] == []


@pytest.mark.parametrize("kind", KINDS)
def test_a_resource_created_without_tags_can_be_tagged(iot: Any, kind: str) -> None:
    arn = KINDS[kind](iot, None)
    assert iot.list_tags_for_resource(resourceArn=arn)["tags"] == []
    iot.tag_resource(resourceArn=arn, tags=[{"Key": "k", "Value": "v"}])
    assert tags_of(iot, arn) == {"k": "v"}


def test_a_tag_without_a_value_is_kept_without_one(iot: Any) -> None:
    arn = make_group(iot, [{"Key": "flag"}])
    assert iot.list_tags_for_resource(resourceArn=arn)["tags"] == [{"Key": "flag"}]


def test_the_aws_cli_reads_and_writes_tags(srv: Server, iot: Any) -> None:
    arn = make_group(iot, None)
    srv.cli("iot", "tag-resource", "--resource-arn", arn, "--tags", "Key=site,Value=north", "Key=line,Value=3")
    assert sorted(srv.cli("iot", "list-tags-for-resource", "--resource-arn", arn)["tags"], key=lambda t: t["Key"]) == [
        {"Key": "line", "Value": "3"},
        {"Key": "site", "Value": "north"},
    ]


# -- limits ---------------------------------------------------------------------------------------


def fifty(prefix: str = "k") -> list[dict[str, str]]:
    return [{"Key": f"{prefix}{i:02d}", "Value": str(i)} for i in range(50)]


def test_fifty_tags_at_create_and_no_more(iot: Any) -> None:
    arn = make_job(iot, fifty())
    page = iot.list_tags_for_resource(resourceArn=arn)
    # One page holds every tag a resource can have: a caller that reads one page sees them all.
    assert len(page["tags"]) == 50 and "nextToken" not in page
    assert tags_of(iot, arn) == {f"k{i:02d}": str(i) for i in range(50)}
    for make in (make_job, make_template, make_group, make_dynamic_group, make_thing_type):
        with pytest.raises(iot.exceptions.InvalidRequestException, match="at most 50 tags"):
            make(iot, [*fifty(), {"Key": "one-more", "Value": "x"}])
    # A package's tag map has the same bound in the model: ValidationException, as the catalog answers.
    with pytest.raises(iot.exceptions.ValidationException):
        iot.create_package(packageName=unique("pkg"), tags={f"k{i:02d}": "v" for i in range(51)})


def test_tag_resource_beyond_fifty_is_limit_exceeded_and_changes_nothing(iot: Any) -> None:
    arn = make_thing_type(iot, fifty()[:48])
    with pytest.raises(iot.exceptions.LimitExceededException) as e:
        iot.tag_resource(resourceArn=arn, tags=tag_list(a="1", b="2", c="3"))
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 410  # the model's status
    assert len(tags_of(iot, arn)) == 48
    # Replacing values of keys it has does not add tags: at the limit, still allowed.
    iot.tag_resource(resourceArn=arn, tags=tag_list(a="1", b="2"))
    iot.tag_resource(resourceArn=arn, tags=[{"Key": "k00", "Value": "new"}, {"Key": "a", "Value": "again"}])
    got = tags_of(iot, arn)
    assert len(got) == 50 and got["k00"] == "new" and got["a"] == "again"
    with pytest.raises(iot.exceptions.LimitExceededException):
        iot.tag_resource(resourceArn=arn, tags=tag_list(z="26"))
    with pytest.raises(iot.exceptions.LimitExceededException):
        iot.tag_resource(resourceArn=make_template(iot, None), tags=[*fifty(), {"Key": "x", "Value": "y"}])


@pytest.mark.parametrize("key", ["aws:owner", "AWS:owner", "Aws:cloudformation:stack-name"])
def test_the_aws_prefix_is_reserved(iot: Any, key: str) -> None:
    arn = make_group(iot, None)
    with pytest.raises(iot.exceptions.InvalidRequestException, match="reserved"):
        iot.tag_resource(resourceArn=arn, tags=[{"Key": key, "Value": "v"}])
    with pytest.raises(iot.exceptions.InvalidRequestException, match="reserved"):
        iot.untag_resource(resourceArn=arn, tagKeys=[key])
    with pytest.raises(iot.exceptions.InvalidRequestException, match="reserved"):
        make_job(iot, [{"Key": key, "Value": "v"}])
    with pytest.raises(iot.exceptions.ValidationException, match="reserved"):
        iot.create_package(packageName=unique("pkg"), tags={key: "v"})
    assert iot.list_tags_for_resource(resourceArn=arn)["tags"] == []
    # Only the prefix is reserved: "aws" elsewhere in a key, or a value starting with it, is fine.
    iot.tag_resource(resourceArn=arn, tags=[{"Key": "my-aws:key", "Value": "aws:value"}])
    assert tags_of(iot, arn) == {"my-aws:key": "aws:value"}


def test_keys_are_unique_in_a_request(iot: Any) -> None:
    twice = [{"Key": "k", "Value": "1"}, {"Key": "k", "Value": "2"}]
    arn = make_group(iot, None)
    with pytest.raises(iot.exceptions.InvalidRequestException, match="more than once"):
        iot.tag_resource(resourceArn=arn, tags=twice)
    with pytest.raises(iot.exceptions.InvalidRequestException, match="more than once"):
        make_template(iot, twice)
    assert iot.list_tags_for_resource(resourceArn=arn)["tags"] == []


def test_key_and_value_lengths_come_from_the_model(srv: Server, iot: Any) -> None:
    arn = make_group(iot, None)
    iot.tag_resource(resourceArn=arn, tags=[{"Key": "k" * 128, "Value": "v" * 256}])
    assert tags_of(iot, arn) == {"k" * 128: "v" * 256}
    raw = srv.client("iot", validate=False)  # boto3's own validation off, to reach the server's
    for bad in ({"Key": "k" * 129, "Value": "v"}, {"Key": "k", "Value": "v" * 257}, {"Key": "", "Value": "v"}):
        with pytest.raises(raw.exceptions.InvalidRequestException, match="validation error"):
            raw.tag_resource(resourceArn=arn, tags=[bad])
    with pytest.raises(raw.exceptions.InvalidRequestException, match="regular expression"):
        raw.tag_resource(resourceArn=arn, tags=[{"Key": "bad#key", "Value": "v"}])
    assert tags_of(iot, arn) == {"k" * 128: "v" * 256}


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arn",
    [
        f"{ARN}:job/no-such-job",
        f"{ARN}:jobtemplate/no-such-template",
        f"{ARN}:thinggroup/no-such-group",
        f"{ARN}:thingtype/no-such-type",
        f"{ARN}:package/no-such-package",
        f"{ARN}:package/no-such-package/version/1.0",
    ],
)
def test_an_unknown_resource_is_not_found(iot: Any, arn: str) -> None:
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.tag_resource(resourceArn=arn, tags=tag_list(k="v"))
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.untag_resource(resourceArn=arn, tagKeys=["k"])
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.list_tags_for_resource(resourceArn=arn)


@pytest.mark.parametrize(
    "arn",
    [
        "not-an-arn",
        f"arn:aws:s3:{REGION}:{ACCOUNT}:job/x",  # not iot
        f"arn:aws:iot:{REGION}:210987654321:thinggroup/x",  # another account
        f"arn:aws:iot:eu-west-1:{ACCOUNT}:thinggroup/x",  # another region
        f"{ARN}:thing/x",  # things take no tags
        f"{ARN}:rule/x",  # a kind fleetjobs does not keep
        f"{ARN}:job",
        f"{ARN}:package/p/1.0",
        f"arn:aws:iot:{REGION}::jobtemplate/AWS-Run-Command:1.0",  # AWS managed template
    ],
)
def test_a_bad_arn_is_an_invalid_request(iot: Any, arn: str) -> None:
    why = "not a valid|not a resource of account|cannot be tagged"
    with pytest.raises(iot.exceptions.InvalidRequestException, match=why):
        iot.tag_resource(resourceArn=arn, tags=tag_list(k="v"))
    with pytest.raises(iot.exceptions.InvalidRequestException, match=why):
        iot.untag_resource(resourceArn=arn, tagKeys=["k"])
    with pytest.raises(iot.exceptions.InvalidRequestException, match=why):
        iot.list_tags_for_resource(resourceArn=arn)


def test_a_forged_next_token_is_an_invalid_request(iot: Any) -> None:
    arn = make_group(iot, tag_list(a="1"))
    for token in ("not-a-token", "eyJrIjo1fQ"):  # the second decodes, but to a number, not a key
        with pytest.raises(iot.exceptions.InvalidRequestException, match="nextToken"):
            iot.list_tags_for_resource(resourceArn=arn, nextToken=token)


def test_a_next_token_resumes_after_its_key(iot: Any) -> None:
    """A token names the last key of the previous page: listing resumes after it, in key order."""
    from base64 import urlsafe_b64encode

    arn = make_group(iot, tag_list(b="2", a="1", d="4", c="3"))
    assert [t["Key"] for t in iot.list_tags_for_resource(resourceArn=arn)["tags"]] == ["a", "b", "c", "d"]
    token = urlsafe_b64encode(json.dumps({"k": "b"}, separators=(",", ":")).encode()).decode().rstrip("=")
    rest = iot.list_tags_for_resource(resourceArn=arn, nextToken=token)
    assert rest["tags"] == tag_list(c="3", d="4") and "nextToken" not in rest


# -- lifetime -------------------------------------------------------------------------------------


def gone_then_recreated(iot: Any, arn: str, recreate: Callable[[], str]) -> None:
    for call in (
        lambda: iot.list_tags_for_resource(resourceArn=arn),
        lambda: iot.tag_resource(resourceArn=arn, tags=tag_list(k="v")),
    ):
        with pytest.raises(iot.exceptions.ResourceNotFoundException):
            call()
    assert recreate() == arn
    assert iot.list_tags_for_resource(resourceArn=arn)["tags"] == []  # a new resource: no old tags


def test_tags_are_deleted_with_the_resource(iot: Any) -> None:
    group = unique("grp")
    arn = iot.create_thing_group(thingGroupName=group, tags=tag_list(k="v"))["thingGroupArn"]
    iot.delete_thing_group(thingGroupName=group)
    gone_then_recreated(iot, arn, lambda: iot.create_thing_group(thingGroupName=group)["thingGroupArn"])

    dyn = unique("dyn")
    arn = iot.create_dynamic_thing_group(thingGroupName=dyn, queryString="attributes.x:1", tags=tag_list(k="v"))[
        "thingGroupArn"
    ]
    iot.delete_dynamic_thing_group(thingGroupName=dyn)
    gone_then_recreated(
        iot, arn, lambda: iot.create_dynamic_thing_group(thingGroupName=dyn, queryString="*")["thingGroupArn"]
    )

    tpl = unique("tpl")
    arn = iot.create_job_template(jobTemplateId=tpl, description="d", document=DOC, tags=tag_list(k="v"))[
        "jobTemplateArn"
    ]
    iot.delete_job_template(jobTemplateId=tpl)
    gone_then_recreated(
        iot, arn, lambda: iot.create_job_template(jobTemplateId=tpl, description="d", document=DOC)["jobTemplateArn"]
    )

    ttype = unique("type")
    arn = iot.create_thing_type(thingTypeName=ttype, tags=tag_list(k="v"))["thingTypeArn"]
    iot.deprecate_thing_type(thingTypeName=ttype)
    iot.delete_thing_type(thingTypeName=ttype)
    gone_then_recreated(iot, arn, lambda: iot.create_thing_type(thingTypeName=ttype)["thingTypeArn"])

    pkg = unique("pkg")
    package_arn = iot.create_package(packageName=pkg, tags={"k": "v"})["packageArn"]
    version_arn = iot.create_package_version(packageName=pkg, versionName="1.0", tags={"k": "v"})["packageVersionArn"]
    iot.delete_package_version(packageName=pkg, versionName="1.0")
    gone_then_recreated(
        iot, version_arn, lambda: iot.create_package_version(packageName=pkg, versionName="1.0")["packageVersionArn"]
    )
    iot.delete_package_version(packageName=pkg, versionName="1.0")
    iot.delete_package(packageName=pkg)
    gone_then_recreated(iot, package_arn, lambda: iot.create_package(packageName=pkg)["packageArn"])


def test_a_deleted_jobs_tags_go_with_it(iot: Any) -> None:
    (thing,) = Fleet(iot).things(1)
    job_id = unique("job")
    arn = iot.create_job(jobId=job_id, targets=[thing_arn(thing)], document=DOC, tags=tag_list(k="v"))["jobArn"]
    iot.cancel_job(jobId=job_id)
    iot.delete_job(jobId=job_id)
    for _ in range(400):  # the purger removes the job in the background; bounded wait
        try:
            iot.describe_job(jobId=job_id)
        except iot.exceptions.ResourceNotFoundException:
            break
        time.sleep(0.05)
    gone_then_recreated(
        iot, arn, lambda: iot.create_job(jobId=job_id, targets=[thing_arn(thing)], document=DOC)["jobArn"]
    )


def test_a_job_does_not_inherit_its_templates_tags(iot: Any) -> None:
    template_arn = make_template(iot, tag_list(from_template="yes"))
    (thing,) = Fleet(iot).things(1)
    arn = iot.create_job(
        jobId=unique("job"), targets=[thing_arn(thing)], jobTemplateArn=template_arn, tags=tag_list(own="1")
    )["jobArn"]
    assert tags_of(iot, arn) == {"own": "1"}


@pytest.fixture
def second_instance(backends, srv: Server) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    """Another server over the same database (PostgreSQL only: SQLite is for one instance)."""
    if backends.kind != "postgres":
        pytest.skip("several instances share PostgreSQL only")
    other = backends.server(database_url=srv.database_url).start()
    yield other
    other.stop()


def test_every_instance_sees_the_tags(iot: Any, second_instance: Server) -> None:
    other = second_instance.client("iot")
    arn = make_group(iot, tag_list(k="v"))
    assert tags_of(other, arn) == {"k": "v"}
    other.tag_resource(resourceArn=arn, tags=tag_list(by="other"))
    assert tags_of(iot, arn) == {"k": "v", "by": "other"}


def test_concurrent_tag_resource_calls_all_land(srv: Server, iot: Any) -> None:
    """Each call rewrites the resource's tag list under a row lock: none overwrites another's."""
    arn = make_group(iot, None)
    clients = [srv.client("iot") for _ in range(8)]

    def tag(i: int) -> None:
        clients[i].tag_resource(resourceArn=arn, tags=[{"Key": f"writer{i}", "Value": str(i)}])

    with concurrent.futures.ThreadPoolExecutor(len(clients)) as pool:
        list(pool.map(tag, range(len(clients))))
    assert tags_of(iot, arn) == {f"writer{i}": str(i) for i in range(len(clients))}
