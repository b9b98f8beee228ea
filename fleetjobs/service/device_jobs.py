"""The device side of the execution state machine (iot-jobs-data; the MQTT gateway reuses it).

Both device APIs (HTTPS and MQTT) come here, and every request goes through one path:
:mod:`fleetjobs.service.effects.device_batch`, which applies requests that arrive together in one
transaction (an HTTPS request is a batch of one).  So a transition is legal or illegal in exactly one
place (``domain.execution_state``), and every change keeps the job counters, version numbers and
timers consistent.  Executions a batch changes are read ``FOR UPDATE`` (PostgreSQL) or under the one
SQLite writer, so two instances never both apply a change to one execution.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from sqlalchemy import exc as sa_exc

from fleetjobs.artifacts import ArtifactStore
from fleetjobs.domain.errors import ServiceError, ServiceUnavailable
from fleetjobs.model import shapes_iot_jobs_data as shapes
from fleetjobs.service.context import ServiceContext
from fleetjobs.service.effects.device_batch import (
    DESCRIBE,
    GET_PENDING,
    START_NEXT,
    UPDATE,
    DeviceCall,
    Outcome,
    apply_batch,
    changes,
)
from fleetjobs.service.effects.device_views import DeviceViews
from fleetjobs.service.effects.notices import notice_things
from fleetjobs.service.throttle import ThingThrottle

log = logging.getLogger("fleetjobs.device")

# SQLSTATEs that mean "the database cannot be reached or will not take work now", not "this request
# is wrong": connection exceptions, operator intervention (shutdown, restart, "cannot connect now"),
# too many connections.
_UNREACHABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300")
# SQLite's transient "busy beyond busy_timeout" and the file being out of reach.
_SQLITE_UNREACHABLE = ("database is locked", "unable to open database file")


class DatabaseUnavailable(ServiceUnavailable):
    """The database could not be reached for this request: nothing was changed by it.

    HTTPS answers it as the model's ServiceUnavailableException (503), which AWS SDKs retry; the
    MQTT gateway does not answer it at all: it keeps the request unacknowledged and applies it once
    the database is back (:class:`fleetjobs.mqtt.gateway.MqttGateway`), so no device hears an
    InternalError for an outage."""

    def __init__(self) -> None:
        super().__init__("The service cannot reach its database right now; retry.")


def database_unreachable(error: BaseException) -> bool:
    """Is ``error`` (or what caused it) a failure to reach the database rather than a fault of the
    request?  asyncpg raises connect-time failures as they are (an OSError, or a PostgreSQL error
    such as 55000 "database ... is not currently accepting connections"); SQLAlchemy wraps the
    loss of an open connection (``connection_invalidated``)."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError | sa_exc.TimeoutError | sa_exc.DisconnectionError):
            return True
        if isinstance(e, sa_exc.DBAPIError) and e.connection_invalidated:
            return True
        state = str(getattr(e, "sqlstate", None) or "")
        if state.startswith(_UNREACHABLE_SQLSTATES):
            return True
        if state == "55000" and "accepting connections" in str(e):
            return True
        if isinstance(e, sa_exc.OperationalError) and any(m in str(e.orig) for m in _SQLITE_UNREACHABLE):
            return True
        e = getattr(e, "orig", None) or e.__cause__ or e.__context__
    return False


