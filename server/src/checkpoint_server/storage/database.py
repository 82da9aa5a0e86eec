"""Engines for SQLite and PostgreSQL, and bringing a database to the current schema."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from checkpoint_server.storage.notify import EventHub

# Any fixed number works; every server of the service takes the same lock while migrating.
_MIGRATION_LOCK_ID = 0x6C67_6370


def async_url(database_url: str) -> URL:
    """Turns the plain URL users give into one naming the async driver.

    ``sqlite:///path`` becomes ``sqlite+aiosqlite:///path`` and ``postgresql://...``
    (or ``postgres://...``) becomes ``postgresql+psycopg://...``.

    Raises:
        ValueError: The URL names another database.

    """
    url = make_url(database_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        return url.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+psycopg")
    raise ValueError(f"unsupported database {backend!r}: use sqlite:///path or postgresql://...")


@dataclass(frozen=True)
class Database:
    """The engines of one database.

    ``reader`` runs in autocommit: every read is one statement, which sees one consistent
    snapshot by itself, so reads pay for no BEGIN or COMMIT. ``writer`` runs transactions. On
    SQLite the writer is a single connection that starts every transaction with
    ``BEGIN IMMEDIATE``, so writes queue in the server instead of failing with "database is
    locked", while readers run beside it (WAL).
    """

    reader: AsyncEngine
    writer: AsyncEngine
    # One connection of its own for health probes: a probe that queued behind busy calls in
    # the reader pool would report a loaded but healthy server as down.
    probe: AsyncEngine
    hub: EventHub = field(default_factory=EventHub)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.writer.dialect.name

    @property
    def is_sqlite(self) -> bool:
        """Whether the database is SQLite."""
        return self.dialect == "sqlite"

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for one read statement (or several that need not agree)."""
        async with self.reader.connect() as conn:
            yield conn

    @property
    def url(self) -> URL:
        """The database's URL."""
        return self.writer.url

    @asynccontextmanager
    async def write(
        self, namespace: str | None = None, *, wake: bool = True
    ) -> AsyncIterator[AsyncConnection]:
        """A connection in a write transaction, committed on success.

        Wakes the event watchers of ``namespace`` (of every namespace when None) afterwards,
        unless ``wake`` is false: a caller whose transaction records no event, or that learns
        the namespace inside it, wakes them itself (``hub.poke``).
        """
        async with self.writer.begin() as conn:
            yield conn
        if wake:
            self.hub.poke(namespace)

    async def ping(self) -> bool:
        """Whether the database answers a trivial query now (for the health status)."""
        try:
            async with self.probe.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError):
            return False
        return True

    async def dispose(self) -> None:
        """Closes every connection."""
        await self.reader.dispose()
        await self.writer.dispose()
        await self.probe.dispose()


def unavailable(error: SQLAlchemyError) -> bool:
    """Whether the database cannot serve now (unreachable, lost, every connection busy)."""
    if isinstance(error, PoolTimeout):
        return True
    return isinstance(error, DBAPIError) and (
        error.connection_invalidated or isinstance(error, OperationalError)
    )


def describe_error(error: SQLAlchemyError) -> str:
    """A database error for the log: its class and the driver's, never the SQL or parameters.

    A statement's text and parameters may hold payloads and metadata values.
    """
    cause = error.orig if isinstance(error, DBAPIError) else None
    name = type(error).__name__
    if cause is None:
        return name
    return f"{name} ({type(cause).__module__}.{type(cause).__name__})"


def _sqlite_engine(url: URL, *, begin: str | None, pool_size: int) -> AsyncEngine:
    # Readers hold no transaction, so returning a connection to the pool needs no rollback.
    engine = create_async_engine(
        url,
        hide_parameters=True,
        pool_size=pool_size,
        max_overflow=0,
        pool_reset_on_return="rollback" if begin else None,
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _configure(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=NORMAL",
            "PRAGMA busy_timeout=30000",
            "PRAGMA foreign_keys=ON",
        ):
            cursor.execute(pragma)
        cursor.close()

    if begin is not None:

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql(begin)

    return engine


async def open_database(database_url: str, *, pool_size: int = 10) -> Database:
    """Opens a database and brings it to the current schema.

    Several servers may start at once on one PostgreSQL: they take turns migrating.

    Args:
        database_url: ``sqlite:///path`` or ``postgresql://user@host/db``.
        pool_size: Connections kept open for reads, and for writes on PostgreSQL.
    """
    url = async_url(database_url)
    if url.get_backend_name() == "sqlite":
        database = Database(
            reader=_sqlite_engine(url, begin=None, pool_size=pool_size),
            writer=_sqlite_engine(url, begin="BEGIN IMMEDIATE", pool_size=1),
            probe=_sqlite_engine(url, begin=None, pool_size=1),
        )
    else:
        # No pre-ping: it would cost a round trip per call. A dropped connection fails its
        # call with UNAVAILABLE, which clients retry, and the pool replaces it. Fixed pools,
        # no overflow: under load, calls queue for a connection instead of opening new
        # backends (each costs PostgreSQL a process and the first statements their plans).
        database = Database(
            reader=create_async_engine(
                url,
                hide_parameters=True,
                pool_size=pool_size,
                max_overflow=0,
                isolation_level="AUTOCOMMIT",
                pool_reset_on_return=None,
            ),
            writer=create_async_engine(
                url, hide_parameters=True, pool_size=pool_size, max_overflow=0
            ),
            probe=create_async_engine(
                url,
                hide_parameters=True,
                pool_size=1,
                max_overflow=0,
                isolation_level="AUTOCOMMIT",
                pool_reset_on_return=None,
            ),
        )
    try:
        await migrate(database)
    except BaseException:
        await database.dispose()
        raise
    return database


async def migrate(database: Database) -> None:
    """Runs the Alembic migrations the database lacks, under a lock."""
    async with database.writer.connect() as conn:
        if database.is_sqlite:
            # The writer's BEGIN IMMEDIATE holds SQLite's write lock for the whole upgrade.
            await conn.begin()
        else:
            await conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
            await conn.commit()
        try:
            await conn.run_sync(_upgrade)
            await conn.commit()
        finally:
            if not database.is_sqlite:
                await conn.execute(
                    text("SELECT pg_advisory_unlock(:id)"), {"id": _MIGRATION_LOCK_ID}
                )
                await conn.commit()


def _upgrade(connection: Connection) -> None:
    config = Config()
    config.set_main_option(
        "script_location", str(resources.files("checkpoint_server") / "migrations")
    )
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
