"""PostgreSQL's hot statements on the psycopg connection itself, taken from SQLAlchemy's pool.

SQLAlchemy's execution layer (its connection, transaction and result wrappers, and the greenlet
each await passes through) costs more than a hot statement: a get through it cost the server
0.19 ms more per graph step at one thread, 8 % of its CPU (interleaved runs, 2026-12-03). Its
two jobs that matter here are kept: a lost connection is invalidated so the pool replaces it,
and errors are raised as SQLAlchemy's, which the API layer maps. The puts and writes
(postgres_writes.py) and the reads of one checkpoint (``fetch``) run here; everything else
goes through SQLAlchemy.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import psycopg
from psycopg.pq import PipelineStatus, TransactionStatus
from psycopg.rows import namedtuple_row
from sqlalchemy import CompoundSelect, Select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.compiler import Compiled
from sqlalchemy.util import greenlet_spawn

from checkpoint_server.storage.database import Database

# PostgreSQL's message when a prepared statement's result columns changed under it (a
# migration that changed a column's type): that connection fails the statement for good.
_STALE_PLAN = "cached plan must not change result type"


@asynccontextmanager
async def connection(database: Database) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """An autocommit psycopg connection of the pool, for the statements of one transaction.

    Raises:
        DBAPIError: As SQLAlchemy raises a failed statement or connection.
    """
    try:
        pooled = await database.reader.raw_connection()
    except psycopg.Error as error:
        # The pool's raw connections come without SQLAlchemy's wrapping of a failed connect.
        raise _as_sqlalchemy(error, lost=False) from error
    driver: psycopg.AsyncConnection[Any] = pooled.driver_connection  # type: ignore[assignment]
    try:
        yield driver
    except psycopg.Error as error:
        # Only a connection that broke, or whose prepared statement went stale (the caller's
        # retry then gets one that prepares it anew), is replaced; one whose statement failed
        # (a deadlock, a cancelled query, a refused lease) goes back to the pool like after any
        # failed autocommit statement.
        stale = error.diag.message_primary == _STALE_PLAN
        lost = driver.broken or driver.closed or stale
        if lost:
            # The pool closes an async driver's connection through awaits made in a greenlet.
            await greenlet_spawn(pooled.invalidate, error)
        # As SQLAlchemy raises it (OperationalError for a lost connection or a cancelled query),
        # so the API layer maps it like any database error.
        raise _as_sqlalchemy(error, lost=lost) from error
    finally:
        # A call cut off mid-statement (its RPC cancelled, or past its deadline) leaves the
        # connection busy with a result nobody reads, or, cut off while entering a group's
        # pipeline, in pipeline mode with no transaction: the next call's statements would
        # then queue unsent and uncommitted while reporting success. It must not serve again.
        if pooled.is_valid and (
            driver.info.transaction_status != TransactionStatus.IDLE
            or driver.pgconn.pipeline_status != PipelineStatus.OFF
        ):
            await greenlet_spawn(pooled.invalidate)
        await greenlet_spawn(pooled.close)


async def fetch(
    database: Database, statement: CompoundSelect[Any], params: Mapping[str, Any]
) -> Sequence[Any]:
    """The rows of one read ``statement``, prepared on the connection; columns by name.

    ``statement`` is one of those built once (queries.get_latest, get_by_id): each is compiled
    on its first call and kept.
    """
    compiled = _compile(database.reader.dialect, statement)
    async with connection(database) as driver:
        cursor = driver.cursor(row_factory=namedtuple_row)
        await cursor.execute(compiled.string, compiled.construct_params(params), prepare=True)
        return await cursor.fetchall()


@functools.lru_cache(maxsize=8)  # a few statements; more would be a caller's mistake
def _compile(dialect: Dialect, statement: CompoundSelect[Any] | Select[Any]) -> Compiled:
    compiled = statement.compile(dialect=dialect)
    # Values go to the driver as they are, and come back as the driver gives them: no bind or
    # result column may need SQLAlchemy to convert it, nor a bind to be rendered into the text.
    if (
        compiled.literal_execute_params
        or compiled.post_compile_params
        or any(
            bind.type.dialect_impl(dialect).bind_processor(dialect) is not None
            for bind in compiled.binds.values()
        )
        or any(
            column.type.dialect_impl(dialect).result_processor(dialect, None) is not None
            for column in statement.selected_columns
        )
    ):
        raise TypeError("fetch takes statements whose values need no conversion by SQLAlchemy")
    return compiled


def _as_sqlalchemy(error: psycopg.Error, *, lost: bool) -> DBAPIError:
    return cast(
        DBAPIError,
        DBAPIError.instance(None, None, error, psycopg.Error, connection_invalidated=lost),
    )
