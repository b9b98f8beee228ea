"""N virtual devices taking jobs through the AWS IoT Jobs MQTT API.

Each device is one MQTT client (aiomqtt) subscribed to its ``notify-next`` and to the answers of its
own requests. On a notification (and once on connecting) it asks ``start-next``; with an execution
in hand it "works" (sleeps a random time), reports ``IN_PROGRESS`` with its progress halfway, then
``SUCCEEDED``, or ``FAILED`` / ``REJECTED`` at the configured rates, and asks ``start-next`` again
until nothing is pending. Some devices drop off the network mid-job and come back later to finish
it; ``latency_ms`` delays every message both ways. Each device is a
:class:`fleetjobs.device.jobs_session.JobsSession`: the agent's topics, clientTokens and retry
contract (no answer, ``RequestThrottled``, ``InternalError``: the same bytes again after a backoff),
with the fleet's counters summed in one Counter per process.

Many devices in one event loop; with ``processes > 1`` they are spread over that many processes,
which report their counters to the parent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from fleetjobs.device.jobs_session import (
    Backoff,
    Connected,
    ConnectFailed,
    Disconnected,
    JobExecution,
    JobsSession,
    NextNotification,
    Rejected,
    RetryPolicy,
    SessionConfig,
    SessionEvent,
)

TERMINAL_JOB = frozenset({"COMPLETED", "CANCELED", "DELETION_IN_PROGRESS"})
COUNTERS = (
    "requests",
    "accepted",
    "throttled",
    "internal_errors",
    "other_rejections",
    "timeouts",
    "retries",
    "gave_up",
    "notifications",
    "executions_started",
    "succeeded",
    "failed",
    "rejected",
    "abandoned",
    "offline_events",
    "reconnects",
    "connect_errors",
)
STATES = ("connecting", "idle", "queued", "in_progress", "offline", "down")


@dataclass
class FleetConfig:
    """What the fleet is and how its devices behave (the options of ``fleetjobs simulate``)."""

    devices: int = 10
    prefix: str = "sim"
    group: str | None = "simulated"
    # Registration (the control plane, through boto3).
    register: bool = True
    endpoint_url: str = "http://127.0.0.1:8090"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    data_dir: str | None = None
    region: str | None = None
    register_threads: int = 16
    # The device plane.
    mqtt_url: str = "mqtt://127.0.0.1:1884"
    mqtt_ca_file: str | None = None
    connect_concurrency: int = 50
    keepalive: int = 300
    # Behaviour.
    work_seconds: float = 2.0
    work_distribution: str = "exponential"  # or "uniform" (0 .. 2 x mean)
    failure_rate: float = 0.0
    reject_rate: float = 0.0
    offline_rate: float = 0.0
    offline_seconds: float = 5.0  # mean time offline (uniform 0.5x .. 1.5x)
    latency_ms: float = 0.0
    request_timeout: float = 30.0
    max_retries: int = 10
    seed: int | None = None
    # When to stop (also: the ``stop`` event of run_fleet, Ctrl-C in the CLI).
    duration: float | None = None
    until_idle: bool = False
    idle_seconds: float = 3.0
    watch_job: str | None = None
    # Scale and display.
    processes: int = 1
    display: str = "none"  # "rich", "text", "auto" or "none"
    interval: float = 1.0

    def work_time(self, rng: random.Random) -> float:
        mean = max(self.work_seconds, 0.0)
        if mean == 0:
            return 0.0
        if self.work_distribution == "uniform":
            return rng.uniform(0, 2 * mean)
        return rng.expovariate(1 / mean)


@dataclass
class FleetSummary:
    devices: int
    registered: int
    connected: int
    elapsed_seconds: float
    stopped_by: str
    executions_started: int = 0
    succeeded: int = 0
    failed: int = 0
    rejected: int = 0
    abandoned: int = 0  # executions the device dropped: canceled, timed out or removed under it
    requests: int = 0
    requests_per_second: float = 0.0
    peak_requests_per_second: float = 0.0
    throttled: int = 0
    internal_errors: int = 0
    other_rejections: int = 0
    timeouts: int = 0
    retries: int = 0
    gave_up: int = 0
    notifications: int = 0
    offline_events: int = 0
    reconnects: int = 0
    connect_errors: int = 0
    job: dict[str, Any] | None = None  # DescribeJob of watch_job at the end
    per_job: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def thing_names(config: FleetConfig) -> list[str]:
    width = max(5, len(str(config.devices)))
    return [f"{config.prefix}-{i:0{width}d}" for i in range(1, config.devices + 1)]


# -- registration --------------------------------------------------------------------------------------------


def resolve_credentials(config: FleetConfig) -> tuple[str, str]:
    """The key pair: the config, else the environment, else the server's DATA_DIR/credentials.json."""
    if config.access_key_id and config.secret_access_key:
        return config.access_key_id, config.secret_access_key
    for k, s in (
        ("FLEETJOBS_ACCESS_KEY_ID", "FLEETJOBS_SECRET_ACCESS_KEY"),
        ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
    ):
        if os.environ.get(k) and os.environ.get(s):
            return os.environ[k], os.environ[s]
    from fleetjobs.config import default_data_dir

    data_dir = Path(config.data_dir or os.environ.get("FLEETJOBS_DATA_DIR") or default_data_dir()).expanduser()
    path = data_dir / "credentials.json"
    try:
        doc = json.loads(path.read_text())
        return doc["accessKeyId"], doc["secretAccessKey"]
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(
            f"no access key: give --access-key-id/--secret-access-key, set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            f"or --data-dir of the server ({path}: {e})"
        ) from None


