"""Software Package Catalog: packages, package versions and the package configuration (JOBS_API.md §1.10-§1.11).

AWS rules reproduced here, beyond what the botocore model validates:

* A version starts in DRAFT; ``action`` PUBLISH moves DRAFT or DEPRECATED to PUBLISHED, DEPRECATE moves
  PUBLISHED to DEPRECATED; any other move is ConflictException.
* ``attributes`` and ``artifact`` can be changed only in DRAFT, ``recipe`` in DRAFT or PUBLISHED
  (ValidationException otherwise); the description always.  Attributes together are at most 3 KB.
* A package's default version must be PUBLISHED; a default version cannot be deleted (un-set it first
  with UpdatePackage ``unsetDefaultVersion``); a package can be deleted only once it has no versions.
* Deleting a package or version that does not exist succeeds (neither operation models
  ResourceNotFoundException).
* ``versionUpdateByJobsConfig`` lives in the account-wide setting ``package_configuration``.

The jobs service resolves ``${aws:iot:package:...}`` placeholders and ``destinationPackageVersions``
through :mod:`fleetjobs.service.effects.package_versions`, in its own transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, exists, insert, select, update
from sqlalchemy.exc import IntegrityError

from fleetjobs.domain import tagging
from fleetjobs.domain.errors import Conflict, ResourceNotFound, ServiceError
from fleetjobs.model import shapes_iot as shapes
from fleetjobs.service.context import ServiceContext
from fleetjobs.service.effects.package_versions import CONFIGURATION, package_configuration
from fleetjobs.service.pagination import compact, page, page_size, token_str
from fleetjobs.store.sql import locked, retry_once_on_integrity_error
from fleetjobs.store.tables import PACKAGE_VERSIONS, PACKAGES, SETTINGS

DRAFT, PUBLISHED, DEPRECATED = "DRAFT", "PUBLISHED", "DEPRECATED"
# action -> (states it may be applied in, resulting state)
TRANSITIONS = {"PUBLISH": ((DRAFT, DEPRECATED), PUBLISHED), "DEPRECATE": ((PUBLISHED,), DEPRECATED)}
MAX_ATTRIBUTES_BYTES = 3072


class Validation(ServiceError):
    code = "ValidationException"


def _check_attributes(attributes: dict[str, str]) -> None:
    size = sum(len(k.encode()) + len(v.encode()) for k, v in attributes.items())
    if size > MAX_ATTRIBUTES_BYTES:
        raise Validation(
            f"The combined size of the package version attributes ({size} bytes) exceeds {MAX_ATTRIBUTES_BYTES} bytes."
        )


def _package_not_found(name: str) -> ResourceNotFound:
    return ResourceNotFound(f"Package {name} does not exist.")


def _version_not_found(name: str, version: str) -> ResourceNotFound:
    return ResourceNotFound(f"Package version {version} of package {name} does not exist.")


class Packages:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    # -- packages ------------------------------------------------------------------------------------

    async def create_package(self, req: shapes.CreatePackageRequest) -> dict[str, Any]:
        name = req["packageName"]
        tags = tagging.tags_from_map(req.get("tags"))
        now = self.ctx.clock.now()
        try:
            async with self.ctx.db.write() as conn:
                if await conn.scalar(select(exists().where(PACKAGES.c.package_name == name))):
                    raise self._package_exists(name)
                await conn.execute(
                    insert(PACKAGES).values(
                        package_name=name,
                        description=req.get("description"),
                        default_version_name=None,
                        tags=tags,
                        created_at=now,
                        last_modified_at=now,
                    )
                )
        except IntegrityError:
            raise self._package_exists(name) from None
        return compact(
            {"packageName": name, "packageArn": self.ctx.partition.package(name), "description": req.get("description")}
        )

    async def get_package(self, req: shapes.GetPackageRequest) -> dict[str, Any]:
        name = req["packageName"]
        async with self.ctx.db.read() as conn:
            row = (await conn.execute(select(PACKAGES).where(PACKAGES.c.package_name == name))).first()
        if row is None:
            raise _package_not_found(name)
        return compact(
            {
                "packageName": name,
                "packageArn": self.ctx.partition.package(name),
                "description": row.description,
                "defaultVersionName": row.default_version_name,
                "creationDate": row.created_at,
                "lastModifiedDate": row.last_modified_at,
            }
        )

    async def list_packages(self, req: shapes.ListPackagesRequest) -> dict[str, Any]:
        size = page_size(req)
        after = token_str(req)
        q = select(
            PACKAGES.c.package_name, PACKAGES.c.default_version_name, PACKAGES.c.created_at, PACKAGES.c.last_modified_at
        )
        if after is not None:
            q = q.where(PACKAGES.c.package_name > after)
        async with self.ctx.db.read() as conn:
            rows = (await conn.execute(q.order_by(PACKAGES.c.package_name).limit(size + 1))).all()
        rows, token = page(rows, size, lambda r: r.package_name)
        return {
            "packageSummaries": [
                compact(
                    {
                        "packageName": r.package_name,
                        "defaultVersionName": r.default_version_name,
                        "creationDate": r.created_at,
                        "lastModifiedDate": r.last_modified_at,
                    }
                )
                for r in rows
            ],
            "nextToken": token,
        }

    async def update_package(self, req: shapes.UpdatePackageRequest) -> None:
        name = req["packageName"]
        default = req.get("defaultVersionName")
        unset = req.get("unsetDefaultVersion")
        if default is not None and unset:
            raise Validation(
                "You cannot name a defaultVersionName and set unsetDefaultVersion to true at the same time."
            )
        async with self.ctx.db.write() as conn:
            row = (await conn.execute(locked(select(PACKAGES).where(PACKAGES.c.package_name == name), conn))).first()
            if row is None:
                raise _package_not_found(name)
            values: dict[str, Any] = {"last_modified_at": self.ctx.clock.now()}
            if "description" in req:
                values["description"] = req["description"]
            if unset:
                values["default_version_name"] = None
            elif default is not None:
                q = select(PACKAGE_VERSIONS.c.status).where(
                    PACKAGE_VERSIONS.c.package_name == name, PACKAGE_VERSIONS.c.version_name == default
                )
                status = await conn.scalar(locked(q, conn, shared=True))
                if status is None:
                    raise _version_not_found(name, default)
                if status != PUBLISHED:
                    raise Validation(
                        f"Package version {default} is {status}: only a PUBLISHED version can be the default version."
                    )
                values["default_version_name"] = default
            await conn.execute(update(PACKAGES).where(PACKAGES.c.package_name == name).values(**values))

    async def delete_package(self, req: shapes.DeletePackageRequest) -> None:
        name = req["packageName"]
        async with self.ctx.db.write() as conn:
            row = (
                await conn.execute(locked(select(PACKAGES.c.package_name).where(PACKAGES.c.package_name == name), conn))
            ).first()
            if row is None:
                return
            if await conn.scalar(select(exists().where(PACKAGE_VERSIONS.c.package_name == name))):
                raise Validation(
                    f"Package {name} still has package versions: delete all its versions before deleting the package."
                )
            await conn.execute(delete(PACKAGES).where(PACKAGES.c.package_name == name))

    # -- versions ------------------------------------------------------------------------------------

    async def create_package_version(self, req: shapes.CreatePackageVersionRequest) -> dict[str, Any]:
        name, version = req["packageName"], req["versionName"]
        attributes = req.get("attributes") or {}
        _check_attributes(attributes)
        tags = tagging.tags_from_map(req.get("tags"))
        now = self.ctx.clock.now()

        async def attempt() -> None:
            async with self.ctx.db.write() as conn:
                q = locked(select(PACKAGES.c.package_name).where(PACKAGES.c.package_name == name), conn, shared=True)
                if (await conn.execute(q)).first() is None:
                    raise Validation(f"Package {name} does not exist.")
                if await conn.scalar(
                    select(
                        exists().where(
                            PACKAGE_VERSIONS.c.package_name == name, PACKAGE_VERSIONS.c.version_name == version
                        )
                    )
                ):
                    raise self._version_exists(name, version)
                await conn.execute(
                    insert(PACKAGE_VERSIONS).values(
                        package_name=name,
                        version_name=version,
                        description=req.get("description"),
                        attributes=attributes,
                        artifact=req.get("artifact"),
                        recipe=req.get("recipe"),
                        sbom=None,
                        status=DRAFT,
                        error_reason=None,
                        tags=tags,
                        created_at=now,
                        last_modified_at=now,
                    )
                )

        try:
            await retry_once_on_integrity_error(attempt)
        except IntegrityError:
            raise self._version_exists(name, version) from None
        return compact(
            {
                "packageVersionArn": self.ctx.partition.package_version(name, version),
                "packageName": name,
                "versionName": version,
                "description": req.get("description"),
                "attributes": attributes,
                "status": DRAFT,
            }
        )

    async def get_package_version(self, req: shapes.GetPackageVersionRequest) -> dict[str, Any]:
        name, version = req["packageName"], req["versionName"]
        async with self.ctx.db.read() as conn:
            row = (
                await conn.execute(
                    select(PACKAGE_VERSIONS).where(
                        PACKAGE_VERSIONS.c.package_name == name, PACKAGE_VERSIONS.c.version_name == version
                    )
                )
            ).first()
        if row is None:
            raise _version_not_found(name, version)
        return compact(
            {
                "packageVersionArn": self.ctx.partition.package_version(name, version),
                "packageName": name,
                "versionName": version,
                "description": row.description,
                "attributes": row.attributes or {},
                "artifact": row.artifact,
                "status": row.status,
                "errorReason": row.error_reason,
                "creationDate": row.created_at,
                "lastModifiedDate": row.last_modified_at,
                "sbom": row.sbom,
                "recipe": row.recipe,
            }
        )

    async def list_package_versions(self, req: shapes.ListPackageVersionsRequest) -> dict[str, Any]:
        name = req["packageName"]
        size = page_size(req)
        after = token_str(req)
        q = select(
            PACKAGE_VERSIONS.c.version_name,
            PACKAGE_VERSIONS.c.status,
            PACKAGE_VERSIONS.c.created_at,
            PACKAGE_VERSIONS.c.last_modified_at,
        ).where(PACKAGE_VERSIONS.c.package_name == name)
        if req.get("status"):
            q = q.where(PACKAGE_VERSIONS.c.status == req["status"])
        if after is not None:
            q = q.where(PACKAGE_VERSIONS.c.version_name > after)
        async with self.ctx.db.read() as conn:
            rows = (await conn.execute(q.order_by(PACKAGE_VERSIONS.c.version_name).limit(size + 1))).all()
        rows, token = page(rows, size, lambda r: r.version_name)
        return {
            "packageVersionSummaries": [
                {
                    "packageName": name,
                    "versionName": r.version_name,
                    "status": r.status,
                    "creationDate": r.created_at,
                    "lastModifiedDate": r.last_modified_at,
                }
                for r in rows
            ],
            "nextToken": token,
        }

    async def update_package_version(self, req: shapes.UpdatePackageVersionRequest) -> None:
        name, version = req["packageName"], req["versionName"]
        async with self.ctx.db.write() as conn:
            q = select(PACKAGE_VERSIONS.c.status).where(
                PACKAGE_VERSIONS.c.package_name == name, PACKAGE_VERSIONS.c.version_name == version
            )
            status = await conn.scalar(locked(q, conn))
            if status is None:
                raise _version_not_found(name, version)
            values: dict[str, Any] = {"last_modified_at": self.ctx.clock.now()}
            if "description" in req:
                values["description"] = req["description"]
            for member in ("attributes", "artifact"):
                if member in req:
                    if status != DRAFT:
                        raise Validation(
                            f"The {member} of package version {version} cannot be updated: it is {status}, "
                            "and only a DRAFT version can be changed."
                        )
                    values[member] = req[member]
            if "attributes" in values:
                _check_attributes(values["attributes"])
            if "recipe" in req:
                if status not in (DRAFT, PUBLISHED):
                    raise Validation(f"The recipe of package version {version} cannot be updated: it is {status}.")
                values["recipe"] = req["recipe"]
            action = req.get("action")
            if action is not None:
                allowed_from, target = TRANSITIONS[action]
                if status not in allowed_from:
                    raise Conflict(
                        f"Package version {version} is {status}: action {action} is not allowed "
                        f"(it applies to {' or '.join(allowed_from)} versions).",
                        resourceId=version,
                    )
                values["status"] = target
            await conn.execute(
                update(PACKAGE_VERSIONS)
                .where(PACKAGE_VERSIONS.c.package_name == name, PACKAGE_VERSIONS.c.version_name == version)
                .values(**values)
            )

    async def delete_package_version(self, req: shapes.DeletePackageVersionRequest) -> None:
        name, version = req["packageName"], req["versionName"]
        async with self.ctx.db.write() as conn:
            package = (
                await conn.execute(
                    locked(select(PACKAGES.c.default_version_name).where(PACKAGES.c.package_name == name), conn)
                )
            ).first()
            if package is None:
                return
            if package.default_version_name == version:
                raise Validation(
                    f"Package version {version} is the default version of package {name}: "
                    "un-set it (UpdatePackage unsetDefaultVersion) before deleting it."
                )
            await conn.execute(
                delete(PACKAGE_VERSIONS).where(
                    PACKAGE_VERSIONS.c.package_name == name, PACKAGE_VERSIONS.c.version_name == version
                )
            )

    # -- configuration -------------------------------------------------------------------------------

    async def get_package_configuration(self, req: shapes.GetPackageConfigurationRequest) -> dict[str, Any]:
        async with self.ctx.db.read() as conn:
            return await package_configuration(conn)

    async def update_package_configuration(self, req: shapes.UpdatePackageConfigurationRequest) -> None:
        given = req.get("versionUpdateByJobsConfig")
        if given is None:
            return
        now = self.ctx.clock.now()

        async def attempt() -> None:
            async with self.ctx.db.write() as conn:
                current = await conn.scalar(
                    locked(select(SETTINGS.c.value).where(SETTINGS.c.name == CONFIGURATION), conn)
                )
                config = {k: v for k, v in given.items() if v is not None}  # the structure is replaced as a whole
                config.setdefault("enabled", False)
                if config.get("enabled") and not config.get("roleArn"):
                    raise Validation("versionUpdateByJobsConfig.roleArn is required when enabled is true.")
                value = {"versionUpdateByJobsConfig": config}
                if current is None:
                    await conn.execute(insert(SETTINGS).values(name=CONFIGURATION, value=value, updated_at=now))
                else:
                    await conn.execute(
                        update(SETTINGS).where(SETTINGS.c.name == CONFIGURATION).values(value=value, updated_at=now)
                    )

        await retry_once_on_integrity_error(attempt)

    # -- internals -----------------------------------------------------------------------------------

    @staticmethod
    def _package_exists(name: str) -> Conflict:
        return Conflict(f"Package {name} already exists.", resourceId=name)

    @staticmethod
    def _version_exists(name: str, version: str) -> Conflict:
        return Conflict(f"Package version {version} of package {name} already exists.", resourceId=version)
