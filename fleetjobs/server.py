"""Wires settings, database, services and the HTTP app together, and runs them."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvicorn

from fleetjobs.api.app import AwsApi, bind_handlers, json_response, read_body
from fleetjobs.artifacts import ROUTE_PREFIX, ArtifactStore, open_store
from fleetjobs.artifacts.local import LocalStore
from fleetjobs.artifacts.route import artifact_route
from fleetjobs.clock import Clock, ManualClock, SystemClock
from fleetjobs.config import AccessKey, Settings, resolve_access_key
from fleetjobs.domain.arns import Partition
from fleetjobs.mqtt.embedded_broker import EmbeddedBroker
from fleetjobs.mqtt.gateway import MqttGateway, TlsFiles
from fleetjobs.mqtt.job_events import JobEventsPublisher
from fleetjobs.security import issuance
from fleetjobs.service.context import ServiceContext
from fleetjobs.service.device_jobs import DeviceJobs
from fleetjobs.service.endpoints import EndpointAddresses, Endpoints
from fleetjobs.service.event_configurations import EventConfigurations
from fleetjobs.service.executions import Executions
from fleetjobs.service.fleet_index import FleetIndex
from fleetjobs.service.groups import ThingGroups
from fleetjobs.service.jobs import Jobs
from fleetjobs.service.loops.notice_drain import NoticeDrain
from fleetjobs.service.loops.purger import JobPurger
from fleetjobs.service.loops.registration_runner import RegistrationRunner
from fleetjobs.service.loops.request_log import RequestLog
from fleetjobs.service.loops.rollout_engine import RolloutEngine
from fleetjobs.service.packages import Packages
from fleetjobs.service.registration_tasks import ThingRegistrationTasks
from fleetjobs.service.shadows import Shadows
from fleetjobs.service.tags import Tags
from fleetjobs.service.templates import JobTemplates
from fleetjobs.service.things import Things
from fleetjobs.service.throttle import ThingThrottle
from fleetjobs.store.database import Database, sqlite_url

log = logging.getLogger("fleetjobs")

# The façades that answer each AWS service's operations (a method per operation, named after it).
FACADES: dict[str, tuple[type, ...]] = {
    "iot": (
        Things,
        ThingGroups,
        Jobs,
        Executions,
        JobTemplates,
        EventConfigurations,
        Packages,
        FleetIndex,
        Tags,
        Endpoints,
        ThingRegistrationTasks,
    ),
    "iot-jobs-data": (DeviceJobs,),
    "iot-data": (Shadows,),
}


@dataclass
class Services:
    things: Things
    groups: ThingGroups
    jobs: Jobs
    executions: Executions
    templates: JobTemplates
    device_jobs: DeviceJobs
    event_configurations: EventConfigurations
    packages: Packages
    shadows: Shadows
    fleet_index: FleetIndex
    tags: Tags
    endpoints: Endpoints
    registration_tasks: ThingRegistrationTasks
    # background loops
    rollout: RolloutEngine
    purger: JobPurger
    request_log: RequestLog
    registration_runner: RegistrationRunner

    @classmethod
    def create(
        cls,
        ctx: ServiceContext,
        throttle: ThingThrottle | None = None,
        store: ArtifactStore | None = None,
        endpoints: EndpointAddresses | None = None,
    ) -> Services:
        return cls(
            things=Things(ctx),
            groups=ThingGroups(ctx),
            jobs=Jobs(ctx, store),
            executions=Executions(ctx),
            templates=JobTemplates(ctx),
            device_jobs=DeviceJobs(ctx, throttle, store),
            event_configurations=EventConfigurations(ctx),
            packages=Packages(ctx),
            shadows=Shadows(ctx),
            fleet_index=FleetIndex(ctx),
            tags=Tags(ctx),
            endpoints=Endpoints(ctx, endpoints),
            registration_tasks=ThingRegistrationTasks(ctx, store),
            rollout=RolloutEngine(ctx),
            purger=JobPurger(ctx),
            request_log=RequestLog(ctx),
            registration_runner=RegistrationRunner(ctx, store),
        )

    def facades(self, service: str) -> list[object]:
        """This instance's façade objects for ``service``, in :data:`FACADES` order."""
        mine = [getattr(self, f.name) for f in dataclasses.fields(self)]
        return [next(o for o in mine if type(o) is cls) for cls in FACADES[service]]


@dataclass(frozen=True)
class WorkerRole:
    """Which of ``serve``'s worker processes this is.  Worker 0 runs the embedded broker and reads the
    device requests (every worker does in a shared group); the others connect to the same broker to
    publish, under client ids of their own."""

    index: int = 0
    count: int = 1

    def client_id(self, base: str) -> str:
        return base if self.index == 0 else f"{base}-w{self.index}"


