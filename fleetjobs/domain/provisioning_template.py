"""Provisioning templates of bulk registration (StartThingRegistrationTask), evaluated free of I/O.

A template (AWS IoT Developer Guide, "Provisioning templates") has ``Parameters`` and
``Resources``; each line of the task's input file is one JSON object of parameter values, and
evaluating the template with it gives the thing that line registers.  Two moments, two kinds of
error, because that is where AWS draws the line too:

* :meth:`ProvisioningTemplate.parse`, at StartThingRegistrationTask: everything that is wrong for
  every line alike (not JSON, no thing resource, a ``Ref`` to a parameter that is not declared, a
  malformed intrinsic function, a resource fleetjobs does not provision) refuses the call with
  InvalidRequestException, so a task is never started only to fail each of a million lines;
* :meth:`ProvisioningTemplate.evaluate`, per line: a missing parameter, a value of the wrong type,
  a ``Fn::Select`` out of range raise :class:`~fleetjobs.domain.errors.InvalidRequest`, which the
  runner writes into the task's ERRORS report for that line alone.

Supported: ``Parameters`` (``Type`` String, Number or CommaDelimitedList; ``Default``,
``AllowedValues``, ``AllowedPattern``, ``MinLength``, ``MaxLength``), ``Mappings``, ``Conditions``
(``Fn::Equals``, ``Fn::And``, ``Fn::Or``, ``Fn::Not``, ``Condition``), one ``AWS::IoT::Thing``
resource with ``ThingName``, ``AttributePayload`` (flat, or CloudFormation's ``{"Attributes": ...}``),
``ThingTypeName`` and ``ThingGroups``, an optional resource ``Condition``, and the intrinsic
functions ``Ref`` (parameters, ``AWS::Region``, ``AWS::AccountId``, ``AWS::Partition``,
``AWS::NoValue``), ``Fn::Join``, ``Fn::Sub``, ``Fn::If``, ``Fn::Select``, ``Fn::Split`` and
``Fn::FindInMap``.  ``OverrideSettings`` ``DO_NOTHING`` and ``FAIL`` say what to do with a thing
that already exists (see :func:`existing_thing_conflict`).

Refused at parse, rather than pretended: ``AWS::IoT::Certificate`` and ``AWS::IoT::Policy``
resources (fleetjobs issues device certificates with ``fleetjobs certs``, and has no IoT policies),
billing groups, ``OverrideSettings`` ``REPLACE`` / ``MERGE`` (bulk registration never rewrites an
existing thing here; UpdateThing does), and fleet-provisioning-only sections.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fleetjobs.domain.errors import InvalidRequest, ResourceAlreadyExists, ServiceError

THING = "AWS::IoT::Thing"
CERTIFICATE = "AWS::IoT::Certificate"
POLICY = "AWS::IoT::Policy"
PARAMETER_TYPES = ("String", "Number", "CommaDelimitedList")
SECTIONS = {"AWSTemplateFormatVersion", "Description", "Parameters", "Mappings", "Conditions", "Resources"}
THING_PROPERTIES = {"ThingName", "AttributePayload", "ThingTypeName", "ThingGroups"}
PARAMETER_KEYS = {"Type", "Default", "Description", "AllowedValues", "AllowedPattern", "MinLength", "MaxLength"}
# OverrideSettings names: the property name (as the guide's examples spell it) or the upper-case form
# its prose uses.
OVERRIDE_KEYS = {
    "AttributePayload": "attribute_payload",
    "ATTRIBUTE_PAYLOAD": "attribute_payload",
    "ThingTypeName": "thing_type_name",
    "THING_TYPE_NAME": "thing_type_name",
    "ThingGroups": "thing_groups",
    "THING_GROUPS": "thing_groups",
}
DO_NOTHING = "DO_NOTHING"
FAIL = "FAIL"
_FUNCTIONS = ("Ref", "Fn::Join", "Fn::Sub", "Fn::If", "Fn::Select", "Fn::Split", "Fn::FindInMap")
_CONDITION_FUNCTIONS = ("Fn::Equals", "Fn::And", "Fn::Or", "Fn::Not", "Condition")
_SUB_VAR = re.compile(r"\$\{([^}]*)\}")
MAX_TEMPLATE_DEPTH = 64
Evaluator = Callable[[Mapping[str, Any]], Any]


class _NoValue:
    """``{"Ref": "AWS::NoValue"}``: the property or list item it stands in is left out."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE = _NoValue()


