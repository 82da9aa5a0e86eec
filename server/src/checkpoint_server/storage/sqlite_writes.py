"""SQLite's hot writes (put checkpoint, put writes), their statements in one hop to the writer.

aiosqlite runs every statement on the connection's own thread, and each hop there and back
costs a thread wake-up on both sides; through SQLAlchemy's execution layer a put took six. Here
the statements of a put (the thread's catalog row, the new values, the checkpoint, their places
in the change feed) run as one function on that thread, inside a ``BEGIN IMMEDIATE``
transaction, after the thread's lease check (storage/leases.py): three hops in all with the
BEGIN and the COMMIT, however many writes a batch holds.

The statements mirror PostgreSQL's functions (migrations 0004 and 0009 to 0012): the thread row
follows storage/status.py, and a thread whose time to live ran out is not touched (False is
returned; the caller deletes it and tries again). Values are stored as SQLAlchemy's column
types store them, so that its reads see the same rows: times as ``YYYY-MM-DD HH:MM:SS.ffffff``
(UTC), JSON as ``json.dumps`` text.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import DBAPIError

from checkpoint_server.storage import events, leases
from checkpoint_server.storage.database import Database
from checkpoint_server.storage.records import CheckpointRecord, Lease, Write

# Both statements find only a visible thread: not one whose time to live ran out under the
# delete strategy (queries.visible).
_THREAD_KEY = """
SELECT t.key FROM threads AS t
WHERE t.namespace = :namespace AND t.thread_id = :thread_id
    AND (t.expire_epoch IS NULL OR t.expire_epoch > :now_epoch
        OR coalesce(t.ttl_strategy, :default_strategy) <> 'delete')
"""

_TOUCH_THREAD = """
INSERT INTO threads AS t (
    namespace, thread_id, create_time, update_time, metadata, status,
    status_checkpoint_id, latest_checkpoint_id, expire_epoch
) VALUES (
    :namespace, :thread_id, :now, :now, '{}', coalesce(:writes_status, 'idle'),
    :writes_checkpoint_id, :root_checkpoint_id, :now_epoch + :default_ttl
)
ON CONFLICT (namespace, thread_id) DO UPDATE SET
    update_time = excluded.update_time,
    expire_epoch = :now_epoch + coalesce(t.ttl_seconds, :default_ttl),
    latest_checkpoint_id = CASE
        WHEN :root_checkpoint_id > t.latest_checkpoint_id OR t.latest_checkpoint_id IS NULL
        THEN coalesce(:root_checkpoint_id, t.latest_checkpoint_id)
        ELSE t.latest_checkpoint_id END,
    status = CASE
        WHEN :writes_checkpoint_id > t.status_checkpoint_id OR t.status_checkpoint_id IS NULL
        THEN coalesce(:writes_status, t.status)
        WHEN :writes_checkpoint_id = t.status_checkpoint_id AND t.status <> 'error'
        THEN :writes_status
        ELSE t.status END,
    status_checkpoint_id = CASE
        WHEN :writes_checkpoint_id > t.status_checkpoint_id OR t.status_checkpoint_id IS NULL
        THEN coalesce(:writes_checkpoint_id, t.status_checkpoint_id)
        ELSE t.status_checkpoint_id END
WHERE t.expire_epoch IS NULL OR t.expire_epoch > :now_epoch
    OR coalesce(t.ttl_strategy, :default_strategy) <> 'delete'
RETURNING key, create_time = :now
"""

_INSERT_VALUE = """
INSERT INTO checkpoint_blobs (thread_key, checkpoint_ns, channel, version, type, blob)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT DO NOTHING
"""

# A checkpoint's place in the feed: stored again, it moves to the end (it is added anew).
_UPSERT_CHECKPOINT = """
INSERT INTO checkpoints (
    thread_key, checkpoint_ns, checkpoint_id, namespace, parent_checkpoint_id, run_id,
    checkpoint_type, checkpoint, metadata, channel_versions, delta_channels, create_time,
    feed_xid, feed_seq
) VALUES (
    :thread_key, :checkpoint_ns, :checkpoint_id, :namespace, :parent_checkpoint_id, :run_id,
    :checkpoint_type, :checkpoint, :metadata, :channel_versions, :delta_channels, :now,
    0, :feed_seq
)
ON CONFLICT (thread_key, checkpoint_ns, checkpoint_id) DO UPDATE SET
    parent_checkpoint_id = excluded.parent_checkpoint_id,
    run_id = excluded.run_id,
    checkpoint_type = excluded.checkpoint_type,
    checkpoint = excluded.checkpoint,
    metadata = excluded.metadata,
    channel_versions = excluded.channel_versions,
    delta_channels = excluded.delta_channels,
    feed_xid = excluded.feed_xid,
    feed_seq = excluded.feed_seq
