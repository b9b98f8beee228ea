"""Runs bulk thing registration tasks (:mod:`fleetjobs.service.registration_tasks`) in chunks.

Durability and scale-out: a task is claimed under a lease (``lease_owner`` / ``lease_until``,
``time.time()``-based: a lease protects against a dead *process*, which the domain clock knows
nothing of; PostgreSQL: ``FOR UPDATE SKIP LOCKED``), so of several instances sharing a database
exactly one works on a task at a time.  Each chunk of lines is one transaction that checks the
lease and the task's cursor under the task's row lock, registers the chunk's things, records its
report parts and advances the cursor: a chunk is committed once or not at all, and a task whose
instance died is taken over (once its lease runs out) from its last committed chunk.  A stopped
server gives its leases back, so a restarted one resumes at once.

A chunk is set-based SQL, not a CreateThing per line: one read of the things it names (existing
ones are compared as CreateThing compares them, and locked as AddThingToThingGroup locks them), one
of their thing types, groups and memberships, then one multi-row INSERT of the new things and one
of the new memberships (PostgreSQL: ``unnest`` of arrays, a single statement whatever the chunk's
size).  The side effects are those of CreateThing and AddThingToThingGroup, done for the chunk at
once: continuous jobs on the groups the things join queue their executions (with the counters and
the device notices of :mod:`fleetjobs.service.effects.continuous`), and dynamic thing groups are
re-evaluated for every thing created or moved (what :func:`~fleetjobs.service.effects.index_sync.
thing_changed` does for one thing), both skipped when no continuous job or dynamic group is there
to care.  Every rule is decided before anything is written, so a line that fails (its group does not
exist, its thing exists otherwise) creates nothing.

Report objects are written to the artifact store inside the chunk's transaction, before it commits,
under names fixed by (task, part): a chunk that is run again after a crash writes the same names,
and only parts whose transaction committed are ever listed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ARRAY, BigInteger, String, Text, and_, bindparam, delete, insert, or_, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.artifacts import ArtifactError, ArtifactNotFound, ArtifactStore
from fleetjobs.domain import fastjson
from fleetjobs.domain.errors import InvalidRequest, ResourceAlreadyExists, ResourceNotFound, ServiceError
from fleetjobs.domain.execution_state import QUEUED, REMOVED
from fleetjobs.domain.indexing import IndexView, ThingDoc, parsed_query, things_indexed
from fleetjobs.domain.placeholders import S3Object
from fleetjobs.domain.provisioning_template import (
    DO_NOTHING,
    FAIL,
    ProvisioningTemplate,
    ResourceConflicts,
    ThingSpec,
    existing_thing_conflict,
)
from fleetjobs.domain.registry import MAX_GROUPS_PER_THING, check_attribute_count
from fleetjobs.model import service_model
from fleetjobs.model.validation import validate_input
from fleetjobs.service.context import ServiceContext
from fleetjobs.service.effects import continuous
from fleetjobs.service.effects.execution_moves import adjust_counters
from fleetjobs.service.effects.hierarchy import root_group_ids
from fleetjobs.service.effects.index_sync import fill, read_configuration
from fleetjobs.service.effects.notices import notice_things
from fleetjobs.service.registration_tasks import (
    CANCELLED,
    CANCELLING,
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    REPORTS,
    RUNNABLE,
    TASKS,
    RegistrationQueued,
    report_key,
)
from fleetjobs.store.sql import among, locked
from fleetjobs.store.tables import EXECUTIONS, GROUP_MEMBERS, ROLLOUT_QUEUE, THING_GROUPS, THING_TYPES, THINGS

log = logging.getLogger("fleetjobs.registration")

LEASE_SECONDS = 20.0
POLL_SECONDS = 2.0
CHUNK_LINES = 5000
# Consecutive failed attempts at one task (other than database outages) before it is Failed.
MAX_ATTEMPTS = 5
_RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0)
_THING_COLUMNS = (THINGS.c.id, THINGS.c.thing_name, THINGS.c.thing_id, THINGS.c.thing_type_name, THINGS.c.attributes)
MAX_MESSAGE = 2048  # DescribeThingRegistrationTask's message, as the model bounds it
_IN_BATCH = 5000  # values per IN (...) on SQLite (bound parameters stay far under its 32,766)

Outcome = tuple[str, str] | str | None
"""Per line: (errorCode, errorMessage), or the ARN of its thing, or None (its Condition is false)."""


class _Lost(Exception):
    """The task is no longer ours to run (its lease went to another instance, or it was finished)."""


@dataclass(frozen=True, slots=True)
class _Line:
    ref: int  # 0-based line number in the input file: the report's referenceId
    spec: ThingSpec | None = None
    error: tuple[str, str] | None = None


@dataclass(slots=True)
class _State:
    """A thing the chunk names, as it stands once the chunk's earlier lines are applied."""

    thing_type_name: str | None
    attributes: dict[str, str]
    groups: dict[int, str]  # group row id -> name: memberships, existing and planned
    db_id: int | None  # None until a new thing is inserted
    thing_id: str
    billing_group_name: str | None = None
    new: bool = False
    added: list[int] = field(default_factory=list)  # group ids this chunk adds


