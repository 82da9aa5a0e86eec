"""The thread catalog: create, read, update, search, count; and the time-to-live sweeper."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Float,
    Select,
    Text,
    cast,
    delete,
    func,
    literal,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from checkpoint_server.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from checkpoint_server.storage import events, leases, queries, status
from checkpoint_server.storage.database import Database
from checkpoint_server.storage.dialect import insert_for, metadata_matches
from checkpoint_server.storage.models import BlobRow, CheckpointRow, EventRow, ThreadRow, WriteRow
from checkpoint_server.storage.records import (
    Lease,
    ThreadFilter,
    ThreadPage,
    ThreadRecord,
    TtlPolicy,
)
from checkpoint_server.storage.thread_rows import (
    delete_expired,
    delete_thread_rows,
    prune_to_latest,
)

logger = logging.getLogger(__name__)

_SORT_COLUMNS = {
    "thread_id": ThreadRow.thread_id,
    "create_time": ThreadRow.create_time,
    "update_time": ThreadRow.update_time,
}
_BASIC = (
    ThreadRow.thread_id,
    cast(ThreadRow.metadata_, Text).label("metadata_json"),
    ThreadRow.create_time,
    ThreadRow.update_time,
    queries.shown_status().label("status"),
    ThreadRow.latest_checkpoint_id,
    ThreadRow.ttl_seconds,
    ThreadRow.ttl_strategy,
    ThreadRow.expire_epoch,
)


def _size(model: Any) -> Any:
    return (
        select(func.coalesce(func.sum(func.length(model.blob)), 0))
        .where(model.thread_key == ThreadRow.key)
        .scalar_subquery()
    )


# The full view's counts, each a scan of one thread's rows by primary-key prefix.
_FULL = (
    select(func.count())
    .where(CheckpointRow.thread_key == ThreadRow.key)
    .scalar_subquery()
    .label("checkpoint_count"),
    _size(BlobRow).label("values_bytes"),
    _size(WriteRow).label("writes_bytes"),
)


# How far ahead of this server's clock another server's may be before its events' times are
# taken for wrong (by the event sweep).
_CLOCK_SKEW = timedelta(minutes=5)


class ThreadCatalog:
    """Threads of every namespace in one database."""

    def __init__(self, database: Database, ttl: TtlPolicy | None = None) -> None:
        """Wraps an open database; ``ttl`` is the default time to live of threads."""
        self._db = database
        self._ttl = ttl or TtlPolicy()

    def _select(self, *, full: bool) -> Select[Any]:
        return select(*_BASIC, *(_FULL if full else ())).where(queries.visible())

    async def create(
        self,
        namespace: str,
        thread_id: str,
        metadata: dict[str, Any],
        ttl: tuple[int, str] | None,
        *,
        if_exists_raise: bool,
    ) -> ThreadRecord:
        """Creates a thread, or returns the existing one (or raises ``AlreadyExists``)."""
        now = datetime.now(UTC)
        seconds = ttl[0] if ttl else self._ttl.seconds
        async with self._db.write(namespace) as conn:
            existing = await self._get(conn, namespace, thread_id, full=False)
            if existing is not None:
                if if_exists_raise:
                    raise AlreadyExists(f"thread {thread_id!r} exists")
                return existing
            # A thread hidden by its expired time to live, not swept yet, goes with its rows;
            # only such a thread: a put may have created the thread since the read above.
            await delete_expired(conn, self._db.dialect, self._ttl, namespace, thread_id)
            inserted = await conn.scalar(
                insert_for(self._db.dialect)(ThreadRow)
                .values(
                    namespace=namespace,
                    thread_id=thread_id,
                    create_time=now,
                    update_time=now,
                    metadata_=metadata,
                    status=status.IDLE,
                    ttl_seconds=ttl[0] if ttl else None,
                    ttl_strategy=ttl[1] if ttl else None,
                    expire_epoch=now.timestamp() + seconds if seconds is not None else None,
                    **await events.placed(conn, self._db.dialect),
                )
                .on_conflict_do_nothing(index_elements=["namespace", "thread_id"])
                .returning(ThreadRow.key)
            )
            created = await self._get(conn, namespace, thread_id, full=False)
        if inserted is None and (if_exists_raise or created is None):
            # Created meanwhile (by a put, a copy or another CreateThread), and committed.
            raise AlreadyExists(f"thread {thread_id!r} exists")
        assert created is not None  # noqa: S101 - inserted or found in this transaction
        return created

    async def get(self, namespace: str, thread_id: str, *, full: bool) -> ThreadRecord:
        """A thread; raises ``NotFound`` when it does not exist or has expired."""
        async with self._db.read() as conn:
            found = await self._get(conn, namespace, thread_id, full=full)
        if found is None:
            raise NotFound(f"thread {thread_id!r} does not exist")
        return found

    async def _get(
        self, conn: AsyncConnection, namespace: str, thread_id: str, *, full: bool
    ) -> ThreadRecord | None:
        row = (
            await conn.execute(
                self._select(full=full).where(
                    ThreadRow.namespace == namespace, ThreadRow.thread_id == thread_id
                ),
                queries.visibility(self._ttl),
            )
        ).first()
        return _record(row) if row is not None else None

    async def update(
        self,
        namespace: str,
        thread_id: str,
        metadata: dict[str, Any],
        ttl: tuple[int, str] | None,
        *,
        clear_ttl: bool,
        max_metadata_bytes: int,
        lease: Lease | None = None,
    ) -> ThreadRecord:
        """Merges metadata (top-level keys) and sets or clears the time to live.

        ``lease`` is the lease the caller carries (see storage/leases.py).

        Raises:
            NotFound: The thread does not exist.
            InvalidArgument: The merged metadata would be longer than ``max_metadata_bytes``
                as compact UTF-8 JSON (``metadata_json``).

        """
        async with self._db.write(namespace) as conn:
            await leases.check(conn, self._db.dialect, namespace, thread_id, lease)
            current = await conn.execute(
                select(
                    ThreadRow.key,
                    ThreadRow.metadata_,
                    ThreadRow.ttl_seconds,
                    ThreadRow.ttl_strategy,
                )
                .where(
                    ThreadRow.namespace == namespace,
                    ThreadRow.thread_id == thread_id,
                    queries.visible(),
                )
                .with_for_update(),
                queries.visibility(self._ttl),
            )
            row = current.first()
            if row is None:
                raise NotFound(f"thread {thread_id!r} does not exist")
            key, stored, seconds, strategy = row
            if ttl is not None:
                seconds, strategy = ttl
            elif clear_ttl:
                seconds, strategy = None, None
            merged = {**stored, **metadata}
            # Each update is bounded by the API; their merge is bounded here, or repeated
            # updates would grow one thread's metadata past what any read can return.
            if metadata and _json_size(merged) > max_metadata_bytes:
                raise InvalidArgument(
                    "metadata_json",
                    f"would make the thread's metadata longer than {max_metadata_bytes} bytes",
                )
            effective = seconds if seconds is not None else self._ttl.seconds
            now = datetime.now(UTC)
            await conn.execute(
                update(ThreadRow)
                .where(ThreadRow.key == key)
                .values(
                    metadata_=merged,
                    ttl_seconds=seconds,
                    ttl_strategy=strategy,
                    update_time=now,
                    expire_epoch=now.timestamp() + effective if effective is not None else None,
                )
            )
            updated = await self._get(conn, namespace, thread_id, full=False)
            await events.record(conn, self._db.dialect, namespace, thread_id, events.THREAD_UPDATED)
        assert updated is not None  # noqa: S101 - updated in this transaction
        return updated

    def _matching(self, namespace: str, which: ThreadFilter) -> list[ColumnElement[bool]]:
        conditions = [
            ThreadRow.namespace == namespace,
            metadata_matches(self._db.dialect, which.metadata, ThreadRow.metadata_),
        ]
        if which.status is not None:
            conditions.append(queries.shown_status() == which.status)
            # Lets the status index serve the search; busy is derived from leases, not stored.
            if which.status not in (status.IDLE, status.BUSY):
                conditions.append(ThreadRow.status == which.status)
        if which.created_after is not None:
            conditions.append(ThreadRow.create_time >= which.created_after)
        if which.created_before is not None:
            conditions.append(ThreadRow.create_time < which.created_before)
        if which.updated_after is not None:
            conditions.append(ThreadRow.update_time >= which.updated_after)
        if which.updated_before is not None:
            conditions.append(ThreadRow.update_time < which.updated_before)
        return conditions

    async def search(
        self, namespace: str, which: ThreadFilter, page: ThreadPage
    ) -> list[ThreadRecord]:
        """A page of matching threads, in the page's order."""
        sort = _SORT_COLUMNS[page.sort_by]
        conditions = self._matching(namespace, which)
        # The listing as of its first page: nothing newer moves into or between its pages.
        conditions += [ThreadRow.create_time <= page.as_of, ThreadRow.update_time <= page.as_of]
        keys: tuple[Any, ...] = (
            (sort, ThreadRow.thread_id) if sort is not ThreadRow.thread_id else (sort,)
        )
        # The update time is indexed by its minute (see ThreadRow.update_minute): the order
        # goes by the minute first, and a later page starts at the minute it left off in.
        by_minute = sort is ThreadRow.update_time
        order = (ThreadRow.update_minute, *keys) if by_minute else keys
        if page.after is not None:
            after = page.after if len(keys) == 2 else (page.after[1],)
            position = (
                tuple_(*keys) < tuple_(*after)
                if page.descending
                else tuple_(*keys) > tuple_(*after)
            )
            conditions.append(position)
            if by_minute:
                minute = _minute(page.after[0])
                conditions.append(
                    ThreadRow.update_minute <= minute
                    if page.descending
                    else ThreadRow.update_minute >= minute
                )
        statement = (
            self._select(full=page.full)
            .where(*conditions)
            .order_by(*(k.desc() if page.descending else k.asc() for k in order))
            .limit(page.limit)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(statement, queries.visibility(self._ttl))).all()
        return [_record(row) for row in rows]

    async def count(self, namespace: str, which: ThreadFilter) -> int:
        """How many threads match."""
        statement = (
            select(func.count())
            .select_from(ThreadRow)
            .where(queries.visible(), *self._matching(namespace, which))
        )
        async with self._db.read() as conn:
            counted: int = (
                await conn.execute(statement, queries.visibility(self._ttl))
            ).scalar_one()
        return counted

    async def prune_events(self, retention_seconds: float) -> None:
        """Deletes events older than the retention, from the oldest on.

        Events are appended in time order, near enough (each server stamps its own), so the
        delete stops at the oldest event still within the retention: what it reads is what it
        deletes, with no index on the time. An expired event behind that one (stamped by a
        server whose clock is behind) goes once the events before it have gone; one stamped in
        the future (a clock ahead) does not hold the sweep back. The newest event always stays:
        SQLite numbers a new row after the greatest one left, and a number a watcher's cursor
        has passed must never be given again.
        """
        now = datetime.now(UTC)
        cutoff = now - timedelta(seconds=retention_seconds)
        kept = (
            select(EventRow.seq)
            .where(EventRow.time >= cutoff, EventRow.time <= now + _CLOCK_SKEW)
            .order_by(EventRow.seq)
            .limit(1)
            .scalar_subquery()
        )
        newest = select(func.max(EventRow.seq)).scalar_subquery()
        async with self._db.write(wake=False) as conn:
            await conn.execute(delete(EventRow).where(EventRow.seq < func.coalesce(kept, newest)))

    async def sweep(self, *, limit: int = 100) -> int:
        """Applies the time to live of up to ``limit`` expired threads; returns how many.

        Each thread is claimed and handled in its own transaction. On PostgreSQL the claim
        skips threads another server holds (FOR UPDATE SKIP LOCKED), so several servers sweep
        without doing the same work twice and without waiting on one another.
        """
        swept = 0
        while swept < limit:
            now = time.time()
            async with self._db.write(wake=False) as conn:
                claimed = (
                    await conn.execute(
                        select(
                            ThreadRow.key,
                            func.coalesce(ThreadRow.ttl_strategy, self._ttl.strategy),
                            ThreadRow.namespace,
                            ThreadRow.thread_id,
                        )
                        .where(
                            # The minute for the index, computed as the database computes
                            # expire_minute (migration 0011); the time for the exact bound.
                            ThreadRow.expire_minute <= cast(literal(now, Float) / 60, BigInteger),
                            ThreadRow.expire_epoch <= now,
                        )
                        .order_by(ThreadRow.expire_minute, ThreadRow.expire_epoch)
                        .limit(1)
                        .with_for_update(skip_locked=True)
                    )
                ).first()
                if claimed is None:
                    break
                key, strategy, namespace, thread_id = claimed
                kind: str | None
                if strategy == "keep_latest":
                    kind = await _prune_for_sweep(conn, key, namespace, thread_id)
                    await conn.execute(
                        update(ThreadRow).where(ThreadRow.key == key).values(expire_epoch=None)
                    )
                else:
                    await delete_thread_rows(conn, key)
                    kind = events.THREAD_DELETED
                if kind is not None:
                    await events.record(conn, self._db.dialect, namespace, thread_id, kind)
            self._db.hub.poke(namespace)
            swept += 1
        return swept


