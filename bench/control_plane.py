"""Control-plane benchmark (run by hand, not in CI).

Reports, for fleetjobs on SQLite and on PostgreSQL:
  * CreateJob on a group of N things (default 100,000): time until every execution is QUEUED;
  * peak RSS of the server process during the run;
  * DescribeJob and ListJobExecutionsForJob throughput with C concurrent boto3 clients
    (each in its own process, so the client side is not GIL-bound);
and the same throughput script against ``moto_server`` side by side, as a ratio.

moto does not expand thing-group targets, so the throughput comparison uses a job on 100 things
named directly (the most a job may target) on both servers; the fan-out figure is fleetjobs only.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/control_plane.py --things 100000 --clients 8 --seconds 10
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import psutil
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.harness import (
    ACCESS_KEY_ID,
    ACCOUNT,
    REGION,
    SECRET_ACCESS_KEY,
    Server,
    create_pg_database,
    drop_pg_database,
    free_port,
)

DOC = json.dumps({"operation": "install", "version": "1.2.3"})


def client(endpoint: str) -> Any:
    return boto3.client(
        "iot",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        config=Config(retries={"max_attempts": 1}, max_pool_connections=4),
    )


class RssSampler:
    """Peak RSS of a process and its descendants together (``serve``'s worker processes)."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = self.proc.memory_info().rss
            except psutil.Error:
                return
            for child in self.proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    rss += child.memory_info().rss
            self.peak = max(self.peak, rss)
            time.sleep(0.02)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def populate(endpoint: str, prefix: str, n: int, group: str | None, workers: int = 8) -> float:
    started = time.perf_counter()
    local = threading.local()

    def one(i: int) -> None:
        if not hasattr(local, "c"):
            local.c = client(endpoint)
        name = f"{prefix}-{i:06d}"
        local.c.create_thing(thingName=name)
        if group:
            local.c.add_thing_to_thing_group(thingGroupName=group, thingName=name)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(n)))
    return time.perf_counter() - started


def populate_sql(database_url: str, prefix: str, n: int, group: str) -> float:
    """Insert things and memberships straight into the database (the API path is measured separately).

    Thing creation is not what this benchmark is about, and 200,000 signed API calls would take
    most of its time; the rows written are exactly what CreateThing/AddThingToThingGroup write.
    """
    import asyncio
    import uuid

    from sqlalchemy import insert, select

    from fleetjobs.store.database import Database
    from fleetjobs.store.schema import Thing, ThingGroup, ThingGroupMember

    async def run() -> float:
        db = Database(database_url)
        started = time.perf_counter()
        try:
            async with db.write() as conn:
                gid = await conn.scalar(
                    select(ThingGroup.__table__.c.id).where(ThingGroup.__table__.c.group_name == group)
                )
                for lo in range(0, n, 10_000):
                    rows = [
                        {
                            "thing_name": f"{prefix}-{i:06d}",
                            "thing_id": str(uuid.uuid4()),
                            "attributes": {},
                            "version": 1,
                            "created_at": time.time(),
                        }
                        for i in range(lo, min(n, lo + 10_000))
                    ]
                    ids = (
                        (await conn.execute(insert(Thing.__table__).returning(Thing.__table__.c.id), rows))
                        .scalars()
                        .all()
                    )
                    await conn.execute(
                        insert(ThingGroupMember.__table__), [{"group_id": gid, "thing_id": i} for i in ids]
                    )
        finally:
            await db.close()
        return time.perf_counter() - started

    return asyncio.run(run())


def _load_worker(endpoint: str, op: str, job_id: str, seconds: float, out: Any) -> None:
    c = client(endpoint)
    call = (
        (lambda: c.describe_job(jobId=job_id))
        if op == "describe"
        else (lambda: c.list_job_executions_for_job(jobId=job_id, maxResults=100))
    )
    call()  # warm the connection
    n = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        call()
        n += 1
    out.put(n)


def throughput(endpoint: str, op: str, job_id: str, clients: int, seconds: float) -> float:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_load_worker, args=(endpoint, op, job_id, seconds, q)) for _ in range(clients)]
    for p in procs:
        p.start()
    total = sum(q.get() for _ in procs)
    for p in procs:
        p.join()
    return total / seconds


