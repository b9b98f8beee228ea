"""Settings from flags, ``FLEETJOBS_*`` environment variables, or a TOML config file.

Precedence: command-line flag > environment > config file > default.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

LOG_LEVELS = ("debug", "info", "warning", "error")


def default_data_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "fleetjobs"


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 8090
    data_dir: Path = field(default_factory=default_data_dir)
    database_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    region: str = "us-east-1"
    account_id: str = "123456789012"
    log_level: str = "info"
    # The device plane.  By default an embedded broker listens on mqtt_host:mqtt_port and the gateway
    # joins it; with mqtt_url fleetjobs joins that external broker (mqtt://host:port, mqtts://...) instead.
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1884
    embedded_broker: bool = True
    # The embedded broker with mutual TLS: devices need a certificate of the CA in DATA_DIR/certs.
    mqtt_tls: bool = False
    mqtt_url: str | None = None
    mqtt_client_id: str = "fleetjobs-gateway"
    mqtt_ca_file: str | None = None
    mqtt_cert_file: str | None = None
    mqtt_key_file: str | None = None
    # Several instances on one external broker: share the device requests as this group (a shared
    # subscription to the copy the broker's loopback bridge makes; see README "Scaling out").
    mqtt_shared_group: str | None = None
    # Per-thing limit on device API requests (MQTT and HTTPS), requests/second with a burst of
    # twice that; beyond it requests get RequestThrottled / ThrottlingException.  0: no limit.
    device_requests_per_second: float = 20.0
    # Tests and demos: time starts at this epoch and moves only through POST /_fleetjobs/clock.
    manual_clock: float | None = None
    # Job artifacts (firmware files...): "local" keeps them in DATA_DIR/artifacts and serves them at
    # {public_url}/_fleetjobs/artifacts/... through URLs signed with artifact_secret (default: a secret
    # made in DATA_DIR/artifact-secret; instances serving the same files need the same one); "s3" uses
    # an S3-compatible service (s3_endpoint_url for MinIO/Ceph; credentials from the s3_* settings or
    # boto3's usual chain).
    artifact_store: str = "local"
    artifact_secret: str | None = None
    public_url: str | None = None
    # The host name devices reach this deployment at, answered by DescribeEndpoint for iot:Data,
    # iot:Data-ATS and iot:Jobs (a bare host, as AWS answers: no scheme, port or path).  Unset: the
    # host of mqtt_url (else mqtt_host) for data, of public_url (else host) for jobs.
    public_host: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    # Processes that share this instance's HTTP port and device traffic: a number, or "auto" (one per
    # core on PostgreSQL; 1 on SQLite, which lets one process write at a time, and with manual_clock,
    # whose time lives in one process).
    workers: int | str = "auto"

    @classmethod
    def load(cls, flags: dict[str, Any], env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        merged: dict[str, Any] = {}
        config_file = flags.get("config") or env.get("FLEETJOBS_CONFIG")
        if config_file:
            with open(config_file, "rb") as fh:
                doc = tomllib.load(fh)
            merged.update({k.replace("-", "_"): v for k, v in doc.items()})
        for f in fields(cls):
            value = env.get(f"FLEETJOBS_{f.name.upper()}")
            if value is not None and value != "":
                merged[f.name] = value
        merged.update({k: v for k, v in flags.items() if v is not None and k != "config"})
        known = {f.name for f in fields(cls)}
        unknown = set(merged) - known
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        merged.setdefault("data_dir", default_data_dir(env))
        s = cls(**merged)
        try:
            s.port = int(s.port)
        except (TypeError, ValueError):
            raise ValueError(f"port must be a number, not {s.port!r}") from None
        try:
            s.mqtt_port = int(s.mqtt_port)
        except (TypeError, ValueError):
            raise ValueError(f"mqtt_port must be a number, not {s.mqtt_port!r}") from None
        try:
            s.device_requests_per_second = float(s.device_requests_per_second)
        except (TypeError, ValueError):
            raise ValueError(
                f"device_requests_per_second must be a number, not {s.device_requests_per_second!r}"
            ) from None
        if s.manual_clock is not None:
            try:
                s.manual_clock = float(s.manual_clock)
            except (TypeError, ValueError):
                raise ValueError(f"manual_clock must be epoch seconds, not {s.manual_clock!r}") from None
        s.workers = _workers(s.workers)
        if isinstance(s.workers, int) and s.workers > 1 and s.manual_clock is not None:
            raise ValueError("manual_clock keeps time in one process: use workers = 1 with it")
        s.embedded_broker = _boolean("embedded_broker", s.embedded_broker)
        s.mqtt_tls = _boolean("mqtt_tls", s.mqtt_tls)
        if s.mqtt_tls and (s.mqtt_url or not s.embedded_broker):
            raise ValueError(
                "mqtt_tls is for the embedded broker; to join an external broker over TLS give an mqtts:// mqtt_url "
                "and mqtt_ca_file, mqtt_cert_file, mqtt_key_file"
            )
        if s.mqtt_shared_group:
            if any(c in str(s.mqtt_shared_group) for c in "/+#"):
                raise ValueError(f"mqtt_shared_group must not contain '/', '+' or '#': {s.mqtt_shared_group!r}")
            if not s.mqtt_url:
                raise ValueError("mqtt_shared_group needs mqtt_url: an external broker with the loopback bridge")
        s.data_dir = Path(s.data_dir).expanduser()
        s.log_level = str(s.log_level).lower()
        if s.log_level not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}, not {s.log_level!r}")
        if bool(s.access_key_id) != bool(s.secret_access_key):
            raise ValueError("set both access_key_id and secret_access_key, or neither (to use generated keys)")
        s.artifact_store = str(s.artifact_store).lower()
        if s.artifact_store not in ("local", "s3"):
            raise ValueError(f"artifact_store must be local or s3, not {s.artifact_store!r}")
        if bool(s.s3_access_key_id) != bool(s.s3_secret_access_key):
            raise ValueError("set both s3_access_key_id and s3_secret_access_key, or neither (boto3's usual chain)")
        if s.public_url and not str(s.public_url).startswith(("http://", "https://")):
            raise ValueError(f"public_url must be an http:// or https:// URL, not {s.public_url!r}")
        if s.public_host is not None:
            s.public_host = _host_name("public_host", s.public_host)
        return s


def _workers(value: Any) -> int | str:
    if str(value).strip().lower() == "auto":
        return "auto"
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"workers must be a number or auto, not {value!r}") from None
    if not 1 <= count <= 64:
        raise ValueError(f"workers must be between 1 and 64, not {count}")
    return count


def worker_count(settings: Settings) -> int:
    """How many processes ``serve`` runs (see :attr:`Settings.workers`)."""
    if isinstance(settings.workers, int):
        return settings.workers
    postgres = bool(settings.database_url) and str(settings.database_url).startswith("postgres")
    if not postgres or settings.manual_clock is not None:
        return 1
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _host_name(name: str, value: Any) -> str:
    """A bare host name or IP address: DescribeEndpoint hands it to devices as AWS does its own
    (``<id>-ats.iot.<region>.amazonaws.com``), so a scheme, port or path would break them."""
    text = str(value).strip()
    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        pass
    if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?", text):
        raise ValueError(f"{name} must be a host name or IP address (no scheme, port or path), not {value!r}")
    return text


def _boolean(name: str, value: Any) -> bool:
    """A boolean setting: a bool (flag, TOML) or a string (environment, TOML)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(f"{name} must be true or false, not {value!r}")
    return text in ("true", "1", "yes")