async def _prune_for_sweep(
    conn: AsyncConnection, key: int, namespace: str, thread_id: str
) -> str | None:
    """Prunes a claimed thread to its latest checkpoints; the event kind, or None if it can't.

    A thread whose parent chain loops cannot be pruned delta-safely: it is left whole (its
    expiry cleared by the caller, so that the sweeper moves on) and a warning names it.
    """
    try:
        async with conn.begin_nested():
            await prune_to_latest(conn, key)
    except FailedPrecondition as error:
        logger.warning("left thread %r of namespace %r unpruned: %s", thread_id, namespace, error)
        return None
    return events.THREAD_PRUNED


def _record(row: Any) -> ThreadRecord:
    mapping = row._mapping
    return ThreadRecord(
        thread_id=row.thread_id,
        metadata_json=row.metadata_json,
        create_time=_utc(row.create_time),
        update_time=_utc(row.update_time),
        status=row.status,
        latest_checkpoint_id=row.latest_checkpoint_id,
        ttl_seconds=row.ttl_seconds,
        ttl_strategy=row.ttl_strategy,
        expire_epoch=row.expire_epoch,
        checkpoint_count=mapping.get("checkpoint_count"),
        values_bytes=mapping.get("values_bytes"),
        writes_bytes=mapping.get("writes_bytes"),
    )


def _minute(moment: datetime) -> datetime:
    """The minute (UTC) that ``update_minute`` gives a thread updated at ``moment``."""
    return _utc(moment).astimezone(UTC).replace(second=0, microsecond=0)


def _utc(moment: datetime) -> datetime:
    # SQLite keeps no time zone: every time the server stores is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _json_size(document: dict[str, Any]) -> int:
    """The length of ``document`` as compact UTF-8 JSON."""
    return len(json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode())
