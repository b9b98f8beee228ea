"""Rollout-engine benchmark (run by hand, real clock, not in CI).

Measures, against one ``fleetjobs serve`` (PostgreSQL by default):

* release rate: a job with ``maximumPerMinute`` R on a group of R * seconds / 60 things; the
  number of executions released is sampled every second, and the rate is the slope between the
  first and last samples of the steady part (first 2 s skipped), against the configured one;
* the highest rate sustained: the same with a rate no machine reaches (``--max-rate``);
* timer lateness: ``--timers`` executions put IN_PROGRESS with deadlines spread over 10 s
  (written with SQL, as if devices had started them); for each, the moment the engine marked it
  TIMED_OUT minus its deadline; p50 / p99 / max;
* cancel time: CancelJob on a job of ``--cancel-things`` QUEUED executions, until DescribeJob
  counts them all CANCELED.

    .venv/bin/python bench/rollout.py                        # PostgreSQL, rates 1000,10000,60000
    .venv/bin/python bench/rollout.py --backend sqlite --rates 1000,60000 --seconds 20

One JSON line per measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.control_plane import DOC, RssSampler, client, populate_sql
from tests.harness import ACCOUNT, REGION, Server, create_pg_database, drop_pg_database


def group_arn(name: str) -> str:
    return f"arn:aws:iot:{REGION}:{ACCOUNT}:thinggroup/{name}"


def released(c: Any, job_id: str) -> int:
    d = c.describe_job(jobId=job_id)["job"]["jobProcessDetails"]
    return sum(v for k, v in d.items() if k.startswith("numberOf"))


def measure_rate(c: Any, db_url: str, rate: int, seconds: float, tag: str) -> dict[str, Any]:
    things = max(50, int(rate * seconds / 60) + 1)
    c.create_thing_group(thingGroupName=tag)
    populate_sql(db_url, tag, things, tag)
    job_id = f"rate-{tag}"
    t0 = time.monotonic()
    c.create_job(
        jobId=job_id, targets=[group_arn(tag)], document=DOC, jobExecutionsRolloutConfig={"maximumPerMinute": rate}
    )
    samples: list[tuple[float, int]] = []
    while True:
        n = released(c, job_id)
        samples.append((time.monotonic() - t0, n))
        if n >= things or samples[-1][0] > seconds * 3 + 30:
            break
        time.sleep(1.0)
    steady = [s for s in samples if s[0] >= 2.0 and s[1] < things] or samples
    (ta, na), (tb, nb) = steady[0], steady[-1]
    measured = (nb - na) / (tb - ta) * 60 if tb > ta else float("nan")
    return {
        "measure": "release_rate",
        "configured_per_minute": rate,
        "measured_per_minute": round(measured, 1),
        "error_percent": round(100 * (measured - rate) / rate, 2),
        "things": things,
        "seconds_to_release_all": round(samples[-1][0], 1),
    }


def measure_timers(db_url: str, c: Any, n: int) -> dict[str, Any]:
    """Deadlines from now+5 s spread over 10 s; lateness = TIMED_OUT time - deadline."""
    from sqlalchemy import bindparam, select, update

    from fleetjobs.store.database import Database
    from fleetjobs.store.schema import JobExecution

    c.create_thing_group(thingGroupName="timers")
    populate_sql(db_url, "timers", n, "timers")
    c.create_job(jobId="timers", targets=[group_arn("timers")], document=DOC)
    e = JobExecution.__table__

    async def arm() -> dict[int, float]:
        db = Database(db_url)
        try:
            async with db.write() as conn:
                ids = list((await conn.execute(select(e.c.id).where(e.c.job_id == "timers"))).scalars())
                # Armed well ahead of the first deadline: the bench must not be what makes a timer late.
                base = time.time() + 15
                deadlines = {i: base + 10.0 * k / len(ids) for k, i in enumerate(ids)}
                await conn.execute(
                    update(e)
                    .where(e.c.id == bindparam("row_id"))
                    .values(
                        status="IN_PROGRESS",
                        started_at=base - 15,
                        step_deadline=bindparam("d"),
                        timeout_at=bindparam("d"),
                    ),
                    [{"row_id": i, "d": d} for i, d in deadlines.items()],
                )
            # The counters follow the rows (what a device's start-next would have done).
            from fleetjobs.store.schema import Job

            j = Job.__table__
            async with db.write() as conn:
                await conn.execute(update(j).where(j.c.job_id == "timers").values(n_queued=0, n_in_progress=len(ids)))
            if time.time() >= base:
                raise RuntimeError("arming the timers took longer than the margin before the first deadline")
            return deadlines
        finally:
            await db.close()

    async def collect() -> list[float]:
        db = Database(db_url)
        try:
            async with db.read() as conn:
                rows = (
                    await conn.execute(select(e.c.id, e.c.last_updated_at, e.c.status).where(e.c.job_id == "timers"))
                ).all()
            return rows
        finally:
            await db.close()

    deadlines = asyncio.run(arm())
    deadline_end = max(deadlines.values())
    while time.time() < deadline_end + 5:
        time.sleep(0.5)
    while c.describe_job(jobId="timers")["job"]["jobProcessDetails"]["numberOfTimedOutThings"] < n:
        time.sleep(0.5)
    rows = asyncio.run(collect())
    late = sorted(r.last_updated_at - deadlines[r.id] for r in rows)
    return {
        "measure": "timer_lateness",
        "timers": n,
        "p50_seconds": round(statistics.median(late), 3),
        "p99_seconds": round(late[int(0.99 * (len(late) - 1))], 3),
        "max_seconds": round(late[-1], 3),
        "early": sum(1 for x in late if x < 0),
    }


def measure_cancel(c: Any, db_url: str, n: int) -> dict[str, Any]:
    c.create_thing_group(thingGroupName="cancel")
    populate_sql(db_url, "cancel", n, "cancel")
    c.create_job(jobId="cancel", targets=[group_arn("cancel")], document=DOC)
    t0 = time.perf_counter()
    c.cancel_job(jobId="cancel")
    call = time.perf_counter() - t0
    while c.describe_job(jobId="cancel")["job"]["jobProcessDetails"]["numberOfCanceledThings"] < n:
        time.sleep(0.05)
    return {
        "measure": "cancel",
        "executions": n,
        "cancel_call_seconds": round(call, 3),
        "all_canceled_seconds": round(time.perf_counter() - t0, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="postgres", choices=("postgres", "sqlite"))
    ap.add_argument("--rates", default="1000,10000,60000")
    ap.add_argument("--seconds", type=float, default=30.0, help="rollout length per measured rate")
    ap.add_argument("--max-rate", type=int, default=1_000_000)
    ap.add_argument("--timers", type=int, default=10_000)
    ap.add_argument("--cancel-things", type=int, default=100_000)
    args = ap.parse_args()
    os.environ.setdefault("FLEETJOBS_LOG_LEVEL", "warning")
    tmp = Path(tempfile.mkdtemp(prefix="fjbench-rollout-"))
    db_url = create_pg_database() if args.backend == "postgres" else None
    server = Server(data_dir=tmp, database_url=db_url).start()
    sql_url = db_url or f"sqlite:///{tmp / 'fleetjobs.db'}"
    try:
        assert server.proc is not None
        c = client(server.endpoint)
        with RssSampler(server.proc.pid) as rss:
            for i, rate in enumerate(int(r) for r in args.rates.split(",") if r):
                print(json.dumps({"backend": args.backend, **measure_rate(c, sql_url, rate, args.seconds, f"r{i}")}))
            if args.max_rate:
                top = measure_rate(c, sql_url, args.max_rate, args.seconds, "top")
                top["measure"] = "highest_rate_sustained"
                print(json.dumps({"backend": args.backend, **top}))
            if args.timers:
                print(json.dumps({"backend": args.backend, **measure_timers(sql_url, c, args.timers)}))
            if args.cancel_things:
                print(json.dumps({"backend": args.backend, **measure_cancel(c, sql_url, args.cancel_things)}))
        print(
            json.dumps({"backend": args.backend, "measure": "server_peak_rss_mb", "value": round(rss.peak / 2**20, 1)})
        )
    finally:
        server.stop()
        if db_url:
            drop_pg_database(db_url)


if __name__ == "__main__":
    main()
