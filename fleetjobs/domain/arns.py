"""ARN formats of the resources fleetjobs serves (JOBS_API.md §0.3)."""

from __future__ import annotations

from dataclasses import dataclass

from fleetjobs.domain.errors import InvalidRequest


@dataclass(frozen=True)
class Partition:
    region: str
    account: str

    def _arn(self, resource: str) -> str:
        return f"arn:aws:iot:{self.region}:{self.account}:{resource}"

    def thing(self, name: str) -> str:
        return self._arn(f"thing/{name}")

    def thing_group(self, name: str) -> str:
        return self._arn(f"thinggroup/{name}")

    def thing_type(self, name: str) -> str:
        return self._arn(f"thingtype/{name}")

    def job(self, job_id: str) -> str:
        return self._arn(f"job/{job_id}")

    def job_template(self, template_id: str) -> str:
        return self._arn(f"jobtemplate/{template_id}")

    def managed_template(self, name: str, version: str) -> str:
        return f"arn:aws:iot:{self.region}::jobtemplate/{name}:{version}"

    def package(self, name: str) -> str:
        return self._arn(f"package/{name}")

    def package_version(self, name: str, version: str) -> str:
        return self._arn(f"package/{name}/version/{version}")

    def owns(self, arn: ParsedArn) -> bool:
        """Is the resource this ARN names in this account and region (so it can be found here)?"""
        return arn.account == self.account and arn.region == self.region


@dataclass(frozen=True)
class ParsedArn:
    region: str
    account: str
    resource_type: str
    resource_id: str


def parse_arn(arn: str) -> ParsedArn:
    """Split an IoT ARN; the resource part is ``type/id`` (the id may contain further slashes)."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "iot":
        raise InvalidRequest(f"{arn} is not a valid ARN")
    rtype, _, rid = parts[5].partition("/")
    if not rid:
        raise InvalidRequest(f"{arn} is not a valid ARN")
    return ParsedArn(parts[3], parts[4], rtype, rid)


def thing_targets(target_arns: list[str] | None) -> set[str]:
    """The names of the things a job targets directly (not through a group)."""
    names: set[str] = set()
    for arn in target_arns or []:
        resource = arn.split(":", 5)[-1]
        kind, _, name = resource.partition("/")
        if kind == "thing" and name:
            names.add(name)
    return names
