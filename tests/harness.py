"""Test harness: real ``fleetjobs serve`` processes, real databases, real boto3 clients."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import boto3
from botocore.config import Config

PG_ADMIN_URL = os.environ.get("FLEETJOBS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
ACCESS_KEY_ID = "AKIDFLEETJOBSTEST01"
SECRET_ACCESS_KEY = "fleetjobs-test-secret-key-0000000000000000"
REGION = "us-east-1"
ACCOUNT = "123456789012"

# Settings a test server must take only from the harness (see ``Server``).
ISOLATED_ENV = frozenset(
    {"FLEETJOBS_DATABASE_URL", "FLEETJOBS_CONFIG", "FLEETJOBS_ACCESS_KEY_ID", "FLEETJOBS_SECRET_ACCESS_KEY"}
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(endpoint: str, proc: subprocess.Popen[Any], timeout: float, log: Callable[[], str]) -> None:
    """Wait until a started ``fleetjobs serve`` answers its health check (or fail with its log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"fleetjobs exited with {proc.returncode}:\n{log()}")
        try:
            with urllib.request.urlopen(f"{endpoint}/_fleetjobs/health", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"fleetjobs did not become ready:\n{log()}")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _pg_admin(sql: str) -> None:
    """Run one statement as the admin URL's user, with asyncpg (no psql client needed)."""

    async def go() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    # In a thread of its own: the caller may itself be inside a running event loop.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: asyncio.run(go())).result()


def postgres_available() -> bool:
    try:
        _pg_admin("SELECT 1")
        return True
    except Exception:  # refused, unknown host, bad credentials, timeout: all mean "not here"
        return False


def create_pg_database() -> str:
    """A fresh, empty PostgreSQL database; returns its URL."""
    name = f"fleetjobs_test_{uuid.uuid4().hex[:12]}"
    _pg_admin(f"CREATE DATABASE {name}")
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{name}"


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with contextlib.suppress(Exception):
        _pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@dataclass
class Server:
    """One ``fleetjobs serve`` subprocess.

    It is started with the test key pair unless ``credentials=False`` (then it uses, or generates,
    the pair in its data dir). The caller's own FLEETJOBS_DATABASE_URL / _CONFIG / _ACCESS_KEY_ID /
    _SECRET_ACCESS_KEY never reach it (they would change which database or keys a test server
    uses); other variables are inherited, and ``env`` adds or overrides.
    """

    data_dir: Path
    database_url: str | None = None
    port: int = field(default_factory=free_port)
    mqtt_port: int = field(default_factory=free_port)
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    credentials: bool = True
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    _log_offset: int = field(default=0, init=False, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> Server:
        args = [
            sys.executable,
            "-m",
            "fleetjobs",
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--region",
            REGION,
            "--account-id",
            ACCOUNT,
            *self.extra_args,
        ]
        if self.credentials:
            args += ["--access-key-id", ACCESS_KEY_ID, "--secret-access-key", SECRET_ACCESS_KEY]
        if self.database_url:
            args += ["--database-url", self.database_url]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / f"server-{self.port}.log"
        env = {k: v for k, v in os.environ.items() if k not in ISOLATED_ENV}
        env.update(self.env)
        # Every test server gets its own embedded-broker port (the default one may be taken).
        env.setdefault("FLEETJOBS_MQTT_PORT", str(self.mqtt_port))
        # One process unless a test asks for workers (tests/test_workers.py runs the default, auto).
        env.setdefault("FLEETJOBS_WORKERS", "1")
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        wait_healthy(self.endpoint, self.proc, timeout, self.log)
        return self

    def log(self) -> str:
        """Everything every run of this server printed (its data dir and port may be reused)."""
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def output(self) -> str:
        """What the current (or last) run printed: the start banner, then its log."""
        if not self.log_path or not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as fh:
            fh.seek(self._log_offset)
            return fh.read().decode(errors="replace")

    def stop(self, kill: bool = False) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def client(
        self, service: str = "iot", *, validate: bool = True, config: Config | None = None, **kwargs: Any
    ) -> Any:
        """A boto3 client for this server; ``config`` is merged over the harness defaults."""
        base = Config(parameter_validation=validate, retries={"max_attempts": 1})
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=kwargs.pop("access_key_id", ACCESS_KEY_ID),
            aws_secret_access_key=kwargs.pop("secret_access_key", SECRET_ACCESS_KEY),
            config=base.merge(config) if config else base,
            **kwargs,
        )

    def cli(self, *args: str, check: bool = True) -> Any:
        """Run ``aws iot ...`` (the AWS CLI) against this server; returns parsed JSON output."""
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        }
        aws = str(Path(sys.executable).with_name("aws"))
        proc = subprocess.run(
            [aws, *args, "--endpoint-url", self.endpoint, "--output", "json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"aws {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        if check:
            return json.loads(proc.stdout) if proc.stdout.strip() else None
        return proc


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
