"""Bulk registration benchmark (run by hand, not in CI).

Registers N things (default 10,000) into one thing group against a PostgreSQL-backed
``fleetjobs serve`` two ways, and prints one JSON line per way with the seconds it took and the
things per second:

  * ``task``: one StartThingRegistrationTask over an N-line input file in the artifact store, timed
    from the call until DescribeThingRegistrationTask says Completed (the file's upload is not timed);
  * ``api``: CreateThing + AddThingToThingGroup per thing from C boto3 client processes (default 8),
    what a script without bulk registration does.

Afterwards the group's memberships are counted in the database, so a figure is only printed for
work that was really done.

    .venv/bin/python bench/registration.py                       # 10,000 things, both ways
    .venv/bin/python bench/registration.py --things 1000000 --paths task
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fleetjobs.artifacts.local import LocalStore
from tests.harness import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, Server, create_pg_database, drop_pg_database

ROLE = "arn:aws:iam::123456789012:role/bench-registration"
TEMPLATE = {
    "Parameters": {"ThingName": {"Type": "String"}, "Serial": {"Type": "String"}},
    "Resources": {
        "thing": {
            "Type": "AWS::IoT::Thing",
            "Properties": {
                "ThingName": {"Ref": "ThingName"},
                "AttributePayload": {"serial": {"Ref": "Serial"}},
                "ThingGroups": ["bench-task"],
            },
        }
    },
}


def client(endpoint: str) -> Any:
    return boto3.client(
        "iot",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        config=Config(retries={"max_attempts": 3}, max_pool_connections=4),
    )


def members(database_url: str, group: str) -> int:
    """Memberships of ``group``, counted in the database (listing a million things over the API would
    take longer than registering them)."""
    import asyncpg

    async def count() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM thing_group_members m JOIN thing_groups g ON g.id = m.group_id "
                    "WHERE g.group_name = $1",
                    group,
                )
            )
        finally:
            await conn.close()

    return asyncio.run(count())


def bench_task(server: Server, n: int) -> dict[str, Any]:
    c = client(server.endpoint)
    c.create_thing_group(thingGroupName="bench-task")
    body = "".join(json.dumps({"ThingName": f"task-{i:07d}", "Serial": str(i)}) + "\n" for i in range(n)).encode()
    t0 = time.perf_counter()
    LocalStore(server.data_dir, server.endpoint).put("bench-inputs", "things.json", body)
    upload_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    task_id = c.start_thing_registration_task(
        templateBody=json.dumps(TEMPLATE), inputFileBucket="bench-inputs", inputFileKey="things.json", roleArn=ROLE
    )["taskId"]
    while (task := c.describe_thing_registration_task(taskId=task_id))["status"] == "InProgress":
        time.sleep(0.1)
    seconds = time.perf_counter() - t0
    assert task["status"] == "Completed" and task["successCount"] == n, task
    assert server.database_url is not None
    assert members(server.database_url, "bench-task") == n
    return {
        "path": "task",
        "things": n,
        "seconds": round(seconds, 2),
        "things_per_second": round(n / seconds),
        "input_mb": round(len(body) / 2**20, 1),
        "upload_seconds": round(upload_s, 2),
    }


def _api_worker(endpoint: str, lo: int, hi: int, go: Any, done: Any) -> None:
    c = client(endpoint)
    c.list_things(maxResults=1)  # connection up before the clock starts
    go.wait()
    for i in range(lo, hi):
        name = f"api-{i:07d}"
        c.create_thing(thingName=name, attributePayload={"attributes": {"serial": str(i)}})
        c.add_thing_to_thing_group(thingGroupName="bench-api", thingName=name)
    done.put(hi - lo)


def bench_api(server: Server, n: int, clients: int) -> dict[str, Any]:
    client(server.endpoint).create_thing_group(thingGroupName="bench-api")
    ctx = mp.get_context("spawn")
    go, done = ctx.Event(), ctx.Queue()
    bounds = [(n * k // clients, n * (k + 1) // clients) for k in range(clients)]
    procs = [ctx.Process(target=_api_worker, args=(server.endpoint, lo, hi, go, done)) for lo, hi in bounds]
    for p in procs:
        p.start()
    time.sleep(3.0)  # every client process imported boto3 and connected
    t0 = time.perf_counter()
    go.set()
    total = sum(done.get() for _ in procs)
    seconds = time.perf_counter() - t0
    for p in procs:
        p.join()
    assert total == n
    assert server.database_url is not None
    assert members(server.database_url, "bench-api") == n
    return {
        "path": "api",
        "clients": clients,
        "things": n,
        "seconds": round(seconds, 2),
        "things_per_second": round(n / seconds),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--things", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=8, help="boto3 client processes of the api path")
    ap.add_argument("--paths", default="task,api", help="task, api, or both (comma-separated)")
    ap.add_argument("--workers", default="auto", help="fleetjobs serve --workers (auto: one per core)")
    args = ap.parse_args()
    os.environ.setdefault("FLEETJOBS_LOG_LEVEL", "warning")
    for path in args.paths.split(","):
        tmp = Path(tempfile.mkdtemp(prefix="fjbench-registration-"))
        db_url = create_pg_database()
        server = Server(data_dir=tmp, database_url=db_url, env={"FLEETJOBS_WORKERS": args.workers}).start()
        try:
            result = bench_task(server, args.things) if path == "task" else bench_api(server, args.things, args.clients)
            print(json.dumps({"backend": "postgres", "workers": args.workers, **result}), flush=True)
        finally:
            server.stop()
            drop_pg_database(db_url)
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
