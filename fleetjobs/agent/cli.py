"""The ``fleetjobs agent`` subcommand."""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import signal
import sys
from pathlib import Path


def add_agent_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    q = sub.add_parser(
        "agent",
        help="run a device agent: take jobs over MQTT (AWS IoT Jobs topics) and run them",
        description=(
            "A device agent that speaks only the AWS IoT Jobs MQTT topics ($aws/things/THING/jobs/...), so it "
            "works against fleetjobs or AWS IoT. It runs one job at a time: documents in the AWS IoT Device "
            "Client schema (version 1.0, steps, finalStep, runHandler/runCommand) or the old "
            '{"operation": ...} one; download-file.sh and reboot.sh are built in, the other handlers '
            "(install-packages.sh, start-services.sh...) and custom operations are scripts in --handler-dir."
        ),
    )
    q.add_argument("--thing", required=True, help="thing name (also the MQTT client id)")
    q.add_argument("--mqtt-url", default="mqtt://127.0.0.1:1884", help="mqtt://host:port or mqtts://host:port")
    q.add_argument("--ca-file", help="CA certificate of the broker (mqtts)")
    q.add_argument("--cert-file", help="the thing's certificate (mqtts; 'fleetjobs certs issue THING')")
    q.add_argument("--key-file", help="its private key")
    q.add_argument(
        "--state-dir",
        type=Path,
        help="durable local state (default ~/.local/state/fleetjobs-agent/THING)",
    )
    q.add_argument("--handler-dir", type=Path, help="directory of handler scripts (install-packages.sh, ...)")
    q.add_argument(
        "--reboot-command",
        help="command that reboots the device (e.g. 'sudo systemctl reboot'); default: none, the agent records "
        "the reboot and exits, and reports the job SUCCEEDED when it starts again",
    )
    q.add_argument("--codesign-cert", type=Path, help="PEM certificate downloads must be signed by (pinned)")
    q.add_argument("--download-chunk", type=int, default=64 * 1024, help="download read size in bytes")
    q.add_argument("--download-delay", type=float, default=0.0, help="seconds to pause after each chunk (throttle)")
    q.add_argument("--once", action="store_true", help="take and run at most one job, then exit")
    q.add_argument("--log-format", choices=("json", "text"), default="json", help="log lines on stderr (default json)")
    q.add_argument("--log-level", default="info", help="debug, info, warning, error (default info)")
    q.set_defaults(subparser=q)


def run_agent(args: argparse.Namespace) -> None:
    from fleetjobs.agent import Agent, AgentConfig, configure_logging

    configure_logging(args.log_format, args.log_level)
    state_dir = args.state_dir or Path(os.path.expanduser("~/.local/state/fleetjobs-agent")) / args.thing
    config = AgentConfig(
        thing_name=args.thing,
        state_dir=state_dir,
        mqtt_url=args.mqtt_url,
        ca_file=args.ca_file,
        cert_file=args.cert_file,
        key_file=args.key_file,
        handler_dir=args.handler_dir,
        reboot_command=shlex.split(args.reboot_command) if args.reboot_command else None,
        codesign_certificate=args.codesign_cert.read_text() if args.codesign_cert else None,
        download_chunk=args.download_chunk,
        download_delay=args.download_delay,
    )
    agent = Agent(config)

    async def main() -> str | None:
        if args.once:
            return await agent.run_once()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await agent.run(stop)
        return None

    from fleetjobs.agent import AgentError

    try:
        status = asyncio.run(main())
    except AgentError as e:
        args.subparser.exit(1, f"fleetjobs agent: error: {e}\n")
    if args.once and status is not None:
        print(status)
    sys.exit(0)
