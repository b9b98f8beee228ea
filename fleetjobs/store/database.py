"""Engine set-up and transactions for SQLite (WAL, one writer) and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

_EVENTS = "fleetjobs_events"


def record_event(conn: AsyncConnection, event: Any) -> None:
    """Announce ``event`` once the write transaction on ``conn`` commits (dropped if it rolls back)."""
    conn.info.setdefault(_EVENTS, []).append(event)


def async_url(url: str) -> str:
    """Accept the URLs people type (``postgresql://``, ``sqlite:///``) and pick the async driver."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"):
        u = u.set(drivername="postgresql+asyncpg")
    elif u.drivername in ("sqlite", "sqlite+pysqlite"):
        u = u.set(drivername="sqlite+aiosqlite")
    return u.render_as_string(hide_password=False)


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{data_dir / 'fleetjobs.db'}"


class Database:
    """Owns the engine; hands out read and write transactions.

    SQLite allows one writer at a time: write transactions start with ``BEGIN IMMEDIATE``
    (so two writers never deadlock upgrading a read lock) and are serialised in-process by a
    lock instead of spinning on ``SQLITE_BUSY``.  PostgreSQL needs neither.
    """

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = async_url(url)
        self.dialect = make_url(self.url).get_backend_name()
        if self.dialect == "sqlite":
            self.engine: AsyncEngine = create_async_engine(self.url, pool_size=pool_size, max_overflow=0)
            self._install_sqlite_hooks()
        else:
            self.engine = create_async_engine(self.url, pool_size=pool_size, max_overflow=10, pool_recycle=1800)
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None
        self.on_events: Callable[[list[Any]], None] | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def _install_sqlite_hooks(self) -> None:
        sync_engine = self.engine.sync_engine

        @event.listens_for(sync_engine, "connect")
        def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            # Take transaction control away from the sqlite3 module so BEGIN IMMEDIATE is ours.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")  # an acknowledged write survives power loss
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(sync_engine, "begin")
        def _on_begin(conn) -> None:  # type: ignore[no-untyped-def]
            immediate = conn.get_execution_options().get("fleetjobs_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction.  Domain events recorded on it (``record_event``) are handed to
        ``on_events`` only after it has committed, so nobody hears of a change that rolled back."""
        events: list[Any] = []
        if self._write_lock is not None:
            async with self._write_lock, self.engine.connect() as conn:
                await conn.execution_options(fleetjobs_write=True)
                conn.info[_EVENTS] = events
                async with conn.begin():
                    yield conn
                conn.info.pop(_EVENTS, None)
        else:
            async with self.engine.begin() as conn:
                conn.info[_EVENTS] = events
                yield conn
        if events and self.on_events is not None:
            self.on_events(events)

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            async with conn.begin():
                yield conn

    async def migrate(self) -> None:
        from fleetjobs.store.migrate import upgrade

        async with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                # Several instances may start together; one migrates, the others wait.
                await conn.execute(text("SELECT pg_advisory_lock(7212026)"))
                await conn.commit()
            try:
                await conn.run_sync(upgrade)
                await conn.commit()
            finally:
                if self.dialect == "postgresql":
                    await conn.execute(text("SELECT pg_advisory_unlock(7212026)"))
                    await conn.commit()

    async def close(self) -> None:
        await self.engine.dispose()