def iot_client(config: FleetConfig) -> Any:
    import boto3
    from botocore.config import Config

    key, secret = resolve_credentials(config)
    return boto3.client(
        "iot",
        endpoint_url=config.endpoint_url,
        region_name=config.region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(
            retries={"max_attempts": 8, "mode": "standard"}, max_pool_connections=max(10, config.register_threads)
        ),
    )


def register_fleet(config: FleetConfig, client: Any = None) -> int:
    """CreateThing for every device (and AddThingToThingGroup into ``config.group``, created if missing).

    Idempotent: things and memberships that already exist are fine. Returns the number of things."""
    iot = client or iot_client(config)

    def exists(e: Exception) -> bool:
        return getattr(e, "response", {}).get("Error", {}).get("Code") == "ResourceAlreadyExistsException"

    if config.group:
        try:
            iot.create_thing_group(thingGroupName=config.group)
        except Exception as e:
            if not exists(e):
                raise

    def one(name: str) -> None:
        try:
            iot.create_thing(thingName=name)
        except Exception as e:
            if not exists(e):
                raise
        if config.group:
            iot.add_thing_to_thing_group(thingGroupName=config.group, thingName=name)

    names = thing_names(config)
    with ThreadPoolExecutor(max(1, config.register_threads)) as pool:
        for _ in pool.map(one, names):
            pass
    return len(names)


# -- one device -------------------------------------------------------------------------------------------------


class RequestRejected(Exception):
    """A rejection the device cannot work around: its execution was canceled, timed out or removed."""

    def __init__(self, rejection: Rejected) -> None:
        super().__init__(f"{rejection.code}: {rejection.message}")
        self.rejection = rejection