class DeviceJobs:
    def __init__(
        self,
        ctx: ServiceContext,
        throttle: ThingThrottle | None = None,
        store: ArtifactStore | None = None,
    ) -> None:
        self.ctx = ctx
        self.throttle = throttle or ThingThrottle(0, 1)
        self.views = DeviceViews(ctx.clock, store)

    # -- the operations, one request at a time (HTTPS) ---------------------------------------------

    async def get_pending_job_executions(self, req: shapes.GetPendingJobExecutionsRequest) -> dict[str, Any]:
        return await self._one(DeviceCall(GET_PENDING, dict(req)))

    async def start_next_pending_job_execution(
        self, req: shapes.StartNextPendingJobExecutionRequest, *, request_key: str | None = None
    ) -> dict[str, Any]:
        return await self._one(DeviceCall(START_NEXT, dict(req), request_key))

    async def describe_job_execution(self, req: shapes.DescribeJobExecutionRequest) -> dict[str, Any]:
        return await self._one(DeviceCall(DESCRIBE, dict(req)))

    async def update_job_execution(
        self, req: shapes.UpdateJobExecutionRequest, *, request_key: str | None = None
    ) -> dict[str, Any]:
        return await self._one(DeviceCall(UPDATE, dict(req), request_key))

    async def _one(self, call: DeviceCall) -> dict[str, Any]:
        (outcome,) = await self.handle_batch([call])
        if isinstance(outcome, ServiceError):
            raise outcome
        return outcome

    # -- requests that arrived together (MQTT) -----------------------------------------------------

    def admit(self, thing_name: str) -> None:
        """Charge one request to the thing's rate, well-formed or not (Throttling when over it): an
        adapter that refuses a malformed request itself asks first, so garbage is throttled too."""
        self.throttle.check(thing_name)

    async def handle_batch(self, calls: list[DeviceCall], *, admitted: bool = False) -> list[Outcome]:
        """Answers in the order of ``calls``: a result, or the ServiceError that is its answer.

        ``admitted``: the caller has already charged each to its thing's rate (:meth:`admit`).
        Requests of one thing are applied in their order.  If the batch's transaction fails for a
        reason that is not one request's error, each request is tried alone, so only the requests
        that fail alone fail.  If the database cannot be reached, every request not yet applied gets
        ``DatabaseUnavailable`` (none is tried alone: each would fail the same way), and the caller
        may hand exactly those back later."""
        outcomes: list[Outcome | None] = [None] * len(calls)
        ready: list[int] = []
        for i, call in enumerate(calls):
            try:
                if not admitted:
                    self.throttle.check(call.req["thingName"])
                ready.append(i)
            except ServiceError as e:
                outcomes[i] = e
        while ready:
            part = [calls[i] for i in ready]
            try:
                result = await self._apply(part)
            except Exception as e:
                if database_unreachable(e):
                    log.warning("the database is unreachable (%r); %d device requests wait", e, len(part))
                    for i in ready:
                        outcomes[i] = DatabaseUnavailable()
                    break
                if len(part) == 1:
                    raise
                log.warning("a batch of %d device requests failed; applying them one by one", len(part), exc_info=True)
                for i in ready:
                    outcome = await self._apply_alone(calls[i])
                    if isinstance(outcome, DatabaseUnavailable):
                        # Gone meanwhile: the rest would fail alike, and must wait in order.
                        for j in ready[ready.index(i) :]:
                            outcomes[j] = outcome
                        break
                    outcomes[i] = outcome
                break
            for i, outcome in zip(ready, result.outcomes, strict=True):
                if outcome is not None:
                    outcomes[i] = outcome
            ready = [ready[j] for j in result.deferred]
        return cast(list[Outcome], outcomes)

    async def _apply(self, calls: list[DeviceCall]) -> Any:
        now = self.ctx.clock.now()
        if any(changes(c) for c in calls):
            async with self.ctx.db.write() as conn:
                return await apply_batch(conn, self.views, calls, now)
        async with self.ctx.db.read() as conn:
            return await apply_batch(conn, self.views, calls, now)

    async def _apply_alone(self, call: DeviceCall) -> Outcome:
        """One request in its own transaction; a failure of its own is its answer (InternalError)."""
        try:
            outcome: Outcome | None = (await self._apply([call])).outcomes[0]
        except Exception as e:
            if database_unreachable(e):
                return DatabaseUnavailable()
            log.exception("device request %s of %s failed", call.operation, call.req.get("thingName"))
            return ServiceUnavailable("Internal error")
        assert outcome is not None  # a lone request is never deferred: nothing comes after it
        return outcome

    async def announce_later(self, thing_names: list[str], notify_next: bool) -> None:
        """A device request's change whose notification the broker did not take (not connected,
        no PUBACK): it becomes a durable notice, which the notice drain of this or any instance
        publishes once a broker connection is up, so the thing is still told."""
        async with self.ctx.db.write() as conn:
            await notice_things(conn, thing_names, self.ctx.clock.now(), next_always=notify_next)
