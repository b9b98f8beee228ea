"""``fleetjobs``: the command line."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from fleetjobs import __version__
from fleetjobs.config import LOG_LEVELS, Settings, default_data_dir


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
    option("--mqtt-host", f"address the embedded MQTT broker listens on (default {d.mqtt_host})")
    option("--mqtt-port", f"port of the embedded MQTT broker (default {d.mqtt_port})", type=int)
    s.add_argument(
        "--no-embedded-broker",
        dest="embedded_broker",
        action="store_const",
        const=False,
        help="do not run the embedded MQTT broker [env FLEETJOBS_EMBEDDED_BROKER=false]",
    )
    s.add_argument(
        "--mqtt-tls",
        dest="mqtt_tls",
        action="store_const",
        const=True,
        help="embedded broker with mutual TLS: devices present certificates of the CA in DATA_DIR/certs "
        "('fleetjobs certs init', 'certs issue THING') and may only use their own thing's topics; the broker's "
        "certificate (certs/server.pem) and the gateway's (certs/fleetjobs-service.pem) are issued if missing "
        "[env FLEETJOBS_MQTT_TLS=true]",
    )
    option("--mqtt-url", "join this external broker instead (mqtt://host:port or mqtts://host:port)")
    option("--mqtt-client-id", f"MQTT client id of the gateway (default {d.mqtt_client_id}; one per instance)")
    option("--mqtt-ca-file", "CA certificate that signed the external broker's certificate (mqtts)")
    option("--mqtt-cert-file", "fleetjobs' client certificate for the external broker (see 'fleetjobs certs service')")
    option("--mqtt-key-file", "its private key")
    option(
        "--mqtt-shared-group",
        "share the device requests with the other instances of this group (external broker with the "
        "bridge of 'broker-config mosquitto --shared-requests'; one --mqtt-client-id per instance)",
    )
    option(
        "--device-requests-per-second",
        "per-thing limit on device requests (burst: twice that); beyond it RequestThrottled (default 20; 0: none)",
    )
    option(
        "--manual-clock",
        "tests and demos: start time at this epoch; it moves only through POST /_fleetjobs/clock",
    )
    option(
        "--public-url",
        "URL devices reach this server at, for artifact download URLs (default http://HOST:PORT)",
    )
    option(
        "--public-host",
        "host name devices reach this deployment at, answered by DescribeEndpoint (default: the MQTT / HTTP host)",
    )
    option("--artifact-store", "where job artifacts live: local (DATA_DIR/artifacts, the default) or s3")
    option("--s3-endpoint-url", "S3-compatible endpoint for --artifact-store s3 (MinIO, Ceph...; default AWS)")
    option("--s3-region", "region of the S3 store (default --region)")
    option(
        "--workers",
        "processes sharing the HTTP port and device traffic: a number, or auto (default: one per core "
        "on PostgreSQL, 1 on SQLite)",
    )
    option("--config", "TOML configuration file")
    s.set_defaults(subparser=s)
    _add_security_commands(sub)
    _add_artifact_commands(sub)
    from fleetjobs.simulate.cli import add_parser as add_simulate

    add_simulate(sub)
    from fleetjobs.agent.cli import add_agent_command

    add_agent_command(sub)
    return p


def _add_security_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``certs`` and ``broker-config``: what a production broker needs to tell devices apart."""

    def data_dir_option(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--data-dir",
            type=Path,
            help="fleetjobs data dir; the CA lives in DATA_DIR/certs (default: $FLEETJOBS_DATA_DIR, else "
            "~/.local/share/fleetjobs)",
        )

    def days_option(q: argparse.ArgumentParser, default: int) -> None:
        q.add_argument("--days", type=int, default=default, help=f"validity in days (default {default})")

    c = sub.add_parser(
        "certs",
        help="fleetjobs' certificate authority: device, broker and service certificates",
        description=(
            "Issue the X.509 certificates for mutual TLS between devices and an MQTT broker. A device "
            "certificate's subject CN is its thing name, which the broker configuration written by "
            "'fleetjobs broker-config' uses as the identity that its ACL is keyed on."
        ),
    )
    csub = c.add_subparsers(dest="certs_command", metavar="ACTION", required=True)
    q = csub.add_parser("init", help="create the CA (DATA_DIR/certs/ca.pem and ca.key; EC P-256)")
    data_dir_option(q)
    days_option(q, 3650)
    q.add_argument("--force", action="store_true", help="replace an existing CA (invalidates every certificate)")
    q = csub.add_parser("issue", help="issue a device certificate: THING.pem / THING.key, CN = thing name")
    q.add_argument("thing", metavar="THING", help="thing name (1-128 characters of [a-zA-Z0-9:_-])")
    data_dir_option(q)
    q.add_argument("--out", type=Path, help="output directory (default DATA_DIR/certs/devices)")
    days_option(q, 365)
    q = csub.add_parser(
        "server",
        help="issue the broker's TLS server certificate (server.pem / server.key)",
        description="With neither --host nor --ip the certificate is for localhost and 127.0.0.1.",
    )
    q.add_argument("--host", action="append", default=[], metavar="NAME", help="DNS name devices connect to (repeat)")
    q.add_argument("--ip", action="append", default=[], metavar="ADDR", help="IP address devices connect to (repeat)")
    data_dir_option(q)
    q.add_argument("--out", type=Path, help="output directory (default DATA_DIR/certs)")
    days_option(q, 365)
    q = csub.add_parser(
        "service", help="issue fleetjobs' own broker client certificate (CN fleetjobs-service; all of $aws/#)"
    )
    data_dir_option(q)
    q.add_argument("--out", type=Path, help="output directory (default DATA_DIR/certs)")
    days_option(q, 365)
    c.set_defaults(subparser=c)

    b = sub.add_parser(
        "broker-config",
        help="write an MQTT broker configuration: mutual TLS, one thing per certificate",
        description="Write a broker configuration that only admits certificates of the fleetjobs CA.",
    )
    bsub = b.add_subparsers(dest="broker", metavar="BROKER", required=True)
    m = bsub.add_parser(
        "mosquitto",
        help="Mosquitto 2.0: mutual TLS, ACL, persistence",
        description=(
            "Write mosquitto.conf, an ACL under which a thing may only publish and subscribe under "
            "$aws/things/<its own name>/ (fleetjobs-service: all of $aws/#), copies of the CA and server "
            "certificate, and a persistence directory, all owned by the user mosquitto runs as."
        ),
    )
    m.add_argument("--port", type=int, required=True, help="TLS port to listen on (8883 is MQTT over TLS)")
    m.add_argument("--bind", metavar="ADDR", help="address to listen on (default: every interface)")
    data_dir_option(m)
    m.add_argument("--out", type=Path, help="output directory (default DATA_DIR/mosquitto)")
    m.add_argument(
        "--shared-requests",
        action="store_true",
        help="add a loopback bridge so that several fleetjobs instances (serve --mqtt-shared-group) share "
        "the device requests; needs 'fleetjobs certs service'",
    )
    m.add_argument(
        "--user",
        help="user mosquitto runs as; its files are given to it (default: mosquitto when run as root, else you)",
    )
    b.set_defaults(subparser=b)


