"""A thread's rows in the caller's transaction: finding its key, deleting and pruning them.

A thread is one catalog row (``threads``) and, under its key, checkpoints, writes and
values. The hot path, the lifecycle operations and the catalog's sweeper all delete through
here, so that every deletion takes the catalog row first (see ``delete_thread_rows``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

from sqlalchemy import delete, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from checkpoint_server.storage import events, queries
from checkpoint_server.storage.models import BlobRow, CheckpointRow, ThreadRow, WriteRow
from checkpoint_server.storage.parent_chain import BATCH, kept_by_keep_latest
from checkpoint_server.storage.records import TtlPolicy

_T = TypeVar("_T")


async def visible_key(
    conn: AsyncConnection, ttl: TtlPolicy, namespace: str, thread_id: str
) -> int | None:
    """The key of the thread, or None when it does not exist or its time to live ran out."""
    key: int | None = await conn.scalar(
        select(ThreadRow.key).where(
            ThreadRow.namespace == namespace,
            ThreadRow.thread_id == thread_id,
            queries.visible(),
        ),
        queries.visibility(ttl),
    )
    return key


async def delete_expired(
    conn: AsyncConnection, dialect: str, ttl: TtlPolicy, namespace: str, thread_id: str
) -> None:
    """Deletes the thread if its time to live ran out but no sweep reached it yet."""
    key = await conn.scalar(
        select(ThreadRow.key).where(
            ThreadRow.namespace == namespace,
            ThreadRow.thread_id == thread_id,
            ~queries.visible(),
        ),
        queries.visibility(ttl),
    )
    if key is not None:
        await delete_thread_rows(conn, key)
        await events.record(conn, dialect, namespace, thread_id, events.THREAD_DELETED)


async def delete_thread_rows(conn: AsyncConnection, thread_key: int) -> None:
    """Deletes a thread: its catalog row first, then its checkpoints, writes and values.

    The catalog row goes first: its lock makes a concurrent put or write of the thread wait
    (PostgreSQL's functions lock it, see migration 0004), so nothing is stored under the key
    between the deletes and then left behind without a thread.
    """
    await conn.execute(delete(ThreadRow).where(ThreadRow.key == thread_key))
    for model in (CheckpointRow, WriteRow, BlobRow):
        await conn.execute(delete(model).where(model.thread_key == thread_key))


async def prune_to_latest(conn: AsyncConnection, thread_key: int) -> None:
    """Prunes a thread to the latest checkpoint of each checkpoint_ns (delta-channel safe).

    Raises:
        FailedPrecondition: A parent chain loops; the caller's transaction must not commit.

    """
    heads = (
        await conn.execute(
            select(CheckpointRow.checkpoint_ns, func.max(CheckpointRow.checkpoint_id))
            .where(CheckpointRow.thread_key == thread_key)
            .group_by(CheckpointRow.checkpoint_ns)
        )
    ).all()
    for checkpoint_ns, head in heads:
        kept = await kept_by_keep_latest(conn, thread_key, checkpoint_ns, head)
        # Delete by explicit ID: a checkpoint a run commits meanwhile is neither read nor
        # deleted.
        doomed = (
            await conn.scalars(
                select(CheckpointRow.checkpoint_id).where(
                    CheckpointRow.thread_key == thread_key,
                    CheckpointRow.checkpoint_ns == checkpoint_ns,
                    CheckpointRow.checkpoint_id < head,
                )
            )
        ).all()
        await delete_checkpoints(
            conn, thread_key, checkpoint_ns, [i for i in doomed if i not in kept]
        )


async def delete_checkpoints(
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


def _batches(items: Sequence[_T], size: int = BATCH) -> Iterable[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
