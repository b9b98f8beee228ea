"""Engine set-up and transactions for SQLite (WAL, one writer) and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

_EVENTS = "fleetjobs_events"
# /_fleetjobs/health may be polled by every load balancer there is: one real check a second at most,
# and none may hang the poller.
HEALTH_TTL_SECONDS = 1.0
HEALTH_TIMEOUT_SECONDS = 5.0


class DatabaseUnavailable(Exception):
    """The database cannot be opened or written: said in one line at start, not as a traceback."""


def _first_line(error: BaseException) -> str:
    """The driver's own words (``attempt to write a readonly database``), without SQLAlchemy's SQL echo."""
    orig = getattr(error, "orig", None) or error
    text_ = str(orig).strip() or type(orig).__name__
    # SQLAlchemy's asyncpg adapter prefixes the driver's class: "<class 'asyncpg...Error'>: ..."
    return re.sub(r"^<class '[^']*'>: ", "", text_.splitlines()[0])


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
        self._health_lock = asyncio.Lock()
        self._health: tuple[float, str | None] | None = None  # (monotonic time checked, problem)

    def describe(self) -> str:
        """Which database, for an operator: the SQLite file, or the URL without its password."""
        u = make_url(self.url)
        return str(u.database) if self.is_sqlite else u.render_as_string(hide_password=True)

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
        """Bring the schema to head, then make sure the database takes writes.

        A server that cannot write must not start: it would answer reads and fail every write.
        Any database failure here (cannot open or create the file, read-only, refused) is raised
        as ``DatabaseUnavailable`` with the driver's one-line reason.
        """
        try:
            await self._upgrade()
            problem = await self._probe()
        except (DBAPIError, OSError, TimeoutError) as e:
            raise DatabaseUnavailable(f"cannot use the database {self.describe()}: {_first_line(e)}") from None
        if problem is not None:
            raise DatabaseUnavailable(f"cannot write the database {self.describe()}: {problem}")

    async def _upgrade(self) -> None:
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
                    await conn.rollback()  # a failed migration leaves the transaction aborted
                    await conn.execute(text("SELECT pg_advisory_unlock(7212026)"))
                    await conn.commit()

    async def health(self) -> str | None:
        """None while the database answers a query and takes writes, else why not.

        Checked at most once every ``HEALTH_TTL_SECONDS`` (concurrent callers share one check) and
        never for longer than ``HEALTH_TIMEOUT_SECONDS``.
        """
        async with self._health_lock:
            if self._health is not None and time.monotonic() - self._health[0] < HEALTH_TTL_SECONDS:
                return self._health[1]
            problem: str | None
            try:
                problem = await asyncio.wait_for(self._probe(), HEALTH_TIMEOUT_SECONDS)
            except TimeoutError:
                problem = f"the database did not answer within {HEALTH_TIMEOUT_SECONDS:g} s"
            except (DBAPIError, OSError) as e:
                problem = _first_line(e)
            self._health = (time.monotonic(), problem)
            return problem

    async def _probe(self) -> str | None:
        """One cheap round trip that also shows whether a write would be accepted, leaving no data.

        PostgreSQL says so itself (``transaction_read_only`` is on for a read-only database or a
        standby).  SQLite only finds out on a write: a write transaction that deletes nothing and
        rolls back.  While a writer holds SQLite's write lock, that writer is the proof; a read
        shows the file still answers.
        """
        if self._write_lock is None:
            async with self.engine.connect() as conn:
                read_only = (await conn.execute(text("SHOW transaction_read_only"))).scalar()
            return "the database is read-only (transaction_read_only is on)" if read_only == "on" else None
        if self._write_lock.locked():
            async with self.read() as conn:
                await conn.execute(text("SELECT 1"))
            return None
        try:
            async with self._write_lock, self.engine.connect() as conn:
                await conn.execution_options(fleetjobs_write=True)
                async with conn.begin() as tx:
                    await conn.execute(text("DELETE FROM alembic_version WHERE 0"))
                    await tx.rollback()
        except DBAPIError as e:
            return _first_line(e)
        return None

    async def close(self) -> None:
        await self.engine.dispose()
