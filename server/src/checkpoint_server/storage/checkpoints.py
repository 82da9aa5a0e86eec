"""The hot path: put and get checkpoints, put writes, list.

Each read is one transaction; each write shares one with the namespace's other writes that
wait at the time (storage/group_commit.py). Every operation is scoped to one namespace. The
puts run per database (sqlite_writes.py, postgres_writes.py), and so does getting one
checkpoint on PostgreSQL (postgres_driver.py); deleting, copying and pruning
threads is storage/lifecycle.py's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import CompoundSelect, tuple_
from sqlalchemy.exc import SQLAlchemyError

from checkpoint_server.errors import Aborted, ServiceError
from checkpoint_server.storage import (
    parent_chain,
    postgres_driver,
    postgres_writes,
    queries,
    sqlite_writes,
    status,
    thread_rows,
)
from checkpoint_server.storage.database import Database, unavailable
from checkpoint_server.storage.dialect import metadata_matches
from checkpoint_server.storage.group_commit import GroupCommit, Outcome
from checkpoint_server.storage.models import CheckpointRow
from checkpoint_server.storage.records import (
    CheckpointRecord,
    DeltaHistory,
    ListQuery,
    StoredBatch,
    StoredCheckpoint,
    TtlPolicy,
    Write,
    WritesRecord,
)

# Enough to take every writer of a busy namespace in a group or two; PostgreSQL's pipeline and
# SQLite's writer run a group of this size in a few milliseconds.
DEFAULT_MAX_GROUP_ITEMS = 64


class CheckpointStore:
    """Reads and writes checkpoints of every namespace in one database."""

    def __init__(
        self,
        database: Database,
        ttl: TtlPolicy | None = None,
        *,
        max_group_items: int = DEFAULT_MAX_GROUP_ITEMS,
        on_group: Callable[[int, int], None] | None = None,
    ) -> None:
        """Wraps an open database; ``ttl`` is the default time to live of threads.

        A namespace's writes are grouped (see storage/group_commit.py), at most
        ``max_group_items`` to a transaction. ``on_group(together, alone)`` hears of every
        group of two or more records: how many were stored in its transaction, and how many
        on their own after it failed.
        """
        self._db = database
        self._ttl = ttl or TtlPolicy()
        # The hot writes are the one place where the databases differ in more than a clause.
        self._writes = sqlite_writes if database.is_sqlite else postgres_writes
        # So are the reads of one checkpoint: PostgreSQL's past SQLAlchemy's execution layer.
        self._fetch = _through_sqlalchemy if database.is_sqlite else postgres_driver.fetch
        self._groups = GroupCommit(self._store, max_group_items)
        self._on_group = on_group

    async def put_checkpoint(self, namespace: str, record: CheckpointRecord) -> None:
        """Stores a checkpoint and its new values, replacing a checkpoint with the same ID.

        The thread is created by its first checkpoint.
        """
        await self._put_grouped(namespace, record)

    async def put_writes(self, namespace: str, record: WritesRecord) -> None:
        """Stores writes: first write wins for ``idx >= 0``, last write wins below zero."""
        await self._put_grouped(namespace, record)

    async def put_batch(
        self, namespace: str, records: Sequence[CheckpointRecord | WritesRecord]
    ) -> StoredBatch:
        """Stores checkpoints and writes together where it can; each record's error, or None.

        The records share transactions with each other and with the namespace's other
        writes waiting at the time; a failing record fails nobody else.
        """
        outcomes = await self._groups.store(namespace, records)
        return StoredBatch([error for error, _ in outcomes], sum(alone for _, alone in outcomes))

    async def _put_grouped(self, namespace: str, record: CheckpointRecord | WritesRecord) -> None:
        [(error, _)] = await self._groups.store(namespace, [record])
        if error is not None:
            raise error

    async def _store(
        self, namespace: str, records: list[CheckpointRecord | WritesRecord]
    ) -> list[Outcome]:
        """Stores records in one transaction where it can; each one's outcome.

        The records go in the order of their thread IDs (two groups lock threads in one
        order). If the transaction fails, or a record finds its thread expired, each such
        record is stored on its own; if the database cannot serve, every record of the group
        fails with that error, for its caller to retry.
        """
        if len(records) == 1:
            try:
                await self._put(namespace, records[0])
            except (ServiceError, SQLAlchemyError) as error:
                return [(error, False)]
            return [(None, False)]
        order = sorted(range(len(records)), key=lambda i: records[i].thread_id)
        down: SQLAlchemyError | None = None
        try:
            stored = await self._writes.run_group(
                self._db, namespace, [self._operation(namespace, records[i]) for i in order]
            )
        except (ServiceError, SQLAlchemyError) as error:
            stored = [False] * len(order)
            if isinstance(error, SQLAlchemyError) and unavailable(error):
                # Nothing of the group's own (the database locked, lost or every connection
                # busy): each item alone would only wait for it again.
                down = error
        outcomes: list[Outcome] = [(None, False)] * len(records)
        for i, done in zip(order, stored, strict=True):
            if done:
                continue
            if down is not None:
                # The database cannot serve now: trying the rest one by one would only wait
                # for it again and again (each caller retries its item itself).
                outcomes[i] = (down, True)
                continue
            try:
                await self._put(namespace, records[i])
                outcomes[i] = (None, True)
            except ServiceError as error:
                outcomes[i] = (error, True)
            except SQLAlchemyError as error:
                outcomes[i] = (error, True)
                down = error if unavailable(error) else None
        if self._on_group is not None:
            alone = sum(alone for _, alone in outcomes)
            self._on_group(len(records) - alone, alone)
        return outcomes

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
        checkpoints = queries.assemble(await self._fetch(self._db, statement, params))
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

    async def _put(self, namespace: str, record: CheckpointRecord | WritesRecord) -> None:
        """Stores one record; if its thread had expired, deletes the thread and stores again."""
        for _ in range(2):
            if await self._writes.run(self._db, self._operation(namespace, record)):
                return
            # The thread's time to live ran out before a sweep reached it: it starts anew.
            async with self._db.write(namespace) as conn:
                await thread_rows.delete_expired(
                    conn, self._db.dialect, self._ttl, namespace, record.thread_id
                )
        raise Aborted(
            f"thread {record.thread_id!r} kept expiring while it was being written: retry"
        )

    def _operation(self, namespace: str, record: CheckpointRecord | WritesRecord) -> Any:
        """The database's operation that stores ``record`` (see postgres_writes.py)."""
        now = datetime.now(UTC)
        thread = {
            "namespace": namespace,
            "thread_id": record.thread_id,
            "now": now,
            "now_epoch": now.timestamp(),
            "default_ttl": self._ttl.seconds,
            "default_strategy": self._ttl.strategy,
        }
        if isinstance(record, CheckpointRecord):
            return self._writes.checkpoint_operation(thread, record)
        kept: dict[tuple[str, int], Write] = {}
        replaced: dict[tuple[str, int], Write] = {}
        for w in record.writes:
            if w.idx >= 0:
                kept.setdefault((w.task_id, w.idx), w)
            else:
                replaced[(w.task_id, w.idx)] = w
        return self._writes.writes_operation(
            thread,
            checkpoint_ns=record.checkpoint_ns,
            checkpoint_id=record.checkpoint_id,
            writes_status=status.of_writes(
                record.checkpoint_ns, (w.channel for w in record.writes)
            ),
            kept=list(kept.values()),
            replaced=list(replaced.values()),
            lease=record.lease,
        )


async def _through_sqlalchemy(
    database: Database, statement: CompoundSelect[Any], params: Mapping[str, Any]
) -> Sequence[Any]:
    async with database.read() as conn:
        rows: Sequence[Any] = (await conn.execute(statement, params)).all()
    return rows
