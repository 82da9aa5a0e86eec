"""Calls of the SQL functions that run PostgreSQL's hot writes (migration 0004; the put, 0009).

Each call checks the thread's lease first, in its FROM clause (migration 0006): the check runs
before the write, in the same statement, and a refusal aborts the statement.

The call text is short and prepared on each connection, and PL/pgSQL keeps the plans of the
function's statements for the session. The call runs on the psycopg connection itself
(postgres_driver.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy.exc import DBAPIError

from checkpoint_server.storage import leases, postgres_driver
from checkpoint_server.storage.database import Database
from checkpoint_server.storage.records import CheckpointRecord, Lease, Write

# Every argument is cast: psycopg types an empty list or a list of small numbers on its own,
# and PostgreSQL finds a function only by exact argument types.
_THREAD_ARGS = (
    "%(namespace)s::text, %(thread_id)s::text, %(now)s::timestamptz, %(now_epoch)s::float8, "
    "%(default_ttl)s::bigint, %(default_strategy)s::text"
)
# Built from constants only: no input reaches the statement's text.
_PUT_CHECKPOINT = (
    f"SELECT lgcp_put_checkpoint({_THREAD_ARGS}, %(checkpoint_ns)s::text, "  # noqa: S608
    "%(checkpoint_id)s::text, %(parent_checkpoint_id)s::text, %(run_id)s::text, "
    "%(checkpoint_type)s::text, %(checkpoint)s::bytea, %(metadata)s::jsonb, "
    "%(channel_versions)s::jsonb, %(delta_channels)s::jsonb, %(value_channels)s::text[], "
    "%(value_versions)s::text[], %(value_types)s::text[], %(value_blobs)s::bytea[]) "
    "FROM lgcp_check_lease(%(namespace)s::text, %(thread_id)s::text, %(lease_id)s::text, "
    "%(fencing)s::bigint, %(now_epoch)s::float8)"
)
_WRITE_ARGS = ", ".join(
    f"%({{group}}_{name})s::{kind}[]"
    for name, kind in (
        ("task_id", "text"),
        ("idx", "integer"),
        ("task_path", "text"),
        ("channel", "text"),
        ("type", "text"),
        ("blob", "bytea"),
    )
)
_PUT_WRITES = (
    f"SELECT lgcp_put_writes({_THREAD_ARGS}, %(checkpoint_ns)s::text, "  # noqa: S608
    "%(checkpoint_id)s::text, %(writes_status)s::text, "
    f"{_WRITE_ARGS.format(group='kept')}, {_WRITE_ARGS.format(group='replaced')}) "
    "FROM lgcp_check_lease(%(namespace)s::text, %(thread_id)s::text, %(lease_id)s::text, "
    "%(fencing)s::bigint, %(now_epoch)s::float8)"
)


@dataclass(frozen=True, slots=True)
class Operation:
    """One hot write: the function call that stores it, and the lease it carries."""

    namespace: str
    thread_id: str
    statement: str
    arguments: dict[str, Any]
    lease: Lease | None


def checkpoint_operation(thread: dict[str, Any], record: CheckpointRecord) -> Operation:
    """Stores a checkpoint, its new values and its thread's row, placed in the change feed.

    ``thread`` holds the thread arguments: namespace, thread_id, now, now_epoch, default_ttl,
    default_strategy.
    """
    values = record.new_values
    return _operation(
        thread,
        _PUT_CHECKPOINT,
        record.lease,
        {
            "checkpoint_ns": record.checkpoint_ns,
            "checkpoint_id": record.checkpoint_id,
            "parent_checkpoint_id": record.parent_checkpoint_id,
            "run_id": record.run_id,
            "checkpoint_type": record.checkpoint_type,
            "checkpoint": record.checkpoint,
            "metadata": Jsonb(record.metadata),
            "channel_versions": Jsonb(record.channel_versions),
            "delta_channels": Jsonb(record.delta_channels) if record.delta_channels else None,
            "value_channels": [v.channel for v in values],
            "value_versions": [v.version for v in values],
            "value_types": [v.type for v in values],
            "value_blobs": [v.data for v in values],
        },
    )


def writes_operation(
    thread: dict[str, Any],
    *,
    checkpoint_ns: str,
    checkpoint_id: str,
    writes_status: str | None,
    kept: Sequence[Write],
    replaced: Sequence[Write],
    lease: Lease | None = None,
) -> Operation:
    """Stores writes (``kept``: first wins; ``replaced``: last wins)."""
    arguments: dict[str, Any] = {
        "checkpoint_ns": checkpoint_ns,
        "checkpoint_id": checkpoint_id,
        "writes_status": writes_status,
    }
    for group, writes in (("kept", kept), ("replaced", replaced)):
        arguments |= {
            f"{group}_task_id": [w.task_id for w in writes],
            f"{group}_idx": [w.idx for w in writes],
            f"{group}_task_path": [w.task_path for w in writes],
            f"{group}_channel": [w.channel for w in writes],
            f"{group}_type": [w.type for w in writes],
            f"{group}_blob": [w.data for w in writes],
        }
    return _operation(thread, _PUT_WRITES, lease, arguments)


def _operation(
    thread: dict[str, Any], statement: str, lease: Lease | None, arguments: dict[str, Any]
) -> Operation:
    return Operation(
        thread["namespace"],
        thread["thread_id"],
        statement,
        thread | arguments | leases.call_arguments(lease),
        lease,
    )


async def run(database: Database, operation: Operation) -> bool:
    """Runs one operation as its own transaction; False if its thread had expired."""
    async with _driver(database, operation) as driver:
        cursor = await driver.execute(operation.statement, operation.arguments, prepare=True)
        row = await cursor.fetchone()
    database.hub.poke(operation.namespace)
    return bool(row and row[0])


async def run_group(
    database: Database, namespace: str, operations: Sequence[Operation]
) -> list[bool]:
    """Runs operations in one transaction, sent together (psycopg's pipeline mode).

    Returns, for each, False if its thread had expired. Any failure rolls all of them back
    and is raised as for ``run``, but never as a lease's refusal: the caller runs each again
    on its own to learn which failed.
    """
    async with _driver(database, None) as driver:
        async with driver.pipeline(), driver.transaction():
            cursors = [
                await driver.execute(op.statement, op.arguments, prepare=True) for op in operations
            ]
        rows = [await cursor.fetchone() for cursor in cursors]
    database.hub.poke(namespace)
    return [bool(row and row[0]) for row in rows]


@asynccontextmanager
async def _driver(
    database: Database, operation: Operation | None
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A connection of the pool; a refused lease is raised as the refusal of ``operation``."""
    try:
        async with postgres_driver.connection(database) as driver:
            yield driver
    except DBAPIError as failed:
        refused = None
        if operation is not None:
            refused = leases.refusal(failed, operation.thread_id, operation.lease)
        if refused is None:
            raise
        raise refused from failed.orig