class Device:
    def __init__(self, pool: DevicePool, thing: str, rng: random.Random) -> None:
        self.pool = pool
        self.config = pool.config
        self.stats = pool.stats
        self.thing = thing
        self.rng = rng
        self.state = "connecting"
        self.wake = asyncio.Event()
        c = self.config
        backoff = Backoff(0.2, 5.0, jitter=0.5)
        self.session = JobsSession(
            SessionConfig(
                thing_name=thing,
                mqtt_url=c.mqtt_url,
                ca_file=c.mqtt_ca_file,
                keepalive=c.keepalive,
                tcp_nodelay=True,
                retry=RetryPolicy(c.request_timeout, c.max_retries + 1, backoff),
                connect_attempts=8,
                reconnect_attempts=8,
                connect_backoff=backoff,
                latency=c.latency_ms / 1000,
                requests=frozenset({"start-next", "update"}),  # fewer subscriptions: 10,000 devices on one broker
                buffer=0,  # notifications are taken through _on_event
            ),
            stats=pool.stats,
            rng=rng,
            on_event=self._on_event,
            connect_gate=pool.connect_gate,
        )

    @property
    def online(self) -> bool:
        return self.session.connected

    def _on_event(self, event: SessionEvent) -> None:
        if isinstance(event, NextNotification):
            if event.execution:
                if self.state == "idle" and event.execution.get("status") == "QUEUED":
                    self.state = "queued"
                self.wake.set()
        elif isinstance(event, Connected) and event.after_drop:
            self.wake.set()  # what was notified while the connection was down is lost: ask
        elif isinstance(event, Disconnected) and event.error is not None and not event.reconnecting:
            self.state = "down"  # the session gave up reconnecting

    async def connect(self) -> None:
        try:
            await self.session.connect()
        except ConnectFailed:
            self.state = "down"
            raise

    # requests

    async def start_next(self, details: dict[str, str] | None = None) -> JobExecution | None:
        result = await self.session.start_next(status_details=details)
        if isinstance(result, Rejected):
            raise RequestRejected(result)
        return result.answer.get("execution")

    async def update(self, job_id: str, status: str, details: dict[str, str]) -> None:
        result = await self.session.update(job_id, status, status_details=details)
        if isinstance(result, Rejected):
            raise RequestRejected(result)

    # the device's life

    async def run(self) -> None:
        try:
            await self.connect()
        except ConnectFailed:
            return
        self.state = "idle"
        self.wake.set()  # a device looks for work when it comes up, not only when notified
        while True:
            await self.wake.wait()
            self.wake.clear()
            try:
                await self.drain()
            except Exception:  # gave up, a rejected start-next: wait for the next nudge
                if self.state != "down" and self.pool.running:
                    await asyncio.sleep(1.0)
                    self.wake.set()
            if self.state != "down":
                self.state = "idle"

    async def drain(self) -> None:
        while True:
            execution = await self.start_next({"step": "starting"})
            if not execution:
                self.state = "idle"
                return
            await self.execute(execution)

    async def execute(self, execution: JobExecution) -> None:
        job_id = execution["jobId"]
        self.state = "in_progress"
        self.stats["executions_started"] += 1
        per_job = self.pool.per_job.setdefault(job_id, Counter())
        per_job["started"] += 1
        outcome = "abandoned"
        try:
            if self.rng.random() < self.config.reject_rate:
                await self.update(job_id, "REJECTED", {"reason": "simulated: cannot run this document"})
                outcome = "rejected"
                return
            work = self.config.work_time(self.rng)
            await asyncio.sleep(work / 2)
            await self.update(job_id, "IN_PROGRESS", {"step": "working", "progress": "50%"})
            if self.rng.random() < self.config.offline_rate:
                if not await self.go_offline(job_id):
                    return
            await asyncio.sleep(work / 2)
            if self.rng.random() < self.config.failure_rate:
                await self.update(job_id, "FAILED", {"reason": "simulated failure", "progress": "100%"})
                outcome = "failed"
            else:
                await self.update(job_id, "SUCCEEDED", {"step": "done", "progress": "100%"})
                outcome = "succeeded"
        except RequestRejected:  # canceled, timed out or removed under us (InvalidStateTransition, ...)
            outcome = "abandoned"
        finally:
            self.stats[outcome] += 1
            per_job[outcome] += 1
            self.state = "idle"

    async def go_offline(self, job_id: str) -> bool:
        """Drop off the network mid-job, come back later; True if the execution is still ours."""
        self.stats["offline_events"] += 1
        self.state = "offline"
        await self.session.disconnect()
        await asyncio.sleep(self.config.offline_seconds * self.rng.uniform(0.5, 1.5))
        await self.connect()  # counted in "reconnects"
        self.state = "in_progress"
        execution = await self.start_next()
        return execution is not None and execution.get("jobId") == job_id


