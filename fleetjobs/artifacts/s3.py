"""The S3 artifact store: any S3-compatible service (AWS S3, MinIO, Ceph RGW, moto) through boto3.

Presigned URLs are S3's own (SigV4 query authentication), so devices download from S3 directly.
Credentials: the ``s3_access_key_id`` / ``s3_secret_access_key`` settings, else boto3's usual chain
(AWS_* environment, ~/.aws, instance roles).  The bucket must exist; with versioning enabled every
put makes a version and ``versionId`` pins one.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import os
import re
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from fleetjobs.artifacts.base import ArtifactError, ArtifactNotFound, ObjectVersion, Progress
from fleetjobs.domain.placeholders import S3Object

if TYPE_CHECKING:
    from fleetjobs.config import Settings

_NOT_FOUND = {"NoSuchKey", "NoSuchVersion", "NoSuchBucket", "404", "NotFound"}
# The bucket names boto3 will sign a URL for (botocore refuses any other before signing).
_SIGNABLE_BUCKET = re.compile(r"[a-zA-Z0-9.\-_]{1,255}")


class S3Store:
    def __init__(
        self,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        client: Any = None,
    ) -> None:
        if client is None:
            config = Config(
                signature_version="s3v4",
                # MinIO, Ceph and moto are usually reached by address: path-style URLs need no DNS per bucket.
                s3={"addressing_style": "path" if endpoint_url else "auto"},
                retries={"max_attempts": 3},
            )
            client = boto3.session.Session().client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=region,
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key,
                config=config,
            )
        self.client = client

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Store:
        return cls(
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region or settings.region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
        )

    def presign_get(self, obj: S3Object, expires_in: int) -> str:
        params = {"Bucket": obj.bucket, "Key": obj.key}
        if obj.version_id:
            params["VersionId"] = obj.version_id
        return str(self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=int(expires_in)))

    def check_servable(self, obj: S3Object) -> None:
        """S3 takes any key of 1-1024 bytes (checked with the URL); a bucket name botocore refuses
        to sign for would fail every delivery."""
        if not _SIGNABLE_BUCKET.fullmatch(obj.bucket):
            raise ArtifactError(f"invalid bucket name {obj.bucket!r}: S3 bucket names are [a-zA-Z0-9.-_]")
        if not obj.key or len(obj.key.encode()) > 1024:
            raise ArtifactError(f"invalid key {obj.key!r}: 1-1024 bytes")

    async def read(self, obj: S3Object) -> bytes:
        def get() -> bytes:
            params = {"Bucket": obj.bucket, "Key": obj.key}
            if obj.version_id:
                params["VersionId"] = obj.version_id
            with _errors(f"{obj.bucket}/{obj.key}"):
                return bytes(self.client.get_object(**params)["Body"].read())

        return await asyncio.to_thread(get)

    def put(self, bucket: str, key: str, source: Path | str | bytes, progress: Progress | None = None) -> ObjectVersion:
        """One PutObject (up to 5 GiB); the sha256 is computed first and kept as object metadata."""
        if isinstance(source, bytes):
            import io

            size, sha = len(source), hashlib.sha256(source).hexdigest()
            body: IO[bytes] = io.BytesIO(source)
        else:
            path = Path(source)
            if not path.is_file():
                raise ArtifactError(f"{path} is not a file")
            size = path.stat().st_size
            digest = hashlib.sha256()
            with open(path, "rb") as fh:
                while chunk := fh.read(1024 * 1024):
                    digest.update(chunk)
            sha = digest.hexdigest()
            body = open(path, "rb")  # closed below
        try:
            reader = _ProgressReader(body, size, progress)
            with _errors(f"{bucket}/{key}"):
                resp = self.client.put_object(
                    Bucket=bucket,
                    Key=key,
                    Body=reader,
                    ContentLength=size,
                    ContentType="application/octet-stream",
                    Metadata={"sha256": sha},
                )
        finally:
            body.close()
        if progress:
            progress(size, size)
        return ObjectVersion(bucket, key, resp.get("VersionId"), size, sha, None, True, resp.get("ETag"))

    def list(self, bucket: str | None = None) -> list[ObjectVersion]:
        if bucket is None:
            raise ArtifactError("give the bucket to list (--bucket)")
        out: list[ObjectVersion] = []
        with _errors(bucket):
            pages = self.client.get_paginator("list_object_versions").paginate(Bucket=bucket)
            for page in pages:
                for v in page.get("Versions", []):
                    out.append(
                        ObjectVersion(
                            bucket,
                            v["Key"],
                            v.get("VersionId"),
                            int(v.get("Size", 0)),
                            None,
                            v["LastModified"].timestamp() if v.get("LastModified") else None,
                            bool(v.get("IsLatest", True)),
                            v.get("ETag"),
                        )
                    )
        # S3 lists each key's versions newest first; oldest first here, as the local store.
        out.reverse()
        out.sort(key=lambda o: o.key)
        return out

    def delete(self, bucket: str, key: str, version_id: str | None = None) -> builtins.list[ObjectVersion]:
        """DeleteObject: with a version id that version goes; without, a versioned bucket gets a delete marker."""
        params = {"Bucket": bucket, "Key": key}
        if version_id:
            params["VersionId"] = version_id
        with _errors(f"{bucket}/{key}"):
            if not version_id:
                self.client.head_object(Bucket=bucket, Key=key)  # S3 deletes a missing key silently
            self.client.delete_object(**params)
        return [ObjectVersion(bucket, key, version_id, 0, latest=False)]


class _ProgressReader:
    """A file wrapper that reports how far the upload has read (botocore may read twice: checksums)."""

    def __init__(self, fh: IO[bytes], size: int, progress: Progress | None) -> None:
        self._fh, self._size, self._progress, self._done = fh, size, progress, 0

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        if self._progress and data:
            pos = self._fh.tell()
            if pos > self._done:
                self._done = pos
                self._progress(pos, self._size)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


class _errors:
    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: Any, e: Any, tb: Any) -> Literal[False]:
        if isinstance(e, ClientError):
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code in _NOT_FOUND:
                raise ArtifactNotFound(f"{self.what}: {code}") from e
            raise ArtifactError(f"{self.what}: {e}") from e
        if isinstance(e, BotoCoreError):
            raise ArtifactError(f"{self.what}: {e}") from e
        return False