class ResourceConflicts(ServiceError):
    """What ``OverrideSettings`` ``FAIL`` answers for a thing that exists otherwise (the guide's name)."""

    code = "ResourceConflictsException"


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str
    default: str | None
    allowed_values: tuple[str, ...] | None = None
    allowed_pattern: str | None = None
    min_length: int | None = None
    max_length: int | None = None


@dataclass(frozen=True)
class Overrides:
    """``OverrideSettings`` of the thing resource; None: CreateThing / AddThingToThingGroup rules."""

    attribute_payload: str | None = None
    thing_type_name: str | None = None
    thing_groups: str | None = None


@dataclass(frozen=True)
class ThingSpec:
    """The thing one line registers, as evaluated (the runner validates names against the model)."""

    thing_name: str
    thing_type_name: str | None
    attributes: dict[str, str]
    groups: tuple[str, ...]


@dataclass
class ProvisioningTemplate:
    parameters: dict[str, Parameter]
    mappings: dict[str, Any]
    conditions: dict[str, Any]
    thing_logical_id: str
    thing_condition: str | None
    properties: dict[str, Any]
    overrides: Overrides
    pseudo: dict[str, str]
    _properties_fn: Evaluator = field(init=False, repr=False, compare=False)
    _conditions_fn: dict[str, Evaluator] = field(init=False, repr=False, compare=False)

    # -- parse (the task) ------------------------------------------------------------------------------

    @classmethod
    def parse(cls, body: str, *, region: str, account: str) -> ProvisioningTemplate:
        """The template of a StartThingRegistrationTask; InvalidRequest if no line could ever use it."""
        try:
            doc = json.loads(body)
        except ValueError as e:
            raise InvalidRequest(f"The templateBody is not valid JSON: {e}") from None
        if not isinstance(doc, dict):
            raise InvalidRequest("The templateBody must be a JSON object with Parameters and Resources.")
        unknown = sorted(set(doc) - SECTIONS)
        if unknown:
            raise InvalidRequest(
                f"The templateBody has sections bulk registration does not use: {', '.join(unknown)} "
                f"(allowed: {', '.join(sorted(SECTIONS))})."
            )
        parameters = _parse_parameters(_object(doc.get("Parameters", {}), "Parameters"))
        mappings = _parse_mappings(_object(doc.get("Mappings", {}), "Mappings"))
        conditions = _object(doc.get("Conditions", {}), "Conditions")
        resources = _object(doc.get("Resources"), "Resources")
        if not resources:
            raise InvalidRequest("The templateBody must declare Resources, with one AWS::IoT::Thing resource.")
        things: list[str] = []
        for logical_id, resource in resources.items():
            if not isinstance(resource, dict):
                raise InvalidRequest(f"Resource {logical_id} must be a JSON object with a Type.")
            kind = resource.get("Type")
            if kind == THING:
                things.append(logical_id)
            elif kind in (CERTIFICATE, POLICY):
                raise InvalidRequest(
                    f"Resource {logical_id} of type {kind} is not supported: fleetjobs bulk registration "
                    "registers things only (device certificates come from `fleetjobs certs issue`; "
                    "there are no IoT policies). Remove the resource from the template."
                )
            else:
                raise InvalidRequest(
                    f"Resource {logical_id} has type {kind!r}; bulk registration supports {THING} "
                    f"({CERTIFICATE} and {POLICY} are not provisioned by fleetjobs)."
                )
        if len(things) != 1:
            raise InvalidRequest(f"The template must declare exactly one {THING} resource, not {len(things)}.")
        logical_id = things[0]
        resource = resources[logical_id]
        extra = sorted(set(resource) - {"Type", "Properties", "OverrideSettings", "Condition"})
        if extra:
            raise InvalidRequest(f"Resource {logical_id} has members that are not supported: {', '.join(extra)}.")
        properties = _object(resource.get("Properties"), f"Resources.{logical_id}.Properties")
        if "BillingGroup" in properties:
            raise InvalidRequest("Billing groups are not supported by fleetjobs; remove BillingGroup.")
        unknown = sorted(set(properties) - THING_PROPERTIES)
        if unknown:
            raise InvalidRequest(
                f"The {THING} resource has properties that are not supported: {', '.join(unknown)} "
                f"(supported: {', '.join(sorted(THING_PROPERTIES))})."
            )
        if "ThingName" not in properties:
            raise InvalidRequest(f"The {THING} resource {logical_id} must have a ThingName property.")
        condition = resource.get("Condition")
        if condition is not None and (not isinstance(condition, str) or condition not in conditions):
            raise InvalidRequest(f"Resource {logical_id} names the condition {condition!r}, which is not declared.")
        template = cls(
            parameters=parameters,
            mappings=mappings,
            conditions=conditions,
            thing_logical_id=logical_id,
            thing_condition=condition,
            properties=properties,
            overrides=_parse_overrides(resource.get("OverrideSettings")),
            pseudo={"AWS::Region": region, "AWS::AccountId": account, "AWS::Partition": "aws"},
        )
        for name, cond in conditions.items():
            template._check_condition(cond, f"Conditions.{name}", set())
        template._check(properties, f"Resources.{logical_id}.Properties", 0)
        template._compile_all()
        return template

    def _known_ref(self, name: str) -> bool:
        return name in self.parameters or name in self.pseudo or name == "AWS::NoValue"

    def _check(self, node: Any, path: str, depth: int) -> None:
        """Structural check of every intrinsic function, so that no line fails for the template's sake."""
        if depth > MAX_TEMPLATE_DEPTH:
            raise InvalidRequest(f"The template nests deeper than {MAX_TEMPLATE_DEPTH} levels at {path}.")
        if isinstance(node, list):
            for i, item in enumerate(node):
                self._check(item, f"{path}[{i}]", depth + 1)
            return
        if not isinstance(node, dict):
            if node is None:
                raise InvalidRequest(f"{path} is null.")
            return
        fn = _function_of(node)
        if fn is None:
            for k, v in node.items():
                self._check(v, f"{path}.{k}", depth + 1)
            return
        arg = node[fn]
        where = f"{path}.{fn}"
        if fn == "Ref":
            if not isinstance(arg, str) or not self._known_ref(arg):
                raise InvalidRequest(f"{where} refers to {arg!r}, which is not a declared parameter.")
        elif fn == "Fn::Join":
            if not (isinstance(arg, list) and len(arg) == 2 and isinstance(arg[0], str)):
                raise InvalidRequest(f"{where} takes [delimiter, [values...]].")
            self._check(arg[1], where, depth + 1)
        elif fn == "Fn::Sub":
            if isinstance(arg, str):
                text, variables = arg, {}
            elif _pair(arg) and isinstance(arg[0], str) and isinstance(arg[1], dict):
                text, variables = arg[0], arg[1]
            else:
                raise InvalidRequest(f"{where} takes a string, or [string, {{variables}}].")
            for var in _SUB_VAR.findall(text):
                if not var.startswith("!") and var not in variables and not self._known_ref(var):
                    raise InvalidRequest(f"{where} refers to ${{{var}}}, which is not a declared parameter.")
            for k, v in variables.items():
                self._check(v, f"{where}.{k}", depth + 1)
        elif fn == "Fn::If":
            if not (isinstance(arg, list) and len(arg) == 3 and isinstance(arg[0], str)):
                raise InvalidRequest(f"{where} takes [condition name, value if true, value if false].")
            if arg[0] not in self.conditions:
                raise InvalidRequest(f"{where} names the condition {arg[0]!r}, which is not declared.")
            self._check(arg[1], where, depth + 1)
            self._check(arg[2], where, depth + 1)
        elif fn == "Fn::Select":
            if not _pair(arg):
                raise InvalidRequest(f"{where} takes [index, [values...]].")
            self._check(arg[0], where, depth + 1)
            self._check(arg[1], where, depth + 1)
        elif fn == "Fn::Split":
            if not (_pair(arg) and isinstance(arg[0], str)):
                raise InvalidRequest(f"{where} takes [delimiter, string].")
            self._check(arg[1], where, depth + 1)
        elif fn == "Fn::FindInMap":
            if not (isinstance(arg, list) and len(arg) == 3):
                raise InvalidRequest(f"{where} takes [map name, top-level key, second-level key].")
            if isinstance(arg[0], str) and arg[0] not in self.mappings:
                raise InvalidRequest(f"{where} names the mapping {arg[0]!r}, which is not declared.")
            for item in arg:
                self._check(item, where, depth + 1)

    def _check_condition(self, node: Any, path: str, visiting: set[str]) -> None:
        fn = _function_of(node, _CONDITION_FUNCTIONS) if isinstance(node, dict) else None
        if fn is None:
            raise InvalidRequest(f"{path} must be Fn::Equals, Fn::And, Fn::Or, Fn::Not or Condition.")
        arg = node[fn]
        if fn == "Condition":
            if not isinstance(arg, str) or arg not in self.conditions:
                raise InvalidRequest(f"{path} names the condition {arg!r}, which is not declared.")
            if arg in visiting:
                raise InvalidRequest(f"{path}: the conditions refer to one another in a cycle ({arg}).")
            self._check_condition(self.conditions[arg], f"Conditions.{arg}", visiting | {arg})
        elif fn == "Fn::Equals":
            if not _pair(arg):
                raise InvalidRequest(f"{path}.Fn::Equals takes [value, value].")
            self._check(arg, path, 0)
        elif fn == "Fn::Not":
            if not (isinstance(arg, list) and len(arg) == 1):
                raise InvalidRequest(f"{path}.Fn::Not takes [condition].")
            self._check_condition(arg[0], f"{path}.Fn::Not", visiting)
        else:
            if not (isinstance(arg, list) and 2 <= len(arg) <= 10):
                raise InvalidRequest(f"{path}.{fn} takes 2 to 10 conditions.")
            for item in arg:
                self._check_condition(item, f"{path}.{fn}", visiting)

    # -- evaluate (a line) -------------------------------------------------------------------------------

    def evaluate(self, values: Mapping[str, Any]) -> ThingSpec | None:
        """The thing this line registers (None: the resource's Condition is false for it)."""
        env = self._environment(values)
        if self.thing_condition is not None and not self._conditions_fn[self.thing_condition](env):
            return None
        props = self._properties_fn(env)
        name = props.get("ThingName", NO_VALUE)
        if not isinstance(name, str):
            raise InvalidRequest(f"ThingName must evaluate to a string, not {_describe(name)}.")
        type_name = props.get("ThingTypeName", NO_VALUE)
        if type_name is NO_VALUE or type_name == "":
            type_name = None
        elif not isinstance(type_name, str):
            raise InvalidRequest(f"ThingTypeName must evaluate to a string, not {_describe(type_name)}.")
        return ThingSpec(name, type_name, _attributes(props.get("AttributePayload", NO_VALUE)), _groups(props))

    def _environment(self, values: Mapping[str, Any]) -> dict[str, str | list[str]]:
        env: dict[str, str | list[str]] = {}
        for p in self.parameters.values():
            given = values.get(p.name)
            if given is None:
                if p.default is None:
                    raise InvalidRequest(
                        f"Parameter {p.name} is required: the line gives no value and it has no Default."
                    )
                given = p.default
            env[p.name] = _parameter_value(p, given)
        return env

    # -- compiled once, run per line ------------------------------------------------------------------------
    # A template is evaluated for every line of a file of up to millions: it is turned into closures
    # at parse (constant subtrees become their value), so a line costs no walk of the template.

    def _compile_all(self) -> None:
        self._conditions_fn = {name: self._compile_condition(c) for name, c in self.conditions.items()}
        self._properties_fn = self._compile(self.properties)

    def _compile_condition(self, node: dict[str, Any]) -> Evaluator:
        fn = _function_of(node, _CONDITION_FUNCTIONS)
        arg = node[fn or ""]
        if fn == "Condition":
            return lambda env: self._conditions_fn[arg](env)
        if fn == "Fn::Equals":
            left, right = self._compile(arg[0]), self._compile(arg[1])
            return lambda env: bool(left(env) == right(env))
        if fn == "Fn::Not":
            inner = self._compile_condition(arg[0])
            return lambda env: not inner(env)
        parts = [self._compile_condition(c) for c in arg]
        if fn == "Fn::And":
            return lambda env: all(p(env) for p in parts)
        return lambda env: any(p(env) for p in parts)

    def _compile(self, node: Any) -> Evaluator:
        if _constant(node):
            return lambda env: node
        if isinstance(node, list):
            items = [self._compile(v) for v in node]
            return lambda env: [v for v in (f(env) for f in items) if v is not NO_VALUE]
        fn = _function_of(node)
        if fn is None:
            members = [(k, self._compile(v)) for k, v in node.items()]
            return lambda env: {k: v for k, v in ((k, f(env)) for k, f in members) if v is not NO_VALUE}
        arg = node[fn]
        if fn == "Ref":
            return self._compile_ref(arg)
        if fn == "Fn::Join":
            return _join(str(arg[0]), self._compile(arg[1]))
        if fn == "Fn::Sub":
            return self._compile_sub(arg)
        if fn == "Fn::If":
            name, when_true, when_false = arg[0], self._compile(arg[1]), self._compile(arg[2])
            return lambda env: (when_true if self._conditions_fn[name](env) else when_false)(env)
        if fn == "Fn::Select":
            index, values = self._compile(arg[0]), self._compile(arg[1])
            return lambda env: _select(index(env), values(env))
        if fn == "Fn::Split":
            return _split(arg[0], self._compile(arg[1]))
        keys = [self._compile(a) for a in arg]
        return lambda env: self._find_in_map([k(env) for k in keys])

    def _compile_ref(self, name: str) -> Evaluator:
        if name == "AWS::NoValue":
            return lambda env: NO_VALUE
        if name in self.parameters:
            return lambda env: env[name]
        value = self.pseudo[name]
        return lambda env: value

    def _compile_sub(self, arg: Any) -> Evaluator:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
        local = {k: self._compile(v) for k, v in variables.items()}
        pieces: list[str | tuple[str, Evaluator]] = []
        pos = 0
        for m in _SUB_VAR.finditer(text):
            pieces.append(text[pos : m.start()])
            var = m.group(1)
            if var.startswith("!"):
                pieces.append("${" + var[1:] + "}")
            else:
                pieces.append((var, local[var] if var in local else self._compile_ref(var)))
            pos = m.end()
        pieces.append(text[pos:])

        def sub(env: Mapping[str, Any]) -> str:
            out: list[str] = []
            for piece in pieces:
                if isinstance(piece, str):
                    out.append(piece)
                    continue
                var, f = piece
                v = f(env)
                if isinstance(v, list):
                    v = ",".join(v)
                if not isinstance(v, str):
                    raise InvalidRequest(f"Fn::Sub variable ${{{var}}} is not a string.")
                out.append(v)
            return "".join(out)

        return sub

    def _find_in_map(self, keys: list[Any]) -> Any:
        if not all(isinstance(k, str) for k in keys):
            raise InvalidRequest("Fn::FindInMap keys must evaluate to strings.")
        top = self.mappings.get(keys[0], {}).get(keys[1])
        if not isinstance(top, dict) or keys[2] not in top:
            raise InvalidRequest(f"Fn::FindInMap: mapping {keys[0]} has no entry {keys[1]}.{keys[2]}.")
        return top[keys[2]]


