"""The ASGI route that serves the local store's signed URLs (GET and HEAD, single HTTP ranges).

Errors are S3's: an XML ``<Error>`` body with ``AccessDenied`` (403: bad, altered or expired URL),
``NoSuchKey`` / ``NoSuchVersion`` (404) or ``InvalidRange`` (416).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs, unquote
from xml.sax.saxutils import escape

from fleetjobs.artifacts.base import ROUTE_PREFIX, ArtifactError, ArtifactNotFound
from fleetjobs.artifacts.local import CHUNK, LocalStore, check_signature

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """``(first, last)`` inclusive for a satisfiable single range, ``"unsatisfiable"``, or None (serve all:
    no Range header, one that is not a single byte range)."""
    if not header:
        return None
    m = _RANGE.fullmatch(header.strip())
    if m is None or (not m.group(1) and not m.group(2)):
        return None
    if not m.group(1):  # suffix: the last N bytes
        n = int(m.group(2))
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    first = int(m.group(1))
    if m.group(2) and int(m.group(2)) < first:
        return None  # syntactically invalid: ignored, as RFC 9110 says
    if first >= size:
        return "unsatisfiable"
    last = int(m.group(2)) if m.group(2) else size - 1
    return first, min(last, size - 1)


def artifact_route(store: LocalStore) -> Any:
    async def route(scope: dict[str, Any], receive: Any, send: Any) -> None:
        method = scope["method"]
        raw = scope.get("raw_path")
        path = unquote(raw.decode("latin-1").split("?", 1)[0]) if raw else scope["path"]
        resource = path[len(ROUTE_PREFIX) :] if path.startswith(ROUTE_PREFIX) else ""
        head = method == "HEAD"

        async def error(status: int, code: str, message: str, extra: dict[str, str] | None = None) -> None:
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>\n<Error>'
                f"<Code>{code}</Code><Message>{escape(message)}</Message>"
                f"<Resource>{escape('/' + resource)}</Resource><RequestId>{uuid.uuid4()}</RequestId></Error>"
            ).encode()
            headers = [(b"content-type", b"application/xml"), (b"content-length", str(len(body)).encode())]
            headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": b"" if head else body})

        if method not in ("GET", "HEAD"):
            await error(405, "MethodNotAllowed", "The specified method is not allowed against this resource.")
            return
        if "/" not in resource:
            await error(403, "AccessDenied", "Access Denied")
            return
        bucket, key = resource.split("/", 1)
        query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
        version_id = query.get("versionId", "")
        why = check_signature(
            store.secret,
            ("GET", "HEAD") if head else ("GET",),
            bucket,
            key,
            version_id,
            query.get("X-Fleetjobs-Expires", ""),
            query.get("X-Fleetjobs-Signature", ""),
            store.clock(),
        )
        if why is not None:
            await error(403, "AccessDenied", why)
            return
        try:
            file_path, obj = store.open(bucket, key, version_id or None)
        except ArtifactNotFound as e:
            await error(404, "NoSuchVersion" if version_id else "NoSuchKey", str(e))
            return
        except ArtifactError as e:
            await error(400, "InvalidArgument", str(e))
            return
        try:
            fh = await asyncio.to_thread(open, file_path, "rb")
        except FileNotFoundError:  # deleted between the manifest read and now
            await error(404, "NoSuchVersion" if version_id else "NoSuchKey", f"no object {bucket}/{key}")
            return
        with fh:
            size = obj.size
            headers_in = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            wanted = parse_range(headers_in.get("range"), size)
            if wanted == "unsatisfiable":
                await error(
                    416, "InvalidRange", "The requested range is not satisfiable", {"content-range": f"bytes */{size}"}
                )
                return
            headers = {
                "content-type": "application/octet-stream",
                "accept-ranges": "bytes",
                "etag": obj.etag or "",
                "last-modified": formatdate(obj.last_modified or 0, usegmt=True),
                "x-amz-version-id": obj.version_id or "",
                "cache-control": "private, no-transform",
            }
            if isinstance(wanted, tuple):
                first, last = wanted
                status = 206
                headers["content-range"] = f"bytes {first}-{last}/{size}"
            else:
                first, last, status = 0, size - 1, 200
            length = last - first + 1 if size else 0
            headers["content-length"] = str(length)
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
                }
            )
            if head or length == 0:
                await send({"type": "http.response.body", "body": b""})
                return
            fh.seek(first)
            left = length
            while left > 0:
                chunk = await asyncio.to_thread(fh.read, min(CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": left > 0})
            if left > 0:  # the file was shorter than its manifest says: end the response anyway
                await send({"type": "http.response.body", "body": b""})

    return route