# -- a pool of devices in one event loop ------------------------------------------------------------------------


class DevicePool:
    def __init__(self, config: FleetConfig, names: list[str]) -> None:
        self.config = config
        if not config.mqtt_url.startswith(("mqtt://", "mqtts://")):
            raise ValueError(f"--mqtt-url must be mqtt://host:port or mqtts://host:port, not {config.mqtt_url!r}")
        self.stats: Counter[str] = Counter()
        self.per_job: dict[str, Counter[str]] = {}
        self.running = True
        self.connect_gate = asyncio.Semaphore(max(1, config.connect_concurrency))
        seed = config.seed if config.seed is not None else random.randrange(2**32)
        self.devices = [Device(self, name, random.Random(f"{seed}:{name}")) for name in names]
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.tasks = [asyncio.create_task(d.run()) for d in self.devices]

    def snapshot(self) -> dict[str, Any]:
        states = Counter(d.state for d in self.devices)
        snap: dict[str, Any] = {k: self.stats[k] for k in COUNTERS}
        snap.update({f"state_{s}": states[s] for s in STATES})
        snap["connected"] = sum(1 for d in self.devices if d.online)
        snap["busy"] = states["queued"] + states["in_progress"] + states["offline"]
        snap["per_job"] = {j: dict(c) for j, c in self.per_job.items()}
        return snap

    async def close(self) -> None:
        self.running = False
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        gate = asyncio.Semaphore(200)

        async def down(d: Device) -> None:
            async with gate:
                await d.session.close()

        await asyncio.gather(*(down(d) for d in self.devices), return_exceptions=True)


