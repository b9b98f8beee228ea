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

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from fleetjobs.domain.placeholders import S3Object

if TYPE_CHECKING:
    from fleetjobs.config import Settings

DEFAULT_BUCKET = "fleetjobs"
ROUTE_PREFIX = "/_fleetjobs/artifacts/"

Progress = Callable[[int, int], None]
"""``progress(done_bytes, total_bytes)``"""


class ArtifactError(Exception):
    """An artifact operation that cannot be done as asked (the CLI prints the message)."""


class ArtifactNotFound(ArtifactError):
    """No such bucket, key or version."""


@dataclass(frozen=True)
class ObjectVersion:
    bucket: str
    key: str
    version_id: str | None
    size: int
    sha256: str | None = None
    last_modified: float | None = None
    latest: bool = True
    etag: str | None = None


class ArtifactStore(Protocol):
    def presign_get(self, obj: S3Object, expires_in: int) -> str:
        """A URL from which ``obj`` can be downloaded (with HTTP ranges) for ``expires_in`` seconds."""
        ...

    async def read(self, obj: S3Object) -> bytes:
        """The object's bytes (latest version unless ``obj.version_id``)."""
        ...


def public_url(settings: Settings) -> str:
    """Where devices reach this server: the ``public_url`` setting, else ``http://host:port``."""
    if settings.public_url:
        return str(settings.public_url).rstrip("/")
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        import socket

        host = socket.getfqdn()
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def open_store(settings: Settings) -> ArtifactStore:
    """The store the settings choose (``artifact_store``)."""
    if settings.artifact_store == "s3":
        from fleetjobs.artifacts.s3 import S3Store

        return S3Store.from_settings(settings)
    from fleetjobs.artifacts.local import LocalStore

    return LocalStore.from_settings(settings)
