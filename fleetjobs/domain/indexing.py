"""Fleet-indexing rules free of I/O: the indexing configuration, and what the index holds of a thing.

What the ``AWS_Things`` index holds for a thing follows the indexing configuration
(``GetIndexingConfiguration``), as on AWS:

* ``thingIndexingMode`` OFF (the default of a fresh account): there is no index; SearchIndex and
  DescribeIndex answer ResourceNotFoundException ("Index AWS_Things does not exist. Please enable
  index by calling UpdateIndexingConfiguration"), CreateDynamicThingGroup too.
* REGISTRY: ``thingName``, ``thingId``, ``thingTypeName``, ``attributes.*`` and
  ``thingGroupNames`` (the groups the thing is directly in, static and dynamic).
* REGISTRY_AND_SHADOW: also the classic shadow (``shadow.reported.*``, ``shadow.desired.*``,
  ``shadow.delta.*``, ``shadow.hasDelta``), and named shadows (``shadow.name.<name>.*``) when
  ``namedShadowIndexingMode`` is ON and the name is listed in ``filter.namedShadowNames`` (so
  ``$package`` must be listed to search installed software packages).  Nothing else is indexed.
* ``thingConnectivityIndexingMode`` STATUS: ``connectivity.connected`` is false for every thing
  (fleetjobs does not track MQTT sessions; AWS reports never-connected devices the same way).

A query matches and a SearchIndex document shows the same shadow delta: both come from
:func:`fleetjobs.domain.shadow_state.delta`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any, Protocol

from fleetjobs.domain import shadow_state
from fleetjobs.domain.errors import InvalidRequest, ResourceNotFound
from fleetjobs.domain.fleet_query import FleetQuery, ThingRecord

THINGS_INDEX = "AWS_Things"
GROUPS_INDEX = "AWS_ThingGroups"
QUERY_VERSION = "2017-09-30"
MAX_SEARCH_RESULTS = 100  # "This maximum number cannot exceed 100" (SearchIndex)
MAX_NAMED_SHADOW_FILTER = 10
THING_MODES = ("OFF", "REGISTRY", "REGISTRY_AND_SHADOW")


def default_configuration() -> dict[str, Any]:
    """What GetIndexingConfiguration answers for an account that never set one: everything OFF."""
    return {
        "thingIndexingConfiguration": {"thingIndexingMode": "OFF", "thingConnectivityIndexingMode": "OFF"},
        "thingGroupIndexingConfiguration": {"thingGroupIndexingMode": "OFF"},
    }


def things_indexed(config: dict[str, Any]) -> bool:
    return bool(config.get("thingIndexingConfiguration", {}).get("thingIndexingMode", "OFF") != "OFF")


def groups_indexed(config: dict[str, Any]) -> bool:
    return bool(config.get("thingGroupIndexingConfiguration", {}).get("thingGroupIndexingMode", "OFF") != "OFF")


def index_missing(name: str) -> ResourceNotFound:
    return ResourceNotFound(f"Index {name} does not exist. Please enable index by calling UpdateIndexingConfiguration")


@functools.lru_cache(maxsize=1024)
def parsed_query(text: str) -> FleetQuery:
    """Queries repeat (a dynamic group's is evaluated for every changed thing): parse each once."""
    return FleetQuery.parse(text)


def normalize_thing_config(given: Mapping[str, Any]) -> dict[str, Any]:
    """The stored ``thingIndexingConfiguration``, refusing combinations AWS refuses."""
    out = {k: v for k, v in given.items() if v not in (None, [], {})}
    mode = out.get("thingIndexingMode", "OFF")
    if mode not in THING_MODES:
        raise InvalidRequest(f"thingIndexingMode must be one of {', '.join(THING_MODES)}")
    out.setdefault("thingConnectivityIndexingMode", "OFF")
    if mode == "OFF":
        extras = [
            k
            for k in ("thingConnectivityIndexingMode", "namedShadowIndexingMode", "deviceDefenderIndexingMode")
            if out.get(k) not in (None, "OFF")
        ]
        if extras or out.get("customFields") or out.get("filter"):
            raise InvalidRequest(
                "thingIndexingMode OFF cannot be combined with other thing indexing settings "
                f"({', '.join(extras) or 'customFields/filter'})."
            )
    if out.get("namedShadowIndexingMode") == "ON" and mode != "REGISTRY_AND_SHADOW":
        raise InvalidRequest("namedShadowIndexingMode ON requires thingIndexingMode REGISTRY_AND_SHADOW.")
    names = (out.get("filter") or {}).get("namedShadowNames") or []
    if len(names) > MAX_NAMED_SHADOW_FILTER:
        raise InvalidRequest(f"filter.namedShadowNames can list at most {MAX_NAMED_SHADOW_FILTER} shadow names.")
    return out


def schema_of(thing_config: dict[str, Any]) -> str:
    """DescribeIndex's ``schema`` for a thing indexing configuration."""
    if thing_config.get("namedShadowIndexingMode") == "ON" or thing_config.get("deviceDefenderIndexingMode") not in (
        None,
        "OFF",
    ):
        return "MULTI_INDEXING_MODE"
    schema = str(thing_config.get("thingIndexingMode", "OFF"))
    if thing_config.get("thingConnectivityIndexingMode", "OFF") != "OFF":
        schema += "_AND_CONNECTIVITY_STATUS"
    return schema


def check_dynamic_group_query(index_name: str | None, query_version: str | None) -> tuple[str, str]:
    """The index and query version of a dynamic thing group (only AWS_Things, only 2017-09-30)."""
    index = index_name or THINGS_INDEX
    if index != THINGS_INDEX:
        raise InvalidRequest(f"Dynamic thing groups support the index {THINGS_INDEX} only, not {index}.")
    version = query_version or QUERY_VERSION
    if version != QUERY_VERSION:
        raise InvalidRequest(f"Query version {version} is not supported; use {QUERY_VERSION}.")
    return index, version


class IndexView:
    """What the configuration puts into the index: which shadows, and connectivity."""

    def __init__(self, config: dict[str, Any]) -> None:
        tc = config.get("thingIndexingConfiguration", {})
        self.shadow = tc.get("thingIndexingMode") == "REGISTRY_AND_SHADOW"
        self.named: frozenset[str] = frozenset()
        if self.shadow and tc.get("namedShadowIndexingMode") == "ON":
            self.named = frozenset((tc.get("filter") or {}).get("namedShadowNames") or [])
        self.connectivity = tc.get("thingConnectivityIndexingMode", "OFF") != "OFF"


class IndexedThingRow(Protocol):
    id: int
    thing_name: str
    thing_id: str
    thing_type_name: str | None
    attributes: dict[str, str] | None


class ThingDoc:
    """One thing as indexed: its record for queries (static groups only, or all) and its SearchIndex document."""

    __slots__ = ("all_groups", "group_ids", "row", "shadows", "static_groups")

    def __init__(self, row: IndexedThingRow) -> None:
        self.row = row
        self.group_ids: set[int] = set()
        self.all_groups: list[str] = []
        self.static_groups: list[str] = []
        self.shadows: dict[str, dict[str, Any]] = {}

    def record(self, view: IndexView, *, static_only: bool) -> ThingRecord:
        return ThingRecord(
            thing_name=self.row.thing_name,
            thing_id=self.row.thing_id,
            thing_type_name=self.row.thing_type_name,
            attributes=self.row.attributes or {},
            thing_group_names=tuple(self.static_groups if static_only else self.all_groups),
            shadow=self.shadows.get(""),
            named_shadows={k: v for k, v in self.shadows.items() if k},
            connectivity={"connected": False} if view.connectivity else None,
        )

    def document(self, view: IndexView) -> dict[str, Any]:
        shadow: dict[str, Any] = {}
        if "" in self.shadows:
            shadow.update(shadow_json(self.shadows[""]))
        named = {k: shadow_json(v) for k, v in self.shadows.items() if k}
        if named:
            shadow["name"] = named
        doc = {
            "thingName": self.row.thing_name,
            "thingId": self.row.thing_id,
            "thingTypeName": self.row.thing_type_name,
            "thingGroupNames": sorted(self.all_groups) or None,
            "attributes": self.row.attributes or None,
            "shadow": json.dumps(shadow, separators=(",", ":")) if shadow else None,
            "connectivity": {"connected": False} if view.connectivity else None,
        }
        return {k: v for k, v in doc.items() if v is not None}


def shadow_json(state: dict[str, Any]) -> dict[str, Any]:
    """A shadow as a SearchIndex document shows it: reported, desired and ``hasDelta``."""
    out = {k: state[k] for k in ("reported", "desired") if state.get(k) is not None}
    out["hasDelta"] = bool(shadow_state.delta(state.get("desired"), state.get("reported")))
    return out
