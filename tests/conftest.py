"""Every integration test runs against both backends: SQLite and PostgreSQL.

With ``CI=true`` a missing PostgreSQL fails the run instead of skipping.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Server, create_pg_database, drop_pg_database, in_ci, postgres_available, unique

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
