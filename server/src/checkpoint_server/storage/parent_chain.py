"""Walks along a thread's parent chain: delta-channel history, and what keep-latest keeps.

Parents are client input, so a chain may loop: every walk is bounded by the checkpoints it
can read and remembers where it has been, and a loop is ``FailedPrecondition``. Nothing here
writes; the callers delete (see storage/thread_rows.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from checkpoint_server.errors import FailedPrecondition
from checkpoint_server.storage.models import BlobRow, CheckpointRow, WriteRow
from checkpoint_server.storage.records import DeltaHistory, Value, Write

_WRITE_COLUMNS = (
    WriteRow.task_id,
    WriteRow.task_path,
    WriteRow.idx,
    WriteRow.channel,
    WriteRow.type,
    WriteRow.blob,
)
_WRITE_ORDER = (WriteRow.task_path, WriteRow.task_id, WriteRow.idx)
# How many ancestors one query of a walk reads.
_CHAIN_PAGE = 500
# Bound parameters per IN list, well under SQLite's limit of 32,766.
BATCH = 2000


async def delta_history(
    conn: AsyncConnection,
    thread_key: int,
    checkpoint_ns: str,
    checkpoint_id: str | None,
    channels: Sequence[str],
) -> list[DeltaHistory]:
    """Per channel, the writes along the parent chain of a checkpoint and the seed value.

    The walk starts at the parent of ``checkpoint_id`` (the latest checkpoint when None) and
    ends, per channel, at the first ancestor that stores the channel's value: its seed.
    """
    histories = {channel: DeltaHistory(channel) for channel in channels}
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
        for start in range(0, len(ids), BATCH):
            rows = await conn.execute(
                select(*_WRITE_COLUMNS)
                .where(
                    WriteRow.thread_key == thread_key,
                    WriteRow.checkpoint_ns == checkpoint_ns,
                    WriteRow.channel == channel,
                    WriteRow.checkpoint_id.in_(ids[start : start + BATCH]),
                )
                .order_by(WriteRow.checkpoint_id, *_WRITE_ORDER)
            )
            history.writes.extend(_write(r) for r in rows)
    return list(histories.values())


async def kept_by_keep_latest(
    conn: AsyncConnection, thread_key: int, checkpoint_ns: str, head: str
) -> set[str]:
    """The checkpoints pruning to ``head`` keeps: it, and the ancestors its delta channels need.

    A delta channel's value is rebuilt from the writes since the last checkpoint that stores
    it, so those checkpoints stay, up to and including that one.
    """
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
    return kept


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


def _write(row: Row[*tuple[Any, ...]]) -> Write:
    return Write(row.task_id, row.task_path, row.idx, row.channel, row.type, row.blob)