def wrk_rps(endpoint: str, path: str, connections: int, seconds: float) -> float | None:
    """Server capacity with the client cost taken out: one SigV4-signed GET replayed by wrk.

    (A signature stays valid for 15 minutes, so replaying it is legitimate.)  With 8 boto3
    client processes on a 2-core machine, the clients' own CPU caps what any server can show.
    """
    if shutil.which("wrk") is None:
        return None
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="GET", url=endpoint + path, headers={})
    SigV4Auth(Credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY), "iot", REGION).add_auth(request)
    args = ["wrk", "-t2", f"-c{connections}", f"-d{max(1, int(seconds))}s"]
    for k, v in request.headers.items():
        args += ["-H", f"{k}: {v}"]
    out = subprocess.run([*args, endpoint + path], capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    return float(next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec")))


def throughput_pair(endpoint: str, prefix: str, clients: int, seconds: float) -> dict[str, float]:
    populate(endpoint, f"{prefix}-tp", 100, None)
    c = client(endpoint)
    job_id = f"{prefix}-tpjob"
    c.create_job(
        jobId=job_id,
        targets=[f"arn:aws:iot:{REGION}:{ACCOUNT}:thing/{prefix}-tp-{i:06d}" for i in range(100)],
        document=DOC,
    )
    figures = {
        "describe_job_rps": throughput(endpoint, "describe", job_id, clients, seconds),
        "list_executions_rps": throughput(endpoint, "list", job_id, clients, seconds),
    }
    describe_wrk = wrk_rps(endpoint, f"/jobs/{job_id}", clients, seconds)
    if describe_wrk is not None:
        figures["describe_job_wrk_rps"] = describe_wrk
        figures["list_executions_wrk_rps"] = wrk_rps(
            endpoint, f"/jobs/{job_id}/things?maxResults=100", clients, seconds
        )
    return figures


def bench_fleetjobs(kind: str, things: int, clients: int, seconds: float) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"fjbench-{kind}-"))
    db_url = create_pg_database() if kind == "postgres" else None
    server = Server(data_dir=tmp, database_url=db_url).start()
    try:
        assert server.proc is not None
        with RssSampler(server.proc.pid) as rss:
            c = client(server.endpoint)
            c.create_thing_group(thingGroupName="bench")
            populate_url = server.database_url or f"sqlite:///{tmp / 'fleetjobs.db'}"
            populate_s = populate_sql(populate_url, "bench", things, "bench")
            t0 = time.perf_counter()
            c.create_job(jobId="big", targets=[f"arn:aws:iot:{REGION}:{ACCOUNT}:thinggroup/bench"], document=DOC)
            create_s = time.perf_counter() - t0
            queued = c.describe_job(jobId="big")["job"]["jobProcessDetails"]["numberOfQueuedThings"]
            all_queued_s = time.perf_counter() - t0
            assert queued == things, (queued, things)
            tp = throughput_pair(server.endpoint, "tp", clients, seconds)
        return {
            "backend": kind,
            "things": things,
            "populate_seconds": round(populate_s, 1),
            "create_job_seconds": round(create_s, 3),
            "all_queued_seconds": round(all_queued_s, 3),
            "server_peak_rss_mb": round(rss.peak / 2**20, 1),
            **{k: round(v, 1) for k, v in tp.items()},
        }
    finally:
        server.stop()
        if db_url:
            drop_pg_database(db_url)
        shutil.rmtree(tmp, ignore_errors=True)


def bench_moto(clients: int, seconds: float) -> dict[str, Any]:
    port = free_port()
    exe = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    proc = subprocess.Popen([exe, "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        tp = throughput_pair(endpoint, "tp", clients, seconds)
        return {"backend": "moto_server", **{k: round(v, 1) for k, v in tp.items()}}
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--things", type=int, default=100_000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--no-moto", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("FLEETJOBS_LOG_LEVEL", "warning")
    results = [bench_fleetjobs(k, args.things, args.clients, args.seconds) for k in args.backends.split(",")]
    if not args.no_moto:
        moto = bench_moto(args.clients, args.seconds)
        results.append(moto)
        for r in results[:-1]:
            r["describe_vs_moto"] = round(r["describe_job_rps"] / max(moto["describe_job_rps"], 1e-9), 1)
            r["list_vs_moto"] = round(r["list_executions_rps"] / max(moto["list_executions_rps"], 1e-9), 1)
            if "describe_job_wrk_rps" in r and "describe_job_wrk_rps" in moto:
                r["describe_wrk_vs_moto"] = round(r["describe_job_wrk_rps"] / moto["describe_job_wrk_rps"], 1)
                r["list_wrk_vs_moto"] = round(r["list_executions_wrk_rps"] / moto["list_executions_wrk_rps"], 1)
    for r in results:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