class Background:
    """Migrations at start, then the server's background loops (job deletion sweeps)."""

    def __init__(
        self,
        db: Database,
        services: Services,
        gateway: MqttGateway | None = None,
        broker: EmbeddedBroker | None = None,
    ) -> None:
        self.db = db
        self.services = services
        self.gateway = gateway
        self.broker = broker
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.db.migrate()
        self.tasks.append(asyncio.create_task(self.services.purger.run()))
        self.tasks.append(asyncio.create_task(self.services.rollout.run()))
        self.tasks.append(asyncio.create_task(self.services.request_log.run()))
        self.tasks.append(asyncio.create_task(self.services.registration_runner.run()))
        if self.broker is not None:
            await self.broker.start()
        if self.gateway is not None:
            self.tasks.append(asyncio.create_task(self.gateway.run()))
            drain = NoticeDrain(self.services.device_jobs.ctx, self.services.device_jobs.views)
            self.tasks.append(asyncio.create_task(self.gateway.run_notices(drain)))

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.gateway is not None:
            await self.gateway.close()
        if self.broker is not None:
            await self.broker.stop()
        await self.db.close()


def embedded_broker(settings: Settings, role: WorkerRole = WorkerRole()) -> EmbeddedBroker | None:
    if settings.mqtt_url or not settings.embedded_broker or role.index != 0:
        return None
    if settings.mqtt_tls:
        ca_file, (cert_file, key_file) = _embedded_tls(settings, "server")
        return EmbeddedBroker(
            settings.mqtt_host, settings.mqtt_port, ca_file=ca_file, cert_file=cert_file, key_file=key_file
        )
    return EmbeddedBroker(settings.mqtt_host, settings.mqtt_port)


def mqtt_gateway(
    settings: Settings, services: Services, clock: Clock, role: WorkerRole = WorkerRole()
) -> MqttGateway | None:
    url = settings.mqtt_url
    tls = None
    if not url and settings.embedded_broker:
        # The broker listens on mqtt_host; a wildcard address is reached on loopback.
        host = _gateway_host(settings)
        hostport = f"[{host}]:{settings.mqtt_port}" if ":" in host else f"{host}:{settings.mqtt_port}"
        if settings.mqtt_tls:
            url = f"mqtts://{hostport}"
            ca_file, (cert_file, key_file) = _embedded_tls(settings, "service")
            tls = TlsFiles(ca_file, cert_file, key_file)
        else:
            url = f"mqtt://{hostport}"
    if not url:
        return None
    if tls is None and settings.mqtt_cert_file and settings.mqtt_key_file and settings.mqtt_ca_file:
        tls = TlsFiles(settings.mqtt_ca_file, settings.mqtt_cert_file, settings.mqtt_key_file)
    gateway = MqttGateway(
        url,
        services.device_jobs,
        clock,
        client_id=role.client_id(settings.mqtt_client_id),
        tls=tls,
        shared_group=settings.mqtt_shared_group,
        subscribe=role.index == 0 or settings.mqtt_shared_group is not None,
    )
    ctx = services.device_jobs.ctx
    ctx.events.subscribe_domain(gateway.on_domain_events)
    publisher = JobEventsPublisher(
        services.jobs, services.event_configurations, ctx.partition, clock, gateway.publish, gateway.spawn
    )
    ctx.events.subscribe_domain(publisher)
    return gateway


def _gateway_host(settings: Settings) -> str:
    return "127.0.0.1" if settings.mqtt_host in ("0.0.0.0", "::", "") else settings.mqtt_host


def _embedded_tls(settings: Settings, which: str) -> tuple[str, tuple[str, str]]:
    """The CA file and the embedded broker's ("server") or the gateway's ("service") certificate and key."""
    return issuance.ensure_certificate(
        settings.data_dir, which, gateway_host=_gateway_host(settings), listen_host=settings.mqtt_host
    )


