"""Checkpoint storage operations, each one transaction, each scoped to one namespace."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Row, delete, func, insert, literal, select, tuple_, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from checkpoint_server.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ServiceError,
)
from checkpoint_server.storage import (
    events,
    leases,
    postgres_writes,
    queries,
    sqlite_writes,
    status,
)
from checkpoint_server.storage.database import Database
from checkpoint_server.storage.dialect import metadata_matches
from checkpoint_server.storage.models import BlobRow, CheckpointRow, EventRow, ThreadRow, WriteRow
from checkpoint_server.storage.records import (
    CheckpointRecord,
    DeltaHistory,
    Lease,
    ListQuery,
    StoredCheckpoint,
    TtlPolicy,
    Value,
    Write,
    WritesRecord,
)

_WRITE_COLUMNS = (
    WriteRow.task_id,
    WriteRow.task_path,
    WriteRow.idx,
    WriteRow.channel,
    WriteRow.type,
    WriteRow.blob,
)
_WRITE_ORDER = (WriteRow.task_path, WriteRow.task_id, WriteRow.idx)
# How many ancestors one query of a parent-chain walk reads.
_CHAIN_PAGE = 500
# Bound parameters per IN list, well under SQLite's limit of 32,766.
_BATCH = 2000

_T = TypeVar("_T")


class CheckpointStore:
    """Reads and writes checkpoints of every namespace in one database."""

    def __init__(self, database: Database, ttl: TtlPolicy | None = None) -> None:
        """Wraps an open database; ``ttl`` is the default time to live of threads."""
        self._db = database
        self._ttl = ttl or TtlPolicy()
        # The hot writes are the one place where the databases differ in more than a clause.
        self._writes = sqlite_writes if database.is_sqlite else postgres_writes
        self.leases = leases.LeaseStore(database)

    def _thread_update(self, namespace: str, thread_id: str, **changes: Any) -> dict[str, Any]:
        return queries.thread_update(
            namespace=namespace,
            thread_id=thread_id,
            now=datetime.now(UTC),
            default_ttl=self._ttl.seconds,
            default_strategy=self._ttl.strategy,
            **changes,
        )

    async def put_checkpoint(self, namespace: str, record: CheckpointRecord) -> None:
        """Stores a checkpoint and its new values, replacing a checkpoint with the same ID.

        The thread is created by its first checkpoint.
        """
        await self._put(namespace, record)

    async def put_writes(self, namespace: str, record: WritesRecord) -> None:
        """Stores writes: first write wins for ``idx >= 0``, last write wins below zero."""
        await self._put(namespace, record)

    async def put_batch(
        self, namespace: str, records: Sequence[CheckpointRecord | WritesRecord]
    ) -> list[Exception | None]:
        """Stores checkpoints and writes together where it can; each record's error, or None.

        The records go in one transaction, in the order of their thread IDs (two batches
        lock threads in one order). If it fails, or a record finds its thread expired, each
        such record is stored on its own, so a failing record fails nobody else.
        """
        order = sorted(range(len(records)), key=lambda i: records[i].thread_id)
        try:
            stored = await self._writes.run_group(
                self._db, namespace, [self._operation(namespace, records[i]) for i in order]
            )
        except (ServiceError, SQLAlchemyError):
            stored = [False] * len(order)
        outcomes: list[Exception | None] = [None] * len(records)
        for i, done in zip(order, stored, strict=True):
            if not done:
                try:
                    await self._put(namespace, records[i])
                except (ServiceError, SQLAlchemyError) as error:
                    outcomes[i] = error
        return outcomes

    async def _put(self, namespace: str, record: CheckpointRecord | WritesRecord) -> None:
        """Stores one record; if its thread had expired, deletes the thread and stores again."""
        for _ in range(2):
            if await self._writes.run(self._db, self._operation(namespace, record)):
                return
            await self._drop_expired(namespace, record.thread_id)
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

    async def delete_thread(
        self, namespace: str, thread_id: str, lease: Lease | None = None
    ) -> None:
        """Deletes a thread in every checkpoint_ns, if its lease admits ``lease``."""
        async with self._db.write(namespace) as conn:
            await leases.check(conn, self._db.dialect, namespace, thread_id, lease)
            thread_key = await self._thread_key(conn, namespace, thread_id)
            if thread_key is not None:
                await delete_thread_rows(conn, thread_key)
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
                await _delete_checkpoints(conn, thread_key, checkpoint_ns, ids)
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
            source_key = await self._thread_key(conn, namespace, source)
            if source_key is None:
                raise NotFound(f"thread {source!r} does not exist")
            target_key = await self._upsert_thread(conn, self._thread_update(namespace, target))
            if await _has_rows(conn, target_key):
                if await _copied(conn, namespace, source, target):
                    return  # a retry of a copy that succeeded: nothing to do twice
                raise AlreadyExists(f"thread {target!r} already has checkpoints or writes")
            for model in (BlobRow, WriteRow, CheckpointRow):
                columns = [c for c in model.__table__.columns if c.name != "thread_key"]
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
                thread_key = await self._thread_key(conn, namespace, thread_id)
                if thread_key is None:
                    continue
                if keep_latest:
                    await prune_to_latest(conn, thread_key)
                else:
                    await delete_thread_rows(conn, thread_key)
                kind = events.THREAD_PRUNED if keep_latest else events.THREAD_DELETED
                await events.record(conn, self._db.dialect, namespace, thread_id, kind)

    async def delta_channel_history(
        self,
        namespace: str,
        thread_id: str,
        checkpoint_ns: str,
        checkpoint_id: str | None,
        channels: Sequence[str],
    ) -> list[DeltaHistory]:
        """Per channel, the writes along the parent chain of a checkpoint and the seed value."""
        histories = {channel: DeltaHistory(channel) for channel in channels}
        async with self._db.read() as conn:
            thread_key = await self._thread_key(conn, namespace, thread_id)
            if thread_key is None:
                return list(histories.values())
            chain = _ParentChain(conn, thread_key, checkpoint_ns)
            target = await chain.start(checkpoint_id)
            if target is None:
                return list(histories.values())
            walked, seeds = await chain.walk_to_seeds(target, set(channels), skip_target=True)
            for channel, history in histories.items():
                seed = seeds.get(channel)
                if seed is not None:
                    history.seed = seed
                ids = walked[channel]
                for start in range(0, len(ids), _BATCH):
                    rows = await conn.execute(
                        select(*_WRITE_COLUMNS)
                        .where(
                            WriteRow.thread_key == thread_key,
                            WriteRow.checkpoint_ns == checkpoint_ns,
                            WriteRow.channel == channel,
                            WriteRow.checkpoint_id.in_(ids[start : start + _BATCH]),
                        )
                        .order_by(WriteRow.checkpoint_id, *_WRITE_ORDER)
                    )
                    history.writes.extend(_write(r) for r in rows)
        return list(histories.values())

    async def _upsert_thread(self, conn: AsyncConnection, thread: dict[str, Any]) -> int:
        """Creates or touches a thread in the caller's transaction, recording a creation.

        A thread whose time to live ran out is deleted first: writing to it starts anew.
        """
        statement = queries.upsert_thread(self._db.dialect)
        upserted = (await conn.execute(statement, thread)).first()
        if upserted is None:
            await self._delete_expired(conn, thread["p_namespace"], thread["p_thread_id"])
            upserted = (await conn.execute(statement, thread)).one()
        key, inserted = upserted
        if inserted:
            await events.record(
                conn,
                self._db.dialect,
                thread["p_namespace"],
                thread["p_thread_id"],
                events.THREAD_CREATED,
            )
        return int(key)

    async def _drop_expired(self, namespace: str, thread_id: str) -> None:
        """Deletes a thread whose time to live ran out but that no sweep reached yet."""
        async with self._db.write(namespace) as conn:
            await self._delete_expired(conn, namespace, thread_id)

    async def _delete_expired(self, conn: AsyncConnection, namespace: str, thread_id: str) -> None:
        key = await conn.scalar(
            select(ThreadRow.key).where(
                ThreadRow.namespace == namespace,
                ThreadRow.thread_id == thread_id,
                ~queries.visible(),
            ),
            queries.visibility(self._ttl),
        )
        if key is not None:
            await delete_thread_rows(conn, key)
            await events.record(conn, self._db.dialect, namespace, thread_id, events.THREAD_DELETED)

    async def _thread_key(
        self, conn: AsyncConnection, namespace: str, thread_id: str
    ) -> int | None:
        key: int | None = await conn.scalar(
            select(ThreadRow.key).where(
                ThreadRow.namespace == namespace,
                ThreadRow.thread_id == thread_id,
                queries.visible(),
            ),
            queries.visibility(self._ttl),
        )
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


async def delete_thread_rows(conn: AsyncConnection, thread_key: int) -> None:
    """Deletes a thread: its catalog row first, then its checkpoints, writes and values.

    The catalog row goes first: its lock makes a concurrent put or write of the thread wait
    (PostgreSQL's functions lock it, see migration 0004), so nothing is stored under the key
    between the deletes and then left behind without a thread.
    """
    await conn.execute(delete(ThreadRow).where(ThreadRow.key == thread_key))
    for model in (CheckpointRow, WriteRow, BlobRow):
        await conn.execute(delete(model).where(model.thread_key == thread_key))


class _ParentChain:
    """Walks a thread's parent chain newest first, a page of checkpoints per query."""

    def __init__(self, conn: AsyncConnection, thread_key: int, checkpoint_ns: str) -> None:
        self._conn = conn
        self._where = (
            CheckpointRow.thread_key == thread_key,
            CheckpointRow.checkpoint_ns == checkpoint_ns,
        )
        self._blob_where = (
            BlobRow.thread_key == thread_key,
            BlobRow.checkpoint_ns == checkpoint_ns,
        )
        self._rows: dict[str, tuple[str | None, dict[str, str]]] = {}
        self._oldest_read: str | None = None
        self._exhausted = False

    async def start(self, checkpoint_id: str | None) -> str | None:
        """The ID of the walk's first checkpoint: the given one, or the latest."""
        query = select(CheckpointRow.checkpoint_id).where(*self._where)
        if checkpoint_id is None:
            query = query.order_by(CheckpointRow.checkpoint_id.desc()).limit(1)
        else:
            query = query.where(CheckpointRow.checkpoint_id == checkpoint_id)
        found: str | None = await self._conn.scalar(query)
        return found

    async def _row(self, checkpoint_id: str) -> tuple[str | None, dict[str, str]] | None:
        while checkpoint_id not in self._rows and not self._exhausted:
            await self._read_page(checkpoint_id)
        return self._rows.get(checkpoint_id)

    async def _read_page(self, at_or_before: str) -> None:
        bound = at_or_before
        if self._oldest_read is not None and self._oldest_read <= bound:
            bound = self._oldest_read
            condition = CheckpointRow.checkpoint_id < bound
        else:
            condition = CheckpointRow.checkpoint_id <= bound
        rows = (
            await self._conn.execute(
                select(
                    CheckpointRow.checkpoint_id,
                    CheckpointRow.parent_checkpoint_id,
                    CheckpointRow.channel_versions,
                )
                .where(*self._where, condition)
                .order_by(CheckpointRow.checkpoint_id.desc())
                .limit(_CHAIN_PAGE)
            )
        ).all()
        for checkpoint_id, parent, versions in rows:
            self._rows[checkpoint_id] = (parent, versions)
        if rows:
            self._oldest_read = rows[-1][0]
        if len(rows) < _CHAIN_PAGE:
            self._exhausted = True

    async def walk_to_seeds(
        self, start: str, channels: set[str], *, skip_target: bool
    ) -> tuple[dict[str, list[str]], dict[str, Value]]:
        """Follows parents from ``start`` until every channel has a stored value.

        Returns, per channel, the IDs of the checkpoints walked (oldest first, ending where its
        value was found) and the values found.
        """
        walked: dict[str, list[str]] = {channel: [] for channel in channels}
        seeds: dict[str, Value] = {}
        remaining = set(channels)
        row = await self._row(start)
        cursor = row[0] if skip_target and row else start
        # Parents are client input: a chain may loop, so the walk remembers where it has been.
        visited = {start} if skip_target else set()
        while cursor is not None and remaining:
            if cursor in visited:
                raise FailedPrecondition(
                    f"checkpoint {cursor!r} is its own ancestor: the parent chain of "
                    f"checkpoint {start!r} loops"
                )
            visited.add(cursor)
            if len(visited) % _CHAIN_PAGE == 0:
                # Cached pages need no query: let other calls run between long stretches.
                await asyncio.sleep(0)
            row = await self._row(cursor)
            if row is None:
                break
            parent, versions = row
            for channel in remaining:
                walked[channel].append(cursor)
            wanted = {c: versions[c] for c in remaining if c in versions}
            for value in await self._values(wanted):
                seeds[value.channel] = value
                remaining.discard(value.channel)
            cursor = parent
        for ids in walked.values():
            ids.reverse()
        return walked, seeds

    async def _values(self, versions: dict[str, str]) -> list[Value]:
        if not versions:
            return []
        rows = await self._conn.execute(
            select(BlobRow.channel, BlobRow.version, BlobRow.type, BlobRow.blob).where(
                *self._blob_where,
                tuple_(BlobRow.channel, BlobRow.version).in_(list(versions.items())),
            )
        )
        return [Value(*r) for r in rows]


async def prune_to_latest(conn: AsyncConnection, thread_key: int) -> None:
    """Prunes a thread to the latest checkpoint of each checkpoint_ns (delta-channel safe)."""
    heads = (
        await conn.execute(
            select(CheckpointRow.checkpoint_ns, func.max(CheckpointRow.checkpoint_id))
            .where(CheckpointRow.thread_key == thread_key)
            .group_by(CheckpointRow.checkpoint_ns)
        )
    ).all()
    for checkpoint_ns, head in heads:
        await _keep_latest(conn, thread_key, checkpoint_ns, head)


async def _keep_latest(
    conn: AsyncConnection, thread_key: int, checkpoint_ns: str, head: str
) -> None:
    delta_channels = await conn.scalar(
        select(CheckpointRow.delta_channels).where(
            CheckpointRow.thread_key == thread_key,
            CheckpointRow.checkpoint_ns == checkpoint_ns,
            CheckpointRow.checkpoint_id == head,
        )
    )
    kept = {head}
    if delta_channels:
        chain = _ParentChain(conn, thread_key, checkpoint_ns)
        walked, _ = await chain.walk_to_seeds(head, set(delta_channels), skip_target=False)
        for ids in walked.values():
            kept.update(ids)
    # Delete by explicit ID: a checkpoint a run commits meanwhile is neither read nor deleted.
    doomed = (
        await conn.scalars(
            select(CheckpointRow.checkpoint_id).where(
                CheckpointRow.thread_key == thread_key,
                CheckpointRow.checkpoint_ns == checkpoint_ns,
                CheckpointRow.checkpoint_id < head,
            )
        )
    ).all()
    await _delete_checkpoints(conn, thread_key, checkpoint_ns, [i for i in doomed if i not in kept])


async def _delete_checkpoints(
    conn: AsyncConnection, thread_key: int, checkpoint_ns: str, checkpoint_ids: Sequence[str]
) -> None:
    """Deletes checkpoints, their writes and the values no remaining checkpoint references.

    A remaining checkpoint whose parent is deleted is left without a parent.
    """
    if not checkpoint_ids:
        return
    where = {"thread_key": thread_key, "checkpoint_ns": checkpoint_ns}
    freed: set[tuple[str, str]] = set()
    for batch in _batches(checkpoint_ids):
        for model in (WriteRow, CheckpointRow):
            statement = delete(model).filter_by(**where).where(model.checkpoint_id.in_(batch))
            if model is CheckpointRow:
                result = await conn.execute(statement.returning(CheckpointRow.channel_versions))
                for (versions,) in result:
                    freed.update(versions.items())
            else:
                await conn.execute(statement)
        await conn.execute(
            update(CheckpointRow)
            .filter_by(**where)
            .where(CheckpointRow.parent_checkpoint_id.in_(batch))
            .values(parent_checkpoint_id=None)
        )
    if not freed:
        return
    remaining = await conn.scalars(select(CheckpointRow.channel_versions).filter_by(**where))
    for versions in remaining:
        freed.difference_update(versions.items())
    for batch_pairs in _batches(sorted(freed)):
        await conn.execute(
            delete(BlobRow)
            .filter_by(**where)
            .where(tuple_(BlobRow.channel, BlobRow.version).in_(batch_pairs))
        )


def _write(row: Row[*tuple[Any, ...]]) -> Write:
    return Write(row.task_id, row.task_path, row.idx, row.channel, row.type, row.blob)


def _batches(items: Sequence[_T], size: int = _BATCH) -> Iterable[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