"""

_WRITE_COLUMNS = """
INSERT INTO checkpoint_writes AS cw (
    thread_key, checkpoint_ns, checkpoint_id, task_id, idx, task_path, channel, type, blob,
    feed_namespace, feed_xid, feed_seq, feed_time
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (thread_key, checkpoint_ns, checkpoint_id, task_id, idx) DO UPDATE SET
"""
# idx >= 0: the first write of a (task, idx) wins; idx < 0 (interrupts, errors): the last. The
# call's first write takes the call's place in the feed; any other keeps the place it had.
_INSERT_KEPT_WRITE = (
    _WRITE_COLUMNS
    + """feed_namespace = excluded.feed_namespace, feed_xid = excluded.feed_xid,
    feed_seq = excluded.feed_seq, feed_time = excluded.feed_time
WHERE excluded.feed_xid IS NOT NULL"""
)
_UPSERT_REPLACED_WRITE = (
    _WRITE_COLUMNS
    + """task_path = excluded.task_path, channel = excluded.channel, type = excluded.type,
    blob = excluded.blob,
    feed_namespace = coalesce(excluded.feed_namespace, cw.feed_namespace),
    feed_xid = coalesce(excluded.feed_xid, cw.feed_xid),
    feed_seq = coalesce(excluded.feed_seq, cw.feed_seq),
    feed_time = coalesce(excluded.feed_time, cw.feed_time)"""
)

_NO_FEED = (None, None, None, None)

# A thread this call created takes its creation's place in the feed (migration 0012), once: a
# later call stamped with the same time looks as if it created the thread too.
_PLACE_THREAD = "UPDATE threads SET feed_xid = 0, feed_seq = ? WHERE key = ? AND feed_xid IS NULL"


def _time(moment: datetime) -> str:
    """A time as SQLAlchemy's DateTime stores it on SQLite (UTC, no zone)."""
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def _json(value: Any) -> str:
    return json.dumps(value)


def _touch_thread(
    db: sqlite3.Connection,
    thread: dict[str, Any],
    *,
    root_checkpoint_id: str | None = None,
    writes_checkpoint_id: str | None = None,
    writes_status: str | None = None,
) -> tuple[int, bool] | None:
    """The thread's key and whether this created it; None if its time to live ran out."""
    arguments = {
        **thread,
        "now": _time(thread["now"]),
        "root_checkpoint_id": root_checkpoint_id,
        "writes_checkpoint_id": writes_checkpoint_id,
        "writes_status": writes_status,
    }
    if root_checkpoint_id is None and writes_checkpoint_id is None:
        # Nothing the catalog shows changes: take the key and leave the row alone.
        found = db.execute(_THREAD_KEY, arguments).fetchone()
        if found is not None:
            return int(found[0]), False
    touched = db.execute(_TOUCH_THREAD, arguments).fetchone()
    return None if touched is None else (int(touched[0]), bool(touched[1]))


def _take_position(db: sqlite3.Connection) -> int:
    return int(db.execute(events.SQLITE_TAKE_POSITION).fetchone()[0])


def _place_thread(db: sqlite3.Connection, key: int) -> None:
    db.execute(_PLACE_THREAD, (_take_position(db), key))


def _put_checkpoint(
    db: sqlite3.Connection, thread: dict[str, Any], record: CheckpointRecord
) -> bool:
    root = record.checkpoint_id if record.checkpoint_ns == "" else None
    touched = _touch_thread(db, thread, root_checkpoint_id=root)
    if touched is None:
        return False
    key, created = touched
    if created:
        _place_thread(db, key)
    db.executemany(
        _INSERT_VALUE,
        [
            (key, record.checkpoint_ns, v.channel, v.version, v.type, v.data)
            for v in record.new_values
        ],
    )
    db.execute(
        _UPSERT_CHECKPOINT,
        {
            "thread_key": key,
            "checkpoint_ns": record.checkpoint_ns,
            "checkpoint_id": record.checkpoint_id,
            "namespace": thread["namespace"],
            "parent_checkpoint_id": record.parent_checkpoint_id,
            "run_id": record.run_id,
            "checkpoint_type": record.checkpoint_type,
            "checkpoint": record.checkpoint,
            "metadata": _json(record.metadata),
            "channel_versions": _json(record.channel_versions),
            "delta_channels": _json(record.delta_channels) if record.delta_channels else None,
            "now": _time(thread["now"]),
            "feed_seq": _take_position(db),
        },
    )
    return True


def _put_writes(
    db: sqlite3.Connection,
    thread: dict[str, Any],
    checkpoint_ns: str,
    checkpoint_id: str,
    writes_status: str | None,
    kept: Sequence[Write],
    replaced: Sequence[Write],
) -> bool:
    touched = _touch_thread(
        db,
        thread,
        writes_checkpoint_id=checkpoint_id if writes_status else None,
        writes_status=writes_status,
    )
    if touched is None:
        return False
    key, created = touched
    if created:
        _place_thread(db, key)
    # The call's first write carries its place in the feed (migration 0010).
    first = kept[0] if kept else (replaced[0] if replaced else None)
    feed: tuple[Any, ...] = _NO_FEED
    if first is not None:
        feed = (thread["namespace"], 0, _take_position(db), _time(thread["now"]))
    for statement, writes in ((_INSERT_KEPT_WRITE, kept), (_UPSERT_REPLACED_WRITE, replaced)):
        db.executemany(
            statement,
            [
                (
                    *(key, checkpoint_ns, checkpoint_id),
                    *(w.task_id, w.idx, w.task_path, w.channel, w.type, w.data),
                    *(feed if w is first else _NO_FEED),
                )
                for w in writes
            ],
        )
    return True


@dataclass(frozen=True, slots=True)
class Operation:
    """One hot write: the function that stores it on the writer's thread, and its lease."""

    namespace: str
    thread_id: str
    lease: Lease | None
    work: Callable[[sqlite3.Connection], bool]


def checkpoint_operation(thread: dict[str, Any], record: CheckpointRecord) -> Operation:
    """Stores a checkpoint, its new values and its thread's row, placed in the change feed.

    ``thread`` holds the thread arguments: namespace, thread_id, now, now_epoch, default_ttl,
    default_strategy.
    """
    return Operation(
        thread["namespace"],
        thread["thread_id"],
        record.lease,
        lambda db: _put_checkpoint(db, thread, record),
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
    return Operation(
        thread["namespace"],
        thread["thread_id"],
        lease,
        lambda db: _put_writes(
            db, thread, checkpoint_ns, checkpoint_id, writes_status, kept, replaced
        ),
    )


_LEASE = (
    "SELECT lease_id, fencing, expire_epoch FROM thread_leases "
    "WHERE namespace = ? AND thread_id = ?"
)


def _checked(db: sqlite3.Connection, operations: Sequence[Operation]) -> list[bool]:
    """Runs the operations if their threads' leases admit every one (else FailedPrecondition).

    All leases are checked before any write: a refusal costs no work to roll back.
    """
    for operation in operations:
        row = db.execute(_LEASE, (operation.namespace, operation.thread_id)).fetchone()
        leases.check_row(operation.thread_id, row, operation.lease)
    return [operation.work(db) for operation in operations]


async def run(database: Database, operation: Operation) -> bool:
    """Runs one operation as its own transaction; False if its thread had expired."""
    stored = await run_group(database, operation.namespace, [operation])
    return stored[0]


async def run_group(
    database: Database, namespace: str, operations: Sequence[Operation]
) -> list[bool]:
    """Runs operations in one write transaction, on aiosqlite's thread for the writer.

    Returns, for each, False if its thread had expired. Every lease is checked first, in the
    same transaction; a refusal or any failure rolls all of them back. aiosqlite has no
    public call for running a function on its thread; ``_execute`` is how its own methods run
    there (aiosqlite is pinned, and the tests run every write through this path).
    """
    async with database.write(namespace) as conn:
        raw = await conn.get_raw_connection()
        aio: Any = raw.driver_connection
        try:
            stored: list[bool] = await aio._execute(lambda: _checked(aio._conn, operations))
        except sqlite3.Error as error:
            # As SQLAlchemy would raise it, so the API layer maps it like any database error.
            raise DBAPIError.instance(None, None, error, sqlite3.Error) from error
    return stored