@dataclass(frozen=True)
class AccessKey:
    access_key_id: str
    secret_access_key: str
    generated: bool = False


def resolve_access_key(settings: Settings) -> AccessKey:
    """Use the configured key pair, or the one generated on a first start (kept in the data dir)."""
    if settings.access_key_id or settings.secret_access_key:
        if not (settings.access_key_id and settings.secret_access_key):
            raise ValueError("set both --access-key-id and --secret-access-key, or neither")
        return AccessKey(settings.access_key_id, settings.secret_access_key)
    path = settings.data_dir / "credentials.json"
    if path.exists():
        return _read_key(path)
    alphabet = string.ascii_uppercase + string.digits
    key = AccessKey(
        "FJ" + "".join(secrets.choice(alphabet) for _ in range(18)),
        secrets.token_urlsafe(30)[:40],
        generated=True,
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Written whole to a private temporary file, then linked into place: os.link refuses to
    # overwrite, so when several instances start at once on a fresh data dir exactly one pair
    # wins and every instance uses it.
    tmp = path.with_name(f".credentials.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump({"accessKeyId": key.access_key_id, "secretAccessKey": key.secret_access_key}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _read_key(path)
        except OSError:  # a file system without hard links: last writer wins
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return key


def _read_key(path: Path) -> AccessKey:
    doc = json.loads(path.read_text())
    return AccessKey(doc["accessKeyId"], doc["secretAccessKey"])
