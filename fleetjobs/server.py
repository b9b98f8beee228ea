"""Wires settings, database, services and the HTTP app together, and runs them."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
from dataclasses import dataclass
from typing import Any

import uvicorn

from fleetjobs.api.app import AwsApi, bind_handlers, json_response, read_body
from fleetjobs.artifacts import ArtifactStore, open_store
from fleetjobs.clock import Clock, ManualClock, SystemClock
from fleetjobs.config import AccessKey, Settings, resolve_access_key
from fleetjobs.domain.arns import Partition
from fleetjobs.mqtt.embedded_broker import EmbeddedBroker
from fleetjobs.mqtt.gateway import MqttGateway, TlsFiles
from fleetjobs.mqtt.job_events import JobEventsPublisher
from fleetjobs.service.context import ServiceContext
from fleetjobs.service.device_jobs import DeviceJobs
from fleetjobs.service.event_configurations import EventConfigurations
from fleetjobs.service.executions import Executions
from fleetjobs.service.fleet_index import FleetIndex
from fleetjobs.service.groups import ThingGroups
from fleetjobs.service.jobs import Jobs
from fleetjobs.service.packages import Packages
from fleetjobs.service.pending_notices import NoticeDrain
from fleetjobs.service.rollout import RolloutEngine
from fleetjobs.service.shadows import Shadows
from fleetjobs.service.templates import JobTemplates
from fleetjobs.service.things import Things
from fleetjobs.service.throttle import ThingThrottle
from fleetjobs.store.database import Database, sqlite_url

log = logging.getLogger("fleetjobs")


@dataclass
class Services:
    things: Things
    groups: ThingGroups
    jobs: Jobs
    executions: Executions
    templates: JobTemplates
    device_jobs: DeviceJobs
    event_configurations: EventConfigurations
    rollout: RolloutEngine
    packages: Packages
    shadows: Shadows
    fleet_index: FleetIndex

    @classmethod
    def create(
        cls, ctx: ServiceContext, throttle: ThingThrottle | None = None, store: ArtifactStore | None = None
    ) -> Services:
        templates = JobTemplates(ctx)
        executions = Executions(ctx)
        rollout = RolloutEngine(ctx)
        return cls(
            Things(ctx),
            ThingGroups(ctx),
            Jobs(ctx, templates, rollout, store),
            executions,
            templates,
            DeviceJobs(ctx, executions, throttle, store),
            EventConfigurations(ctx),
            rollout,
            Packages(ctx),
            Shadows(ctx),
            FleetIndex(ctx),
        )

    def control_plane(self) -> list[object]:
        return [
            self.things,
            self.groups,
            self.jobs,
            self.executions,
            self.templates,
            self.event_configurations,
            self.packages,
            self.fleet_index,
        ]


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
        self.tasks.append(asyncio.create_task(self.services.jobs.run_purger()))
        self.tasks.append(asyncio.create_task(self.services.rollout.run()))
        self.tasks.append(asyncio.create_task(self._forget_old_device_requests()))
        if self.broker is not None:
            await self.broker.start()
        if self.gateway is not None:
            self.tasks.append(asyncio.create_task(self.gateway.run()))
            drain = NoticeDrain(self.services.device_jobs.ctx, self.services.device_jobs)
            self.tasks.append(asyncio.create_task(self.gateway.run_notices(drain)))

    async def _forget_old_device_requests(self, keep: float = 3600.0, every: float = 60.0) -> None:
        """Redelivery happens within seconds of a restart; an hour of remembered answers is plenty."""
        while True:
            try:
                await self.services.device_jobs.forget_requests(self.services.device_jobs.ctx.clock.now() - keep)
            except Exception:
                log.exception("forgetting old device requests failed; will retry")
            await asyncio.sleep(every)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.gateway is not None:
            await self.gateway.close()
        if self.broker is not None:
            await self.broker.stop()
        await self.db.close()


def embedded_broker(settings: Settings) -> EmbeddedBroker | None:
    if settings.mqtt_url or not settings.embedded_broker:
        return None
    if settings.mqtt_tls:
        ca_file, (cert_file, key_file) = _embedded_tls(settings, "server")
        return EmbeddedBroker(
            settings.mqtt_host, settings.mqtt_port, ca_file=ca_file, cert_file=cert_file, key_file=key_file
        )
    return EmbeddedBroker(settings.mqtt_host, settings.mqtt_port)


def mqtt_gateway(settings: Settings, services: Services, clock: Clock) -> MqttGateway | None:
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
        client_id=settings.mqtt_client_id,
        tls=tls,
        shared_group=settings.mqtt_shared_group,
    )
    ctx = services.device_jobs.ctx
    ctx.events.subscribe_domain(gateway.on_domain_events)
    ctx.events.subscribe_domain(JobEventsPublisher(ctx.db, ctx.partition, clock, gateway.publish, gateway.spawn))
    return gateway


def _gateway_host(settings: Settings) -> str:
    return "127.0.0.1" if settings.mqtt_host in ("0.0.0.0", "::", "") else settings.mqtt_host


def _embedded_tls(settings: Settings, which: str) -> tuple[str, tuple[str, str]]:
    """The CA file and the broker's ("server") or the gateway's ("service") certificate and key for --mqtt-tls.

    Both come from the CA in DATA_DIR/certs (``fleetjobs certs init``) and are the files ``fleetjobs certs
    server`` / ``certs service`` write; one that is missing, not from that CA, about to expire, or (the server
    certificate) not valid for the address the gateway connects to is issued now, under a lock so that instances
    starting together on one data dir never pair one's key with another's certificate.
    """
    import fcntl
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization

    from fleetjobs.security import certs

    cdir = certs.certs_dir(settings.data_dir)
    ca = certs.load_ca(cdir)  # CertificateError "run 'fleetjobs certs init' first" when there is none
    stem = certs.SERVER_NAME if which == "server" else certs.SERVICE_IDENTITY
    cert_path, key_path = cdir / f"{stem}.pem", cdir / f"{stem}.key"
    gateway_host = _gateway_host(settings)
    with open(cdir / ".issue.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sans: list[str] = []
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            cert.verify_directly_issued_by(ca.cert)
            fresh = cert.not_valid_after_utc > datetime.now(UTC) + timedelta(days=1)
            valid = fresh and key.public_key() == cert.public_key()
            if which == "server":
                try:
                    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                    sans = [*names.get_values_for_type(x509.DNSName)]
                    sans += [str(a) for a in names.get_values_for_type(x509.IPAddress)]
                except x509.ExtensionNotFound:
                    pass
                valid = valid and gateway_host in sans
        except (OSError, ValueError, TypeError, InvalidSignature):
            valid = False
        if not valid:
            if which == "server":
                # Whatever names it had (e.g. from 'fleetjobs certs server --host'), plus loopback and mqtt_host.
                wanted = [*sans, "localhost", "127.0.0.1", gateway_host]
                if settings.mqtt_host in ("0.0.0.0", "::", ""):
                    import socket

                    wanted.append(socket.getfqdn())
                certs.issue_server_cert(ca, cdir, hosts=list(dict.fromkeys(h for h in wanted if h)))
            else:
                certs.issue_service_cert(ca, cdir)
            log.info("issued %s for the embedded broker's TLS", cert_path)
    return str(ca.cert_path), (str(cert_path), str(key_path))


def database_url(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return sqlite_url(settings.data_dir)


def build(settings: Settings, key: AccessKey, clock: Clock | None = None) -> tuple[AwsApi, Database, Services]:
    manual = ManualClock(settings.manual_clock) if settings.manual_clock is not None else None
    clock = clock or manual or SystemClock()
    db = Database(database_url(settings))
    ctx = ServiceContext(db=db, clock=clock, partition=Partition(settings.region, settings.account_id))
    rate = settings.device_requests_per_second
    services = Services.create(ctx, ThingThrottle(rate, 2 * rate), open_store(settings))
    db.on_events = ctx.events.dispatch  # committed domain events reach their listeners
    credentials = {key.access_key_id: key.secret_access_key}

    async def health(scope, receive, send):  # type: ignore[no-untyped-def]
        await json_response(send, 200, {"status": "ok"})

    background = Background(db, services, mqtt_gateway(settings, services, clock), embedded_broker(settings))
    app = AwsApi(
        handlers={
            "iot": bind_handlers("iot", services.control_plane()),
            "iot-jobs-data": bind_handlers("iot-jobs-data", [services.device_jobs]),
            "iot-data": bind_handlers("iot-data", [services.shadows]),
        },
        credentials=lambda: credentials,
        # Signatures are checked against wall time: clients sign with theirs, whatever the domain clock says.
        clock=SystemClock() if manual is not None else clock,
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
    from fleetjobs.artifacts import ROUTE_PREFIX
    from fleetjobs.artifacts.local import LocalStore
    from fleetjobs.artifacts.route import artifact_route

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


def banner(settings: Settings, key: AccessKey, db: Database) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    endpoint = f"http://{host}:{settings.port}"
    lines = [
        "fleetjobs is running",
        f"  control plane (iot) and device HTTPS API (iot-jobs-data): {endpoint}",
        f"  database: {db.dialect} ({'data dir ' + str(settings.data_dir) if db.is_sqlite else 'external'})",
        f"  region {settings.region}, account {settings.account_id}",
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


class _Server(uvicorn.Server):
    """Prints the banner only once the port is bound and migrations have run."""

    def __init__(self, config: uvicorn.Config, banner_text: str) -> None:
        super().__init__(config)
        self._banner = banner_text

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit:
            print(self._banner, flush=True)


def serve(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Migration chatter at every start says nothing an operator needs.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("amqtt").setLevel(logging.ERROR)
    # The banner says where the embedded broker listens; its own start-up line would only precede it.
    logging.getLogger("fleetjobs.mqtt.embedded_broker").setLevel(logging.WARNING)
    logging.getLogger("transitions").setLevel(logging.WARNING)
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
    server = _Server(config, banner(settings, key, db))
    server.run()
    if not server.started:
        sys.exit(1)
