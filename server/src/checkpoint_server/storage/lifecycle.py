"""Deleting, copying and pruning threads; each operation one transaction per thread.

Every operation is scoped to one namespace and records its event (storage/events.py). The
rows go through storage/thread_rows.py; the hot path is storage/checkpoints.py.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from checkpoint_server.errors import AlreadyExists, InvalidArgument, NotFound
from checkpoint_server.storage import events, leases, queries, thread_rows
from checkpoint_server.storage.database import Database
from checkpoint_server.storage.models import BlobRow, CheckpointRow, EventRow, ThreadRow, WriteRow
from checkpoint_server.storage.records import Lease, TtlPolicy


class ThreadLifecycle:
    """Deletes, copies and prunes threads of every namespace in one database."""

    def __init__(self, database: Database, ttl: TtlPolicy | None = None) -> None:
        """Wraps an open database; ``ttl`` is the default time to live of threads."""
        self._db = database
        self._ttl = ttl or TtlPolicy()

    async def delete_thread(
        self, namespace: str, thread_id: str, lease: Lease | None = None
    ) -> None:
        """Deletes a thread in every checkpoint_ns, if its lease admits ``lease``."""
        async with self._db.write(namespace) as conn:
            await leases.check(conn, self._db.dialect, namespace, thread_id, lease)
            thread_key = await thread_rows.visible_key(conn, self._ttl, namespace, thread_id)
            if thread_key is not None:
                await thread_rows.delete_thread_rows(conn, thread_key)
                await events.record(
                    conn, self._db.dialect, namespace, thread_id, events.THREAD_DELETED
                )

    async def delete_for_runs(self, namespace: str, run_ids: Sequence[str]) -> None:
        """Deletes the checkpoints of the runs, their writes, and the values left unreferenced."""
        async with self._db.write(namespace) as conn:
            doomed = (
                await conn.execute(
                    select(
                        CheckpointRow.thread_key,
                        CheckpointRow.checkpoint_ns,
                        CheckpointRow.checkpoint_id,
                    ).where(CheckpointRow.namespace == namespace, CheckpointRow.run_id.in_(run_ids))
                )
            ).all()
            by_thread: dict[tuple[int, str], list[str]] = defaultdict(list)
            for thread_key, checkpoint_ns, checkpoint_id in doomed:
                by_thread[(thread_key, checkpoint_ns)].append(checkpoint_id)
            for (thread_key, checkpoint_ns), ids in by_thread.items():
                await thread_rows.delete_checkpoints(conn, thread_key, checkpoint_ns, ids)
            pruned = await conn.scalars(
                select(ThreadRow.thread_id).where(ThreadRow.key.in_({key for key, _ in by_thread}))
            )
            for thread_id in pruned:
                await events.record(
                    conn, self._db.dialect, namespace, thread_id, events.THREAD_PRUNED
                )

    async def copy_thread(
        self, namespace: str, source: str, target: str, metadata: dict[str, Any] | None = None
    ) -> None:
        """Copies every row of ``source`` to ``target``, which must have no checkpoints.

        The target thread gets ``metadata``, or the source's when it is None, and the source's
        latest checkpoint and status.
        """
        if source == target:
            raise InvalidArgument("target_thread_id", "must differ from source_thread_id")
        async with self._db.write(namespace) as conn:
            source_key = await thread_rows.visible_key(conn, self._ttl, namespace, source)
            if source_key is None:
                raise NotFound(f"thread {source!r} does not exist")
            target_key = await self._upsert_thread(conn, namespace, target)
            if await _has_rows(conn, target_key):
                if await _copied(conn, namespace, source, target):
                    return  # a retry of a copy that succeeded: nothing to do twice
                raise AlreadyExists(f"thread {target!r} already has checkpoints or writes")
            # The copies take no place in the feed: the copy has an event of its own.
            for model in (BlobRow, WriteRow, CheckpointRow):
                columns = [
                    c
                    for c in model.__table__.columns
                    if c.name != "thread_key" and not c.name.startswith("feed_")
                ]
                await conn.execute(
                    insert(model).from_select(
                        ["thread_key", *(c.name for c in columns)],
                        select(literal(target_key), *columns).where(model.thread_key == source_key),
                    )
                )
            origin_metadata, latest, held_status, status_checkpoint_id = (
                await conn.execute(
                    select(
                        ThreadRow.metadata_,
                        ThreadRow.latest_checkpoint_id,
                        ThreadRow.status,
                        ThreadRow.status_checkpoint_id,
                    ).where(ThreadRow.key == source_key)
                )
            ).one()
            await conn.execute(
                update(ThreadRow)
                .where(ThreadRow.key == target_key)
                .values(
                    metadata_=origin_metadata if metadata is None else metadata,
                    latest_checkpoint_id=latest,
                    status=held_status,
                    status_checkpoint_id=status_checkpoint_id,
                )
            )
            await events.record(
                conn,
                self._db.dialect,
                namespace,
                target,
                events.THREAD_COPIED,
                source_thread_id=source,
            )

    async def prune(self, namespace: str, thread_ids: Sequence[str], *, keep_latest: bool) -> None:
        """Prunes each thread in its own transaction.

        With ``keep_latest`` each checkpoint_ns keeps its latest checkpoint, its writes, and the
        ancestors its delta channels are rebuilt from; otherwise the threads are deleted.
        """
        for thread_id in dict.fromkeys(thread_ids):
            async with self._db.write(namespace) as conn:
                thread_key = await thread_rows.visible_key(conn, self._ttl, namespace, thread_id)
                if thread_key is None:
                    continue
                if keep_latest:
                    await thread_rows.prune_to_latest(conn, thread_key)
                else:
                    await thread_rows.delete_thread_rows(conn, thread_key)
                kind = events.THREAD_PRUNED if keep_latest else events.THREAD_DELETED
                await events.record(conn, self._db.dialect, namespace, thread_id, kind)

    async def _upsert_thread(self, conn: AsyncConnection, namespace: str, thread_id: str) -> int:
        """Creates or touches a thread in the caller's transaction.

        A thread whose time to live ran out is deleted first: writing to it starts anew.
        """
        thread = queries.thread_update(
            namespace=namespace,
            thread_id=thread_id,
            now=datetime.now(UTC),
            default_ttl=self._ttl.seconds,
            default_strategy=self._ttl.strategy,
        )
        upserted = await self._upsert(conn, thread)
        if upserted is None:
            await thread_rows.delete_expired(
                conn, self._db.dialect, self._ttl, namespace, thread_id
            )
            upserted = await self._upsert(conn, thread)
        assert upserted is not None  # noqa: S101 - the expired thread is gone
        return upserted

    async def _upsert(self, conn: AsyncConnection, thread: dict[str, Any]) -> int | None:
        """The thread's key, None if its time to live ran out; a new row is placed in the feed.

        Each attempt takes its own place: after the deletion of an expired thread, its own
        event's.
        """
        feed = await events.placed(conn, self._db.dialect)
        key: int | None = await conn.scalar(queries.upsert_thread(self._db.dialect, feed), thread)
        return key


async def _has_rows(conn: AsyncConnection, thread_key: int) -> bool:
    """Whether a thread holds checkpoints, or writes or values (stored before any checkpoint)."""
    for model in (CheckpointRow, WriteRow, BlobRow):
        found = await conn.scalar(
            select(literal(1)).select_from(model).where(model.thread_key == thread_key).limit(1)
        )
        if found is not None:
            return True
    return False


async def _copied(conn: AsyncConnection, namespace: str, source: str, target: str) -> bool:
    """Whether ``target`` was made by a copy of ``source`` (within the event retention).

    Only a copy into the thread as it is now counts, not one into an earlier thread of the
    same ID that was deleted since.
    """
    created = (
        select(ThreadRow.create_time)
        .where(ThreadRow.namespace == namespace, ThreadRow.thread_id == target)
        .scalar_subquery()
    )
    found = await conn.scalar(
        select(EventRow.seq)
        .where(
            EventRow.namespace == namespace,
            EventRow.thread_id == target,
            EventRow.kind == events.THREAD_COPIED,
            EventRow.source_thread_id == source,
            EventRow.time >= created,
        )
        .limit(1)
    )
    return found is not None
