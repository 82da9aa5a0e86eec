"""The change feed behind WatchEvents: recording events with the changes, reading them in order.

A namespace's feed is four sources read as one: the threads table, whose rows carry their
creation's place in it (created threads), the checkpoints table, whose rows carry theirs (added
checkpoints), the writes table, whose first write of each PutWrites call carries the call's
(added writes), and the events table (every other kind). All take their positions alike: on
PostgreSQL the writing transaction's ID and a number of the events' sequence, on SQLite
``SQLITE_TAKE_POSITION``.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    String,
    Text,
    cast,
    func,
    insert,
    literal,
    null,
    select,
    text,
    tuple_,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from checkpoint_server.errors import InvalidArgument, OutOfRange
from checkpoint_server.storage.database import Database
from checkpoint_server.storage.models import (
    CheckpointRow,
    EventRow,
    FeedPositionRow,
    ThreadRow,
    WriteRow,
)

CHECKPOINT_ADDED = "checkpoint_added"
WRITES_ADDED = "writes_added"
THREAD_CREATED = "thread_created"
THREAD_UPDATED = "thread_updated"
THREAD_DELETED = "thread_deleted"
THREAD_PRUNED = "thread_pruned"
THREAD_COPIED = "thread_copied"


# SQLite's next position in the feed, taken from a counter that only goes up: writes are
# serial, and no position may go back, even when the row that held the greatest is deleted.
SQLITE_TAKE_POSITION = "UPDATE feed_position SET last = last + 1 RETURNING last"


def transaction_id(dialect: str) -> ColumnElement[int]:
    """The inserting transaction's ID on PostgreSQL (PostgreSQL 13 or newer); 0 on SQLite."""
    if dialect == "postgresql":
        return cast(cast(func.pg_current_xact_id(), Text), BigInteger)
    return literal(0, BigInteger)


@dataclass(frozen=True, slots=True)
class Event:
    """One event, with the position it has in the log."""

    xid: int
    seq: int
    kind: str
    thread_id: str
    checkpoint_ns: str | None
    checkpoint_id: str | None
    source_thread_id: str | None
    time: datetime

    @property
    def cursor(self) -> Cursor:
        """The position right after this event."""
        return Cursor(self.xid, self.seq, self.time.timestamp())


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in a namespace's event log; ``epoch`` is the time of its event."""

    xid: int
    seq: int
    epoch: float

    def parts(self) -> list[Any]:
        """The cursor as JSON values, for the API layer to seal into an opaque token."""
        return [self.xid, self.seq, self.epoch]

    @classmethod
    def from_parts(cls, parts: list[Any]) -> Cursor:
        """The cursor of ``parts()``, or ``InvalidArgument`` naming ``after_cursor``.

        Each part must fit the column it is compared with, and the epoch be a finite time: a
        ``nan`` would pass every retention check.
        """
        if len(parts) == 3:
            xid, seq, epoch = parts
            if all(_int64(v) for v in (xid, seq)) and _finite(epoch):
                return cls(xid, seq, float(epoch))
        raise InvalidArgument("after_cursor", "is not a cursor this server issued")


def _int64(value: Any) -> bool:
    return type(value) is int and -(2**63) <= value < 2**63