def existing_thing_conflict(
    spec: ThingSpec,
    current_type: str | None,
    current_attributes: Mapping[str, str],
    overrides: Overrides,
) -> ServiceError | None:
    """What a line that names an existing thing fails with, if it does (None: the line succeeds).

    Without OverrideSettings it is CreateThing's rule: the same thing type and attributes is the
    same thing (idempotent success), anything else is ResourceAlreadyExistsException.  A property
    whose setting is ``DO_NOTHING`` is left as it is and not compared; ``FAIL`` fails the line with
    ResourceConflictsException when that property differs.
    """
    differs = {
        "thing_type_name": spec.thing_type_name != current_type,
        "attribute_payload": spec.attributes != dict(current_attributes),
    }
    for prop, different in differs.items():
        setting = getattr(overrides, prop)
        if not different or setting == DO_NOTHING:
            continue
        if setting == FAIL:
            return ResourceConflicts(f"Thing {spec.thing_name} already exists and its {_LABEL[prop]} differs (FAIL).")
        return ResourceAlreadyExists(f"Thing {spec.thing_name} already exists in account with different attributes")
    return None


_LABEL = {"thing_type_name": "ThingTypeName", "attribute_payload": "AttributePayload", "thing_groups": "ThingGroups"}


# -- helpers ---------------------------------------------------------------------------------------------


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest(f"{what} must be a JSON object.")
    return value