def database_url(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return sqlite_url(settings.data_dir)


def build(
    settings: Settings, key: AccessKey, clock: Clock | None = None, role: WorkerRole = WorkerRole()
) -> tuple[AwsApi, Database, Services]:
    manual = ManualClock(settings.manual_clock) if settings.manual_clock is not None else None
    clock = clock or manual or SystemClock()
    db = Database(database_url(settings))
    ctx = ServiceContext(db=db, clock=clock, partition=Partition(settings.region, settings.account_id))
    rate = settings.device_requests_per_second
    services = Services.create(
        ctx, ThingThrottle(rate, 2 * rate), open_store(settings), EndpointAddresses.from_settings(settings)
    )
    db.on_events = ctx.events.dispatch  # committed domain events reach their listeners
    credentials = {key.access_key_id: key.secret_access_key}

    async def health(scope, receive, send):  # type: ignore[no-untyped-def]
        # ok only while the database answers and would take a write (checked at most once a second):
        # a load balancer must not send traffic to an instance that can only fail its writes.
        problem = await db.health()
        if problem is None:
            await json_response(send, 200, {"status": "ok", "database": db.dialect})
        else:
            await json_response(send, 503, {"status": "unavailable", "database": db.dialect, "reason": problem})

    background = Background(
        db, services, mqtt_gateway(settings, services, clock, role), embedded_broker(settings, role)
    )
    app = AwsApi(
        handlers={service: bind_handlers(service, services.facades(service)) for service in FACADES},
        credentials=lambda: credentials,
        # Signatures are checked against wall time: clients sign with theirs, whatever the domain clock says.
        clock=SystemClock() if manual is not None else clock,
        region=settings.region,
        extra_routes={
            "/_fleetjobs/health": health,
            **({"/_fleetjobs/clock": clock_route(manual, services.rollout)} if manual is not None else {}),
            **artifact_routes(settings),
        },
        on_startup=background.start,
        on_shutdown=background.stop,
    )
    return app, db, services


def artifact_routes(settings: Settings) -> dict[str, Any]:
    """The local artifact store's download route (signed URLs); an S3 store's URLs point at S3."""
    if settings.artifact_store != "local":
        return {}
    return {ROUTE_PREFIX: artifact_route(LocalStore.from_settings(settings))}


def clock_route(clock: ManualClock, rollout: RolloutEngine) -> Any:
    """``--manual-clock`` only (tests, demos): ``POST {"advance": seconds}`` or ``{"set": epoch}``
    moves time, then does all the rollout work now due before answering, so a caller that moves
    time step by step sees every step's effects."""

    async def route(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["method"] == "POST":
            try:
                body = json.loads(await read_body(receive) or b"{}")
                if "set" in body:
                    clock.set(float(body["set"]))
                else:
                    clock.advance(float(body.get("advance", 0)))
            except (ValueError, TypeError, AttributeError) as e:
                await json_response(send, 400, {"message": f"bad clock request: {e}"})
                return
            done = await rollout.tick()
            await json_response(send, 200, {"now": clock.now(), "done": done})
            return
        await json_response(send, 200, {"now": clock.now()})

    return route


def banner(settings: Settings, key: AccessKey, db: Database, workers: int = 1) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    endpoint = f"http://{host}:{settings.port}"
    lines = [
        "fleetjobs is running",
        f"  control plane (iot) and device HTTPS API (iot-jobs-data): {endpoint}",
        f"  database: {db.dialect} ({'data dir ' + str(settings.data_dir) if db.is_sqlite else 'external'})",
        f"  region {settings.region}, account {settings.account_id}",
        *([f"  {workers} worker processes share the HTTP port and the device traffic"] if workers > 1 else []),
        "  devices (MQTT, AWS IoT Jobs topics): "
        + (
            f"external broker {settings.mqtt_url}"
            if settings.mqtt_url
            else f"embedded broker mqtts://{settings.mqtt_host}:{settings.mqtt_port} (MQTT 3.1.1, TLS with client "
            f"certificates of the CA in {settings.data_dir / 'certs'}, per-thing ACL)"
            if settings.embedded_broker and settings.mqtt_tls
            else f"embedded broker mqtt://{settings.mqtt_host}:{settings.mqtt_port} (MQTT 3.1.1, no TLS: loopback use)"
            if settings.embedded_broker
            else "off"
        ),
    ]
    # The secret is printed only when it was just made: a configured one is the operator's to keep.
    secret = key.secret_access_key if key.generated else "<your secret access key>"
    if key.generated:
        lines.append(f"  generated an access key (kept in {settings.data_dir / 'credentials.json'}):")
        lines += [f"  access key id: {key.access_key_id}", f"  secret access key: {secret}"]
    else:
        lines.append(f"  access key id: {key.access_key_id} (configured)")
    lines += [
        "",
        "boto3:",
        "  import boto3",
        f"  iot = boto3.client('iot', endpoint_url='{endpoint}', region_name='{settings.region}',",
        f"                     aws_access_key_id='{key.access_key_id}',",
        f"                     aws_secret_access_key='{secret}')",
        "  iot.create_thing(thingName='my-device')",
        "",
        "AWS CLI:",
        f"  AWS_ACCESS_KEY_ID={key.access_key_id} AWS_SECRET_ACCESS_KEY={secret} \\",
        f"    aws iot list-things --endpoint-url {endpoint} --region {settings.region}",
    ]
    return "\n".join(lines)


class StartedServer(uvicorn.Server):
    """Calls ``on_started`` (the banner, a worker's "ready") only once the port is bound and
    migrations have run."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit:
            self._on_started()


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Migration chatter at every start says nothing an operator needs.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("amqtt").setLevel(logging.ERROR)
    # The banner says where the embedded broker listens; its own start-up line would only precede it.
    logging.getLogger("fleetjobs.mqtt.embedded_broker").setLevel(logging.WARNING)
    logging.getLogger("transitions").setLevel(logging.WARNING)


def uvicorn_config(settings: Settings, app: AwsApi) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        log_level=settings.log_level.lower() if settings.log_level.lower() != "info" else "warning",
        access_log=False,
    )


def serve(settings: Settings) -> None:
    """One process (``workers = 1``); :mod:`fleetjobs.supervisor` runs several."""
    configure_logging(settings)
    key = resolve_access_key(settings)
    app, db, _ = build(settings, key)
    text = banner(settings, key, db)
    server = StartedServer(uvicorn_config(settings, app), lambda: print(text, flush=True))
    server.run()
    if not server.started:
        sys.exit(1)