def _finite(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and abs(value) < 1e11


async def record(
    conn: AsyncConnection,
    dialect: str,
    namespace: str,
    thread_id: str,
    kind: str,
    *,
    source_thread_id: str | None = None,
) -> None:
    """Records one thread-level event in the caller's transaction.

    Created threads and added checkpoints and writes are not recorded: their tables are their
    feed (see ``placed``).
    """
    position: dict[str, Any] = {}
    if dialect != "postgresql":
        position["seq"] = (await conn.execute(text(SQLITE_TAKE_POSITION))).scalar_one()
    await conn.execute(
        insert(EventRow).values(
            **position,
            xid=transaction_id(dialect),
            namespace=namespace,
            thread_id=thread_id,
            kind=kind,
            source_thread_id=source_thread_id,
            time=datetime.now(UTC),
        )
    )


async def placed(conn: AsyncConnection, dialect: str) -> dict[str, Any]:
    """The feed columns of a thread row being inserted: its creation's place in the feed.

    On SQLite the position is taken here, in the caller's transaction.
    """
    if dialect == "postgresql":
        return {"feed_xid": transaction_id(dialect), "feed_seq": func.nextval("events_seq_seq")}
    seq = (await conn.execute(text(SQLITE_TAKE_POSITION))).scalar_one()
    return {"feed_xid": 0, "feed_seq": seq}


async def read(
    conn: AsyncConnection,
    dialect: str,
    namespace: str,
    thread_id: str | None,
    after: Cursor,
    limit: int,
) -> tuple[list[Event], bool]:
    """The events after ``after``, in order, and whether more are waiting to become readable.

    On PostgreSQL only events of transactions older than every running transaction of this
    database are returned (see ``_horizon``): a transaction still running may yet commit an
    event that sorts before a later one, and a cursor must never pass it.
    """
    after_position = tuple_(literal(after.xid), literal(after.seq))
    log = select(
        EventRow.xid,
        EventRow.seq,
        EventRow.kind,
        EventRow.thread_id,
        EventRow.checkpoint_ns,
        EventRow.checkpoint_id,
        EventRow.source_thread_id,
        EventRow.time,
    ).where(EventRow.namespace == namespace, tuple_(EventRow.xid, EventRow.seq) > after_position)
    if thread_id is not None:
        log = log.where(EventRow.thread_id == thread_id)
    wanted = (namespace, thread_id, after_position)
    sources = [
        log,
        _created(*wanted),
        _feed(
            CHECKPOINT_ADDED,
            CheckpointRow,
            CheckpointRow.namespace,
            CheckpointRow.create_time,
            *wanted,
        ),
        _feed(WRITES_ADDED, WriteRow, WriteRow.feed_namespace, WriteRow.feed_time, *wanted),
    ]
    # Each source in its own index's order, as far as the limit; then the four merged.
    limited = [
        select(
            source.order_by(source.selected_columns.xid, source.selected_columns.seq)
            .limit(limit)
            .subquery()
        )
        for source in sources
    ]
    merged = union_all(*limited).subquery()
    # Read before the events, in a statement of its own: a transaction running when the horizon
    # is read is in it, and one that commits before the events are read is seen by them.
    horizon = await _horizon(conn) if dialect == "postgresql" else None
    statement = select(merged).order_by(merged.c.xid, merged.c.seq).limit(limit)
    rows = (await conn.execute(statement)).all()
    events: list[Event] = []
    for r in rows:
        if horizon is not None and r.xid >= horizon:
            return events, True
        time = r.time if r.time.tzinfo else r.time.replace(tzinfo=UTC)
        events.append(
            Event(
                r.xid,
                r.seq,
                r.kind,
                r.thread_id,
                r.checkpoint_ns,
                r.checkpoint_id,
                r.source_thread_id,
                time,
            )
        )
    return events, False


def _feed(
    kind: str,
    model: type[CheckpointRow] | type[WriteRow],
    scope: Any,
    time: Any,
    namespace: str,
    thread_id: str | None,
    after: Any,
) -> Select[Any]:
    """The events of ``kind`` after ``after``: ``model``'s rows that carry a place in the feed.

    ``scope`` is the rows' namespace column and ``time`` their event's time. A thread's read
    takes the thread's key first, then the thread's feed index (thread_key, feed_xid,
    feed_seq) in order: it reads what it returns, however long the thread.
    """
    columns = (
        model.feed_xid.label("xid"),
        model.feed_seq.label("seq"),
        literal(kind, String).label("kind"),
    )
    rest = (
        model.checkpoint_ns,
        model.checkpoint_id,
        cast(null(), String).label("source_thread_id"),
        time.label("time"),
    )
    placed = (
        scope == namespace,
        model.feed_xid.is_not(None),
        tuple_(model.feed_xid, model.feed_seq) > after,
    )
    if thread_id is None:
        return (
            select(*columns, ThreadRow.thread_id, *rest)
            .join(ThreadRow, ThreadRow.key == model.thread_key)
            .where(*placed)
        )
    key = select(ThreadRow.key).where(
        ThreadRow.namespace == namespace, ThreadRow.thread_id == thread_id
    )
    return select(*columns, literal(thread_id, String).label("thread_id"), *rest).where(
        model.thread_key == key.scalar_subquery(), *placed
    )


def _created(namespace: str, thread_id: str | None, after: Any) -> Select[Any]:
    """The thread_created events after ``after``: the threads that carry a place in the feed."""
    columns: tuple[Any, ...] = (
        ThreadRow.feed_xid.label("xid"),
        ThreadRow.feed_seq.label("seq"),
        literal(THREAD_CREATED, String).label("kind"),
        ThreadRow.thread_id,
        cast(null(), String).label("checkpoint_ns"),
        cast(null(), String).label("checkpoint_id"),
        cast(null(), String).label("source_thread_id"),
        ThreadRow.create_time.label("time"),
    )
    created = select(*columns).where(
        ThreadRow.namespace == namespace,
        ThreadRow.feed_xid.is_not(None),
        tuple_(ThreadRow.feed_xid, ThreadRow.feed_seq) > after,
    )
    return created if thread_id is None else created.where(ThreadRow.thread_id == thread_id)


async def end(conn: AsyncConnection, dialect: str) -> Cursor:
    """A cursor at the end of the feed: everything committed from now on comes after it."""
    now = datetime.now(UTC).timestamp()
    if dialect == "postgresql":
        # Transactions from the oldest running one on may still commit events.
        return Cursor(await _horizon(conn) - 1, 2**62, now)
    last = (await conn.execute(select(FeedPositionRow.last))).scalar_one()
    return Cursor(0, int(last), now)


# The oldest transaction ID that may still commit events: the oldest of this database's running
# (or prepared) transactions, else the next ID to be assigned. Not the snapshot's xmin, which
# counts every database of the server: a session idle in a transaction elsewhere would hold
# every watcher back. pg_stat_activity shows 32-bit IDs; the epoch comes from the snapshot's
# xmax (an ID above xmax's low half belongs to the previous epoch).
_HORIZON = text(
    """
    WITH snapshot AS (
        SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax
    ), running AS (
        SELECT backend_xid::text::bigint AS xid FROM pg_stat_activity
        WHERE datname = current_database() AND backend_xid IS NOT NULL
        UNION ALL
        SELECT transaction::text::bigint FROM pg_prepared_xacts
        WHERE database = current_database()
    )
    SELECT least(
        snapshot.xmax,
        min(
            (snapshot.xmax >> 32 << 32) + running.xid
            - CASE WHEN (snapshot.xmax >> 32 << 32) + running.xid > snapshot.xmax
                THEN 4294967296 ELSE 0 END
        )
    )
    FROM snapshot LEFT JOIN running ON true
    GROUP BY snapshot.xmax
    """
)


async def _horizon(conn: AsyncConnection) -> int:
    return int((await conn.execute(_HORIZON)).scalar_one())


BEGINNING = Cursor(-1, -1, 0.0)


class EventLog:
    """Reading a namespace's events for watchers."""

    def __init__(self, database: Database, retention_seconds: float) -> None:
        """Reads ``database``; cursors older than ``retention_seconds`` are refused."""
        self._db = database
        self._retention = retention_seconds
        self.closed = False

    def close(self) -> None:
        """Tells watchers to end their streams (the server is stopping)."""
        self.closed = True
        self._db.hub.poke()

    async def start(self, after: Cursor | None, *, from_beginning: bool) -> Cursor:
        """Where a watch starts: after a cursor, at the beginning, or at the end of the feed."""
        if after is not None:
            cursor = after
            if cursor.epoch < datetime.now(UTC).timestamp() - self._retention:
                raise OutOfRange(
                    "after_cursor is older than the server's event retention of "
                    f"{self._retention:.0f} s: some of the events after it may be gone"
                )
            return cursor
        if from_beginning:
            return BEGINNING
        async with self._db.read() as conn:
            return await end(conn, self._db.dialect)

    async def next_batch(
        self, namespace: str, thread_id: str | None, after: Cursor, limit: int
    ) -> tuple[list[Event], bool]:
        """Up to ``limit`` events after ``after``; see ``read``."""
        async with self._db.read() as conn:
            return await read(conn, self._db.dialect, namespace, thread_id, after, limit)

    def ticket(self, namespace: str) -> asyncio.Event:
        """Take before reading: the flag that ``wait`` waits on (see ``EventHub``)."""
        return self._db.hub.ticket(namespace)

    async def wait(self, ticket: asyncio.Event, seconds: float) -> None:
        """Returns when new events may have been committed since ``ticket``, or after ``seconds``.

        Returns at once when the server is stopping.
        """
        if not self.closed:
            await self._db.hub.wait(ticket, seconds)