def _add_artifact_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``artifacts`` (files for jobs), ``keys`` and ``sign`` (code signing)."""
    from fleetjobs.artifacts import DEFAULT_BUCKET

    def store_options(q: argparse.ArgumentParser) -> None:
        q.add_argument("--bucket", default=DEFAULT_BUCKET, help=f"bucket (default {DEFAULT_BUCKET})")
        q.add_argument("--data-dir", help="fleetjobs data dir (default: $FLEETJOBS_DATA_DIR, else ~/.local/share/...)")
        q.add_argument(
            "--config",
            help="TOML configuration file: artifact_store, s3_endpoint_url... as for 'serve' (or FLEETJOBS_* env)",
        )

    a = sub.add_parser(
        "artifacts",
        help="files for jobs (firmware...): put, list, remove",
        description=(
            "Manage the files jobs hand to devices. With artifact_store = local (default) they live in "
            "DATA_DIR/artifacts and fleetjobs serves them through signed, expiring URLs; with artifact_store = s3 "
            "they go to the S3 bucket (which must exist). A job document names a file with "
            "${aws:iot:s3-presigned-url:https://s3.amazonaws.com/BUCKET/KEY}."
        ),
    )
    asub = a.add_subparsers(dest="artifacts_command", metavar="ACTION", required=True)
    q = asub.add_parser("put", help="upload FILE as KEY (a new version); prints its versionId, sha256, placeholder")
    q.add_argument("file", metavar="FILE")
    q.add_argument("key", metavar="KEY")
    store_options(q)
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q = asub.add_parser("ls", help="list objects and their versions")
    store_options(q)
    q = asub.add_parser("rm", help="remove KEY (every version; S3 with versioning: a delete marker) or one version")
    q.add_argument("key", metavar="KEY")
    store_options(q)
    q.add_argument("--version-id", help="remove only this version")
    a.set_defaults(subparser=a)

    k = sub.add_parser("keys", help="code-signing keys")
    ksub = k.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    q = ksub.add_parser(
        "init", help="write an ECDSA P-256 signing key (signing.key, 0600) and a self-signed certificate (signing.pem)"
    )
    q.add_argument("--out", type=Path, default=Path("."), help="output directory (default: current directory)")
    q.add_argument("--cn", default="fleetjobs code signing", help="certificate subject CN")
    q.add_argument("--days", type=int, default=3650, help="validity in days (default 3650)")
    q.add_argument("--force", action="store_true", help="replace existing files")
    k.set_defaults(subparser=k)

    g = sub.add_parser(
        "sign",
        help="sign a file: prints the JSON for a job document's codesign property",
        description='Prints {"signature", "hashAlgorithm": "SHA256", "signatureAlgorithm": "ECDSA", "certificate", '
        '"sha256"}: a base64 DER ECDSA-SHA256 signature of the file.',
    )
    g.add_argument("file", metavar="FILE")
    g.add_argument("--key", required=True, help="signing key (PEM), e.g. signing.key from 'fleetjobs keys init'")
    g.add_argument("--cert", help="its certificate (PEM), included in the output")
    g.set_defaults(subparser=g)


def _progress_bar(total: int) -> tuple[object, object]:
    """``(update(done, total), close())`` drawing a progress line on stderr when it is a terminal."""
    if not sys.stderr.isatty() or total < 8 * 1024 * 1024:
        return (lambda done, total: None), (lambda: None)
    try:
        from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

        bar = Progress(BarColumn(), DownloadColumn(), TransferSpeedColumn(), transient=True)
        task = bar.add_task("upload", total=total)
        bar.start()
        return (lambda done, total: bar.update(task, completed=done)), bar.stop
    except ImportError:

        def update(done: int, total: int) -> None:
            sys.stderr.write(f"\r{done * 100 // max(total, 1):3d}% {done >> 20}/{total >> 20} MiB")
            sys.stderr.flush()

        return update, (lambda: sys.stderr.write("\n"))


def _artifacts(args: argparse.Namespace) -> None:
    from fleetjobs.artifacts import open_store

    settings = Settings.load({"data_dir": args.data_dir, "config": args.config})
    store: Any = open_store(settings)
    if args.artifacts_command == "put":
        size = os.path.getsize(args.file) if os.path.isfile(args.file) else 0
        update, close = _progress_bar(0 if args.no_progress else size)
        try:
            obj = store.put(args.bucket, args.key, args.file, progress=update)
        finally:
            close()  # type: ignore[operator]
        print(f"bucket: {obj.bucket}")
        print(f"key: {obj.key}")
        print(f"versionId: {obj.version_id}")
        print(f"size: {obj.size}")
        print(f"sha256: {obj.sha256}")
        print(f"placeholder: ${{aws:iot:s3-presigned-url:https://s3.amazonaws.com/{obj.bucket}/{obj.key}}}")
    elif args.artifacts_command == "ls":
        for o in store.list(args.bucket):
            print(
                "\t".join(
                    [o.bucket, o.key, o.version_id or "-", str(o.size), o.sha256 or (o.etag or "-").strip('"')]
                    + (["latest"] if o.latest else [])
                )
            )
    else:
        for o in store.delete(args.bucket, args.key, args.version_id):
            print(f"removed {o.bucket}/{o.key}" + (f" version {o.version_id}" if o.version_id else ""))


def _signing(args: argparse.Namespace) -> None:
    import json

    from fleetjobs.security import signing

    if args.command == "keys":
        key, cert = signing.init_keys(args.out, common_name=args.cn, days=args.days, force=args.force)
        print(f"signing key: {key} (keep it secret)")
        print(f"certificate: {cert} (give it to devices to verify with)")
    else:
        print(
            json.dumps(signing.sign(Path(args.file), Path(args.key), Path(args.cert) if args.cert else None), indent=2)
        )


def _data_dir(args: argparse.Namespace) -> Path:
    if args.data_dir:
        return Path(args.data_dir).expanduser()
    env = os.environ.get("FLEETJOBS_DATA_DIR")
    return Path(env).expanduser() if env else default_data_dir()


def _certs(args: argparse.Namespace) -> None:
    from fleetjobs.security import certs

    data_dir = _data_dir(args)
    cdir = certs.certs_dir(data_dir)
    if args.certs_command == "init":
        ca = certs.init_ca(cdir, force=args.force, days=args.days)
        print(f"CA certificate: {ca.cert_path}")
        print(f"CA private key: {ca.key_path} (keep it secret: it can mint any device identity)")
        print(f"Subject: {ca.cert.subject.rfc4514_string()}")
        return
    ca = certs.load_ca(cdir)
    if args.certs_command == "issue":
        cert, key = certs.issue_device_cert(ca, args.thing, args.out or certs.devices_dir(data_dir), days=args.days)
    elif args.certs_command == "server":
        cert, key = certs.issue_server_cert(ca, args.out or cdir, hosts=args.host, ips=args.ip, days=args.days)
    else:
        cert, key = certs.issue_service_cert(ca, args.out or cdir, days=args.days)
    print(f"certificate: {cert}")
    print(f"private key: {key}")
    print(f"CA certificate (to verify the broker): {ca.cert_path}")


def _broker_config(args: argparse.Namespace) -> None:
    from fleetjobs.security.broker_config import write_mosquitto_config

    conf = write_mosquitto_config(
        _data_dir(args), args.port, args.out, bind=args.bind, user=args.user, shared_requests=args.shared_requests
    )
    print(f"wrote {conf.conf_path} and {conf.acl_path} (files owned by user {conf.user!r})")
    print("start the broker with:")
    print("  " + shlex.join(conf.command()))


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        sys.exit(2)
    if args.command == "serve":
        from fleetjobs.config import worker_count
        from fleetjobs.server import serve
        from fleetjobs.supervisor import supervise

        flags = {k: v for k, v in vars(args).items() if k not in ("command", "subparser")}
        try:
            settings = Settings.load(flags)
        except (ValueError, OSError) as e:
            args.subparser.error(str(e))
        from fleetjobs.security.certs import CertificateError
        from fleetjobs.store.database import DatabaseUnavailable

        try:
            count = worker_count(settings)
            serve(settings) if count == 1 else supervise(settings, count)
        # --mqtt-tls without a readable CA; a database that cannot be used (the supervisor migrates
        # before any worker starts); a data dir that cannot be made.
        except (CertificateError, DatabaseUnavailable, OSError) as e:
            args.subparser.exit(1, f"fleetjobs serve: error: {e}\n")
    elif args.command in ("artifacts", "keys", "sign"):
        from fleetjobs.artifacts import ArtifactError
        from fleetjobs.security.signing import SigningError

        try:
            if args.command == "artifacts":
                _artifacts(args)
            else:
                _signing(args)
        except (ArtifactError, SigningError, ValueError, OSError) as e:
            args.subparser.exit(1, f"fleetjobs {args.command}: error: {e}\n")
    elif args.command == "simulate":
        from fleetjobs.simulate.cli import run as simulate

        simulate(args)
    elif args.command == "agent":
        from fleetjobs.agent.cli import run_agent

        try:
            run_agent(args)
        except (ValueError, OSError) as e:
            args.subparser.exit(1, f"fleetjobs agent: error: {e}\n")
    elif args.command in ("certs", "broker-config"):
        from fleetjobs.security.broker_config import BrokerConfigError
        from fleetjobs.security.certs import CertificateError

        try:
            if args.command == "certs":
                _certs(args)
            else:
                _broker_config(args)
        except (CertificateError, BrokerConfigError, OSError) as e:
            args.subparser.exit(1, f"fleetjobs {args.command}: error: {e}\n")