def _pair(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2


def _function_of(node: dict[str, Any], names: tuple[str, ...] = _FUNCTIONS) -> str | None:
    if len(node) == 1:
        (key,) = node
        if key in names:
            return key
        if key.startswith("Fn::") and names is _FUNCTIONS:
            raise InvalidRequest(f"The intrinsic function {key} is not supported (supported: {', '.join(_FUNCTIONS)}).")
    return None


def _constant(node: Any) -> bool:
    """No intrinsic function anywhere in it: it evaluates to itself."""
    if isinstance(node, list):
        return all(_constant(v) for v in node)
    if isinstance(node, dict):
        return _function_of(node) is None and all(_constant(v) for v in node.values())
    return True


def _join(delimiter: str, parts: Evaluator) -> Evaluator:
    def join(env: Mapping[str, Any]) -> str:
        items = parts(env)
        if not isinstance(items, list) or not all(isinstance(p, str) for p in items):
            raise InvalidRequest(f"Fn::Join needs a list of strings, not {_describe(items)}.")
        return delimiter.join(items)

    return join


def _split(delimiter: str, source: Evaluator) -> Evaluator:
    def split(env: Mapping[str, Any]) -> list[str]:
        text = source(env)
        if not isinstance(text, str):
            raise InvalidRequest(f"Fn::Split needs a string, not {_describe(text)}.")
        return text.split(delimiter) if delimiter else [text]

    return split


def _describe(value: Any) -> str:
    if value is NO_VALUE:
        return "no value"
    return type(value).__name__ if isinstance(value, list | dict) else repr(value)


def _parse_parameters(section: dict[str, Any]) -> dict[str, Parameter]:
    out: dict[str, Parameter] = {}
    for name, decl in section.items():
        if name.startswith("AWS::"):
            raise InvalidRequest(f"Parameter {name}: names starting with AWS:: are reserved.")
        if not isinstance(decl, dict):
            raise InvalidRequest(f"Parameter {name} must be a JSON object with a Type.")
        unknown = sorted(set(decl) - PARAMETER_KEYS)
        if unknown:
            raise InvalidRequest(f"Parameter {name} has members that are not supported: {', '.join(unknown)}.")
        kind = decl.get("Type")
        if kind not in PARAMETER_TYPES:
            raise InvalidRequest(f"Parameter {name} has Type {kind!r}; supported: {', '.join(PARAMETER_TYPES)}.")
        default = decl.get("Default")
        if default is not None:
            default = _scalar_text(default)
            if default is None:
                raise InvalidRequest(f"Parameter {name} has a Default that is not a string.")
        allowed = decl.get("AllowedValues")
        if allowed is not None and not (
            isinstance(allowed, list) and all(_scalar_text(v) is not None for v in allowed)
        ):
            raise InvalidRequest(f"Parameter {name}: AllowedValues must be a list of strings.")
        pattern = decl.get("AllowedPattern")
        if pattern is not None:
            try:
                re.compile(pattern)
            except (re.error, TypeError):
                raise InvalidRequest(f"Parameter {name}: AllowedPattern is not a valid regular expression.") from None
        lengths = [decl.get("MinLength"), decl.get("MaxLength")]
        if any(v is not None and (isinstance(v, bool) or not isinstance(v, int)) for v in lengths):
            raise InvalidRequest(f"Parameter {name}: MinLength and MaxLength must be integers.")
        p = Parameter(
            name,
            kind,
            default,
            tuple(str(_scalar_text(v)) for v in allowed) if allowed is not None else None,
            pattern,
            lengths[0],
            lengths[1],
        )
        if default is not None:
            _parameter_value(p, default)  # a Default that its own constraints refuse fails every line
        out[name] = p
    return out


def _parse_mappings(section: dict[str, Any]) -> dict[str, Any]:
    for name, table in section.items():
        if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
            raise InvalidRequest(f"Mapping {name} must be a two-level JSON object.")
    return section


def _parse_overrides(section: Any) -> Overrides:
    if section is None:
        return Overrides()
    if not isinstance(section, dict):
        raise InvalidRequest("OverrideSettings must be a JSON object.")
    values: dict[str, str] = {}
    for key, setting in section.items():
        if key not in OVERRIDE_KEYS:
            raise InvalidRequest(
                f"OverrideSettings {key} is not a thing property (AttributePayload, ThingTypeName, ThingGroups)."
            )
        if setting in ("REPLACE", "MERGE"):
            raise InvalidRequest(
                f"OverrideSettings {key}: {setting} is not supported by fleetjobs bulk registration, which never "
                "changes an existing thing (use UpdateThing / UpdateThingGroupsForThing); use DO_NOTHING or FAIL."
            )
        if setting not in (DO_NOTHING, FAIL):
            raise InvalidRequest(f"OverrideSettings {key}: {setting!r} is not one of DO_NOTHING, FAIL, REPLACE, MERGE.")
        values[OVERRIDE_KEYS[key]] = setting
    return Overrides(**values)


def _scalar_text(value: Any) -> str | None:
    """A JSON scalar as the parameter string it stands for (``123`` -> ``"123"``); None if not a scalar."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    return None


def _parameter_value(p: Parameter, given: Any) -> str | list[str]:
    if p.type == "CommaDelimitedList" and isinstance(given, list):
        items = [_scalar_text(v) for v in given]
        if any(v is None for v in items):
            raise InvalidRequest(f"Parameter {p.name} must be a comma-delimited string or a list of strings.")
        text = ",".join(str(v) for v in items)
    else:
        found = _scalar_text(given)
        if found is None:
            raise InvalidRequest(f"Parameter {p.name} must be a string, not {type(given).__name__}.")
        text = found
    if p.type == "Number":
        try:
            float(text)
        except ValueError:
            raise InvalidRequest(f"Parameter {p.name} must be a number, not {text!r}.") from None
    if p.allowed_values is not None and text not in p.allowed_values:
        raise InvalidRequest(f"Parameter {p.name} must be one of {', '.join(p.allowed_values)}, not {text!r}.")
    if p.allowed_pattern is not None and not re.fullmatch(p.allowed_pattern, text):
        raise InvalidRequest(f"Parameter {p.name} must match the pattern {p.allowed_pattern}.")
    if p.min_length is not None and len(text) < p.min_length:
        raise InvalidRequest(f"Parameter {p.name} must be at least {p.min_length} characters long.")
    if p.max_length is not None and len(text) > p.max_length:
        raise InvalidRequest(f"Parameter {p.name} must be at most {p.max_length} characters long.")
    return text.split(",") if p.type == "CommaDelimitedList" else text


def _select(index: Any, items: Any) -> Any:
    if isinstance(index, str) and index.isdigit():
        index = int(index)
    if isinstance(index, bool) or not isinstance(index, int):
        raise InvalidRequest(f"Fn::Select needs an integer index, not {_describe(index)}.")
    if not isinstance(items, list):
        raise InvalidRequest(f"Fn::Select needs a list, not {_describe(items)}.")
    if not 0 <= index < len(items) or items[index] is None:
        raise InvalidRequest(f"Fn::Select index {index} is out of range for a list of {len(items)}.")
    return items[index]


def _attributes(payload: Any) -> dict[str, str]:
    """The thing's attributes; an empty value means no attribute (AttributePayload semantics)."""
    if payload is NO_VALUE:
        return {}
    if not isinstance(payload, dict):
        raise InvalidRequest(f"AttributePayload must evaluate to a JSON object, not {_describe(payload)}.")
    if set(payload) <= {"Attributes", "attributes"} and all(isinstance(v, dict) for v in payload.values()):
        payload = next(iter(payload.values()), {})  # CloudFormation's {"Attributes": {...}} form
    out: dict[str, str] = {}
    for k, v in payload.items():
        text = _scalar_text(v)
        if text is None:
            raise InvalidRequest(f"Attribute {k} must evaluate to a string, not {_describe(v)}.")
        if text != "":
            out[k] = text
    return out


def _groups(props: dict[str, Any]) -> tuple[str, ...]:
    value = props.get("ThingGroups", NO_VALUE)
    if value is NO_VALUE:
        return ()
    items = value if isinstance(value, list) else [value]
    flat: list[str] = []
    for item in items:
        for name in item if isinstance(item, list) else [item]:  # a CommaDelimitedList Ref in the list
            if not isinstance(name, str):
                raise InvalidRequest(f"ThingGroups must evaluate to group names, not {_describe(name)}.")
            if name:
                flat.append(name)
    return tuple(dict.fromkeys(flat))
