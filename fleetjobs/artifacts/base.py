"""What every artifact store shares: the store protocol, its errors, object versions, the URL base.

Kept apart from the package's face so that the implementations (``local``, ``s3``) import it
without importing the package that chooses between them.
"""

from __future__ import annotations

import socket
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

    def check_servable(self, obj: S3Object) -> None:
        """Raise ``ArtifactError`` if this store could never sign or serve ``obj`` (a bucket or key
        name it refuses), without I/O.  CreateJob asks it of every presigned-URL placeholder, so
        a job whose every delivery would fail is refused instead of being stored."""
        ...


def public_url(settings: Settings) -> str:
    """Where devices reach this server: the ``public_url`` setting, else ``http://host:port``."""
    if settings.public_url:
        return str(settings.public_url).rstrip("/")
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        host = socket.getfqdn()
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"
