"""The four savers under test, each on a database of its own, and how much they store."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from psycopg import sql

from bench.server import ServerProcess, free_port
from langgraph.checkpoint.grpc import GrpcSaver

# The three tables both PostgreSQL savers keep their data in.


@dataclass(frozen=True)
class SaverSpec:
    """One saver on one database."""

    key: str
    label: str
    database: str
    grpc: bool


GRPC_SQLITE = SaverSpec("grpc-sqlite", "GrpcSaver (SQLite)", "SQLite", grpc=True)
SQLITE = SaverSpec("sqlite", "AsyncSqliteSaver", "SQLite", grpc=False)
GRPC_POSTGRES = SaverSpec("grpc-postgres", "GrpcSaver (PostgreSQL)", "PostgreSQL", grpc=True)
POSTGRES = SaverSpec("postgres", "AsyncPostgresSaver", "PostgreSQL", grpc=False)
ALL_SPECS = (GRPC_SQLITE, SQLITE, GRPC_POSTGRES, POSTGRES)
# Each GrpcSaver and the official saver it is compared with.
PAIRS = ((GRPC_SQLITE, SQLITE), (GRPC_POSTGRES, POSTGRES))


@dataclass(frozen=True)
class Storage:
    """Bytes a database uses, and the checkpoints it holds.

    ``event_log_bytes`` is the part in GrpcSaver's event log (the ``events`` table behind
    WatchEvents), which keeps each change for a retention period rather than for as long as
    the checkpoint lives; it is measured on PostgreSQL only (0 elsewhere).
    """

    bytes: int
    checkpoints: int
    event_log_bytes: int = 0

    @property
    def per_checkpoint(self) -> float:
        """Bytes per stored checkpoint, the event log left out."""
        return (self.bytes - self.event_log_bytes) / self.checkpoints

    @property
    def total_per_checkpoint(self) -> float:
        """Bytes per stored checkpoint, the event log included."""
        return self.bytes / self.checkpoints

    @property
    def event_log_per_checkpoint(self) -> float:
        """Event log bytes per stored checkpoint."""
        return self.event_log_bytes / self.checkpoints


@dataclass(frozen=True)
class Backend:
    """An open saver and a way to measure its storage."""

    spec: SaverSpec
    saver: BaseCheckpointSaver[Any]
    storage: Callable[[], Awaitable[Storage]]
    settle: Callable[[], Awaitable[None]]
    server_pid: int | None = None
    postgres_url: str | None = None
    metrics_url: str | None = None  # the server's Prometheus endpoint (GrpcSaver only)


def _database_url(base_url: str, name: str) -> str:
    return base_url.rsplit("/", 1)[0] + f"/{name}"


@asynccontextmanager
async def fresh_postgres_database(base_url: str) -> AsyncIterator[str]:
    """A new, empty PostgreSQL database next to ``base_url``'s, dropped on exit."""
    name = f"lgcp_bench_{uuid.uuid4().hex[:12]}"
    async with await psycopg.AsyncConnection.connect(base_url, autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _database_url(base_url, name)
    finally:
        async with await psycopg.AsyncConnection.connect(base_url, autocommit=True) as conn:
            await conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


async def postgres_analyze(url: str) -> None:
    """Refreshes the planner's statistics, as autovacuum soon would in a running database.

    Without it, plans chosen for the first few rows of a thread stay in use for thousands.
    """
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("ANALYZE")


async def _nothing() -> None:
    return None


async def postgres_storage(url: str) -> Storage:
    """``pg_total_relation_size`` of every table the saver made, and the checkpoint count.

    Every table counts (GrpcSaver's ``threads``, AsyncPostgresSaver's ``checkpoint_migrations``,
    Alembic's version table): each saver gets a database of its own.
    """
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind = 'r'"
        )
        row = await cursor.fetchone()
        size = int(row[0]) if row else 0
        cursor = await conn.execute(
            "SELECT coalesce(pg_total_relation_size(to_regclass('events')), 0)"
        )
        row = await cursor.fetchone()
        events = int(row[0]) if row else 0
        cursor = await conn.execute("SELECT count(*) FROM checkpoints")
        row = await cursor.fetchone()
        return Storage(size, int(row[0]) if row else 0, events)


def _sqlite_storage_sync(path: Path) -> Storage:
    conn = sqlite3.connect(path, timeout=30)
    try:
        for _ in range(50):
            busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                break
        (count,) = conn.execute("SELECT count(*) FROM checkpoints").fetchone()
    finally:
        conn.close()
    wal = path.with_name(path.name + "-wal")
    size = path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    return Storage(size, int(count))


async def sqlite_storage(path: Path) -> Storage:
    """The file size after checkpointing the WAL into it, and the checkpoint count."""
    return await asyncio.to_thread(_sqlite_storage_sync, path)


@asynccontextmanager
async def grpc_backend(database_url: str, *flags: str) -> AsyncIterator[tuple[GrpcSaver, int, str]]:
    """A server on ``database_url`` (with extra ``flags``), GrpcSaver on it, its metrics URL."""
    # Started from the main thread: the child's parent-death signal follows the forking thread.
    metrics = f"127.0.0.1:{free_port()}"
    server = ServerProcess.start(database_url, "--metrics-listen", metrics, *flags)
    try:
        async with GrpcSaver.from_conn_string(server.target, namespace="bench") as saver:
            yield saver, server.process.pid, f"http://{metrics}/metrics"
    finally:
        server.stop()


@asynccontextmanager
async def open_backend(spec: SaverSpec, workdir: Path, postgres_url: str) -> AsyncIterator[Backend]:
    """Opens ``spec``'s saver on a fresh database; closes it and removes the database on exit.

    GrpcSaver talks to a server process of its own; the official savers run in this process.
    """
    if spec.database == "SQLite":
        path = workdir / f"{spec.key}.db"
        storage = partial(sqlite_storage, path)
        if spec.grpc:
            async with grpc_backend(f"sqlite:///{path}") as (grpc_saver, pid, metrics):
                yield Backend(spec, grpc_saver, storage, _nothing, pid, metrics_url=metrics)
        else:
            async with AsyncSqliteSaver.from_conn_string(str(path)) as sqlite_saver:
                await sqlite_saver.setup()
                yield Backend(spec, sqlite_saver, storage, _nothing)
        return
    async with fresh_postgres_database(postgres_url) as url:
        pg_storage = partial(postgres_storage, url)
        analyze = partial(postgres_analyze, url)
        if spec.grpc:
            async with grpc_backend(url) as (grpc_saver, pid, metrics):
                yield Backend(spec, grpc_saver, pg_storage, analyze, pid, url, metrics)
        else:
            async with AsyncPostgresSaver.from_conn_string(url) as pg_saver:
                await pg_saver.setup()
                yield Backend(spec, pg_saver, pg_storage, analyze, None, url)
