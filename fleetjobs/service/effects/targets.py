"""Job targets: resolving ARNs, and fan-out of executions as one set-based INSERT..SELECT.

A job on a 100,000-thing group must be created in bounded memory and in seconds, so the
service never loads things into Python: the database walks the group tree (nested groups
count) with a recursive CTE and inserts one QUEUED execution per distinct thing, in target
order, in the same statement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetjobs.domain.arns import Partition, parse_arn
from fleetjobs.domain.errors import InvalidRequest, ResourceNotFound
from fleetjobs.store.tables import THING_GROUPS, THINGS


@dataclass(frozen=True)
class ResolvedTarget:
    arn: str
    kind: str  # "thing" | "thinggroup"
    name: str
    row_id: int
    group_id: str | None = None  # the group's public id, for ListJobs' thingGroupId filter


async def resolve_targets(conn: AsyncConnection, partition: Partition, arns: list[str]) -> list[ResolvedTarget]:
    resolved: list[ResolvedTarget] = []
    for arn in arns:
        parsed = parse_arn(arn)
        if not partition.owns(parsed):
            raise InvalidRequest(
                f"Target {arn} is not in this account and region ({partition.account}, {partition.region})"
            )
        if parsed.resource_type == "thing":
            row = (await conn.execute(select(THINGS.c.id).where(THINGS.c.thing_name == parsed.resource_id))).first()
            if row is None:
                raise ResourceNotFound(f"Thing {parsed.resource_id} cannot be found.")
            resolved.append(ResolvedTarget(arn, "thing", parsed.resource_id, row.id))
        elif parsed.resource_type == "thinggroup":
            row = (
                await conn.execute(
                    select(THING_GROUPS.c.id, THING_GROUPS.c.group_id).where(
                        THING_GROUPS.c.group_name == parsed.resource_id
                    )
                )
            ).first()
            if row is None:
                raise ResourceNotFound(f"Thing group {parsed.resource_id} cannot be found.")
            resolved.append(ResolvedTarget(arn, "thinggroup", parsed.resource_id, row.id, row.group_id))
        else:
            raise InvalidRequest(f"Target {arn} must be a thing or a thing group ARN")
    return resolved


def _target_roots(targets: list[ResolvedTarget], params: dict[str, Any]) -> tuple[str, str]:
    """SQL selecting (group_id, ord) for group targets and (thing_id, ord, 0) for thing targets."""
    groups, things = [], []
    for i, t in enumerate(targets):
        params[f"r{i}"] = t.row_id
        params[f"o{i}"] = i
        if t.kind == "thinggroup":
            groups.append(f"SELECT CAST(:r{i} AS BIGINT) AS group_id, CAST(:o{i} AS INTEGER) AS ord")
        else:
            things.append(f"SELECT CAST(:r{i} AS BIGINT) AS thing_id, CAST(:o{i} AS INTEGER) AS ord, 0 AS mid")
    group_sql = " UNION ALL ".join(groups) if groups else "SELECT CAST(NULL AS BIGINT) AS group_id, 0 AS ord WHERE 1=0"
    thing_sql = " UNION ALL ".join(things) if things else "SELECT CAST(NULL AS BIGINT), 0, 0 WHERE 1=0"
    return group_sql, thing_sql


async def fan_out(
    conn: AsyncConnection,
    job_id: str,
    targets: list[ResolvedTarget],
    now: float,
    *,
    skip_existing: bool = False,
    into_queue: bool = False,
) -> int:
    """Create one QUEUED execution per distinct thing reached by ``targets``; returns how many.

    With ``skip_existing`` (continuous jobs gaining targets) things that already have an
    execution of this job are left alone.  With ``into_queue`` the things go, in the same order,
    to the job's rollout queue instead, for the rollout engine to release at its rate.
    """
    if not targets:
        return 0
    params: dict[str, Any] = {"job_id": job_id, "now": now}
    group_sql, thing_sql = _target_roots(targets, params)
    existing = (
        "AND NOT EXISTS (SELECT 1 FROM job_executions x "
        "WHERE x.job_id = CAST(:job_id AS VARCHAR(64)) AND x.thing_name = t.thing_name)"
        if skip_existing
        else ""
    )
    if into_queue:
        params.pop("now")
        insert = (
            "INSERT INTO rollout_queue (job_id, thing_name) "
            "SELECT CAST(:job_id AS VARCHAR(64)), thing_name FROM reached ORDER BY ord, mid"
        )
    else:
        insert = """INSERT INTO job_executions
          (job_id, thing_name, execution_number, status, queued_at, last_updated_at,
           version_number, force_canceled, retry_attempt)
        SELECT CAST(:job_id AS VARCHAR(64)), thing_name, 1, 'QUEUED',
               CAST(:now AS DOUBLE PRECISION), CAST(:now AS DOUBLE PRECISION), 1, false, 0
        FROM reached ORDER BY ord, mid"""
    sql = f"""
        WITH RECURSIVE
          roots(group_id, ord) AS ({group_sql}),
          tree(group_id, ord) AS (
            SELECT group_id, ord FROM roots
            UNION ALL
            SELECT g.id, tree.ord FROM thing_groups g JOIN tree ON g.parent_id = tree.group_id
          ),
          candidates(thing_id, ord, mid) AS (
            SELECT m.thing_id, tree.ord, m.id FROM thing_group_members m JOIN tree ON m.group_id = tree.group_id
            UNION ALL
            {thing_sql}
          ),
          reached(thing_name, ord, mid) AS (
            SELECT t.thing_name, MIN(c.ord), MIN(c.mid)
            FROM candidates c JOIN things t ON t.id = c.thing_id
            WHERE 1=1 {existing}
            GROUP BY t.thing_name
          )
        {insert}
    """
    result = await conn.execute(text(sql), params)
    if conn.dialect.name == "sqlite":
        # Python's sqlite3 reports no rowcount for a statement that starts with WITH.
        return int(await conn.scalar(text("SELECT changes()")) or 0)
    return int(result.rowcount or 0)
