"""Job documents the agent runs: the AWS IoT Device Client schema (``version`` "1.0", ``steps``,
``finalStep``; JOBS_API.md §8.2) and the old one (``{"operation": ..., "args": [...]}``).

:func:`parse` turns a document into a :class:`Plan` or raises :class:`InvalidDocument` (the
execution is then REJECTED with the message as its reason).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

BUILTIN_HANDLERS = (
    "download-file.sh",
    "install-packages.sh",
    "remove-packages.sh",
    "start-services.sh",
    "stop-services.sh",
    "restart-services.sh",
    "reboot.sh",
)


class InvalidDocument(Exception):
    pass


@dataclass
class Step:
    name: str
    type: str  # runHandler | runCommand
    handler: str | None = None
    args: list[str] = field(default_factory=list)
    path: str | None = None  # handler directory; None = the agent's --handler-dir
    command: list[str] = field(default_factory=list)
    run_as_user: str | None = None
    ignore_failure: bool = False
    allow_stderr: int | None = None
    timeout_minutes: int | None = None
    codesign: dict[str, Any] | None = None


@dataclass
class Plan:
    steps: list[Step]
    final_step: Step | None
    include_stdout: bool
    codesign: dict[str, Any] | None

    @property
    def all_steps(self) -> list[Step]:
        return self.steps + ([self.final_step] if self.final_step else [])


def split_command(command: str) -> list[str]:
    """``a,b\\,c`` -> ``["a", "b,c"]``: comma-separated argv, ``\\,`` escapes a comma."""
    parts: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(command):
        ch = command[i]
        if ch == "\\" and i + 1 < len(command) and command[i + 1] == ",":
            cur.append(",")
            i += 2
            continue
        if ch == ",":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def _truthy(value: Any, what: str) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InvalidDocument(f'{what} must be "true" or "false"')


def _include_stdout(document: dict[str, Any]) -> bool:
    """stdout's tail goes into statusDetails unless the document says ``"includeStdOut": "false"``."""
    value = document.get("includeStdOut")
    return True if value is None else _truthy(value, "includeStdOut")


def _str_or_none(value: Any, what: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidDocument(f"{what} must be a string")
    return value


def _codesign(value: Any, what: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("signature"), str):
        raise InvalidDocument(f"{what} must be an object with a signature")
    return value


def _timeout(value: Any, what: str) -> int | None:
    if value is None:
        return None
    try:
        minutes = int(value)
    except (TypeError, ValueError):
        raise InvalidDocument(f"{what} must be a number of minutes") from None
    if minutes <= 0:
        raise InvalidDocument(f"{what} must be positive")
    return minutes


def _action(wrapper: Any, where: str) -> Step:
    if not isinstance(wrapper, dict) or not isinstance(wrapper.get("action"), dict):
        raise InvalidDocument(f"{where} must be an object with an action")
    a = wrapper["action"]
    name = a.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidDocument(f"{where}.action.name is required")
    kind = a.get("type")
    inputs = a.get("input")
    if not isinstance(inputs, dict):
        raise InvalidDocument(f"{where}.action.input is required")
    step = Step(
        name=name,
        type=str(kind),
        run_as_user=_str_or_none(a.get("runAsUser"), f"{where}.action.runAsUser"),
        ignore_failure=_truthy(a.get("ignoreStepFailure"), f"{where}.action.ignoreStepFailure"),
        timeout_minutes=_timeout(a.get("stepTimeoutInMinutes"), f"{where}.action.stepTimeoutInMinutes"),
        codesign=_codesign(inputs.get("codesign"), f"{where}.action.input.codesign"),
    )
    allow = a.get("allowStdErr")
    if allow is not None:
        if not isinstance(allow, int) or isinstance(allow, bool) or allow < 0:
            raise InvalidDocument(f"{where}.action.allowStdErr must be a non-negative integer")
        step.allow_stderr = allow
    if kind == "runHandler":
        handler = inputs.get("handler")
        if not isinstance(handler, str) or not handler or "/" in handler:
            raise InvalidDocument(f"{where}.action.input.handler must be a file name")
        args = inputs.get("args", [])
        if not isinstance(args, list) or not all(isinstance(x, str) for x in args):
            raise InvalidDocument(f"{where}.action.input.args must be a list of strings")
        path = _str_or_none(inputs.get("path"), f"{where}.action.input.path")
        step.handler, step.args, step.path = handler, list(args), None if path == "default" else path
    elif kind == "runCommand":
        command = inputs.get("command")
        if not isinstance(command, str) or not command.strip():
            raise InvalidDocument(f"{where}.action.input.command is required")
        argv = split_command(command)
        if not argv[0] or " " in argv[0]:
            raise InvalidDocument(f"{where}.action.input.command: the program may not be empty or contain spaces")
        step.command = argv
    else:
        raise InvalidDocument(f"{where}.action.type {kind!r} is not runHandler or runCommand")
    return step


def parse(document: Any, known_operations: set[str] | None = None) -> Plan:
    """``known_operations``: old-schema operations the agent has a handler for (besides built-ins)."""
    if not isinstance(document, dict):
        raise InvalidDocument("the job document is not a JSON object")
    if "version" in document:
        if document["version"] != "1.0":
            raise InvalidDocument(f'unsupported document version {document["version"]!r} (only "1.0")')
        steps = document.get("steps")
        if not isinstance(steps, list) or not steps:
            raise InvalidDocument("steps must be a non-empty list")
        parsed = [_action(s, f"steps[{i}]") for i, s in enumerate(steps)]
        final = _action(document["finalStep"], "finalStep") if document.get("finalStep") is not None else None
        conditions = document.get("conditions")
        if conditions is not None and not isinstance(conditions, list):
            raise InvalidDocument("conditions must be a list")
        return Plan(
            parsed,
            final,
            _include_stdout(document),
            _codesign(document.get("codesign"), "codesign"),
        )
    if "operation" in document:
        op = document["operation"]
        if not isinstance(op, str) or not op:
            raise InvalidDocument("operation must be a non-empty string")
        known = BUILTIN_HANDLERS + tuple(sorted(known_operations or ()))
        handler = next((c for c in ([op] if op.endswith(".sh") else [op, f"{op}.sh"]) if c in known), None)
        if handler is None:
            raise InvalidDocument(f"unknown operation {op!r}")
        wrapper = {
            "action": {
                "name": op,
                "type": "runHandler",
                "input": {"handler": handler, "args": document.get("args", []), "path": document.get("path")},
                "allowStdErr": document.get("allowStdErr"),
                "stepTimeoutInMinutes": document.get("stepTimeoutInMinutes"),
            }
        }
        return Plan(
            [_action(wrapper, "document")],
            None,
            _include_stdout(document),
            _codesign(document.get("codesign"), "codesign"),
        )
    raise InvalidDocument("not a job document the agent can run: neither version/steps nor operation")