def merge(snaps: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = Counter()
    per_job: dict[str, Counter[str]] = {}
    for s in snaps:
        for k, v in s.items():
            if k == "per_job":
                for j, c in v.items():
                    per_job.setdefault(j, Counter()).update(c)
            else:
                out[k] += v
    result = dict(out)
    result["per_job"] = {j: dict(c) for j, c in per_job.items()}
    return result


# -- several processes ------------------------------------------------------------------------------------------


def _worker(config: FleetConfig, names: list[str], wid: int, out: Any, stop: Any) -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()

    async def main() -> None:
        pool = DevicePool(config, names)
        pool.start()
        while not stop.is_set():
            out.put((wid, pool.snapshot(), False))
            await asyncio.sleep(config.interval / 2)
        await pool.close()
        out.put((wid, pool.snapshot(), True))

    asyncio.run(main())


class _ProcessFleet:
    def __init__(self, config: FleetConfig, names: list[str]) -> None:
        ctx = mp.get_context("spawn")
        self.out = ctx.Queue()
        self.stop = ctx.Event()
        n = max(1, config.processes)
        self.latest: dict[int, dict[str, Any]] = {}
        self.final: set[int] = set()
        slices = [names[k::n] for k in range(n)]
        child = replace(config, display="none")
        self.procs = [
            ctx.Process(target=_worker, args=(child, s, k, self.out, self.stop), daemon=True)
            for k, s in enumerate(slices)
        ]
        for p in self.procs:
            p.start()

    def _drain(self) -> None:
        import queue

        while True:
            try:
                wid, snap, final = self.out.get_nowait()
            except queue.Empty:
                return
            self.latest[wid] = snap
            if final:
                self.final.add(wid)

    def snapshot(self) -> dict[str, Any]:
        self._drain()
        return merge(list(self.latest.values()))

    async def close(self) -> None:
        self.stop.set()
        deadline = time.monotonic() + 60
        while len(self.final) < len(self.procs) and time.monotonic() < deadline:
            self._drain()
            if all(not p.is_alive() for p in self.procs):
                self._drain()
                break
            await asyncio.sleep(0.1)
        for p in self.procs:
            await asyncio.to_thread(p.join, 10)
            if p.is_alive():
                p.kill()


# -- the fleet ---------------------------------------------------------------------------------------------------


async def run_fleet(config: FleetConfig, stop: asyncio.Event | None = None) -> FleetSummary:
    """Register (unless ``config.register`` is false), connect and run the fleet until ``config.duration``
    elapses, ``config.until_idle`` finds it idle (after at least one job), or ``stop`` is set."""
    from fleetjobs.simulate.view import make_display

    stop = stop or asyncio.Event()
    names = thing_names(config)
    iot = None
    if config.register or config.watch_job:
        iot = await asyncio.to_thread(iot_client, config)
    registered = await asyncio.to_thread(register_fleet, config, iot) if config.register else 0

    started = time.monotonic()
    fleet: Any
    if config.processes > 1:
        fleet = _ProcessFleet(config, names)
    else:
        fleet = DevicePool(config, names)
        fleet.start()
    display = make_display(config.display, config.devices)
    job: dict[str, Any] | None = None
    job_task: asyncio.Task[Any] | None = None
    last_requests, last_t = 0, started
    peak_rps = 0.0
    peak_connected = 0
    idle_since: float | None = None
    stopped_by = "stop"
    stop_wait = asyncio.create_task(stop.wait())

    def describe() -> dict[str, Any] | None:
        if iot is None:
            return None
        try:
            j = iot.describe_job(jobId=config.watch_job)["job"]
        except Exception:
            return None
        return {k: j.get(k) for k in ("jobId", "status", "reasonCode", "comment", "jobProcessDetails")}

    try:
        while True:
            await asyncio.wait({stop_wait}, timeout=config.interval)
            now = time.monotonic()
            snap = fleet.snapshot()
            if job_task is not None and job_task.done():
                job = job_task.result() or job
                job_task = None
            if config.watch_job and iot is not None and job_task is None:
                job_task = asyncio.create_task(asyncio.to_thread(describe))
            rps = (snap.get("requests", 0) - last_requests) / max(now - last_t, 1e-6)
            last_requests, last_t = snap.get("requests", 0), now
            peak_rps = max(peak_rps, rps)
            peak_connected = max(peak_connected, snap.get("connected", 0))
            display.update(snap, rps, now - started, job)
            if stop.is_set():
                stopped_by = "stop"
                break
            if config.duration is not None and now - started >= config.duration:
                stopped_by = "duration"
                break
            if config.until_idle:
                job_done = not config.watch_job or (job is not None and job.get("status") in TERMINAL_JOB)
                seen = snap.get("executions_started", 0) > 0 or (config.watch_job is not None and job_done)
                if snap.get("busy", 0) == 0 and seen and job_done:
                    idle_since = idle_since or now
                    if now - idle_since >= config.idle_seconds:
                        stopped_by = "idle"
                        break
                else:
                    idle_since = None
    finally:
        stop_wait.cancel()
        elapsed = time.monotonic() - started
        await fleet.close()
        display.close()
    snap = fleet.snapshot()
    if job_task is not None:
        job = await job_task or job
    if config.watch_job and iot is not None:
        job = await asyncio.to_thread(describe) or job
    summary = FleetSummary(
        devices=config.devices,
        registered=registered,
        connected=peak_connected,
        elapsed_seconds=round(elapsed, 2),
        stopped_by=stopped_by,
        requests_per_second=round(snap.get("requests", 0) / max(elapsed, 1e-6), 1),
        peak_requests_per_second=round(peak_rps, 1),
        job=job,
        per_job=snap.get("per_job", {}),
        **{k: snap.get(k, 0) for k in COUNTERS if k not in ("accepted",)},
    )
    return summary
