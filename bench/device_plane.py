"""Device-plane benchmark (run by hand, not in CI).

N simulated devices (aiomqtt clients spread over several client processes, each one asyncio event
loop) each run one job execution through the Jobs MQTT API:

    get -> start-next -> update IN_PROGRESS -> update SUCCEEDED

against one snapshot job on a thing group of all N things, through a Mosquitto process of the
bench's own (fleetjobs as its client) and/or through fleetjobs' embedded broker.  Each request
carries a clientToken; its latency is publish -> matching ``/accepted`` (or ``/rejected``) seen by
the device.  Things and the group membership are written with SQL (as ``bench/control_plane.py``
does); the job is one CreateJob through boto3, and the bench waits until its notify-next fan-out
to all N things is over before the devices start.

Devices start their workflows at a steady pace (``--rate`` device requests/s, spread over the
devices, i.e. rate/4 workflows started per second): an open-loop load, so the latency figures are
those of a fleet whose devices arrive at that rate, not of a queue of N requests dumped at once.
``--rate 0`` starts every device at once (a burst; shows the saturated throughput instead).

One JSON line per (broker, backend) run: devices, requests, wall seconds, requests/s,
p50/p95/p99/max latency in ms (overall and per step), errors (rejected or timed out), CPU seconds
of the server / Mosquitto / the client processes / the whole machine during the load, server peak
RSS, and whether DescribeJob counts numberOfSucceededThings == N.

Note that on this 2-core machine the client processes, Mosquitto, PostgreSQL and fleetjobs share
the two cores; the ``cpu_*`` fields show the split.

    .venv/bin/python bench/device_plane.py --devices 2000 --broker mosquitto --backend postgres
    .venv/bin/python bench/device_plane.py --devices 2000 --broker embedded --backend sqlite
    .venv/bin/python bench/device_plane.py --devices 2000 --broker both --backend both --rate 0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.control_plane import DOC, RssSampler, populate_sql
from tests.harness import ACCOUNT, REGION, Server, create_pg_database, drop_pg_database, free_port

STEPS = ("get", "start_next", "in_progress", "succeeded")
JOB_ID = "bench-device-job"


# -- the client side: one process, one event loop, many devices ---------------------------------------------


class BenchDevice:
    def __init__(self, host: str, port: int, thing: str, subscribe: str, timeout: float) -> None:
        import aiomqtt

        self.thing = thing
        self.base = f"$aws/things/{thing}/jobs"
        self.timeout = timeout
        self.subscribe_mode = subscribe
        self.client = aiomqtt.Client(
            host,
            port,
            identifier=f"bench-{thing}-{uuid.uuid4().hex[:6]}",
            clean_session=True,
            keepalive=600,
            # paho leaves Nagle on; a load generator must not add delayed-ACK stalls of its own.
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )
        self.pending: dict[str, asyncio.Future[tuple[str, dict[str, Any], float]]] = {}
        self.latencies: dict[str, float] = {}
        self.error: str | None = None
        self._reader: asyncio.Task[None] | None = None
        self._n = 0

    def filters(self) -> list[str]:
        if self.subscribe_mode == "wildcard":
            return [f"{self.base}/#"]
        # What the AWS device SDKs subscribe to: only the responses and notifications.
        return [
            f"{self.base}/get/+",
            f"{self.base}/start-next/+",
            f"{self.base}/+/update/+",
            f"{self.base}/notify",
            f"{self.base}/notify-next",
        ]

    async def connect(self) -> None:
        await self.client.__aenter__()
        await self.client.subscribe([(f, 1) for f in self.filters()])
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.client.messages:
            now = time.perf_counter()
            topic = str(message.topic)
            if not (topic.endswith("/accepted") or topic.endswith("/rejected")):
                continue
            try:
                doc = json.loads(message.payload)  # type: ignore[arg-type]
            except ValueError:
                continue
            fut = self.pending.pop(doc.get("clientToken", ""), None) if isinstance(doc, dict) else None
            if fut is not None and not fut.done():
                fut.set_result((topic.rsplit("/", 1)[1], doc, now))

    async def request(self, step: str, suffix: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        self._n += 1
        token = f"{self.thing}-{self._n}"
        fut: asyncio.Future[tuple[str, dict[str, Any], float]] = asyncio.get_running_loop().create_future()
        self.pending[token] = fut
        body = json.dumps({**payload, "clientToken": token}).encode()
        started = time.perf_counter()
        try:
            await self.client.publish(f"{self.base}/{suffix}", body, qos=1)
            outcome, doc, arrived = await asyncio.wait_for(fut, self.timeout)
        except TimeoutError:
            self.pending.pop(token, None)
            self.error = f"{step}: timed out"
            return None
        except Exception as e:  # a lost connection: counted, not fatal to the bench
            self.error = f"{step}: {type(e).__name__}: {e}"
            return None
        self.latencies[step] = arrived - started
        if outcome != "accepted":
            self.error = f"{step}: rejected {doc.get('code')}: {doc.get('message')}"
            return None
        return doc

    async def workflow(self) -> None:
        if await self.request("get", "get", {}) is None:
            return
        doc = await self.request("start_next", "start-next", {"statusDetails": {"step": "download"}})
        if doc is None:
            return
        execution = doc.get("execution")
        if not execution:
            self.error = "start_next: no pending execution"
            return
        update = f"{execution['jobId']}/update"
        if (
            await self.request(
                "in_progress", update, {"status": "IN_PROGRESS", "statusDetails": {"step": "install", "pct": "50"}}
            )
            is None
        ):
            return
        await self.request("succeeded", update, {"status": "SUCCEEDED", "statusDetails": {"step": "done"}})

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        with contextlib.suppress(Exception):
            await self.client.__aexit__(None, None, None)


async def _worker_main(
    host: str,
    port: int,
    things: list[tuple[int, str]],
    opts: dict[str, Any],
    ready: Any,
    go: Any,
    go_at: Any,
) -> dict[str, Any]:
    rate = opts["rate"]
    devices = {i: BenchDevice(host, port, thing, opts["subscribe"], opts["timeout"]) for i, thing in things}
    gate = asyncio.Semaphore(50)
    connect_errors: list[str] = []

    async def connect(d: BenchDevice) -> None:
        async with gate:
            for attempt in range(5):
                try:
                    await d.connect()
                    return
                except Exception as e:
                    if attempt == 4:
                        connect_errors.append(f"{type(e).__name__}: {e}")
                        d.error = "connect failed"
                    await asyncio.sleep(0.5)

    await asyncio.gather(*(connect(d) for d in devices.values()))
    ready.put(len(devices) - len(connect_errors))
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    start = go_at.value
    cpu0 = time.process_time()

    async def run(i: int, d: BenchDevice) -> None:
        if d.error:
            return
        if rate > 0:
            delay = start + i / (rate / len(STEPS)) - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await d.workflow()

    await asyncio.gather(*(run(i, d) for i, d in devices.items()))
    finished = time.perf_counter()
    cpu = time.process_time() - cpu0
    await asyncio.gather(*(d.close() for d in devices.values()))
    return {
        "latencies": {s: [d.latencies[s] for d in devices.values() if s in d.latencies] for s in STEPS},
        "errors": [d.error for d in devices.values() if d.error],
        "connect_errors": connect_errors[:5],
        "finished": finished,
        "cpu_seconds": cpu,
    }


def _worker(host: str, port: int, things: list[tuple[int, str]], opts: dict[str, Any], sync: tuple[Any, ...]) -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    ready, go, go_at, out = sync
    out.put(asyncio.run(_worker_main(host, port, things, opts, ready, go, go_at)))


# -- the server side ------------------------------------------------------------------------------------------


def start_mosquitto(tmp: Path, inflight: int, queued: int, shared: bool = False) -> tuple[subprocess.Popen[bytes], int]:
    """``shared``: with the loopback bridge of ``broker-config mosquitto --shared-requests`` (plain
    TCP here), so that several gateways can share the requests through a shared subscription."""
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = tmp / "mosquitto.conf"
    bridge = (
        f"connection fleetjobs-requests\naddress 127.0.0.1:{port}\nbridge_protocol_version mqttv311\n"
        "remote_clientid fleetjobs-requests\nlocal_clientid fleetjobs-requests-local\ncleansession false\n"
        "notifications false\nstart_type automatic\nrestart_timeout 1 10\n"
        "topic +/jobs/# in 1 fleetjobs/requests/ $aws/things/\n"
    )
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        "max_connections -1\n"
        f"max_inflight_messages {inflight}\n"
        f"max_queued_messages {queued}\n"
        "set_tcp_nodelay true\n"
        "persistence false\n" + (bridge if shared else "")
    )
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("mosquitto did not start")


def wait_gateway(port: int, timeout: float = 30) -> None:
    """Ready once the gateway answers a request (for a thing that does not exist: still answered)."""
    import paho.mqtt.client as mqtt

    answered = threading.Event()
    thing = f"probe-{uuid.uuid4().hex[:8]}"
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=thing)
    c.on_message = lambda *_: answered.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        c.subscribe(f"$aws/things/{thing}/jobs/get/+", qos=1)
        deadline = time.monotonic() + timeout
        while not answered.is_set():
            if time.monotonic() > deadline:
                raise RuntimeError("the MQTT gateway never answered")
            c.publish(f"$aws/things/{thing}/jobs/get", b'{"clientToken":"probe"}', qos=1)
            answered.wait(0.5)
    finally:
        c.loop_stop()
        c.disconnect()


class NotifyCounter:
    """Counts notify-next messages for all things: the end of CreateJob's fan-out to the fleet."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.count = 0
        self.last = time.perf_counter()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-notify-{uuid.uuid4().hex[:6]}")
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_a, **_k: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe("$aws/things/+/jobs/notify-next", qos=0)
        if not subscribed.wait(10):
            raise RuntimeError("notify-next subscription not acknowledged")

    def _on_message(self, *_: Any) -> None:
        self.count += 1
        self.last = time.perf_counter()

    def wait(self, n: int, quiet: float = 30.0, limit: float = 600.0) -> None:
        deadline = time.perf_counter() + limit
        while self.count < n and time.perf_counter() - self.last < quiet and time.perf_counter() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def cpu_seconds(proc: psutil.Process | None) -> float:
    if proc is None:
        return 0.0
    try:
        t = proc.cpu_times()
        return t.user + t.system
    except psutil.Error:
        return 0.0


