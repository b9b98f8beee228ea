"""Artifact stores: where job files live and how devices get signed, expiring URLs to them.

``ArtifactStore`` is what the jobs service uses: presign an object for a device and read an
object (``documentSource``).  Two implementations:

* ``LocalStore`` (``artifact_store = "local"``, the zero-setup default): files under
  DATA_DIR/artifacts, served by fleetjobs itself at ``/_fleetjobs/artifacts/...`` through URLs
  signed with an HMAC secret kept in the data dir (or the ``artifact_secret`` setting);
* ``S3Store`` (``artifact_store = "s3"``): any S3-compatible service (AWS S3, MinIO, Ceph, moto)
  through boto3; its URLs are S3's own presigned URLs.

Both also have ``put`` / ``list`` / ``delete`` for ``fleetjobs artifacts``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleetjobs.artifacts.base import (
    DEFAULT_BUCKET,
    ROUTE_PREFIX,
    ArtifactError,
    ArtifactNotFound,
    ArtifactStore,
    ObjectVersion,
    Progress,
    public_url,
)
from fleetjobs.artifacts.local import LocalStore

if TYPE_CHECKING:
    from fleetjobs.config import Settings

__all__ = [
    "DEFAULT_BUCKET",
    "ROUTE_PREFIX",
    "ArtifactError",
    "ArtifactNotFound",
    "ArtifactStore",
    "ObjectVersion",
    "Progress",
    "open_store",
    "public_url",
]


def open_store(settings: Settings) -> ArtifactStore:
    """The store the settings choose (``artifact_store``).  The S3 store is imported only when
    chosen: it brings boto3, which a zero-setup server never needs."""
    if settings.artifact_store == "s3":
        from fleetjobs.artifacts.s3 import S3Store

        return S3Store.from_settings(settings)
    return LocalStore.from_settings(settings)
