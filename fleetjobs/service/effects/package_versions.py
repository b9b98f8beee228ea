"""Package versions and the package configuration as jobs read them, in the job's own transaction.

CreateJob resolves ``${aws:iot:package:...}`` placeholders and ``destinationPackageVersions`` here;
a SUCCEEDED execution reads ``versionUpdateByJobsConfig`` to decide whether to record them in the
thing's ``$package`` shadow.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.store.tables import PACKAGE_VERSIONS, PACKAGES, SETTINGS

DEFAULT_VERSION = "$default"
CONFIGURATION = "package_configuration"
DEFAULT_CONFIGURATION: dict[str, Any] = {"versionUpdateByJobsConfig": {"enabled": False}}


async def version_for_job(conn: AsyncConnection, package: str, version: str) -> dict[str, Any] | None:
    """``{"status", "attributes", "artifact", "versionName"}`` of a package version, or None if there is no
    such package or version.  ``$default`` resolves to the package's default version (None without one)."""
    if version == DEFAULT_VERSION:
        q = select(PACKAGES.c.default_version_name).where(PACKAGES.c.package_name == package)
        default: str | None = await conn.scalar(q)
        if default is None:
            return None
        version = default
    row = (
        await conn.execute(
            select(PACKAGE_VERSIONS.c.status, PACKAGE_VERSIONS.c.attributes, PACKAGE_VERSIONS.c.artifact).where(
                PACKAGE_VERSIONS.c.package_name == package, PACKAGE_VERSIONS.c.version_name == version
            )
        )
    ).first()
    if row is None:
        return None
    return {
        "status": row.status,
        "attributes": dict(row.attributes or {}),
        "artifact": row.artifact,
        "versionName": version,
    }


async def package_configuration(conn: AsyncConnection) -> dict[str, Any]:
    """The stored GetPackageConfiguration answer (``versionUpdateByJobsConfig``)."""
    value = await conn.scalar(select(SETTINGS.c.value).where(SETTINGS.c.name == CONFIGURATION))
    return value if value is not None else json.loads(json.dumps(DEFAULT_CONFIGURATION))