def tree_cpu_seconds(proc: psutil.Process) -> float:
    """A process and its descendants (``serve``'s worker processes)."""
    try:
        children = proc.children(recursive=True)
    except psutil.Error:
        children = []
    return cpu_seconds(proc) + sum(cpu_seconds(c) for c in children)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


def latency_ms(values: list[float]) -> dict[str, float]:
    return {f"p{p}": round(percentile(values, p) * 1000, 1) for p in (50, 95, 99)} | {
        "max": round(max(values, default=float("nan")) * 1000, 1)
    }


def profile_summary(raw: Path, top: int = 25) -> dict[str, Any]:
    """Collapsed py-spy stacks -> the functions with the most samples (self and inclusive)."""
    self_samples: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = [f for f in stack.split(";") if f]
        if frames:
            self_samples[frames[-1]] += count
        for f in set(frames):
            inclusive[f] += count
    pct = lambda c: round(100 * c / max(total, 1), 1)  # noqa: E731
    return {
        "samples": total,
        "self_pct": [(f, pct(c)) for f, c in self_samples.most_common(top)],
        "inclusive_pct": [(f, pct(c)) for f, c in inclusive.most_common(top * 2) if "<module>" not in f][:top],
    }


def run_one(broker: str, backend: str, args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"fjdev-{broker}-{backend}-"))
    db_url = create_pg_database() if backend == "postgres" else None
    mosquitto: subprocess.Popen[bytes] | None = None
    server: Server | None = None
    try:
        env: dict[str, str] = {}
        if broker == "mosquitto":
            mosquitto, port = start_mosquitto(tmp, args.mosquitto_inflight, args.mosquitto_queued, args.shared)
            env = {
                "FLEETJOBS_MQTT_URL": f"mqtt://127.0.0.1:{port}",
                "FLEETJOBS_MQTT_CLIENT_ID": f"gw-{uuid.uuid4().hex[:6]}",
            }
            if args.shared:
                env["FLEETJOBS_MQTT_SHARED_GROUP"] = "bench"
        env["FLEETJOBS_WORKERS"] = str(args.workers)
        server = Server(data_dir=tmp / "data", database_url=db_url, env=env)
        if broker == "embedded":
            port = server.mqtt_port
        server.start()
        assert server.proc is not None
        wait_gateway(port)
        iot = server.client("iot")
        iot.create_thing_group(thingGroupName="bench")
        populate_url = db_url or f"sqlite:///{tmp / 'data' / 'fleetjobs.db'}"
        populate_sql(populate_url, "bench", args.devices, "bench")
        things = [f"bench-{i:06d}" for i in range(args.devices)]

        counter = NotifyCounter(port)
        t0 = time.perf_counter()
        iot.create_job(jobId=JOB_ID, targets=[f"arn:aws:iot:{REGION}:{ACCOUNT}:thinggroup/bench"], document=DOC)
        counter.wait(args.devices)
        fanout_s = counter.last - t0
        fanout_n = counter.count
        counter.close()

        ctx = mp.get_context("spawn")
        ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
        go_at = ctx.Value("d", 0.0)
        opts = {"rate": args.rate, "subscribe": args.subscribe, "timeout": args.timeout}
        slices = [[(i, things[i]) for i in range(k, args.devices, args.processes)] for k in range(args.processes)]
        procs = [
            ctx.Process(target=_worker, args=("127.0.0.1", port, s, opts, (ready, go, go_at, out)), daemon=True)
            for s in slices
        ]
        for p in procs:
            p.start()
        connected = sum(ready.get(timeout=600) for _ in procs)

        server_ps = psutil.Process(server.proc.pid)
        mosq_ps = psutil.Process(mosquitto.pid) if mosquitto else None
        # This run's PostgreSQL backends ("postgres: user db host ..."); ones that exit during the load are missed.
        db_name = db_url.rsplit("/", 1)[1] if db_url else None

        def pg_backends() -> list[psutil.Process]:
            return [
                p
                for p in psutil.process_iter(["name", "cmdline"])
                if db_name
                and (p.info["name"] or "").startswith("postgres")
                and db_name in " ".join(p.info["cmdline"] or [])
            ]

        spy: subprocess.Popen[bytes] | None = None
        with RssSampler(server.proc.pid) as rss:
            s0, m0 = tree_cpu_seconds(server_ps), cpu_seconds(mosq_ps)
            pg0 = {p.pid: cpu_seconds(p) for p in pg_backends()}
            sys0 = psutil.cpu_times()
            if args.py_spy:
                spy_out = Path(f"{args.py_spy}-{broker}-{backend}.txt")
                spy_cmd = [str(Path(sys.executable).with_name("py-spy")), "record", "--subprocesses"]
                spy_cmd += ["-p", str(server.proc.pid)]
                spy_cmd += ["-d", str(args.py_spy_seconds), "-f", "raw", "-o", str(spy_out)]
                spy = subprocess.Popen(spy_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            go_at.value = time.perf_counter() + 0.2
            go.set()
            results = [out.get(timeout=args.timeout * 4 + args.devices) for _ in procs]
            end = max(r["finished"] for r in results)
            s1, m1 = tree_cpu_seconds(server_ps), cpu_seconds(mosq_ps)
            pg1 = sum(max(0.0, cpu_seconds(p) - pg0.get(p.pid, 0.0)) for p in pg_backends())
            sys1 = psutil.cpu_times()
        for p in procs:
            p.join(timeout=30)
        wall = end - go_at.value

        lat: dict[str, list[float]] = {s: [] for s in STEPS}
        for r in results:
            for s in STEPS:
                lat[s] += r["latencies"][s]
        everything = [v for s in STEPS for v in lat[s]]
        errors = [e for r in results for e in r["errors"]]

        succeeded = None
        for _ in range(50):
            details = iot.describe_job(jobId=JOB_ID)["job"]["jobProcessDetails"]
            succeeded = details.get("numberOfSucceededThings")
            if succeeded == args.devices:
                break
            time.sleep(0.2)
        busy = lambda t: t.user + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0)  # noqa: E731
        result: dict[str, Any] = {
            "broker": broker,
            "backend": backend,
            "devices": args.devices,
            "connected": connected,
            "client_processes": args.processes,
            "server_workers": args.workers,
            "shared_requests": args.shared,
            "subscribe": args.subscribe,
            "target_rate": args.rate,
            "job_fanout_seconds": round(fanout_s, 2),
            "job_fanout_notify_next": fanout_n,
            "requests": len(everything),
            "wall_seconds": round(wall, 2),
            "requests_per_second": round(len(everything) / wall, 1),
            "latency_ms": latency_ms(everything),
            "latency_ms_by_step": {s: latency_ms(lat[s]) for s in STEPS},
            "errors": len(errors),
            "connect_errors": [e for r in results for e in r["connect_errors"]][:5],
            "error_samples": sorted(Counter(errors).items(), key=lambda kv: -kv[1])[:5],
            "succeeded_things": succeeded,
            "verified": succeeded == args.devices,
            "server_peak_rss_mb": round(rss.peak / 2**20, 1),
            "cpu_seconds_server": round(s1 - s0, 2),
            "cpu_seconds_mosquitto": round(m1 - m0, 2),
            "cpu_seconds_postgres": round(pg1, 2),
            "cpu_seconds_clients": round(sum(r["cpu_seconds"] for r in results), 2),
            "cpu_seconds_machine": round(busy(sys1) - busy(sys0), 2),
            "cpu_seconds_available": round(wall * (os.cpu_count() or 1), 2),
        }
        if spy is not None:
            spy.wait(timeout=args.py_spy_seconds + 60)
            result["py_spy_raw"] = str(spy_out)
            if spy_out.exists():
                result["py_spy"] = profile_summary(spy_out, args.py_spy_top)
        return result
    finally:
        if server is not None:
            server.stop()
        if mosquitto is not None:
            mosquitto.terminate()
            mosquitto.wait(timeout=10)
        if db_url:
            drop_pg_database(db_url)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=2000)
    ap.add_argument("--broker", choices=["mosquitto", "embedded", "both"], default="both")
    ap.add_argument(
        "--backend",
        choices=["sqlite", "postgres", "both", "auto"],
        default="auto",
        help="auto: postgres through Mosquitto (the production setup), sqlite through the embedded broker",
    )
    ap.add_argument("--processes", type=int, default=2, help="client processes (devices are spread over them)")
    ap.add_argument(
        "--rate", type=float, default=3000, help="offered device requests/s (0: every device starts at once)"
    )
    ap.add_argument("--subscribe", choices=["wildcard", "exact"], default="wildcard", help="jobs/# or SDK-style")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds a request may wait for its response")
    ap.add_argument("--mosquitto-inflight", type=int, default=1000, help="Mosquitto max_inflight_messages")
    ap.add_argument("--mosquitto-queued", type=int, default=100000, help="Mosquitto max_queued_messages")
    ap.add_argument("--workers", default="1", help="fleetjobs serve --workers (a number or auto)")
    ap.add_argument(
        "--shared",
        action="store_true",
        help="Mosquitto with the loopback bridge; the workers share the requests (--mqtt-shared-group)",
    )
    ap.add_argument("--py-spy", metavar="PREFIX", help="record the server with py-spy during the load (raw format)")
    ap.add_argument("--py-spy-seconds", type=int, default=10)
    ap.add_argument("--py-spy-top", type=int, default=20)
    args = ap.parse_args()
    os.environ.setdefault("FLEETJOBS_LOG_LEVEL", "warning")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:  # several thousand sockets; inherited by Mosquitto, the server and the clients
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    brokers = ["mosquitto", "embedded"] if args.broker == "both" else [args.broker]
    for broker in brokers:
        if args.backend == "auto":
            backends = ["postgres" if broker == "mosquitto" else "sqlite"]
        else:
            backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
        for backend in backends:
            print(json.dumps(run_one(broker, backend, args)), flush=True)


if __name__ == "__main__":
    main()
