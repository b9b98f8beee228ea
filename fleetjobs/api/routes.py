"""HTTP routes derived from botocore's service models (:mod:`fleetjobs.model`), never typed by hand.

A new operation needs only a service-layer method: its method, URI template and static query come
from the model.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from urllib.parse import unquote

from botocore.model import OperationModel, ServiceModel

from fleetjobs.model import service_model


@dataclass(frozen=True)
class Route:
    operation: OperationModel
    method: str
    segments: tuple[str, ...]  # literal text, or "{name}" / "{name+}"
    static_query: dict[str, str] = field(default_factory=dict)

    @property
    def specificity(self) -> tuple[int, int]:
        literals = sum(1 for s in self.segments if not s.startswith("{"))
        return (literals, -sum(1 for s in self.segments if s.endswith("+}")))

    def match(self, parts: list[str]) -> dict[str, str] | None:
        params: dict[str, str] = {}
        segs = self.segments
        if segs and segs[-1].endswith("+}"):
            if len(parts) < len(segs):
                return None
            head = len(segs) - 1
            params[segs[-1][1:-2]] = unquote("/".join(parts[head:]))
        else:
            if len(parts) != len(segs):
                return None
            head = len(segs)
        for seg, part in zip(segs[:head], parts[:head], strict=True):
            if seg.startswith("{"):
                if part == "":
                    return None
                params[seg[1:-1]] = unquote(part)
            elif seg != part:
                return None
        return params


class Router:
    """Maps (method, raw path) to an operation of one service."""

    def __init__(self, model: ServiceModel) -> None:
        self.model = model
        by_method: dict[str, list[Route]] = {}
        for name in model.operation_names:
            op = model.operation_model(name)
            uri = op.http["requestUri"]
            path, _, query = uri.partition("?")
            static_query = {}
            for pair in filter(None, query.split("&")):
                k, _, v = pair.partition("=")
                static_query[k] = v
            segments = tuple(path.strip("/").split("/")) if path.strip("/") else ()
            route = Route(op, op.http["method"], segments, static_query)
            by_method.setdefault(route.method, []).append(route)
        for routes in by_method.values():
            routes.sort(key=lambda r: r.specificity, reverse=True)
        self._by_method = by_method

    def match(self, method: str, raw_path: str, query_keys: set[str]) -> tuple[OperationModel, dict[str, str]] | None:
        parts = raw_path.strip("/").split("/") if raw_path.strip("/") else []
        for route in self._by_method.get(method, ()):
            if route.static_query and not set(route.static_query) <= query_keys:
                continue
            params = route.match(parts)
            if params is not None:
                return route.operation, params
        return None


@functools.cache
def router(service: str) -> Router:
    return Router(service_model(service))
