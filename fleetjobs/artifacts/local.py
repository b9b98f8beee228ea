"""The local artifact store: versioned files in the data dir, served by fleetjobs with signed URLs.

Layout: ``DATA_DIR/artifacts/<bucket>/<key>/`` is a directory per key holding ``.fj-v-<versionId>``
(one file per version, never rewritten), ``.fj-manifest.json`` (the versions, oldest first: the
last one is the latest) and ``.fj-lock``.  A key ``a`` and a key ``a/b`` live side by side (``a/b``
is a subdirectory of ``a``); key segments starting with ``.fj-``, empty, ``.`` and ``..`` are refused.

URLs: ``{public_url}/_fleetjobs/artifacts/<bucket>/<key>?versionId=V&X-Fleetjobs-Expires=E&
X-Fleetjobs-Signature=S`` where S is the hex HMAC-SHA256, under the artifact secret, of
``GET\\n<bucket>\\n<key>\\n<versionId>\\n<E>``.  The secret is the ``artifact_secret`` setting or
DATA_DIR/artifact-secret (0600, created on first use; instances sharing a data dir share it).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import quote, urlencode

from fleetjobs.artifacts.base import ROUTE_PREFIX, ArtifactError, ArtifactNotFound, ObjectVersion, Progress, public_url
from fleetjobs.domain.placeholders import S3Object

if TYPE_CHECKING:
    from fleetjobs.config import Settings

SECRET_FILE = "artifact-secret"
MANIFEST = ".fj-manifest.json"
LOCK = ".fj-lock"
VERSION_PREFIX = ".fj-v-"
RESERVED = ".fj-"
CHUNK = 1024 * 1024
MAX_EXPIRES = 7 * 24 * 3600  # as S3

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_VERSION_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


# -------------------------------------------------------------------------------- signing (no I/O)


def string_to_sign(method: str, bucket: str, key: str, version_id: str, expires: int) -> bytes:
    return "\n".join([method.upper(), bucket, key, version_id, str(int(expires))]).encode()


def url_signature(secret: bytes, method: str, bucket: str, key: str, version_id: str, expires: int) -> str:
    return hmac.new(secret, string_to_sign(method, bucket, key, version_id, expires), hashlib.sha256).hexdigest()


def check_signature(
    secret: bytes,
    methods: tuple[str, ...],
    bucket: str,
    key: str,
    version_id: str,
    expires: str,
    signature: str,
    now: float,
) -> str | None:
    """None if the URL is good, else why it is refused."""
    if not expires or not signature:
        return "Query-string authentication requires the X-Fleetjobs-Signature and X-Fleetjobs-Expires parameters"
    try:
        expires_at = int(expires)
    except ValueError:
        return "Invalid date (X-Fleetjobs-Expires)"
    if str(expires_at) != expires:
        return "Invalid date (X-Fleetjobs-Expires)"
    ok = any(
        hmac.compare_digest(url_signature(secret, m, bucket, key, version_id, expires_at), signature.lower())
        for m in methods
    )
    if not ok:
        return "The request signature we calculated does not match the signature you provided."
    if now > expires_at:
        return "Request has expired"
    return None


def validate_bucket(bucket: str) -> str:
    if not isinstance(bucket, str) or not _BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise ArtifactError(f"invalid bucket name {bucket!r}: 3-63 characters of [a-z0-9.-], starting and ending alnum")
    return bucket


def validate_key(key: str) -> str:
    if not isinstance(key, str) or not key or len(key.encode()) > 1024:
        raise ArtifactError(f"invalid key {key!r}: 1-1024 bytes")
    for part in key.split("/"):
        if part in ("", ".", "..") or part.startswith(RESERVED) or "\x00" in part:
            raise ArtifactError(f"invalid key {key!r}: no empty, '.' or '..' segments, none starting with {RESERVED!r}")
    return key


# ------------------------------------------------------------------------------------------ store


def load_secret(data_dir: Path, configured: str | None = None) -> bytes:
    """The configured secret, else DATA_DIR/artifact-secret (created, race-safe, on first use)."""
    if configured:
        return configured.encode()
    path = Path(data_dir) / SECRET_FILE
    with contextlib.suppress(FileNotFoundError):
        return _read_secret(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(secrets.token_hex(32))
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # refuses to overwrite: of instances starting together, one secret wins
        except FileExistsError:
            pass
        except OSError:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return _read_secret(path)


def _read_secret(path: Path) -> bytes:
    text = path.read_text().strip()
    if not text:
        raise ArtifactError(f"{path} is empty: remove it to have a new secret made")
    return text.encode()


class LocalStore:
    def __init__(
        self,
        data_dir: Path,
        base_url: str,
        *,
        secret: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / "artifacts"
        self.base_url = base_url.rstrip("/")
        self._configured_secret = secret
        self._secret: bytes | None = None
        self.clock = clock

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalStore:
        return cls(settings.data_dir, public_url(settings), secret=settings.artifact_secret)

    @property
    def secret(self) -> bytes:
        if self._secret is None:
            self._secret = load_secret(self.data_dir, self._configured_secret)
        return self._secret

    # -- paths and manifests

    def _key_dir(self, bucket: str, key: str) -> Path:
        return self.root / validate_bucket(bucket) / validate_key(key)

    def _versions(self, key_dir: Path) -> list[dict[str, object]]:
        try:
            return list(json.loads((key_dir / MANIFEST).read_text())["versions"])
        except FileNotFoundError:
            return []
        except NotADirectoryError:
            return []

    @contextlib.contextmanager
    def _locked(self, key_dir: Path) -> Iterator[None]:
        key_dir.mkdir(parents=True, exist_ok=True)
        with open(key_dir / LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _write_manifest(self, key_dir: Path, versions: list[dict[str, object]]) -> None:
        tmp = key_dir / f".fj-manifest.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        tmp.write_text(json.dumps({"versions": versions}))
        os.replace(tmp, key_dir / MANIFEST)

    def _entry(self, bucket: str, key: str, version_id: str | None) -> tuple[Path, ObjectVersion]:
        """The file and description of one version (the latest if ``version_id`` is None)."""
        key_dir = self._key_dir(bucket, key)
        versions = self._versions(key_dir)
        if not versions:
            raise ArtifactNotFound(f"no object {bucket}/{key}")
        if version_id is None:
            entry, latest = versions[-1], True
        else:
            found = [v for v in versions if v["versionId"] == version_id]
            if not found:
                raise ArtifactNotFound(f"no version {version_id} of {bucket}/{key}")
            entry, latest = found[0], found[0] is versions[-1]
        return key_dir / f"{VERSION_PREFIX}{entry['versionId']}", _describe(bucket, key, entry, latest)

    # -- operations

    def put(self, bucket: str, key: str, source: Path | str | bytes, progress: Progress | None = None) -> ObjectVersion:
        """Store a new version (the latest from now on) of ``bucket/key`` from a file or bytes."""
        key_dir = self._key_dir(bucket, key)
        key_dir.mkdir(parents=True, exist_ok=True)
        version_id = f"{time.time_ns():x}{secrets.token_hex(6)}"
        final = key_dir / f"{VERSION_PREFIX}{version_id}"
        tmp = key_dir / f".fj-upload.{version_id}.tmp"
        digest = hashlib.sha256()
        size = 0
        try:
            with open(tmp, "wb") as out, _source(source) as (src, total):
                while chunk := src.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    if progress:
                        progress(size, total)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        entry: dict[str, object] = {
            "versionId": version_id,
            "sha256": digest.hexdigest(),
            "size": size,
            "lastModified": time.time(),
        }
        with self._locked(key_dir):
            self._write_manifest(key_dir, [*self._versions(key_dir), entry])
        return _describe(bucket, key, entry, True)

    def list(self, bucket: str | None = None) -> list[ObjectVersion]:
        """Every version of every object (of one bucket, or of all), by bucket and key, oldest first."""
        if bucket is not None:
            validate_bucket(bucket)
        if not self.root.exists():
            return []
        buckets = [bucket] if bucket is not None else sorted(p.name for p in self.root.iterdir() if p.is_dir())
        out: list[ObjectVersion] = []
        for b in buckets:
            base = self.root / b
            if not base.is_dir():
                continue
            for manifest in sorted(base.rglob(MANIFEST)):
                key = manifest.parent.relative_to(base).as_posix()
                versions = self._versions(manifest.parent)
                out += [_describe(b, key, v, i == len(versions) - 1) for i, v in enumerate(versions)]
        return out

    def delete(self, bucket: str, key: str, version_id: str | None = None) -> builtins.list[ObjectVersion]:
        """Remove one version, or (no ``version_id``) the object with all its versions; returns what went."""
        key_dir = self._key_dir(bucket, key)
        with self._locked(key_dir):
            versions = self._versions(key_dir)
            gone = [v for v in versions if version_id is None or v["versionId"] == version_id]
            if not gone:
                raise ArtifactNotFound(
                    f"no version {version_id} of {bucket}/{key}" if version_id else f"no object {bucket}/{key}"
                )
            keep = [v for v in versions if v not in gone]
            if keep:
                self._write_manifest(key_dir, keep)
            else:
                (key_dir / MANIFEST).unlink(missing_ok=True)
            for v in gone:
                (key_dir / f"{VERSION_PREFIX}{v['versionId']}").unlink(missing_ok=True)
        if not keep:
            (key_dir / LOCK).unlink(missing_ok=True)
            # Drop the now empty directories up to the bucket (a key's directory may hold other keys).
            d = key_dir
            while d != self.root and d.is_dir():
                try:
                    d.rmdir()
                except OSError:
                    break
                d = d.parent
        return [_describe(bucket, key, v, False) for v in gone]

    def presign_get(self, obj: S3Object, expires_in: int) -> str:
        """A signed URL of this server for ``obj``.  Without ``obj.version_id`` the URL is pinned to the
        latest version now (a device downloading in ranges never mixes two versions); for an object
        that does not exist (yet) it names no version and gets whatever is latest at download time."""
        if not 0 < int(expires_in) <= MAX_EXPIRES:
            raise ArtifactError(f"expires_in must be 1..{MAX_EXPIRES} seconds, not {expires_in}")
        version_id = obj.version_id
        if version_id is None:
            with contextlib.suppress(ArtifactNotFound):
                version_id = self._entry(obj.bucket, obj.key, None)[1].version_id
        else:
            self._key_dir(obj.bucket, obj.key)  # validates
        expires = int(self.clock()) + int(expires_in)
        signature = url_signature(self.secret, "GET", obj.bucket, obj.key, version_id or "", expires)
        query = {"versionId": version_id} if version_id else {}
        query |= {"X-Fleetjobs-Expires": str(expires), "X-Fleetjobs-Signature": signature}
        path = f"{ROUTE_PREFIX}{quote(obj.bucket, safe='')}/{quote(obj.key, safe='/~')}"
        return f"{self.base_url}{path}?{urlencode(query)}"

    def check_servable(self, obj: S3Object) -> None:
        """The names this store refuses (see ``validate_bucket`` / ``validate_key``): no URL to such an
        object can be signed or downloaded, whatever is uploaded later."""
        validate_bucket(obj.bucket)
        validate_key(obj.key)

    async def read(self, obj: S3Object) -> bytes:
        path, _ = self._entry(obj.bucket, obj.key, obj.version_id)
        return await asyncio.to_thread(path.read_bytes)

    def open(self, bucket: str, key: str, version_id: str | None) -> tuple[Path, ObjectVersion]:
        return self._entry(bucket, key, version_id)


def _describe(bucket: str, key: str, entry: dict[str, object], latest: bool) -> ObjectVersion:
    sha = str(entry["sha256"])
    return ObjectVersion(
        bucket=bucket,
        key=key,
        version_id=str(entry["versionId"]),
        size=int(entry["size"]),  # type: ignore[call-overload]
        sha256=sha,
        last_modified=float(entry["lastModified"]),  # type: ignore[arg-type]
        latest=latest,
        etag=f'"{sha}"',
    )


@contextlib.contextmanager
def _source(source: Path | str | bytes) -> Iterator[tuple[IO[bytes], int]]:
    if isinstance(source, bytes):
        import io

        yield io.BytesIO(source), len(source)
        return
    path = Path(source)
    if not path.is_file():
        raise ArtifactError(f"{path} is not a file")
    with open(path, "rb") as fh:
        yield fh, os.fstat(fh.fileno()).st_size
