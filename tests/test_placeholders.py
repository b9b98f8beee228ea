"""Job-document placeholders (JOBS_API.md §6): every form and its errors, without a server."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from fleetjobs.domain.errors import InvalidRequest
from fleetjobs.domain.placeholders import (
    PackageRef,
    S3Object,
    parse_s3_url,
    placeholders,
    render_for_delivery,
    substitute_at_creation,
)

PUBLISHED = {"status": "PUBLISHED", "attributes": {"url": "https://x/y?a=1&b=2", "sig": 'q"uote'}, "artifact": None}
VERSIONS = {
    ("fw", "2.0"): PUBLISHED,
    ("fw", "1.0"): {"status": "DRAFT", "attributes": {}},
    ("art", "1"): {
        "status": "PUBLISHED",
        "attributes": {},
        "artifact": {"s3Location": {"bucket": "b", "key": "k.bin"}},
    },
    ("artv", "1"): {
        "status": "PUBLISHED",
        "attributes": {},
        "artifact": {"s3Location": {"bucket": "b", "key": "k.bin", "version": "v7"}},
    },
}


def lookup(name: str, version: str):  # type: ignore[no-untyped-def]
    return VERSIONS.get((name, version))


def sub(doc: str, **kw):  # type: ignore[no-untyped-def]
    return substitute_at_creation(doc, packages=lookup, **kw)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://s3.amazonaws.com/bucket/dir/file.bin", S3Object("bucket", "dir/file.bin")),
        ("https://s3.us-west-2.amazonaws.com/bucket/file", S3Object("bucket", "file")),
        ("https://s3-us-west-2.amazonaws.com/bucket/file", S3Object("bucket", "file")),
        ("https://bucket.s3.amazonaws.com/a/b", S3Object("bucket", "a/b")),
        ("https://bucket.s3.eu-west-1.amazonaws.com/a", S3Object("bucket", "a")),
    ],
)
def test_s3_url_forms(url: str, expected: S3Object) -> None:
    assert parse_s3_url(url) == expected


def test_v2_urls_are_encoded_and_may_pin_a_version() -> None:
    url = quote("https://s3.amazonaws.com/b/my file.bin?versionId=abc", safe="")
    assert parse_s3_url(url, encoded=True) == S3Object("b", "my file.bin", "abc")


@pytest.mark.parametrize("url", ["https://example.com/b/k", "https://s3.amazonaws.com/bucketonly", "ftp://s3"])
def test_non_s3_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_s3_url(url)


def test_presigned_placeholders_are_left_for_delivery_and_signed_each_time() -> None:
    doc = json.dumps(
        {
            "a": "${aws:iot:s3-presigned-url:https://s3.amazonaws.com/b/k1}",
            "b": "${aws:iot:s3-presigned-url-v1:https://s3.amazonaws.com/b/k2}",
            "c": "${aws:iot:s3-presigned-url-v2:" + quote("https://s3.amazonaws.com/b/k3?versionId=9", safe="") + "}",
        }
    )
    assert sub(doc) == doc
    signed: list[S3Object] = []

    def presign(obj: S3Object) -> str:
        signed.append(obj)
        return f"https://files/{obj.key}?sig=1&v={obj.version_id}"

    out = json.loads(render_for_delivery(doc, presign))
    assert out == {
        "a": "https://files/k1?sig=1&v=None",
        "b": "https://files/k2?sig=1&v=None",
        "c": "https://files/k3?sig=1&v=9",
    }
    assert [o.key for o in signed] == ["k1", "k2", "k3"]


def test_parameters_fill_managed_template_slots_json_escaped() -> None:
    doc = '{"cmd": "${aws:iot:parameter:command}", "u": "${aws:iot:parameter:runAsUser}"}'
    out = json.loads(sub(doc, parameters={"command": 'echo "hi",ls', "runAsUser": ""}))
    assert out == {"cmd": 'echo "hi",ls', "u": ""}
    with pytest.raises(InvalidRequest, match="command"):
        sub(doc, parameters={"runAsUser": ""})


def test_package_attribute_and_whole_attributes() -> None:
    doc = (
        '{"url": "${aws:iot:package:fw:version:2.0:attributes:url}", '
        '"all": "${aws:iot:package:fw:version:2.0:attributes}", '
        '"sig": "${aws:iot:package:fw:version:2.0:attributes:sig}"}'
    )
    out = json.loads(sub(doc))
    assert out["url"] == "https://x/y?a=1&b=2" and out["sig"] == 'q"uote'
    assert out["all"] == PUBLISHED["attributes"]


def test_empty_package_and_version_use_the_single_destination() -> None:
    doc = '{"u": "${aws:iot:package::version::attributes:url}"}'
    assert json.loads(sub(doc, destination_versions=[PackageRef("fw", "2.0")]))["u"] == "https://x/y?a=1&b=2"
    with pytest.raises(InvalidRequest, match="multiple elements"):
        sub(doc, destination_versions=[PackageRef("fw", "2.0"), PackageRef("art", "1")])
    with pytest.raises(InvalidRequest, match="in pair"):
        sub('{"u": "${aws:iot:package:fw:version::attributes:url}"}', destination_versions=[PackageRef("fw", "2.0")])


def test_artifact_location_becomes_a_presigned_placeholder() -> None:
    out = sub('{"f": "${aws:iot:package:art:version:1:artifact-location:s3-presigned-url}"}')
    assert json.loads(out)["f"] == "${aws:iot:s3-presigned-url:https://s3.amazonaws.com/b/k.bin}"
    pinned = sub('{"f": "${aws:iot:package:artv:version:1:artifact-location:s3-presigned-url}"}')
    rendered = render_for_delivery(pinned, lambda o: f"{o.bucket}/{o.key}@{o.version_id}")
    assert json.loads(rendered)["f"] == "b/k.bin@v7"
    with pytest.raises(InvalidRequest, match="does not have an associated artifact"):
        sub('{"f": "${aws:iot:package:fw:version:2.0:artifact-location:s3-presigned-url}"}')


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ('{"a": "${aws:iot:package:nope:version:1:attributes:x}"}', "does not exist"),
        ('{"a": "${aws:iot:package:fw:version:1.0:attributes:x}"}', "must be PUBLISHED"),
        ('{"a": "${aws:iot:package:fw:version:2.0:attributes:missing}"}', "no attribute missing"),
        ('{"a": "x${aws:iot:package:fw:version:2.0:attributes}"}', "json value by itself"),
        ('{"a": "${aws:iot:package:fw:version:$null:attributes:url}"}', r"\$null is not allowed"),
        ('{"a": "${aws:iot:parameter:x"}', "not terminated"),
        ('{"a": "${aws:iot:s3-presigned-url:${aws:iot:parameter:u}}"}', "second layer"),
        ('{"a": "${aws:iot:unknown:thing}"}', "Unknown placeholder"),
        ('{"a": "${aws:iot:s3-presigned-url:https://example.com/x}"}', "not an S3 URL"),
    ],
)
def test_error_cases(doc: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        sub(doc, parameters={"x": "1"})


def test_at_most_ten_substitutions() -> None:
    ten = {f"k{i}": f"${{aws:iot:parameter:p{i}}}" for i in range(10)}
    params = {f"p{i}": str(i) for i in range(11)}
    assert len(placeholders(json.dumps(ten))) == 10
    assert json.loads(sub(json.dumps(ten), parameters=params))["k9"] == "9"
    eleven = {**ten, "k10": "${aws:iot:parameter:p10}"}
    with pytest.raises(InvalidRequest, match="at most 10"):
        sub(json.dumps(eleven), parameters=params)
