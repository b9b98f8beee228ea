"""``fleetjobs``: the command line."""

from __future__ import annotations

import argparse
import sys

from fleetjobs import __version__
from fleetjobs.config import Settings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fleetjobs",
        description=(
            "fleetjobs: run jobs (firmware updates, reboots, commands...) on device fleets. "
            "It speaks the AWS IoT Jobs APIs, so boto3, the AWS CLI and the AWS IoT Device SDKs "
            "work against it unmodified: point them at its endpoint."
        ),
        epilog=(
            "Every setting of 'serve' can also come from the environment (FLEETJOBS_PORT, "
            "FLEETJOBS_DATABASE_URL, FLEETJOBS_ACCESS_KEY_ID, ...) or from a TOML file given with "
            '--config (keys as the flag names: port = 8090, database_url = "..."). '
            "Flags win over the environment, which wins over the file."
        ),
    )
    p.add_argument("--version", action="version", version=f"fleetjobs {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser(
        "serve",
        help="run the fleetjobs server",
        description=(
            "Run the server: the AWS IoT control plane (REST-JSON, SigV4) on --port. With no "
            "--database-url it keeps its state in SQLite under --data-dir (zero setup); give a "
            "postgresql:// URL to share one database between several instances."
        ),
    )
    s.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, help="HTTP port (default 8090)")
    s.add_argument(
        "--data-dir", help="where SQLite, generated keys and artifacts live (default ~/.local/share/fleetjobs)"
    )
    s.add_argument("--database-url", help="postgresql://user@host/db to use PostgreSQL instead of SQLite")
    s.add_argument("--access-key-id", help="access key id that requests must be signed with")
    s.add_argument("--secret-access-key", help="its secret; without either, a pair is generated on first start")
    s.add_argument("--region", help="region used in ARNs (default us-east-1)")
    s.add_argument("--account-id", help="account id used in ARNs (default 123456789012)")
    s.add_argument("--log-level", help="debug, info, warning, error (default info)")
    s.add_argument("--config", help="TOML configuration file")
    return p


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        sys.exit(2)
    if args.command == "serve":
        from fleetjobs.server import serve

        flags = {k: v for k, v in vars(args).items() if k != "command"}
        try:
            settings = Settings.load(flags)
        except (ValueError, OSError) as e:
            parser.error(str(e))
        serve(settings)
