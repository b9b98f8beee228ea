"""``fleetjobs simulate``: options and the command (kept free of heavy imports)."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s = sub.add_parser(
        "simulate",
        help="run N virtual devices that take jobs over MQTT (a demo and a load generator)",
        description=(
            "Register N things (PREFIX-00001...) in a thing group, connect each to the broker as an MQTT client, "
            "and run the jobs they are given: start-next, work, IN_PROGRESS, then SUCCEEDED, FAILED or REJECTED "
            "at the given rates. Shows a live view of the fleet and a summary at the end."
        ),
    )
    a = s.add_argument
    a("--devices", type=int, default=10, help="number of devices (default 10)")
    a("--prefix", default="sim", help="thing name prefix (default sim: sim-00001...)")
    a("--group", default="simulated", help="thing group they join, created if missing (default simulated)")
    a("--no-register", dest="register", action="store_false", help="the things exist already: only connect")
    a("--endpoint-url", default="http://127.0.0.1:8090", help="fleetjobs endpoint (default http://127.0.0.1:8090)")
    a("--access-key-id", help="access key (default: env AWS_ACCESS_KEY_ID, else DATA_DIR/credentials.json)")
    a("--secret-access-key", help="its secret key")
    a("--data-dir", help="the server's data dir, to read its credentials.json")
    a("--region", help="region (default: $AWS_DEFAULT_REGION, else us-east-1)")
    a("--mqtt-url", default="mqtt://127.0.0.1:1884", help="broker (default mqtt://127.0.0.1:1884, the embedded one)")
    a("--mqtt-ca-file", help="CA of the broker's certificate (mqtts://)")
    a("--work-seconds", type=float, default=2.0, help="mean time a job takes (default 2)")
    a("--work-distribution", choices=["exponential", "uniform"], default="exponential")
    a("--failure-rate", type=float, default=0.0, help="share of executions that end FAILED")
    a("--reject-rate", type=float, default=0.0, help="share of executions the device REJECTs")
    a("--offline-rate", type=float, default=0.0, help="share of executions during which the device goes offline")
    a("--offline-seconds", type=float, default=5.0, help="mean time a device stays offline (default 5)")
    a("--latency-ms", type=float, default=0.0, help="network delay added to each message, each way")
    a("--request-timeout", type=float, default=30.0, help="seconds to wait for an answer before asking again")
    a("--seed", type=int, help="random seed (reproducible behaviour)")
    a("--duration", type=float, help="stop after this many seconds")
    a("--until-idle", action="store_true", help="stop once, after a job, every device has been idle for a while")
    a("--idle-seconds", type=float, default=3.0, help="how long 'a while' is (default 3)")
    a("--watch-job", metavar="JOB_ID", help="also show DescribeJob of this job; --until-idle waits for it to end")
    a("--processes", type=int, default=1, help="spread the devices over this many processes (large fleets)")
    a("--connect-concurrency", type=int, default=50, help="connections opened at once (default 50)")
    a("--display", choices=["auto", "rich", "text", "none"], default="auto", help="live view (default auto)")
    a("--json", action="store_true", help="print the summary as JSON")
    s.set_defaults(subparser=s)


def run(args: argparse.Namespace) -> None:
    from fleetjobs.simulate.fleet import FleetConfig, run_fleet

    fields = set(FleetConfig.__dataclass_fields__)
    config = FleetConfig(**{k: v for k, v in vars(args).items() if k in fields and v is not None})
    for name in ("failure_rate", "reject_rate", "offline_rate"):
        if not 0 <= getattr(config, name) <= 1:
            args.subparser.error(f"--{name.replace('_', '-')} must be between 0 and 1")
    if config.devices < 1:
        args.subparser.error("--devices must be at least 1")

    async def main() -> dict[str, object]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return (await run_fleet(config, stop)).to_dict()

    try:
        summary = asyncio.run(main())
    except ValueError as e:
        args.subparser.exit(1, f"fleetjobs simulate: error: {e}\n")
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(_text(summary))


def _text(s: dict[str, object]) -> str:
    lines = [
        f"{s['devices']} devices ({s['connected']} connected) for {s['elapsed_seconds']}s, "
        f"stopped by {s['stopped_by']}",
        f"executions: {s['executions_started']} started, {s['succeeded']} succeeded, {s['failed']} failed, "
        f"{s['rejected']} rejected, {s['abandoned']} abandoned",
        f"requests: {s['requests']} ({s['requests_per_second']}/s, peak {s['peak_requests_per_second']}/s), "
        f"{s['throttled']} throttled, {s['retries']} retries, {s['timeouts']} timeouts",
        f"offline events: {s['offline_events']}, reconnects: {s['reconnects']}",
    ]
    job = s.get("job")
    if isinstance(job, dict):
        lines.append(f"job {job.get('jobId')}: {job.get('status')} {job.get('reasonCode') or ''}".rstrip())
        lines.append("  " + json.dumps(job.get("jobProcessDetails")))
    return "\n".join(lines)
