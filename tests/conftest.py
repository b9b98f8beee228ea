"""Every integration test runs against both backends: SQLite and PostgreSQL.

With ``CI=true`` a missing PostgreSQL fails the run instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import (
    Server,
    create_pg_database,
    drop_pg_database,
    free_port,
    in_ci,
    postgres_available,
    unique,
)
from tests.mqtt_device import Device

BACKENDS = [b.strip() for b in os.environ.get("FLEETJOBS_TEST_BACKENDS", "sqlite,postgres").split(",") if b.strip()]
if in_ci() and "postgres" not in BACKENDS:
    # CI must exercise both backends; a narrowed list is a local convenience only.
    BACKENDS.append("postgres")


def _require_postgres() -> None:
    if not postgres_available():
        if in_ci():
            pytest.fail("PostgreSQL is not reachable and CI=true: refusing to skip the PostgreSQL backend")
        pytest.skip("PostgreSQL not available")


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        _require_postgres()
    return request.param


class Backend:
    """Makes fresh databases of one kind and servers over them."""

    def __init__(self, kind: str, root: Path) -> None:
        self.kind = kind
        self.root = root
        self._databases: list[str] = []
        self._servers: list[Server] = []

    def new_database(self) -> str | None:
        if self.kind == "sqlite":
            return None
        url = create_pg_database()
        self._databases.append(url)
        return url

    def server(self, *, data_dir: Path | None = None, database_url: str | None = None, **kw: object) -> Server:
        data_dir = data_dir or self.root / unique("data")
        if database_url is None:
            database_url = self.new_database()
        srv = Server(data_dir=data_dir, database_url=database_url, **kw)  # type: ignore[arg-type]
        self._servers.append(srv)
        return srv

    def close(self) -> None:
        for srv in self._servers:
            srv.stop()
        for url in self._databases:
            drop_pg_database(url)


@pytest.fixture(scope="session")
def backends(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    b = Backend(backend, tmp_path_factory.mktemp(backend))
    yield b
    b.close()


@pytest.fixture(scope="session")
def server(backends: Backend) -> Server:
    """A server shared by the tests of a session (per backend); tests use unique names."""
    return backends.server().start()


@pytest.fixture
def iot(server: Server):  # type: ignore[no-untyped-def]
    return server.client("iot")


@pytest.fixture
def iot_raw(server: Server):  # type: ignore[no-untyped-def]
    """A client with boto3's own parameter validation off, to reach the server's validation."""
    return server.client("iot", validate=False)


# -- MQTT: a Mosquitto process of the tests' own, and a fleetjobs server whose gateway joins it ---------


def start_mosquitto(directory: Path) -> tuple[int, subprocess.Popen[bytes]]:
    """A plain (no TLS, anonymous) Mosquitto of the tests' own on a free port."""
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(exe).exists():
        if in_ci():
            pytest.fail("mosquitto is not installed and CI=true: refusing to skip the MQTT tests")
        pytest.skip("mosquitto not installed")
    port = free_port()
    conf = directory / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return port, proc


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """One Mosquitto for the session.  Gateways that join it answer every device on it, so a test
    that runs a gateway of its own (restarts, kills) takes ``private_mosquitto`` instead."""
    port, proc = start_mosquitto(tmp_path_factory.mktemp("mosquitto"))
    yield port
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def private_mosquitto(tmp_path: Path) -> Iterator[int]:
    """A Mosquitto for one test: no other test's gateway is on it to answer its devices."""
    port, proc = start_mosquitto(tmp_path)
    yield port
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session", params=["embedded", "mosquitto"])
def mqtt_server(request: pytest.FixtureRequest, backends: Backend) -> Server:
    """A server answering the Jobs MQTT API: through its embedded broker, or through the
    tests' Mosquitto (fleetjobs as a client).  ``.mqtt_port`` is where devices connect."""
    if request.param == "mosquitto":
        port = request.getfixturevalue("mosquitto")
        srv = backends.server(
            env={"FLEETJOBS_MQTT_URL": f"mqtt://127.0.0.1:{port}", "FLEETJOBS_MQTT_CLIENT_ID": unique("gw")}
        ).start()
        srv.mqtt_port = port
    else:
        srv = backends.server().start()
    # Ready once the gateway answers a request.
    probe = Device("127.0.0.1", srv.mqtt_port, unique("probe"))
    try:
        probe.until_answered(50)
    except TimeoutError:
        raise RuntimeError(f"MQTT gateway never answered:\n{srv.log()}") from None
    finally:
        probe.close()
    return srv


@pytest.fixture
def device_factory(mqtt_server):  # type: ignore[no-untyped-def]
    """Paho devices on ``mqtt_server``'s broker, closed after the test."""
    made: list[Device] = []

    def make(thing: str) -> Device:
        d = Device("127.0.0.1", mqtt_server.mqtt_port, thing)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()
