"""Test harness: real ``fleetjobs serve`` processes, real databases, real boto3 clients."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

PG_ADMIN_URL = os.environ.get("FLEETJOBS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
ACCESS_KEY_ID = "AKIDFLEETJOBSTEST01"
SECRET_ACCESS_KEY = "fleetjobs-test-secret-key-0000000000000000"
REGION = "us-east-1"
ACCOUNT = "123456789012"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def postgres_available() -> bool:
    try:
        subprocess.run(["psql", PG_ADMIN_URL, "-qAtc", "select 1"], check=True, capture_output=True, timeout=10)
        return True
    except (OSError, subprocess.SubprocessError):
        return False


def create_pg_database() -> str:
    """A fresh, empty PostgreSQL database; returns its URL."""
    name = f"fleetjobs_test_{uuid.uuid4().hex[:12]}"
    subprocess.run(["psql", PG_ADMIN_URL, "-qAtc", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{name}"


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    subprocess.run(["psql", PG_ADMIN_URL, "-qAtc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], capture_output=True)


@dataclass
class Server:
    """One ``fleetjobs serve`` subprocess."""

    data_dir: Path
    database_url: str | None = None
    port: int = field(default_factory=free_port)
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

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
            "--access-key-id",
            ACCESS_KEY_ID,
            "--secret-access-key",
            SECRET_ACCESS_KEY,
            "--region",
            REGION,
            "--account-id",
            ACCOUNT,
            *self.extra_args,
        ]
        if self.database_url:
            args += ["--database-url", self.database_url]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / f"server-{self.port}.log"
        log = open(self.log_path, "ab")
        env = {**os.environ, **self.env}
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fleetjobs exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/_fleetjobs/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"fleetjobs did not become ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self, kill: bool = False) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def client(self, service: str = "iot", *, validate: bool = True, **kwargs: Any) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=kwargs.pop("access_key_id", ACCESS_KEY_ID),
            aws_secret_access_key=kwargs.pop("secret_access_key", SECRET_ACCESS_KEY),
            config=Config(parameter_validation=validate, retries={"max_attempts": 1}),
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
