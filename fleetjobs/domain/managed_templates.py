"""The AWS managed job templates (JOBS_API.md §8.1), as AWS publishes them.

Their documents use the AWS IoT Device Client schema (§8.2) and ``${aws:iot:parameter:...}``
slots that CreateJob fills from ``documentParameters``; the fleetjobs agent runs them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from fleetjobs.domain.errors import InvalidRequest, ResourceNotFound

VERSION = "1.0"

RUN_AS_USER = {
    "key": "runAsUser",
    "description": "Optional. The user name the handler runs as; by default the agent's own user.",
    "regex": "(.){0,256}",
    "example": "user1",
    "optional": True,
}
PATH_TO_HANDLER = {
    "key": "pathToHandler",
    "description": "Optional. The directory of the handler script; by default the agent's handler directory.",
    "regex": "(.){0,4096}",
    "example": "/path/to/handler/directory",
    "optional": True,
}


@dataclass(frozen=True)
class ManagedTemplate:
    name: str
    description: str
    handler: str | None  # runHandler script; None for AWS-Run-Command
    required: tuple[dict[str, Any], ...]
    arg_keys: tuple[str, ...]

    @property
    def parameters(self) -> list[dict[str, Any]]:
        optional = [RUN_AS_USER] if self.handler is None else [RUN_AS_USER, PATH_TO_HANDLER]
        return [*self.required, *optional]

    @property
    def document(self) -> str:
        if self.handler is None:
            action = {
                "name": "Run-Command",
                "type": "runCommand",
                "input": {"command": "${aws:iot:parameter:command}"},
                "runAsUser": "${aws:iot:parameter:runAsUser}",
            }
        else:
            inputs: dict[str, Any] = {"handler": self.handler}
            if self.arg_keys:
                inputs["args"] = [f"${{aws:iot:parameter:{k}}}" for k in self.arg_keys]
            inputs["path"] = "${aws:iot:parameter:pathToHandler}"
            action = {
                "name": self.name.removeprefix("AWS-"),
                "type": "runHandler",
                "input": inputs,
                "runAsUser": "${aws:iot:parameter:runAsUser}",
            }
        return json.dumps({"version": "1.0", "steps": [{"action": action}]}, indent=2)

    def arn(self, region: str) -> str:
        return f"arn:aws:iot:{region}::jobtemplate/{self.name}:{VERSION}"


def _param(key: str, description: str, example: str) -> dict[str, Any]:
    return {"key": key, "description": description, "regex": "(.*?)", "example": example, "optional": False}


PACKAGES = _param("packages", "Required. A space-separated list of packages.", "mypackage1 mypackage2")
SERVICES = _param("services", "Required. A space-separated list of system services.", "myservice1 myservice2")

TEMPLATES: dict[str, ManagedTemplate] = {
    t.name: t
    for t in (
        ManagedTemplate(
            "AWS-Download-File",
            "A managed job template for downloading a file.",
            "download-file.sh",
            (
                _param(
                    "downloadUrl", "Required. The URL to download the file from.", "http://www.example.com/index.html"
                ),
                _param("filePath", "Required. The path on the device where the file is saved.", "/path/to/file"),
            ),
            ("downloadUrl", "filePath"),
        ),
        ManagedTemplate(
            "AWS-Install-Application",
            "A managed job template for installing one or more applications.",
            "install-packages.sh",
            (PACKAGES,),
            ("packages",),
        ),
        ManagedTemplate(
            "AWS-Remove-Application",
            "A managed job template for uninstalling one or more applications.",
            "remove-packages.sh",
            (PACKAGES,),
            ("packages",),
        ),
        ManagedTemplate(
            "AWS-Start-Application",
            "A managed job template for starting one or more system services.",
            "start-services.sh",
            (SERVICES,),
            ("services",),
        ),
        ManagedTemplate(
            "AWS-Stop-Application",
            "A managed job template for stopping one or more system services.",
            "stop-services.sh",
            (SERVICES,),
            ("services",),
        ),
        ManagedTemplate(
            "AWS-Restart-Application",
            "A managed job template for restarting one or more system services.",
            "restart-services.sh",
            (SERVICES,),
            ("services",),
        ),
        ManagedTemplate("AWS-Reboot", "A managed job template for rebooting the device.", "reboot.sh", (), ()),
        ManagedTemplate(
            "AWS-Run-Command",
            "A managed job template for running a shell command.",
            None,
            (
                _param(
                    "command",
                    "Required. The command to run: its arguments separated by commas (escape a comma with \\\\,).",
                    "ls,-la",
                ),
            ),
            ("command",),
        ),
    )
}


def parameters_for(template: ManagedTemplate, given: dict[str, str] | None) -> dict[str, str]:
    """The values for the document's slots: given ones checked against the template, omitted
    optional ones empty (the agent reads an empty runAsUser / path as "the default")."""
    given = dict(given or {})
    known = {p["key"]: p for p in template.parameters}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise InvalidRequest(f"Unknown document parameters for {template.name}: {', '.join(unknown)}.")
    values: dict[str, str] = {}
    for key, p in known.items():
        if key not in given:
            if not p["optional"]:
                raise InvalidRequest(f"Document parameter {key} is required by {template.name}.")
            values[key] = ""
            continue
        if not re.fullmatch(p["regex"], given[key], re.DOTALL):
            raise InvalidRequest(f"Document parameter {key} does not match {p['regex']}.")
        values[key] = given[key]
    return values


def lookup(name: str, version: str | None) -> ManagedTemplate:
    """A managed template by name (and version, which must be the current one when given)."""
    template = TEMPLATES.get(name)
    if template is None or version not in (None, VERSION):
        raise ResourceNotFound(f"The managed job template {name}{':' + version if version else ''} does not exist.")
    return template
