"""Honest start and health: a database that cannot be written stops ``serve`` with one clear line,
and ``/_fleetjobs/health`` is 200 only while the database answers and would take a write.

The unwritable SQLite cases hold for root too (chmod does not stop root): a database path under a
regular file cannot be created by anyone, and a file opened with SQLite's ``mode=ro`` refuses
every write. PostgreSQL is made read-only the way an operator (or a failover to a standby) does:
``default_transaction_read_only`` on the database, then new connections.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Backend
from tests.harness import (
    ACCESS_KEY_ID,
    ACCOUNT,
    ISOLATED_ENV,
    REGION,
    SECRET_ACCESS_KEY,
    _pg_admin,
    free_port,
    unique,
)

START_DEADLINE = 90.0  # seconds for a server to either exit or come up


def health(endpoint: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"{endpoint}/_fleetjobs/health", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def health_until(endpoint: str, wanted: Any, what: str) -> tuple[int, dict[str, Any]]:
    """Poll health until ``wanted(status, doc)`` (results are cached for about a second)."""
    deadline = time.monotonic() + 60
    seen: tuple[int, dict[str, Any]] = (0, {})
    while time.monotonic() < deadline:
        seen = health(endpoint)
        if wanted(*seen):
            return seen
        time.sleep(0.2)
    raise AssertionError(f"health never became {what}; last answer {seen}")


def start_expecting_failure(data_dir: Path, database_url: str, workers: str = "1") -> subprocess.CompletedProcess[str]:
    """Run ``fleetjobs serve`` and return how it ended; fail if it comes up healthy instead."""
    port = free_port()
    args = [sys.executable, "-m", "fleetjobs", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    args += ["--region", REGION, "--account-id", ACCOUNT, "--database-url", database_url]
    args += ["--access-key-id", ACCESS_KEY_ID, "--secret-access-key", SECRET_ACCESS_KEY]
    env = {k: v for k, v in os.environ.items() if k not in ISOLATED_ENV}
    env |= {"FLEETJOBS_WORKERS": workers, "FLEETJOBS_MQTT_PORT": str(free_port())}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + START_DEADLINE
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_fleetjobs/health", timeout=2) as r:
                    status = r.status
            except (OSError, ValueError):
                status = 0
            if status == 200:
                raise AssertionError("fleetjobs serve started on a database it cannot write, and says it is healthy")
            time.sleep(0.2)
        if proc.poll() is None:
            raise AssertionError("fleetjobs serve neither started nor exited")
        out, err = proc.communicate(timeout=30)
        return subprocess.CompletedProcess(args, proc.returncode, out, err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def assert_clear_refusal(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0, result
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    errors = [line for line in result.stderr.splitlines() if line.startswith("fleetjobs serve: error: ")]
    assert len(errors) == 1, result.stderr
    for word in words:
        assert word in errors[0], errors[0]


# --- start ------------------------------------------------------------------------------------------


def test_serve_refuses_a_sqlite_database_it_cannot_create(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a regular file where the database's directory should be\n")
    target = blocker / "fleetjobs.db"
    result = start_expecting_failure(tmp_path / "data", f"sqlite:///{target}")
    assert_clear_refusal(result, "cannot use the database", str(target), "unable to open database file")


def test_serve_refuses_a_read_only_sqlite_file(tmp_path: Path, backends: Backend) -> None:
    if backends.kind != "sqlite":
        pytest.skip("SQLite case")
    data_dir = tmp_path / "data"
    srv = backends.server(data_dir=data_dir).start()  # a real, migrated database
    srv.client("iot").create_thing(thingName=unique("t"))
    srv.stop()
    db_file = data_dir / "fleetjobs.db"
    result = start_expecting_failure(data_dir, f"sqlite:///file:{db_file}?mode=ro&uri=true")
    assert_clear_refusal(result, "cannot write the database", str(db_file), "readonly database")


@pytest.mark.parametrize(
    "workers",
    ["1", "2"],
)
@pytest.mark.parametrize("migrated", [False, True], ids=["fresh", "migrated"])
def test_serve_refuses_a_read_only_postgres_database(
    tmp_path: Path, backends: Backend, migrated: bool, workers: str
) -> None:
    if backends.kind != "postgres":
        pytest.skip("PostgreSQL case")
    url = backends.new_database()
    assert url is not None
    if migrated:  # already at head: migrating writes nothing, only the write check can tell
        backends.server(database_url=url).start().stop()
    name = url.rsplit("/", 1)[1]
    _pg_admin(f"ALTER DATABASE {name} SET default_transaction_read_only = on")
    result = start_expecting_failure(tmp_path / "data", url, workers)
    assert_clear_refusal(result, name, "read-only")


# --- health -------------------------------------------------------------------------------------------


def test_health_names_the_database_it_checked(backends: Backend) -> None:
    srv = backends.server().start()
    try:
        assert health(srv.endpoint) == (
            200,
            {"status": "ok", "database": backends.kind.replace("postgres", "postgresql")},
        )
    finally:
        srv.stop()


def test_health_is_503_while_postgres_is_read_only_and_200_once_it_is_writable(backends: Backend) -> None:
    if backends.kind != "postgres":
        pytest.skip("PostgreSQL case")
    url = backends.new_database()
    assert url is not None
    name = url.rsplit("/", 1)[1]
    srv = backends.server(database_url=url).start()
    drop_sessions = f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    try:
        assert health(srv.endpoint)[0] == 200
        _pg_admin(f"ALTER DATABASE {name} SET default_transaction_read_only = on")
        _pg_admin(drop_sessions)  # the setting applies to new sessions
        status, doc = health_until(srv.endpoint, lambda s, d: "read-only" in d.get("reason", ""), "read-only")
        assert (status, doc["status"], doc["database"]) == (503, "unavailable", "postgresql"), doc

        _pg_admin(f"ALTER DATABASE {name} RESET default_transaction_read_only")
        _pg_admin(drop_sessions)
        status, doc = health_until(srv.endpoint, lambda s, d: s == 200, "ok")
        assert doc == {"status": "ok", "database": "postgresql"}
        srv.client("iot").create_thing(thingName=unique("t"))  # and it writes again
    finally:
        srv.stop()
