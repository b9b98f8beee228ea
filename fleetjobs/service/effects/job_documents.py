"""A job's document at creation: fetched from ``documentSource``, managed-template parameters and
software-package placeholders substituted, ``destinationPackageVersions`` checked (JOBS_API.md §6).

The stored document keeps only the presigned-URL placeholders, which are signed afresh at each
delivery (``delivery_document``); the document as given is kept for ``beforeSubstitution``.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.artifacts import ArtifactError, ArtifactNotFound, ArtifactStore
from fleetjobs.domain import managed_templates, placeholders
from fleetjobs.domain.arns import parse_arn
from fleetjobs.domain.errors import InvalidRequest
from fleetjobs.domain.placeholders import PackageRef
from fleetjobs.service.effects.package_versions import version_for_job

_PACKAGE_REF = re.compile(r'\$\{aws:iot:package:([^:{}"]*):version:([^:{}"]*):')
DEFAULT_EXPIRY = 3600


def destination_refs(arns: list[str] | None) -> list[PackageRef]:
    """``arn:aws:iot:<region>:<account>:package/<name>/version/<version>`` -> (name, version)."""
    refs = []
    for arn in arns or []:
        try:
            parsed = parse_arn(arn)
        except Exception:
            raise InvalidRequest(f"{arn} is not a package version ARN.") from None
        parts = parsed.resource_id.split("/")
        if parsed.resource_type != "package" or len(parts) != 3 or parts[1] != "version":
            raise InvalidRequest(f"{arn} is not a package version ARN (…:package/<name>/version/<version>).")
        refs.append(PackageRef(parts[0], parts[2]))
    return refs


async def fetch_source(store: ArtifactStore | None, url: str) -> str:
    if store is None:
        raise InvalidRequest("documentSource needs an artifact store; none is configured.")
    obj = placeholders.parse_s3_url(url)
    try:
        data = await store.read(obj)
    except (FileNotFoundError, ArtifactNotFound):
        raise InvalidRequest(f"The documentSource {url} does not exist.") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest(f"The documentSource {url} is not UTF-8 text.") from None


async def creation_document(
    conn: AsyncConnection,
    merged: dict[str, Any],
    managed: managed_templates.ManagedTemplate | None,
    store: ArtifactStore | None,
) -> tuple[str | None, str | None]:
    """(the document to store, the document as given if substitution changed it)."""
    document = merged.get("document")
    if document is None and merged.get("documentSource"):
        document = await fetch_source(store, merged["documentSource"])
    if document is None:
        return None, None
    destinations = destination_refs(merged.get("destinationPackageVersions"))
    versions: dict[tuple[str, str], dict[str, Any] | None] = {}
    for ref in destinations:
        if ref.version == "$null":
            continue
        found = versions[(ref.package, ref.version)] = await version_for_job(conn, ref.package, ref.version)
        if found is None:
            raise InvalidRequest(
                f"Package {ref.package} version {ref.version} in destinationPackageVersions does not exist."
            )
    named = {
        PackageRef(p, v) if p else destinations[0] if len(destinations) == 1 else PackageRef("", "")
        for p, v in _PACKAGE_REF.findall(document)
    }
    missing = sorted(f"{r.package}:{r.version}" for r in named if r.package and r not in destinations)
    if missing:
        raise InvalidRequest(
            "The job document references package versions that are not in destinationPackageVersions: "
            + ", ".join(missing)
            + "."
        )
    for ref in named:  # all are destinations (checked above), so already read
        if ref.package and ref.version != "$null" and (ref.package, ref.version) not in versions:
            versions[(ref.package, ref.version)] = await version_for_job(conn, ref.package, ref.version)
    parameters = managed_templates.parameters_for(managed, merged.get("documentParameters")) if managed else None
    resolved = placeholders.substitute_at_creation(
        document,
        parameters=parameters,
        packages=lambda name, version: versions.get((name, version)),
        destination_versions=destinations,
    )
    check_servable(resolved, store)
    return resolved, (document if resolved != document else None)


def check_servable(document: str, store: ArtifactStore | None) -> None:
    """Refuse a document whose presigned-URL placeholder names an object the artifact store can
    never serve (e.g. the local store's ``a//b`` or ``..`` keys): stored, it would fail every
    delivery to every target, so CreateJob says so now, naming the URL."""
    if store is None:
        return
    for obj in placeholders.presigned_objects(document):
        try:
            store.check_servable(obj)
        except ArtifactError as e:
            raise InvalidRequest(
                f"The presigned URL placeholder for s3://{obj.bucket}/{obj.key} names an object the artifact "
                f"store cannot serve: {e}."
            ) from None


def delivery_document(document: str | None, config: dict[str, Any] | None, store: ArtifactStore | None) -> str | None:
    """What a device is handed: presigned-URL placeholders replaced by URLs valid from now."""
    if document is None or not placeholders.has_presigned(document):
        return document
    if store is None:
        return document
    expires = int(((config or {}).get("presignedUrlConfig") or {}).get("expiresInSec") or DEFAULT_EXPIRY)
    return placeholders.render_for_delivery(document, lambda obj: store.presign_get(obj, expires))
