"""Document and search benchmark (run by hand, not in CI).

* Resolution cost per device request: what a delivery adds to a start-next / describe / notify-next
  when the document carries presigned-URL placeholders (``delivery_document``: find them, sign a
  URL for each), with the local store (HMAC) and the S3 store (boto3 SigV4 presigning, computed
  locally), for documents with 0, 1 and 4 placeholders; and the CreateJob-time substitution of
  package placeholders.  In-process, microseconds per call.
* SearchIndex latency on ``--things`` things (PostgreSQL by default): things with attributes and a
  ``$package`` named shadow are written with SQL, indexing is switched on through boto3, and each
  query's first page (maxResults 100) is timed through boto3, median of ``--repeat``.

    .venv/bin/python bench/documents.py --things 100000
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
from bench.control_plane import client
from tests.harness import Server, create_pg_database, drop_pg_database

URL = "${aws:iot:s3-presigned-url:https://s3.amazonaws.com/fleetjobs/firmware/pump-%d.bin}"


def per_call_us(fn: Any, n: int = 5000) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6


def resolution_costs() -> list[dict[str, Any]]:
    from fleetjobs.artifacts.local import LocalStore
    from fleetjobs.artifacts.s3 import S3Store
    from fleetjobs.domain.placeholders import substitute_at_creation
    from fleetjobs.service.effects.job_documents import delivery_document

    tmp = Path(tempfile.mkdtemp(prefix="fjbench-docs-"))
    stores = {
        "local": LocalStore(tmp, "http://127.0.0.1:8090", secret="bench-secret"),
        "s3": S3Store(
            endpoint_url="http://127.0.0.1:9000", region="us-east-1", access_key_id="a", secret_access_key="b"
        ),
    }
    config = {"presignedUrlConfig": {"roleArn": "arn:aws:iam::1:role/r", "expiresInSec": 300}}
    out = []
    for placeholders in (0, 1, 4):
        doc = json.dumps({"operation": "install", "files": [URL % i for i in range(placeholders)], "notes": "x" * 2000})
        for name, store in stores.items():
            out.append(
                {
                    "measure": "delivery_document_us",
                    "store": name,
                    "placeholders": placeholders,
                    "value": round(per_call_us(lambda d=doc, s=store: delivery_document(d, config, s)), 1),
                }
            )
    attrs = {"status": "PUBLISHED", "attributes": {"url": URL % 0, "signature": "A" * 96}, "artifact": None}
    doc = json.dumps(
        {
            "url": "${aws:iot:package:pump:version:2.0:attributes:url}",
            "sig": "${aws:iot:package:pump:version:2.0:attributes:signature}",
            "all": "${aws:iot:package:pump:version:2.0:attributes}",
        }
    )
    out.append(
        {
            "measure": "creation_substitution_us",
            "placeholders": 3,
            "value": round(per_call_us(lambda: substitute_at_creation(doc, packages=lambda p, v: attrs)), 1),
        }
    )
    return out


def populate(db_url: str, n: int) -> None:
    from sqlalchemy import insert

    from fleetjobs.store.database import Database
    from fleetjobs.store.schema import Shadow, Thing

    async def run() -> None:
        db = Database(db_url)
        try:
            now = time.time()
            for lo in range(0, n, 10_000):
                things, shadows = [], []
                for i in range(lo, min(n, lo + 10_000)):
                    name = f"pump-{i:06d}"
                    things.append(
                        {
                            "thing_name": name,
                            "thing_id": f"id-{i}",
                            "attributes": {"model": f"m{i % 20}", "site": f"s{i % 97}"},
                            "version": 1,
                            "created_at": now,
                        }
                    )
                    version = "1.0" if i % 10 else "2.0"
                    shadows.append(
                        {
                            "thing_name": name,
                            "shadow_name": "$package",
                            "state": {"reported": {"pump": {"version": version}}},
                            "meta": {},
                            "version": 1,
                            "updated_at": now,
                        }
                    )
                async with db.write() as conn:
                    await conn.execute(insert(Thing.__table__), things)
                    await conn.execute(insert(Shadow.__table__), shadows)
        finally:
            await db.close()

    asyncio.run(run())


def search_latency(backend: str, n: int, repeat: int) -> list[dict[str, Any]]:
    tmp = Path(tempfile.mkdtemp(prefix="fjbench-search-"))
    db_url = create_pg_database() if backend == "postgres" else None
    server = Server(data_dir=tmp, database_url=db_url).start()
    try:
        c = client(server.endpoint)
        populate(db_url or f"sqlite:///{tmp / 'fleetjobs.db'}", n)
        c.update_indexing_configuration(
            thingIndexingConfiguration={
                "thingIndexingMode": "REGISTRY_AND_SHADOW",
                "namedShadowIndexingMode": "ON",
                "filter": {"namedShadowNames": ["$package"]},
            }
        )
        out = []
        for query in (
            "thingName:pump-00012*",
            "attributes.model:m7 AND attributes.site:s3",
            "shadow.name.$package.reported.pump.version:2.0",
            "attributes.model:m1* AND NOT shadow.name.$package.reported.pump.version:1.0",
        ):
            times = []
            for _ in range(repeat):
                t = time.perf_counter()
                page = c.search_index(queryString=query, maxResults=100)
                times.append(time.perf_counter() - t)
            out.append(
                {
                    "measure": "search_index_first_page_s",
                    "backend": backend,
                    "things": n,
                    "query": query,
                    "results_on_page": len(page["things"]),
                    "median": round(statistics.median(times), 3),
                    "max": round(max(times), 3),
                }
            )
        return out
    finally:
        server.stop()
        if db_url:
            drop_pg_database(db_url)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--things", type=int, default=100_000)
    ap.add_argument("--backend", default="postgres", choices=("postgres", "sqlite"))
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    os.environ.setdefault("FLEETJOBS_LOG_LEVEL", "warning")
    for row in resolution_costs():
        print(json.dumps(row))
    for row in search_latency(args.backend, args.things, args.repeat):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
