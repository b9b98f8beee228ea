"""Software Package Catalog through boto3 over real HTTP (JOBS_API.md §1.10-§1.11)."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.harness import ACCOUNT, REGION, Server, unique

ROLE = f"arn:aws:iam::{ACCOUNT}:role/PackageShadowWriter"


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


def status_of(exc: pytest.ExceptionInfo[ClientError]) -> int:
    return exc.value.response["ResponseMetadata"]["HTTPStatusCode"]


def walk(call: Any, key: str, **kw: Any) -> tuple[list[Any], list[int]]:
    """All items of a paginated list, and the size of each page."""
    items: list[Any] = []
    sizes: list[int] = []
    token = None
    while True:
        out = call(**kw, **({"nextToken": token} if token else {}))
        items += out[key]
        sizes.append(len(out[key]))
        token = out.get("nextToken")
        if not token:
            return items, sizes


@pytest.fixture
def package(iot: Any) -> str:
    name = unique("pkg")
    iot.create_package(packageName=name, description="pump firmware")
    return name


class TestPackages:
    def test_create_get_update(self, iot: Any) -> None:
        name = unique("pkg")
        out = iot.create_package(packageName=name, description="pump firmware", tags={"team": "pumps"})
        assert out["packageName"] == name
        assert out["packageArn"] == f"arn:aws:iot:{REGION}:{ACCOUNT}:package/{name}"
        assert out["description"] == "pump firmware"
        got = iot.get_package(packageName=name)
        assert got["packageArn"] == out["packageArn"]
        assert got["description"] == "pump firmware"
        assert "defaultVersionName" not in got
        assert got["creationDate"] and got["lastModifiedDate"]
        iot.update_package(packageName=name, description="new words")
        assert iot.get_package(packageName=name)["description"] == "new words"

    def test_duplicate_is_conflict(self, iot: Any, package: str) -> None:
        with pytest.raises(ClientError) as e:
            iot.create_package(packageName=package)
        assert error_code(e) == "ConflictException"
        assert status_of(e) == 409

    def test_unknown_package(self, iot: Any) -> None:
        name = unique("nope")
        with pytest.raises(ClientError) as e:
            iot.get_package(packageName=name)
        assert error_code(e) == "ResourceNotFoundException"
        assert status_of(e) == 404
        with pytest.raises(ClientError) as e:
            iot.update_package(packageName=name, description="x")
        assert error_code(e) == "ResourceNotFoundException"
        with pytest.raises(ClientError) as e:
            iot.create_package_version(packageName=name, versionName="1.0")
        assert error_code(e) == "ValidationException"
        # Neither delete models ResourceNotFoundException: deleting what is not there succeeds.
        iot.delete_package(packageName=name)
        iot.delete_package_version(packageName=name, versionName="1.0")

    def test_bad_input_is_validation_exception(self, server: Server) -> None:
        raw = server.client("iot", validate=False)
        with pytest.raises(ClientError) as e:
            raw.create_package(packageName="bad name!")
        assert error_code(e) == "ValidationException"
        assert status_of(e) == 400

    def test_delete_rules(self, iot: Any, package: str) -> None:
        iot.create_package_version(packageName=package, versionName="1.0")
        with pytest.raises(ClientError) as e:
            iot.delete_package(packageName=package)
        assert error_code(e) == "ValidationException"
        iot.update_package_version(packageName=package, versionName="1.0", action="PUBLISH")
        iot.update_package(packageName=package, defaultVersionName="1.0")
        with pytest.raises(ClientError) as e:
            iot.delete_package_version(packageName=package, versionName="1.0")
        assert error_code(e) == "ValidationException"
        iot.update_package(packageName=package, unsetDefaultVersion=True)
        assert "defaultVersionName" not in iot.get_package(packageName=package)
        iot.delete_package_version(packageName=package, versionName="1.0")
        with pytest.raises(ClientError) as e:
            iot.get_package_version(packageName=package, versionName="1.0")
        assert error_code(e) == "ResourceNotFoundException"
        iot.delete_package(packageName=package)
        with pytest.raises(ClientError) as e:
            iot.get_package(packageName=package)
        assert error_code(e) == "ResourceNotFoundException"

    def test_default_version(self, iot: Any, package: str) -> None:
        iot.create_package_version(packageName=package, versionName="1.0")
        with pytest.raises(ClientError) as e:  # a DRAFT cannot be the default
            iot.update_package(packageName=package, defaultVersionName="1.0")
        assert error_code(e) == "ValidationException"
        with pytest.raises(ClientError) as e:
            iot.update_package(packageName=package, defaultVersionName="9.9")
        assert error_code(e) == "ResourceNotFoundException"
        iot.update_package_version(packageName=package, versionName="1.0", action="PUBLISH")
        with pytest.raises(ClientError) as e:
            iot.update_package(packageName=package, defaultVersionName="1.0", unsetDefaultVersion=True)
        assert error_code(e) == "ValidationException"
        iot.update_package(packageName=package, defaultVersionName="1.0")
        assert iot.get_package(packageName=package)["defaultVersionName"] == "1.0"
        summaries, _ = walk(iot.list_packages, "packageSummaries", maxResults=100)
        mine = [s for s in summaries if s["packageName"] == package]
        assert mine and mine[0]["defaultVersionName"] == "1.0"

    def test_list_packages_pagination(self, iot: Any) -> None:
        prefix = unique("pg")
        names = [f"{prefix}-{i}" for i in range(5)]
        for n in names:
            iot.create_package(packageName=n)
        summaries, sizes = walk(iot.list_packages, "packageSummaries", maxResults=2)
        listed = [s["packageName"] for s in summaries]
        assert [n for n in listed if n.startswith(prefix)] == names
        assert len(listed) == len(set(listed))
        assert max(sizes) <= 2
        assert listed == sorted(listed)
        with pytest.raises(ClientError) as e:
            iot.list_packages(nextToken="garbage")
        assert error_code(e) == "ValidationException"


class TestPackageVersions:
    def test_lifecycle(self, iot: Any, package: str) -> None:
        out = iot.create_package_version(
            packageName=package,
            versionName="1.0",
            description="first",
            attributes={"url": "https://example.com/fw.bin", "checksum": "abc"},
            artifact={"s3Location": {"bucket": "fw", "key": "pump/1.0.bin", "version": "v1"}},
            recipe='{"operation": "install"}',
        )
        assert out["packageVersionArn"] == f"arn:aws:iot:{REGION}:{ACCOUNT}:package/{package}/version/1.0"
        assert out["status"] == "DRAFT"
        assert out["attributes"] == {"url": "https://example.com/fw.bin", "checksum": "abc"}
        got = iot.get_package_version(packageName=package, versionName="1.0")
        assert got["status"] == "DRAFT"
        assert got["artifact"] == {"s3Location": {"bucket": "fw", "key": "pump/1.0.bin", "version": "v1"}}
        assert got["recipe"] == '{"operation": "install"}'
        assert got["description"] == "first"

        # DRAFT: everything is editable
        iot.update_package_version(packageName=package, versionName="1.0", attributes={"checksum": "def"})
        got = iot.get_package_version(packageName=package, versionName="1.0")
        assert got["attributes"] == {"checksum": "def"}

        iot.update_package_version(packageName=package, versionName="1.0", action="PUBLISH")
        assert iot.get_package_version(packageName=package, versionName="1.0")["status"] == "PUBLISHED"
        # PUBLISHED: description and recipe only
        iot.update_package_version(packageName=package, versionName="1.0", description="shipped", recipe="{}")
        got = iot.get_package_version(packageName=package, versionName="1.0")
        assert (got["description"], got["recipe"]) == ("shipped", "{}")
        for change in ({"attributes": {"a": "b"}}, {"artifact": {"s3Location": {"bucket": "b", "key": "k"}}}):
            with pytest.raises(ClientError) as e:
                iot.update_package_version(packageName=package, versionName="1.0", **change)
            assert error_code(e) == "ValidationException"
        assert iot.get_package_version(packageName=package, versionName="1.0")["attributes"] == {"checksum": "def"}

        iot.update_package_version(packageName=package, versionName="1.0", action="DEPRECATE")
        assert iot.get_package_version(packageName=package, versionName="1.0")["status"] == "DEPRECATED"
        with pytest.raises(ClientError) as e:
            iot.update_package_version(packageName=package, versionName="1.0", attributes={"a": "b"})
        assert error_code(e) == "ValidationException"
        # back from DEPRECATED to PUBLISHED
        iot.update_package_version(packageName=package, versionName="1.0", action="PUBLISH")
        assert iot.get_package_version(packageName=package, versionName="1.0")["status"] == "PUBLISHED"

    def test_illegal_transitions(self, iot: Any, package: str) -> None:
        iot.create_package_version(packageName=package, versionName="1.0")
        with pytest.raises(ClientError) as e:
            iot.update_package_version(packageName=package, versionName="1.0", action="DEPRECATE")
        assert error_code(e) == "ConflictException"
        assert status_of(e) == 409
        iot.update_package_version(packageName=package, versionName="1.0", action="PUBLISH")
        with pytest.raises(ClientError) as e:
            iot.update_package_version(packageName=package, versionName="1.0", action="PUBLISH")
        assert error_code(e) == "ConflictException"
        iot.update_package_version(packageName=package, versionName="1.0", action="DEPRECATE")
        with pytest.raises(ClientError) as e:
            iot.update_package_version(packageName=package, versionName="1.0", action="DEPRECATE")
        assert error_code(e) == "ConflictException"

    def test_duplicate_and_unknown_version(self, iot: Any, package: str) -> None:
        iot.create_package_version(packageName=package, versionName="1.0")
        with pytest.raises(ClientError) as e:
            iot.create_package_version(packageName=package, versionName="1.0")
        assert error_code(e) == "ConflictException"
        for call in (iot.get_package_version, iot.update_package_version):
            with pytest.raises(ClientError) as e:
                call(packageName=package, versionName="2.0")
            assert error_code(e) == "ResourceNotFoundException"

    def test_attributes_size_limit(self, iot: Any, package: str) -> None:
        with pytest.raises(ClientError) as e:
            iot.create_package_version(packageName=package, versionName="1.0", attributes={"big": "x" * 3100})
        assert error_code(e) == "ValidationException"

    def test_list_versions_pagination_and_status_filter(self, iot: Any, package: str) -> None:
        versions = [f"1.{i}" for i in range(5)]
        for v in versions:
            iot.create_package_version(packageName=package, versionName=v)
        for v in versions[:3]:
            iot.update_package_version(packageName=package, versionName=v, action="PUBLISH")
        iot.update_package_version(packageName=package, versionName="1.0", action="DEPRECATE")

        summaries, sizes = walk(iot.list_package_versions, "packageVersionSummaries", packageName=package, maxResults=2)
        assert [s["versionName"] for s in summaries] == versions
        assert sizes == [2, 2, 1]
        assert all(s["packageName"] == package and s["creationDate"] for s in summaries)
        by_status = {
            status: [
                s["versionName"]
                for s in walk(iot.list_package_versions, "packageVersionSummaries", packageName=package, status=status)[
                    0
                ]
            ]
            for status in ("DRAFT", "PUBLISHED", "DEPRECATED")
        }
        assert by_status == {"DRAFT": ["1.3", "1.4"], "PUBLISHED": ["1.1", "1.2"], "DEPRECATED": ["1.0"]}
        assert iot.list_package_versions(packageName=unique("none"))["packageVersionSummaries"] == []

    def test_paginators(self, iot: Any, package: str) -> None:
        for v in ("a", "b", "c"):
            iot.create_package_version(packageName=package, versionName=v)
        pages = iot.get_paginator("list_package_versions").paginate(
            packageName=package, PaginationConfig={"PageSize": 1}
        )
        assert [s["versionName"] for p in pages for s in p["packageVersionSummaries"]] == ["a", "b", "c"]


class TestPackageConfiguration:
    def test_get_and_update(self, iot: Any) -> None:
        original = iot.get_package_configuration()["versionUpdateByJobsConfig"]
        try:
            iot.update_package_configuration(versionUpdateByJobsConfig={"enabled": True, "roleArn": ROLE})
            assert iot.get_package_configuration()["versionUpdateByJobsConfig"] == {"enabled": True, "roleArn": ROLE}
            iot.update_package_configuration(versionUpdateByJobsConfig={"enabled": False})
            assert iot.get_package_configuration()["versionUpdateByJobsConfig"]["enabled"] is False
            with pytest.raises(ClientError) as e:
                iot.update_package_configuration(versionUpdateByJobsConfig={"enabled": True})
            assert error_code(e) == "ValidationException"
        finally:
            iot.update_package_configuration(versionUpdateByJobsConfig=original)

    def test_default(self, backends: Any) -> None:
        srv = backends.server().start()
        assert srv.client("iot").get_package_configuration()["versionUpdateByJobsConfig"] == {"enabled": False}
