"""``fleetjobs``: the command line."""

from __future__ import annotations

import argparse
import sys

from fleetjobs import __version__
from fleetjobs.config import LOG_LEVELS, Settings


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
            "Run the server: the AWS IoT control plane ('iot', REST-JSON) and the device HTTPS API "
            "('iot-jobs-data') on one port, both authenticated with AWS Signature Version 4. With no "
            "--database-url it keeps its state in SQLite under --data-dir (zero setup); give a "
            "postgresql:// URL to share one database between several instances."
        ),
        epilog=(
            "Each option can also be set with the environment variable shown, or in the TOML file "
            "given with --config (or FLEETJOBS_CONFIG), keyed by the option name: port = 8090, "
            'database_url = "postgresql://...". A flag wins over the environment, which wins over '
            "the file, which wins over the default."
        ),
    )

    def option(flag: str, help: str, **kw: object) -> None:
        env = "FLEETJOBS_" + flag.lstrip("-").replace("-", "_").upper()
        s.add_argument(flag, help=f"{help} [env {env}]", **kw)  # type: ignore[arg-type]

    d = Settings()
    option("--host", f"address to listen on (default {d.host}; 0.0.0.0 for every interface)")
    option("--port", f"HTTP port (default {d.port})", type=int)
    option("--data-dir", "where the SQLite database and generated keys live (default ~/.local/share/fleetjobs)")
    option("--database-url", "postgresql://user:password@host/db to use PostgreSQL instead of SQLite")
    option("--access-key-id", "access key id that requests must be signed with")
    option(
        "--secret-access-key",
        "its secret key; give both or neither: without them a pair is generated on the first start, "
        "kept in DATA_DIR/credentials.json and printed",
    )
    option("--region", f"region used in ARNs (default {d.region})")
    option("--account-id", f"account id used in ARNs (default {d.account_id})")
    option("--log-level", f"one of {', '.join(LOG_LEVELS)} (default {d.log_level})")
    option("--config", "TOML configuration file")
    s.set_defaults(subparser=s)
    return p


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        sys.exit(2)
    if args.command == "serve":
        from fleetjobs.server import serve

        flags = {k: v for k, v in vars(args).items() if k not in ("command", "subparser")}
        try:
            settings = Settings.load(flags)
        except (ValueError, OSError) as e:
            args.subparser.error(str(e))
        serve(settings)