def _input_shape(op: str) -> Any:
    return service_model("iot").operation_model(op).input_shape


class RegistrationRunner:
    def __init__(self, ctx: ServiceContext, store: ArtifactStore | None, *, chunk_lines: int = CHUNK_LINES) -> None:
        self.ctx = ctx
        self.store = store
        self.chunk_lines = chunk_lines
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.wakeup = asyncio.Event()
        ctx.events.wake_on(RegistrationQueued, self.wakeup)
        self._attempts: dict[str, int] = {}
        create = _input_shape("CreateThing")
        attrs = create.members["attributePayload"].members["attributes"]
        self._create_shape = create
        self._group_shape = _input_shape("AddThingToThingGroup")
        self._name = _model_pattern(create.members["thingName"].metadata)
        self._type = _model_pattern(create.members["thingTypeName"].metadata)
        self._attr_name = _model_pattern(attrs.key.metadata)
        self._attr_value = _model_pattern(attrs.value.metadata)
        self._group = _model_pattern(self._group_shape.members["thingGroupName"].metadata)

    # -- the loop --------------------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                while await self.step():
                    pass
            except Exception:
                log.exception("bulk registration pass failed; will retry")
                await asyncio.sleep(_RETRY_SECONDS[0])
            try:
                await asyncio.wait_for(self.wakeup.wait(), timeout=POLL_SECONDS)
            except TimeoutError:
                pass
            self.wakeup.clear()

    async def step(self) -> bool:
        """Claim one task and work on it until it is done, stopped or taken away; False: none to claim."""
        task = await self.claim()
        if task is None:
            return False
        try:
            await self.work(task)
            self._attempts.pop(task.task_id, None)
        except asyncio.CancelledError:
            await self._release(task.task_id)
            raise
        except _Lost:
            log.info("bulk registration task %s is no longer this instance's", task.task_id)
        except Exception as e:
            n = self._attempts[task.task_id] = self._attempts.get(task.task_id, 0) + 1
            if n >= MAX_ATTEMPTS and not _is_outage(e):
                log.exception("bulk registration task %s failed %d times; giving up", task.task_id, n)
                await self._finish(task.task_id, FAILED, f"The task failed repeatedly ({type(e).__name__}: {e}).")
                self._attempts.pop(task.task_id, None)
            else:
                log.warning("bulk registration task %s: %s; will resume", task.task_id, e, exc_info=True)
                await asyncio.sleep(_RETRY_SECONDS[min(n, len(_RETRY_SECONDS)) - 1])
        return True

    async def claim(self) -> Any | None:
        wall = time.time()
        claimable = and_(
            TASKS.c.status.in_(RUNNABLE),
            or_(TASKS.c.lease_until.is_(None), TASKS.c.lease_until < wall, TASKS.c.lease_owner == self.owner),
        )
        async with self.ctx.db.read() as conn:  # most polls find nothing: no write lock for them
            if await conn.scalar(select(TASKS.c.task_id).where(claimable).limit(1)) is None:
                return None
        async with self.ctx.db.write() as conn:
            q = select(TASKS).where(claimable).order_by(TASKS.c.created_at, TASKS.c.task_id).limit(1)
            row = (await conn.execute(locked(q, conn, skip_locked=True))).first()
            if row is None:
                return None
            await conn.execute(
                update(TASKS)
                .where(TASKS.c.task_id == row.task_id)
                .values(lease_owner=self.owner, lease_until=wall + LEASE_SECONDS)
            )
        return row

    async def work(self, task: Any) -> None:
        if task.status == CANCELLING:
            await self._finish(task.task_id, CANCELLED, None)
            return
        partition = self.ctx.partition
        try:
            template = ProvisioningTemplate.parse(
                task.template_body, region=partition.region, account=partition.account
            )
        except ServiceError as e:  # checked at start: only a template stored by another version lands here
            await self._finish(task.task_id, FAILED, f"The template cannot be used: {e.message}")
            return
        where = f"s3://{task.input_file_bucket}/{task.input_file_key}"
        if self.store is None:
            await self._finish(task.task_id, FAILED, "No artifact store is configured to read the input file from.")
            return
        try:
            data = await self.store.read(S3Object(task.input_file_bucket, task.input_file_key))
        except (ArtifactNotFound, FileNotFoundError):
            # Gone since StartThingRegistrationTask checked it; any other read error may pass and is retried.
            await self._finish(task.task_id, FAILED, f"The input file {where} does not exist any more.")
            return
        if len(data) != task.input_size and task.cursor > 0:
            await self._finish(
                task.task_id,
                FAILED,
                f"The input file {where} changed while the task ran ({task.input_size} bytes at the start, "
                f"{len(data)} now): start a new task for it.",
            )
            return
        # The next chunk is parsed and evaluated while the database works on this one's statements (the
        # two run on different cores): the loop is otherwise idle while it waits for PostgreSQL.
        cursor = task.cursor
        ahead = asyncio.create_task(self._prepare_chunk(template, data, cursor, task.next_line))
        try:
            while True:
                lines, end, next_line = await ahead
                last = end >= len(data)
                if not last:
                    ahead = asyncio.create_task(self._prepare_chunk(template, data, end, next_line))
                if not await self._commit(task, template, lines, cursor, end, next_line, len(data), last) or last:
                    return
                cursor = end
        finally:
            ahead.cancel()

    async def _prepare_chunk(
        self, template: ProvisioningTemplate, data: bytes, cursor: int, line_no: int
    ) -> tuple[list[_Line], int, int]:
        taken, end, next_line = take_lines(data, cursor, line_no, self.chunk_lines)
        lines = []
        for i, (ref, raw) in enumerate(taken):
            lines.append(self._prepare(template, ref, raw))
            if i % 250 == 249:
                await asyncio.sleep(0)  # yields to the server's requests and to the chunk being committed
        return lines, end, next_line

    # -- a line, before the database ----------------------------------------------------------------------

    def _prepare(self, template: ProvisioningTemplate, ref: int, raw: bytes) -> _Line:
        try:
            values = fastjson.loads(raw)
        except (ValueError, RecursionError) as e:
            return _Line(ref, error=("InvalidRequestException", f"Line {ref} is not valid JSON: {e}"))
        if not isinstance(values, dict):
            return _Line(ref, error=("InvalidRequestException", f"Line {ref} must be a JSON object of parameters."))
        try:
            spec = template.evaluate(values)
            if spec is not None:
                self._validate(spec)
        except ServiceError as e:
            return _Line(ref, error=(e.code, e.message))
        return _Line(ref, spec)

    def _validate(self, spec: ThingSpec) -> None:
        """The model's constraints on CreateThing / AddThingToThingGroup input, with AWS's wording
        (checked with compiled patterns first: the model's validator only to word a refusal)."""
        ok = (
            _fits(self._name, spec.thing_name)
            and (spec.thing_type_name is None or _fits(self._type, spec.thing_type_name))
            and all(_fits(self._attr_name, k) and _fits(self._attr_value, v) for k, v in spec.attributes.items())
        )
        if not ok:
            req: dict[str, Any] = {"thingName": spec.thing_name, "attributePayload": {"attributes": spec.attributes}}
            if spec.thing_type_name is not None:
                req["thingTypeName"] = spec.thing_type_name
            validate_input(self._create_shape, req)
        for g in spec.groups:
            if not _fits(self._group, g):
                validate_input(self._group_shape, {"thingGroupName": g, "thingName": spec.thing_name})
        check_attribute_count(spec.attributes, spec.thing_type_name)
        if len(spec.groups) > MAX_GROUPS_PER_THING:
            raise InvalidRequest(
                f"Thing {spec.thing_name} cannot be in more than {MAX_GROUPS_PER_THING} thing groups "
                f"(the template names {len(spec.groups)})."
            )

    # -- a chunk, in one transaction -----------------------------------------------------------------------

    async def _commit(
        self,
        task: Any,
        template: ProvisioningTemplate,
        lines: list[_Line],
        start: int,
        end: int,
        next_line: int,
        size: int,
        last: bool,
    ) -> bool:
        """Register one chunk; False once the task is finished (completed, or stopped before this chunk)."""
        for attempt in range(3):
            try:
                async with self.ctx.db.write() as conn:
                    q = select(TASKS).where(TASKS.c.task_id == task.task_id)
                    row = (await conn.execute(locked(q, conn))).first()
                    if row is None or row.lease_owner != self.owner or row.cursor != start:
                        raise _Lost()
                    now = self.ctx.clock.now()
                    if row.status == CANCELLING:
                        await self._set_finished(conn, task.task_id, CANCELLED, None, now)
                        return False
                    if row.status != IN_PROGRESS:
                        raise _Lost()
                    outcomes = await self._register(conn, template, lines, now)
                    part = row.parts + 1
                    successes, failures = await self._write_reports(conn, task, template, lines, outcomes, part)
                    values: dict[str, Any] = {
                        "success_count": TASKS.c.success_count + successes,
                        "failure_count": TASKS.c.failure_count + failures,
                        "cursor": end,
                        "next_line": next_line,
                        "parts": part,
                        "input_size": size,
                        "lease_until": time.time() + LEASE_SECONDS,
                        "last_modified_at": now,
                    }
                    if last:
                        values |= {"status": COMPLETED, "lease_owner": None, "lease_until": None}
                    await conn.execute(update(TASKS).where(TASKS.c.task_id == task.task_id).values(**values))
                return True
            except IntegrityError:
                # A concurrent CreateThing / CreateThingGroup / DeleteThingGroup won a race on a row the
                # chunk read: run the chunk again, seeing what it committed.
                if attempt == 2:
                    raise
        return True  # pragma: no cover - the loop returns or raises

    async def _register(
        self, conn: AsyncConnection, template: ProvisioningTemplate, lines: list[_Line], now: float
    ) -> list[Outcome]:
        outcomes: list[Outcome] = [line.error for line in lines]
        work = [(i, line.spec) for i, line in enumerate(lines) if line.spec is not None]
        if not work:
            return outcomes
        # The configuration row first (FOR SHARE), as thing_changed does for a created thing: a concurrent
        # dynamic-group evaluation holds it FOR UPDATE, so one of the two sees the other's things.
        config = await read_configuration(conn, lock="share")
        names = sorted({spec.thing_name for _, spec in work})
        existing = {
            r.thing_name: r
            for r in await _select_in(
                conn,
                lambda batch: locked(
                    select(*_THING_COLUMNS, THINGS.c.billing_group_name)
                    .where(among(THINGS.c.thing_name, batch, conn))
                    .order_by(THINGS.c.thing_name),
                    conn,
                ),
                names,
            )
        }
        type_names = sorted(
            {s.thing_type_name for _, s in work if s.thing_type_name is not None and s.thing_name not in existing}
        )
        types: dict[str, bool] = {}
        if type_names:
            for r in await _select_in(
                conn,
                lambda batch: locked(
                    select(THING_TYPES.c.thing_type_name, THING_TYPES.c.deprecated)
                    .where(among(THING_TYPES.c.thing_type_name, batch, conn))
                    .order_by(THING_TYPES.c.thing_type_name),
                    conn,
                    shared=True,
                ),
                type_names,
            ):
                types[r.thing_type_name] = bool(r.deprecated)
        group_names = sorted({g for _, s in work for g in s.groups})
        groups: dict[str, Any] = {}
        current: dict[int, dict[int, str]] = defaultdict(dict)
        roots: dict[int, int] = {}
        if group_names:
            for r in await _select_in(
                conn,
                lambda batch: select(THING_GROUPS.c.id, THING_GROUPS.c.group_name, THING_GROUPS.c.query_string).where(
                    among(THING_GROUPS.c.group_name, batch, conn)
                ),
                group_names,
            ):
                groups[r.group_name] = r
            if existing:
                for r in await _select_in(
                    conn,
                    lambda batch: (
                        select(GROUP_MEMBERS.c.thing_id, THING_GROUPS.c.id, THING_GROUPS.c.group_name)
                        .select_from(GROUP_MEMBERS.join(THING_GROUPS, THING_GROUPS.c.id == GROUP_MEMBERS.c.group_id))
                        .where(among(GROUP_MEMBERS.c.thing_id, batch, conn))
                    ),
                    [r.id for r in existing.values()],
                ):
                    current[r.thing_id][r.id] = r.group_name
            ids = sorted({g.id for g in groups.values()} | {gid for m in current.values() for gid in m})
            for lo in range(0, len(ids), _IN_BATCH):
                roots |= await root_group_ids(conn, ids[lo : lo + _IN_BATCH])

        group_names_by_id = {g.id: name for name, g in groups.items()}
        state: dict[str, _State] = {}
        for i, spec in work:
            st = state.get(spec.thing_name)
            if st is None and spec.thing_name in existing:
                r = existing[spec.thing_name]
                st = state[spec.thing_name] = _State(
                    r.thing_type_name,
                    dict(r.attributes or {}),
                    dict(current[r.id]),
                    r.id,
                    r.thing_id,
                    r.billing_group_name,
                )
            outcome = self._plan(template, spec, st, types, groups, roots)
            if isinstance(outcome, tuple):
                outcomes[i] = outcome
                continue
            if st is None:
                st = state[spec.thing_name] = _State(spec.thing_type_name, spec.attributes, {}, None, "", new=True)
            for gid in outcome:
                st.groups[gid] = group_names_by_id[gid]
                st.added.append(gid)
            outcomes[i] = self.ctx.partition.thing(spec.thing_name)

        new = {name: st for name, st in state.items() if st.new}
        if new:
            for st, thing_id in zip(new.values(), random_uuids(len(new)), strict=True):
                st.thing_id = thing_id
            for name, db_id in (await _insert_things(conn, new, now)).items():
                new[name].db_id = db_id
        joins = [(name, st, gid) for name, st in state.items() for gid in st.added]
        if joins:
            await _insert_memberships(conn, [(gid, st.db_id) for _, st, gid in joins])
            await _queue_continuous(conn, [(name, gid) for name, _, gid in joins], now)
        moved = [st.db_id for st in state.values() if st.new or st.added]
        await _dynamic_groups(conn, config, [i for i in moved if i is not None], now)
        return outcomes

    def _plan(
        self,
        template: ProvisioningTemplate,
        spec: ThingSpec,
        st: _State | None,
        types: dict[str, bool],
        groups: dict[str, Any],
        roots: dict[int, int],
    ) -> tuple[str, str] | list[int]:
        """The group ids this line adds its thing to, or why the line fails (nothing of it is written)."""
        overrides = template.overrides
        wanted = spec.groups
        if st is not None:
            if st.billing_group_name is not None:
                err: ServiceError | None = ResourceAlreadyExists(
                    f"Thing {spec.thing_name} already exists in account with different attributes"
                )
            else:
                err = existing_thing_conflict(spec, st.thing_type_name, st.attributes, overrides)
            if err is not None:
                return (err.code, err.message)
            if overrides.thing_groups == DO_NOTHING:
                wanted = ()
            elif overrides.thing_groups == FAIL and set(wanted) - set(st.groups.values()):
                e = ResourceConflicts(f"Thing {spec.thing_name} already exists and its ThingGroups differ (FAIL).")
                return (e.code, e.message)
        elif spec.thing_type_name is not None:
            deprecated = types.get(spec.thing_type_name)
            if deprecated is None:
                nf = ResourceNotFound(f"Thing type {spec.thing_type_name} cannot be found.")
                return (nf.code, nf.message)
            if deprecated:
                e2 = InvalidRequest(f"Can not create new thing with deprecated thing type: {spec.thing_type_name}")
                return (e2.code, e2.message)
        have = dict(st.groups) if st is not None else {}
        adding: list[int] = []
        for name in wanted:
            g = groups.get(name)
            if g is None:
                nf = ResourceNotFound(f"Thing group {name} cannot be found.")
                return (nf.code, nf.message)
            if g.query_string is not None:
                e3 = InvalidRequest(f"Things cannot be added to dynamic thing group {name}.")
                return (e3.code, e3.message)
            if g.id not in have and g.id not in adding:
                adding.append(g.id)
        if not adding:
            return []
        if len(have) + len(adding) > MAX_GROUPS_PER_THING:
            e4 = InvalidRequest(
                f"Thing {spec.thing_name} cannot be in more than {MAX_GROUPS_PER_THING} thing groups "
                f"(it is in {len(have)})."
            )
            return (e4.code, e4.message)
        by_root = {roots[gid]: gid for gid in have}
        names = {g.id: n for n, g in groups.items()} | have
        for gid in adding:
            other = by_root.get(roots[gid])
            if other is not None:
                e5 = InvalidRequest(
                    f"Thing {spec.thing_name} cannot be added to thing group {names[gid]}: it already belongs "
                    f"to thing group {names[other]} of the same hierarchy, and a thing can be in only one group "
                    "of a hierarchy."
                )
                return (e5.code, e5.message)
            by_root[roots[gid]] = gid
        return adding

    async def _write_reports(
        self,
        conn: AsyncConnection,
        task: Any,
        template: ProvisioningTemplate,
        lines: list[_Line],
        outcomes: list[Outcome],
        part: int,
    ) -> tuple[int, int]:
        """The chunk's RESULTS and ERRORS objects, and their rows; (successes, failures)."""
        results: list[bytes] = []
        errors: list[bytes] = []
        logical = template.thing_logical_id
        for line, outcome in zip(lines, outcomes, strict=True):
            ref = str(line.ref)
            if isinstance(outcome, tuple):
                errors.append(fastjson.dumps({"referenceId": ref, "errorCode": outcome[0], "errorMessage": outcome[1]}))
            else:
                arns = {logical: outcome} if outcome is not None else {}
                results.append(fastjson.dumps({"referenceId": ref, "response": {"resourceArns": arns}}))
        bucket = task.input_file_bucket
        for kind, body in (("RESULTS", results), ("ERRORS", errors)):
            if not body:
                continue
            key = report_key(task.task_id, kind, part)
            await asyncio.to_thread(self._put, bucket, key, b"\n".join(body) + b"\n")
            await conn.execute(
                insert(REPORTS).values(
                    task_id=task.task_id, report_type=kind, part=part, bucket=bucket, key=key, lines=len(body)
                )
            )
        return len(results), len(errors)

    def _put(self, bucket: str, key: str, body: bytes) -> None:
        put: Callable[[str, str, bytes], object] | None = getattr(self.store, "put", None)
        if put is None:
            raise ArtifactError("the artifact store cannot store report objects")
        put(bucket, key, body)

    # -- finishing -----------------------------------------------------------------------------------------

    async def _finish(self, task_id: str, status: str, message: str | None) -> None:
        async with self.ctx.db.write() as conn:
            row = (await conn.execute(locked(select(TASKS).where(TASKS.c.task_id == task_id), conn))).first()
            if row is None or row.lease_owner != self.owner or row.status not in RUNNABLE:
                return
            if status == FAILED and row.status == CANCELLING:
                status, message = CANCELLED, None  # stopped meanwhile: what the operator asked for
            await self._set_finished(conn, task_id, status, message, self.ctx.clock.now())

    @staticmethod
    async def _set_finished(conn: AsyncConnection, task_id: str, status: str, message: str | None, now: float) -> None:
        await conn.execute(
            update(TASKS)
            .where(TASKS.c.task_id == task_id)
            .values(
                status=status,
                message=message[:MAX_MESSAGE] if message else None,
                lease_owner=None,
                lease_until=None,
                last_modified_at=now,
            )
        )

    async def _release(self, task_id: str) -> None:
        """Give back the lease of the task being worked on (at shutdown), so another instance, or this
        one restarted, resumes it at once instead of waiting for the lease to run out."""
        try:
            async with self.ctx.db.write() as conn:
                await conn.execute(
                    update(TASKS)
                    .where(TASKS.c.task_id == task_id, TASKS.c.lease_owner == self.owner)
                    .values(lease_owner=None, lease_until=None)
                )
        except Exception:
            log.warning("could not give back the lease of bulk registration task %s", task_id, exc_info=True)


