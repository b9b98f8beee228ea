"""Wires settings, database, services and the HTTP app together, and runs them."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

import uvicorn

from fleetjobs.api.app import AwsApi, bind_handlers, json_response
from fleetjobs.clock import Clock, SystemClock
from fleetjobs.config import AccessKey, Settings, resolve_access_key
from fleetjobs.domain.arns import Partition
from fleetjobs.service.context import ServiceContext
from fleetjobs.service.executions import Executions
from fleetjobs.service.groups import ThingGroups
from fleetjobs.service.jobs import Jobs
from fleetjobs.service.templates import JobTemplates
from fleetjobs.service.things import Things
from fleetjobs.store.database import Database, sqlite_url

log = logging.getLogger("fleetjobs")


@dataclass
class Services:
    things: Things
    groups: ThingGroups
    jobs: Jobs
    executions: Executions
    templates: JobTemplates

    @classmethod
    def create(cls, ctx: ServiceContext) -> Services:
        return cls(Things(ctx), ThingGroups(ctx), Jobs(ctx), Executions(ctx), JobTemplates(ctx))

    def control_plane(self) -> list[object]:
        return [self.things, self.groups, self.jobs, self.executions, self.templates]


def database_url(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return sqlite_url(settings.data_dir)


def build(settings: Settings, key: AccessKey, clock: Clock | None = None) -> tuple[AwsApi, Database, Services]:
    clock = clock or SystemClock()
    db = Database(database_url(settings))
    ctx = ServiceContext(db=db, clock=clock, partition=Partition(settings.region, settings.account_id))
    services = Services.create(ctx)
    credentials = {key.access_key_id: key.secret_access_key}

    async def health(scope, receive, send):  # type: ignore[no-untyped-def]
        await json_response(send, 200, {"status": "ok"})

    app = AwsApi(
        handlers={"iot": bind_handlers("iot", services.control_plane())},
        credentials=lambda: credentials,
        clock=clock,
        extra_routes={"/_fleetjobs/health": health},
        on_startup=db.migrate,
        on_shutdown=db.close,
    )
    return app, db, services


def banner(settings: Settings, key: AccessKey, db: Database) -> str:
    endpoint = f"http://{settings.host}:{settings.port}"
    lines = [
        "fleetjobs is running",
        f"  control plane (iot) and device HTTPS API (iot-jobs-data): {endpoint}",
        f"  database: {db.dialect} ({'data dir ' + str(settings.data_dir) if db.is_sqlite else 'external'})",
        f"  region {settings.region}, account {settings.account_id}",
    ]
    if key.generated:
        lines.append(f"  generated an access key (kept in {settings.data_dir / 'credentials.json'}):")
    lines += [
        f"  access key id: {key.access_key_id}",
        f"  secret access key: {key.secret_access_key}",
        "",
        "boto3:",
        "  import boto3",
        f"  iot = boto3.client('iot', endpoint_url='{endpoint}', region_name='{settings.region}',",
        f"                     aws_access_key_id='{key.access_key_id}',",
        f"                     aws_secret_access_key='{key.secret_access_key}')",
        "  iot.create_thing(thingName='my-device')",
        "",
        "AWS CLI:",
        f"  AWS_ACCESS_KEY_ID={key.access_key_id} AWS_SECRET_ACCESS_KEY={key.secret_access_key} \\",
        f"    aws iot list-things --endpoint-url {endpoint} --region {settings.region}",
    ]
    return "\n".join(lines)


def serve(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    key = resolve_access_key(settings)
    app, db, _ = build(settings, key)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        log_level=settings.log_level.lower() if settings.log_level.lower() != "info" else "warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    print(banner(settings, key, db), flush=True)
    server.run()
    if not server.started:
        sys.exit(1)
