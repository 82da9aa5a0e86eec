"""The hot path: put and get checkpoints, put writes, list; each one transaction.

Every operation is scoped to one namespace. The puts run per database (sqlite_writes.py,
postgres_writes.py); deleting, copying and pruning threads is storage/lifecycle.py's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import tuple_

from checkpoint_server.errors import Aborted
from checkpoint_server.storage import (
    parent_chain,
    postgres_writes,
    queries,
    sqlite_writes,
    status,
    thread_rows,
)
from checkpoint_server.storage.database import Database
from checkpoint_server.storage.dialect import metadata_matches
from checkpoint_server.storage.models import CheckpointRow
from checkpoint_server.storage.records import (
    CheckpointRecord,
    DeltaHistory,
    Lease,
    ListQuery,
    StoredCheckpoint,
    TtlPolicy,
    Write,
)


class CheckpointStore:
    """Reads and writes checkpoints of every namespace in one database."""

    def __init__(self, database: Database, ttl: TtlPolicy | None = None) -> None:
        """Wraps an open database; ``ttl`` is the default time to live of threads."""
        self._db = database
        self._ttl = ttl or TtlPolicy()
        # The hot writes are the one place where the databases differ in more than a clause.
        self._writes = sqlite_writes if database.is_sqlite else postgres_writes

    async def put_checkpoint(self, namespace: str, record: CheckpointRecord) -> None:
        """Stores a checkpoint and its new values, replacing a checkpoint with the same ID.

        The thread is created by its first checkpoint.
        """
        await self._until_stored(
            namespace,
            record.thread_id,
            lambda thread: self._writes.put_checkpoint(self._db, thread, record),
        )

    async def put_writes(
        self,
        namespace: str,
        thread_id: str,
        checkpoint_ns: str,
        checkpoint_id: str,
        writes: Sequence[Write],
        lease: Lease | None = None,
    ) -> None:
        """Stores writes: first write wins for ``idx >= 0``, last write wins below zero.

        ``lease`` is the lease the writer carries (see storage/leases.py).
        """
        kept: dict[tuple[str, int], Write] = {}
        replaced: dict[tuple[str, int], Write] = {}
        for w in writes:
            if w.idx >= 0:
                kept.setdefault((w.task_id, w.idx), w)
            else:
                replaced[(w.task_id, w.idx)] = w
        set_status = status.of_writes(checkpoint_ns, (w.channel for w in writes))
        await self._until_stored(
            namespace,
            thread_id,
            lambda thread: self._writes.put_writes(
                self._db,
                thread,
                checkpoint_ns=checkpoint_ns,
                checkpoint_id=checkpoint_id,
                writes_status=set_status,
                kept=list(kept.values()),
                replaced=list(replaced.values()),
                lease=lease,
            ),
        )

    async def get_checkpoint(
        self, namespace: str, thread_id: str, checkpoint_ns: str, checkpoint_id: str | None
    ) -> StoredCheckpoint | None:
        """The given checkpoint, or the latest one when ``checkpoint_id`` is None."""
        params = {
            "namespace": namespace,
            "thread_id": thread_id,
            "checkpoint_ns": checkpoint_ns,
            **queries.visibility(self._ttl),
        }
        dialect = self._db.dialect
        if checkpoint_id is None:
            statement = queries.get_latest(dialect)
        else:
            statement = queries.get_by_id(dialect)
            params["checkpoint_id"] = checkpoint_id
        async with self._db.read() as conn:
            rows = (await conn.execute(statement, params)).all()
        checkpoints = queries.assemble(rows)
        return checkpoints[0] if checkpoints else None

    async def list_checkpoints(self, namespace: str, query: ListQuery) -> list[StoredCheckpoint]:
        """Checkpoints newest first, ordered by (checkpoint_id, thread_id, checkpoint_ns)."""
        conditions = []
        if query.checkpoint_ns is not None:
            conditions.append(CheckpointRow.checkpoint_ns == query.checkpoint_ns)
        if query.checkpoint_id is not None:
            conditions.append(CheckpointRow.checkpoint_id == query.checkpoint_id)
        if query.before_checkpoint_id is not None:
            conditions.append(CheckpointRow.checkpoint_id < query.before_checkpoint_id)
        if query.after is not None:
            conditions.append(tuple_(*queries.PAGE_ORDER) < tuple_(*query.after))
        dialect = self._db.dialect
        conditions.append(metadata_matches(dialect, query.metadata_filter))
        params = {"namespace": namespace, **queries.visibility(self._ttl)}
        if query.thread_id is None:
            checkpoints = queries.page(*conditions)
        else:
            checkpoints = queries.thread_page().where(*conditions)
            params["thread_id"] = query.thread_id
        statement = queries.with_values_and_writes(
            dialect,
            checkpoints.limit(query.limit),
            values=query.values,
            channels=query.channels,
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(statement, params)).all()
        return queries.assemble(rows)

    async def delta_channel_history(
        self,
        namespace: str,
        thread_id: str,
        checkpoint_ns: str,
        checkpoint_id: str | None,
        channels: Sequence[str],
    ) -> list[DeltaHistory]:
        """Per channel, the writes along the parent chain of a checkpoint and the seed value."""
        async with self._db.read() as conn:
            thread_key = await thread_rows.visible_key(conn, self._ttl, namespace, thread_id)
            if thread_key is None:
                return [DeltaHistory(channel) for channel in channels]
            return await parent_chain.delta_history(
                conn, thread_key, checkpoint_ns, checkpoint_id, channels
            )

    async def _until_stored(
        self,
        namespace: str,
        thread_id: str,
        store: Callable[[dict[str, Any]], Awaitable[bool]],
    ) -> None:
        """Runs a hot write; if the thread had expired, deletes it and runs it again."""
        for _ in range(2):
            now = datetime.now(UTC)
            thread = {
                "namespace": namespace,
                "thread_id": thread_id,
                "now": now,
                "now_epoch": now.timestamp(),
                "default_ttl": self._ttl.seconds,
                "default_strategy": self._ttl.strategy,
            }
            if await store(thread):
                return
            # The thread's time to live ran out before a sweep reached it: it starts anew.
            async with self._db.write(namespace) as conn:
                await thread_rows.delete_expired(
                    conn, self._db.dialect, self._ttl, namespace, thread_id
                )
        raise Aborted(f"thread {thread_id!r} kept expiring while it was being written: retry")