# -- pure helpers ------------------------------------------------------------------------------------------


def take_lines(data: bytes, cursor: int, line_no: int, limit: int) -> tuple[list[tuple[int, bytes]], int, int]:
    """Up to ``limit`` non-blank lines from byte ``cursor`` on: [(line number, line)], the byte offset
    after them, and the number of the line there (blank lines count as lines, but register nothing)."""
    out: list[tuple[int, bytes]] = []
    pos, n = cursor, len(data)
    while pos < n and len(out) < limit:
        nl = data.find(b"\n", pos)
        end = n if nl < 0 else nl + 1
        raw = data[pos:end].strip()
        if raw:
            out.append((line_no, raw))
        line_no += 1
        pos = end
    return out, pos, line_no


def random_uuids(n: int) -> list[str]:
    """``n`` random (version 4) UUIDs, as :func:`uuid.uuid4` makes them, from one read of the OS's
    random source: a million things would otherwise spend seconds in ``uuid4`` alone."""
    raw = bytearray(os.urandom(16 * n))
    for i in range(n):
        raw[16 * i + 6] = (raw[16 * i + 6] & 0x0F) | 0x40  # version 4
        raw[16 * i + 8] = (raw[16 * i + 8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return [
        f"{h[j : j + 8]}-{h[j + 8 : j + 12]}-{h[j + 12 : j + 16]}-{h[j + 16 : j + 20]}-{h[j + 20 : j + 32]}"
        for j in range(0, 32 * n, 32)
    ]


def _model_pattern(meta: dict[str, Any]) -> tuple[re.Pattern[str], int, int]:
    return re.compile(meta.get("pattern", r"[\s\S]*")), int(meta.get("min", 0)), int(meta.get("max", 1 << 30))


def _fits(check: tuple[re.Pattern[str], int, int], value: str) -> bool:
    pattern, low, high = check
    return low <= len(value) <= high and pattern.fullmatch(value) is not None


def _is_outage(e: BaseException) -> bool:
    """Errors that say the database (or the store) is away, not that the task is broken: never give up on those."""
    if isinstance(e, DBAPIError):
        return bool(e.connection_invalidated) or isinstance(e, OperationalError | InterfaceError)
    return isinstance(e, OSError | TimeoutError)


async def _select_in(conn: AsyncConnection, query: Callable[[list[Any]], Any], values: Sequence[Any]) -> list[Any]:
    """``query(batch)`` for the values in batches (one batch on PostgreSQL, where ``among`` binds an array)."""
    size = len(values) if conn.dialect.name == "postgresql" else _IN_BATCH
    rows: list[Any] = []
    for lo in range(0, len(values), max(size, 1)):
        rows.extend(await conn.execute(query(list(values[lo : lo + size]))))
    return rows


_PG_INSERT_THINGS = text(
    "INSERT INTO things (thing_name, thing_id, thing_type_name, attributes, billing_group_name, version, created_at) "
    "SELECT u.n, u.i, u.t, CAST(u.a AS JSON), NULL, 1, CAST(:now AS DOUBLE PRECISION) "
    "FROM unnest(CAST(:names AS VARCHAR[]), CAST(:ids AS VARCHAR[]), CAST(:types AS VARCHAR[]), "
    "CAST(:attrs AS TEXT[])) AS u(n, i, t, a) "
    "RETURNING id, thing_name"
).bindparams(
    bindparam("names", type_=ARRAY(String)),
    bindparam("ids", type_=ARRAY(String)),
    bindparam("types", type_=ARRAY(String)),
    bindparam("attrs", type_=ARRAY(Text)),
)
_PG_INSERT_MEMBERS = text(
    "INSERT INTO thing_group_members (group_id, thing_id) "
    "SELECT * FROM unnest(CAST(:groups AS BIGINT[]), CAST(:things AS BIGINT[]))"
).bindparams(bindparam("groups", type_=ARRAY(BigInteger)), bindparam("things", type_=ARRAY(BigInteger)))


async def _insert_things(conn: AsyncConnection, new: dict[str, _State], now: float) -> dict[str, int]:
    """One multi-row INSERT of the chunk's new things (version 1, as CreateThing writes them); name -> row id.
    A name another writer inserted meanwhile fails the unique constraint, and the chunk runs again."""
    if conn.dialect.name == "postgresql":
        names = list(new)
        result = await conn.execute(
            _PG_INSERT_THINGS,
            {
                "names": names,
                "ids": [new[n].thing_id for n in names],
                "types": [new[n].thing_type_name for n in names],
                "attrs": [json.dumps(new[n].attributes) for n in names],
                "now": now,
            },
        )
    else:
        rows = [
            {
                "thing_name": name,
                "thing_id": st.thing_id,
                "thing_type_name": st.thing_type_name,
                "attributes": st.attributes,
                "billing_group_name": None,
                "version": 1,
                "created_at": now,
            }
            for name, st in new.items()
        ]
        result = await conn.execute(insert(THINGS).returning(THINGS.c.id, THINGS.c.thing_name), rows)
    return {r.thing_name: r.id for r in result}


async def _insert_memberships(conn: AsyncConnection, pairs: list[tuple[int, int | None]]) -> None:
    """One multi-row INSERT of (group id, thing row id) memberships."""
    if conn.dialect.name == "postgresql":
        await conn.execute(_PG_INSERT_MEMBERS, {"groups": [g for g, _ in pairs], "things": [t for _, t in pairs]})
    else:
        await conn.execute(insert(GROUP_MEMBERS), [{"group_id": g, "thing_id": t} for g, t in pairs])


def _executions_of(job_id: str, conn: AsyncConnection) -> Callable[[list[Any]], Any]:
    def query(batch: list[Any]) -> Any:
        return select(EXECUTIONS.c.thing_name, EXECUTIONS.c.execution_number, EXECUTIONS.c.status).where(
            EXECUTIONS.c.job_id == job_id, among(EXECUTIONS.c.thing_name, batch, conn)
        )

    return query


async def _queue_continuous(conn: AsyncConnection, joins: list[tuple[str, int]], now: float) -> None:
    """:func:`continuous.things_joined` for many (thing, group) joins at once: each IN_PROGRESS continuous
    job reached through a joined group queues an execution for each thing that has none pending and
    has not run it (a REMOVED latest execution counts as none), with its counters and device notices."""
    by_group: dict[int, set[str]] = defaultdict(set)
    for name, gid in joins:
        by_group[gid].add(name)
    per_job: dict[str, set[str]] = defaultdict(set)
    for gid, joined in by_group.items():
        for job in await continuous.jobs_reaching(conn, [gid]):
            per_job[job.job_id] |= joined
    for job_id in sorted(per_job):
        names = sorted(per_job[job_id])
        latest: dict[str, tuple[int, str]] = {}
        for r in await _select_in(conn, _executions_of(job_id, conn), names):
            if r.thing_name not in latest or r.execution_number > latest[r.thing_name][0]:
                latest[r.thing_name] = (r.execution_number, r.status)
        fresh = [
            (n, latest[n][0] + 1 if n in latest else 1) for n in names if latest.get(n, (0, REMOVED))[1] == REMOVED
        ]
        if not fresh:
            continue
        fresh_names = [n for n, _ in fresh]
        for lo in range(0, len(fresh_names), _IN_BATCH):
            await conn.execute(
                delete(ROLLOUT_QUEUE).where(
                    ROLLOUT_QUEUE.c.job_id == job_id,
                    among(ROLLOUT_QUEUE.c.thing_name, fresh_names[lo : lo + _IN_BATCH], conn),
                )
            )
        await conn.execute(
            insert(EXECUTIONS),
            [
                {
                    "job_id": job_id,
                    "thing_name": n,
                    "execution_number": number,
                    "status": QUEUED,
                    "queued_at": now,
                    "last_updated_at": now,
                    "version_number": 1,
                    "force_canceled": False,
                    "retry_attempt": 0,
                }
                for n, number in fresh
            ],
        )
        await adjust_counters(conn, job_id, {QUEUED: len(fresh)}, now)
        await notice_things(conn, fresh_names, now, job_id=job_id)


async def _dynamic_groups(conn: AsyncConnection, config: dict[str, Any], thing_ids: list[int], now: float) -> None:
    """:func:`index_sync.thing_changed` for many things at once: each created or moved thing joins the
    dynamic groups whose query it now matches (room permitting: 10 groups a thing) and leaves those it
    no longer matches, with their continuous jobs.  Nothing is read when the index is off or no
    dynamic group exists."""
    if not thing_ids or not things_indexed(config):
        return
    dynamic = (
        await conn.execute(
            select(THING_GROUPS.c.id, THING_GROUPS.c.group_name, THING_GROUPS.c.query_string).where(
                THING_GROUPS.c.query_string.is_not(None)
            )
        )
    ).all()
    if not dynamic:
        return
    view = IndexView(config)
    rows = await _select_in(
        conn, lambda batch: select(*_THING_COLUMNS).where(among(THINGS.c.id, batch, conn)), sorted(thing_ids)
    )
    docs = [ThingDoc(r) for r in rows]
    for lo in range(0, len(docs), _IN_BATCH):
        await fill(conn, docs[lo : lo + _IN_BATCH], view)
    joins: list[tuple[Any, int]] = []
    for doc in docs:
        record = doc.record(view, static_only=True)
        room = MAX_GROUPS_PER_THING - len(doc.group_ids)
        left: list[int] = []
        for g in dynamic:
            wanted = parsed_query(g.query_string).matches(record)
            if wanted and g.id not in doc.group_ids and room > 0:
                joins.append((doc.row, g.id))
                room -= 1
            elif not wanted and g.id in doc.group_ids:
                left.append(g.id)
        if left:
            await conn.execute(
                delete(GROUP_MEMBERS).where(GROUP_MEMBERS.c.thing_id == doc.row.id, GROUP_MEMBERS.c.group_id.in_(left))
            )
            await continuous.things_left(conn, doc.row, left, now)
    if joins:
        await _insert_memberships(conn, [(gid, row.id) for row, gid in joins])
        await _queue_continuous(conn, [(row.thing_name, gid) for row, gid in joins], now)
