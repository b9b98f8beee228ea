"""Fleet benchmark (run by hand, not in CI): ``fleetjobs simulate`` against ``fleetjobs serve``.

Starts PostgreSQL-backed ``fleetjobs serve`` whose gateway joins a Mosquitto of the bench's own,
registers N things in a group (CreateThing + AddThingToThingGroup through boto3, as
``fleetjobs simulate`` does), starts ``fleetjobs simulate --no-register`` with N devices (spread over
``--processes``), waits until every device is connected, then creates one snapshot job on the group
(no rollout limit) and measures:

- the time from CreateJob until DescribeJob shows every execution terminal;
- peak RSS of the server and of the simulator (all of its processes, summed);
- the device requests/s the simulator reached (mean over its run, and its peak one-second rate).

One JSON line on stdout.

    .venv/bin/python bench/fleet.py --devices 10000 --processes 2
    .venv/bin/python bench/fleet.py --devices 2000 --work-seconds 1 --backend sqlite
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.device_plane import start_mosquitto, wait_gateway
from fleetjobs.simulate import FleetConfig, register_fleet
from tests.harness import (
    ACCESS_KEY_ID,
    ACCOUNT,
    REGION,
    SECRET_ACCESS_KEY,
    Server,
    create_pg_database,
    drop_pg_database,
)

DOC = json.dumps({"operation": "install", "version": "2.0.0"})
TERMINAL = ("Succeeded", "Failed", "Rejected", "Canceled", "TimedOut", "Removed")


class TreeRss:
    """Peak of the summed RSS of a process and its descendants."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
            except psutil.Error:
                return
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.1)

    def __enter__(self) -> TreeRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="fjfleet-"))
    db_url = create_pg_database() if args.backend == "postgres" else None
    mosquitto, port = start_mosquitto(tmp, 1000, 1_000_000)
    server = Server(
        data_dir=tmp / "data",
        database_url=db_url,
        env={
            "FLEETJOBS_MQTT_URL": f"mqtt://127.0.0.1:{port}",
            "FLEETJOBS_MQTT_CLIENT_ID": f"gw-{uuid.uuid4().hex[:6]}",
        },
    )
    sim: subprocess.Popen[str] | None = None
    try:
        server.start()
        assert server.proc is not None
        wait_gateway(port)
        iot = server.client("iot")
        prefix, group = f"fleet{uuid.uuid4().hex[:4]}", "fleet-bench"
        cfg = FleetConfig(
            devices=args.devices,
            prefix=prefix,
            group=group,
            endpoint_url=server.endpoint,
            access_key_id=ACCESS_KEY_ID,
            secret_access_key=SECRET_ACCESS_KEY,
            register_threads=args.register_threads,
        )
        t0 = time.perf_counter()
        register_fleet(cfg)
        register_s = time.perf_counter() - t0
        print(f"registered {args.devices} things in {register_s:.1f}s", file=sys.stderr, flush=True)

        job_id = f"fleet-bench-{uuid.uuid4().hex[:6]}"
        cmd = [sys.executable, "-m", "fleetjobs", "simulate", "--no-register", "--json", "--display", "text"]
        cmd += ["--devices", str(args.devices), "--prefix", prefix, "--group", group]
        cmd += ["--endpoint-url", server.endpoint, "--access-key-id", ACCESS_KEY_ID]
        cmd += ["--secret-access-key", SECRET_ACCESS_KEY, "--mqtt-url", f"mqtt://127.0.0.1:{port}"]
        cmd += ["--processes", str(args.processes), "--work-seconds", str(args.work_seconds)]
        cmd += ["--failure-rate", str(args.failure_rate), "--watch-job", job_id, "--until-idle"]
        cmd += ["--idle-seconds", "3", "--duration", str(args.timeout), "--request-timeout", "60"]
        sim = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        connected = threading.Event()
        connect_started = time.perf_counter()

        def follow() -> None:
            assert sim is not None and sim.stderr is not None
            for line in sim.stderr:
                lines.append(line.rstrip())
                if args.verbose:
                    sys.stderr.write(line)
                m = re.search(r"connected (\d+)/(\d+)", line)
                if m and m.group(1) == m.group(2):
                    connected.set()

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        with TreeRss(server.proc.pid) as server_rss, TreeRss(sim.pid) as sim_rss:
            if not connected.wait(args.timeout):
                raise RuntimeError("the devices never all connected:\n" + "\n".join(lines[-20:]))
            connect_s = time.perf_counter() - connect_started
            print(f"{args.devices} devices connected in {connect_s:.1f}s", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            iot.create_job(jobId=job_id, targets=[f"arn:aws:iot:{REGION}:{ACCOUNT}:thinggroup/{group}"], document=DOC)
            details: dict[str, Any] = {}
            while time.perf_counter() - t0 < args.timeout:
                details = iot.describe_job(jobId=job_id)["job"]["jobProcessDetails"]
                if sum(details.get(f"numberOf{s}Things", 0) for s in TERMINAL) >= args.devices:
                    break
                time.sleep(0.5)
            all_terminal_s = time.perf_counter() - t0
            out, _ = sim.communicate(timeout=args.timeout)
        summary = json.loads(out)
        return {
            "backend": args.backend,
            "broker": "mosquitto",
            "devices": args.devices,
            "simulator_processes": args.processes,
            "work_seconds_mean": args.work_seconds,
            "register_seconds": round(register_s, 1),
            "connect_seconds": round(connect_s, 1),
            "job_all_terminal_seconds": round(all_terminal_s, 2),
            "job_process_details": details,
            "device_succeeded": summary["succeeded"],
            "device_failed": summary["failed"],
            "device_requests": summary["requests"],
            "device_requests_per_second_mean": summary["requests_per_second"],
            "device_requests_per_second_peak": summary["peak_requests_per_second"],
            "throttled": summary["throttled"],
            "retries": summary["retries"],
            "timeouts": summary["timeouts"],
            "server_peak_rss_mb": round(server_rss.peak / 2**20, 1),
            "simulator_peak_rss_mb": round(sim_rss.peak / 2**20, 1),
            "command": " ".join(cmd[2:]),
        }
    finally:
        if sim is not None and sim.poll() is None:
            sim.terminate()
            try:
                sim.wait(timeout=30)
            except subprocess.TimeoutExpired:
                sim.kill()
        server.stop()
        mosquitto.terminate()
        mosquitto.wait(timeout=10)
        if db_url:
            drop_pg_database(db_url)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=10000)
    ap.add_argument("--processes", type=int, default=2, help="simulator processes")
    ap.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    ap.add_argument("--work-seconds", type=float, default=2.0)
    ap.add_argument("--failure-rate", type=float, default=0.0)
    ap.add_argument("--register-threads", type=int, default=16)
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--verbose", action="store_true", help="echo the simulator's progress lines")
    args = ap.parse_args()
    os.environ.setdefault("FLEETJOBS_LOG_LEVEL", "warning")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(json.dumps(run(args)), flush=True)


if __name__ == "__main__":
    main()
