"""Job-document placeholders (JOBS_API.md §6), free of I/O.

Two moments: at CreateJob, ``${aws:iot:parameter:...}`` (managed templates) and
``${aws:iot:package:...}`` (software package catalog) are replaced and the result is what the job
stores; at delivery (each time a device is handed the document), ``${aws:iot:s3-presigned-url...}``
and ``...:artifact-location:s3-presigned-url`` become freshly signed URLs, never stored.

Placeholders sit inside JSON strings, so every value put in is JSON-escaped, except the whole
attributes map of a package version, which must be a JSON value of its own (``"${...}"``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from fleetjobs.domain.errors import InvalidRequest

MAX_SUBSTITUTIONS = 10
MAX_KEY_BYTES = 1024  # S3's limit on an object key (UTF-8)
_PLACEHOLDER = re.compile(r'\$\{(aws:iot:[^{}"]*)\}')
_PRESIGNED = re.compile(r"aws:iot:s3-presigned-url(?:-(v1|v2))?:(.+)", re.DOTALL)
_PARAMETER = re.compile(r"aws:iot:parameter:([a-zA-Z0-9_-]{1,128})")
_PACKAGE = re.compile(r"aws:iot:package:([^:]*):version:([^:]*):(attributes|artifact-location|artifact)(?::(.+))?")
_S3_URL = re.compile(
    r"https://(?:(?P<vbucket>[a-z0-9.\-]+)\.)?s3(?:[.-](?P<region>[a-z0-9-]+))?\.amazonaws\.com(?:\.cn)?/(?P<path>.+)"
)


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str
    version_id: str | None = None


@dataclass(frozen=True)
class PackageRef:
    package: str
    version: str


def _check_terminated(document: str) -> None:
    depth = 0
    i = 0
    while i < len(document):
        if document.startswith("${", i):
            if depth >= 1 and document.startswith("${aws:", i):
                raise InvalidRequest(
                    "${aws:iot:...} placeholders should not be the second layer pattern: they cannot be nested."
                )
            depth += 1
            i += 2
            continue
        if document[i] == '"' and depth:
            break  # a placeholder sits inside a JSON string: a quote before its "}" leaves it open
        if document[i] == "}" and depth:
            depth -= 1
        i += 1
    if depth:
        raise InvalidRequest("One or more parameters or placeholders are not terminated.")


def placeholders(document: str) -> list[str]:
    """The ``aws:iot:...`` bodies in the document, in order; checks nesting, termination and the limit."""
    _check_terminated(document)
    found = [m.group(1) for m in _PLACEHOLDER.finditer(document)]
    if len(found) > MAX_SUBSTITUTIONS:
        raise InvalidRequest(
            f"The job document has {len(found)} substitutions; at most {MAX_SUBSTITUTIONS} are allowed."
        )
    return found


def parse_s3_url(url: str, *, encoded: bool = False) -> S3Object:
    """An S3 URL as AWS accepts it in a presigned-url placeholder (path or virtual-hosted style);
    v2 placeholders are URL-encoded and may pin ``?versionId=``."""
    text = unquote(url) if encoded else url
    version_id = None
    if "?versionId=" in text:
        text, version_id = text.split("?versionId=", 1)
    m = _S3_URL.fullmatch(text)
    if m is None:
        raise InvalidRequest(f"'{url}' is not an S3 URL (https://s3.<region>.amazonaws.com/<bucket>/<key>).")
    path = m.group("path")
    if m.group("vbucket"):
        bucket, key = m.group("vbucket"), path
    else:
        if "/" not in path:
            raise InvalidRequest(f"'{url}' names no object key.")
        bucket, key = path.split("/", 1)
    if not key:
        raise InvalidRequest(f"'{url}' names no object key.")
    if len(key.encode()) > MAX_KEY_BYTES:
        # S3 itself refuses such a key: a URL to it could never be served, so it is refused now.
        raise InvalidRequest(f"'{url}' names an object key longer than S3's {MAX_KEY_BYTES} bytes.")
    return S3Object(bucket, key, version_id)


def _json_escape(value: str) -> str:
    return json.dumps(value)[1:-1]


PackageLookup = Callable[[str, str], Mapping[str, Any] | None]


def substitute_at_creation(
    document: str,
    *,
    parameters: Mapping[str, str] | None = None,
    packages: PackageLookup | None = None,
    destination_versions: list[PackageRef] | None = None,
) -> str:
    """Replace parameter and package placeholders; leave presigned-URL ones for delivery.

    ``packages(name, version)`` returns the version's ``{"status", "attributes", "artifact"}`` or
    None if there is no such version.
    """
    placeholders(document)  # structure and limits first
    parameters = parameters or {}
    destination_versions = destination_versions or []

    def package_version(name: str, version: str) -> tuple[str, str, Mapping[str, Any]]:
        if (name == "") != (version == ""):
            raise InvalidRequest("Empty package name and version name have to be used in pair.")
        if name == "":
            if len(destination_versions) != 1:
                raise InvalidRequest(
                    "Cannot resolve empty package name and version name given multiple elements in destination "
                    "package versions."
                    if destination_versions
                    else "Cannot resolve empty package name and version name without destinationPackageVersions."
                )
            name, version = destination_versions[0].package, destination_versions[0].version
        if version == "$null":
            raise InvalidRequest("$null is not allowed to be referenced as a package version in job documents.")
        found = packages(name, version) if packages is not None else None
        if found is None:
            raise InvalidRequest(f"Package {name} version {version} does not exist.")
        if found.get("status") != "PUBLISHED":
            raise InvalidRequest(f"Package {name} version {version} is {found.get('status')}; it must be PUBLISHED.")
        return name, version, found

    def whole_value(m: re.Match[str]) -> str:
        body = m.group(1)
        pm = _PACKAGE.fullmatch(body)
        if pm and pm.group(3) == "attributes" and pm.group(4) is None:
            _, _, found = package_version(pm.group(1), pm.group(2))
            return json.dumps(found.get("attributes") or {})
        return m.group(0)

    # ``"${aws:iot:package:P:version:V:attributes}"``: the quoted placeholder becomes a JSON object.
    document = re.sub(r'"\$\{(aws:iot:package:[^{}"]*:attributes)\}"', whole_value, document)

    def inline(m: re.Match[str]) -> str:
        body = m.group(1)
        pm = _PARAMETER.fullmatch(body)
        if pm:
            key = pm.group(1)
            if key not in parameters:
                raise InvalidRequest(f"Document parameter {key} is required but was not provided.")
            return _json_escape(parameters[key])
        pm = _PACKAGE.fullmatch(body)
        if pm:
            kind, rest = pm.group(3), pm.group(4)
            if kind == "attributes" and rest is None:
                raise InvalidRequest(
                    f"${{{body}}} has to be a json value by itself and not appended with other strings or nested "
                    "with other placeholders."
                )
            name, version, found = package_version(pm.group(1), pm.group(2))
            if kind == "attributes":
                attributes = found.get("attributes") or {}
                if rest not in attributes:
                    raise InvalidRequest(f"Package {name} version {version} has no attribute {rest}.")
                return _json_escape(str(attributes[rest]))
            if rest != "s3-presigned-url":
                raise InvalidRequest(f"Unknown package placeholder ${{{body}}}.")
            artifact = (found.get("artifact") or {}).get("s3Location")
            if not artifact:
                raise InvalidRequest(f"Package {name} version {version} does not have an associated artifact.")
            # Becomes an ordinary presigned-URL placeholder, signed at each delivery.
            url = f"https://s3.amazonaws.com/{artifact['bucket']}/{artifact['key']}"
            if artifact.get("version"):
                return "${aws:iot:s3-presigned-url-v2:" + _v2_encode(url + "?versionId=" + artifact["version"]) + "}"
            return "${aws:iot:s3-presigned-url:" + url + "}"
        if _PRESIGNED.fullmatch(body):
            parse_presigned(body)  # refuse a malformed URL now rather than at every delivery
            return m.group(0)
        raise InvalidRequest(f"Unknown placeholder ${{{body}}}.")

    return _PLACEHOLDER.sub(inline, document)


def _v2_encode(url: str) -> str:
    from urllib.parse import quote

    return quote(url, safe="")


def parse_presigned(body: str) -> S3Object:
    m = _PRESIGNED.fullmatch(body)
    if m is None:
        raise InvalidRequest(f"Unknown placeholder ${{{body}}}.")
    flavour, url = m.group(1), m.group(2)
    if flavour != "v2" and "?versionId=" in url:
        raise InvalidRequest("Only ${aws:iot:s3-presigned-url-v2:...} may pin an object version.")
    return parse_s3_url(url, encoded=flavour == "v2")


def presigned_objects(document: str) -> list[S3Object]:
    """The objects the document's presigned-URL placeholders name, in order: what CreateJob asks the
    artifact store about, so that a document no delivery could ever sign is refused up front."""
    return [parse_presigned(m.group(1)) for m in _PLACEHOLDER.finditer(document) if _PRESIGNED.fullmatch(m.group(1))]


def has_presigned(document: str | None) -> bool:
    return document is not None and "${aws:iot:s3-presigned-url" in document


def render_for_delivery(document: str, presign: Callable[[S3Object], str]) -> str:
    """Each presigned-URL placeholder becomes ``presign(object)``: a URL valid from now."""

    def one(m: re.Match[str]) -> str:
        body = m.group(1)
        if not _PRESIGNED.fullmatch(body):
            return m.group(0)
        return _json_escape(presign(parse_presigned(body)))

    return _PLACEHOLDER.sub(one, document)
