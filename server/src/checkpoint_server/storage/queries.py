"""Statements of the hot paths, built once per dialect and run with bound parameters.

Reading a checkpoint is one statement: the page of checkpoints, the values their channel
versions name and their pending writes, as one UNION ALL. One statement needs no transaction to
be consistent, and costs one round trip. (Puts and writes are in ``postgres_writes`` and
``sqlite_writes``.)
"""

from __future__ import annotations

import functools
import json
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    DateTime,
    Integer,
    LargeBinary,
    Select,
    String,
    Text,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal,
    null,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.sql.dml import Insert
from sqlalchemy.types import TypeEngine

from checkpoint_server.storage import leases, status
from checkpoint_server.storage.dialect import insert_for
from checkpoint_server.storage.models import BlobRow, CheckpointRow, ThreadRow, WriteRow
from checkpoint_server.storage.records import StoredCheckpoint, TtlPolicy, Value, Write

_CHECKPOINT, _VALUE, _WRITE = 0, 1, 2


def _page(thread_id: Any) -> Select[Any]:
    return select(
        thread_id.label("thread_id"),
        CheckpointRow.thread_key,
        CheckpointRow.checkpoint_ns,
        CheckpointRow.checkpoint_id,
        CheckpointRow.parent_checkpoint_id,
        CheckpointRow.checkpoint_type,
        CheckpointRow.checkpoint,
        CheckpointRow.metadata_.label("metadata"),
        CheckpointRow.channel_versions,
        CheckpointRow.create_time,
    )


def page(*conditions: ColumnElement[bool]) -> Select[Any]:
    """The checkpoints of a namespace to read, newest first; callers add conditions, a limit."""
    return (
        _page(ThreadRow.thread_id)
        .join(ThreadRow, ThreadRow.key == CheckpointRow.thread_key)
        .where(CheckpointRow.namespace == bindparam("namespace"), visible(), *conditions)
        .order_by(*(column.desc() for column in PAGE_ORDER))
    )


# Newest first; checkpoint IDs can repeat across threads (copies) and checkpoint_ns.
PAGE_ORDER = (CheckpointRow.checkpoint_id, CheckpointRow.thread_key, CheckpointRow.checkpoint_ns)


def with_values_and_writes(
    dialect: str,
    checkpoints: Select[Any],
    *,
    values: bool = True,
    channels: Sequence[str] = (),
) -> CompoundSelect[Any]:
    """One statement returning the checkpoints, each value they name once, and their writes.

    Without ``values``, it returns no values and only the special writes (negative idx);
    with ``channels``, only those channels' values.
    """
    pages = checkpoints.cte("page")
    if dialect == "postgresql":
        entries = func.jsonb_each_text(pages.c.channel_versions).table_valued("key", "value")
        versions: Any = entries.lateral("v")
    else:
        versions = func.json_each(pages.c.channel_versions).table_valued("key", "value").alias("v")
    wanted = (
        select(
            pages.c.thread_key,
            pages.c.checkpoint_ns,
            versions.c.key.label("channel"),
            versions.c.value.label("version"),
        )
        .select_from(pages.join(versions, true()))
        .where(versions.c.key.in_(channels) if channels else true())
        .distinct()
        .cte("wanted")
    )
    # Values and writes are looked up per checkpoint and per version, by primary key, whatever
    # the planner's statistics say (see _lookup).
    found = _lookup(
        dialect,
        wanted,
        [BlobRow.thread_key, BlobRow.checkpoint_ns, BlobRow.channel, BlobRow.version],
        [BlobRow.type, BlobRow.blob],
    )
    writes = _lookup(
        dialect,
        pages,
        [WriteRow.thread_key, WriteRow.checkpoint_ns, WriteRow.checkpoint_id],
        [
            WriteRow.task_path,
            WriteRow.task_id,
            WriteRow.channel,
            WriteRow.idx,
            WriteRow.type,
            WriteRow.blob,
        ],
        *(() if values else (WriteRow.idx < 0,)),
    )
    value_keys = dict(
        zip(("thread_key", "checkpoint_ns", "channel", "version"), found.keys, strict=True)
    )
    write_keys = dict(
        zip(("thread_key", "checkpoint_ns", "checkpoint_id"), writes.keys, strict=True)
    )
    branches = [
        select(
            *_row(
                _CHECKPOINT,
                thread_key=pages.c.thread_key,
                checkpoint_ns=pages.c.checkpoint_ns,
                checkpoint_id=pages.c.checkpoint_id,
                parent_checkpoint_id=pages.c.parent_checkpoint_id,
                thread_id=pages.c.thread_id,
                type=pages.c.checkpoint_type,
                data=pages.c.checkpoint,
                metadata_json=cast(pages.c.metadata, Text),
                versions_json=cast(pages.c.channel_versions, Text),
                create_time=pages.c.create_time,
            )
        ),
        found.select(*_row(_VALUE, **value_keys, type=found["type"], data=found["blob"])),
        writes.select(
            *_row(
                _WRITE,
                **write_keys,
                task_path=writes["task_path"],
                task_id=writes["task_id"],
                channel=writes["channel"],
                idx=writes["idx"],
                type=writes["type"],
                data=writes["blob"],
            )
        ),
    ]
    if not values:
        del branches[1]
    return union_all(*branches)


# The columns of with_values_and_writes, each named for what it holds; a row fills those of
# its kind (a checkpoint, a value or a write) and leaves the others NULL.
_ROW_COLUMNS: dict[str, TypeEngine[Any]] = {
    "thread_key": Integer(),
    "checkpoint_ns": String(),
    "checkpoint_id": String(),
    "parent_checkpoint_id": String(),
    "thread_id": String(),
    "channel": String(),
    "version": String(),
    "task_path": String(),
    "task_id": String(),
    "idx": Integer(),
    "type": String(),
    "data": LargeBinary(),
    "metadata_json": Text(),
    "versions_json": Text(),
    "create_time": DateTime(timezone=True),
}


def _row(kind: int, **columns: Any) -> list[Any]:
    """One branch's columns, in the order of ``_ROW_COLUMNS``, NULL where it has none."""
    return [
        literal(kind).label("kind"),
        *(
            columns[name].label(name) if name in columns else cast(null(), type_).label(name)
            for name, type_ in _ROW_COLUMNS.items()
        ),
    ]


@dataclass
class _Lookup:
    """Rows of a table found by primary key for each row of an outer query."""

    keys: list[Any]  # the key columns to select, in the order given
    columns: dict[str, Any]
    source: Any
    conditions: list[ColumnElement[bool]]

    def __getitem__(self, name: str) -> Any:
        return self.columns[name]

    def select(self, *columns: Any) -> Select[Any]:
        return select(*columns).select_from(self.source).where(*self.conditions)


def _lookup(
    dialect: str, outer: Any, keys: list[Any], columns: list[Any], *extra: ColumnElement[bool]
) -> _Lookup:
    """Rows whose ``keys`` match a row of ``outer`` and that meet the ``extra`` conditions.

    ``outer`` has columns named as the ``keys``.
    """
    table = keys[0].class_
    outer_keys = [outer.c[k.key] for k in keys]
    if dialect == "postgresql":
        # A LATERAL subquery probes the key per outer row; OFFSET 0 keeps PostgreSQL from
        # flattening it into a join it may plan as a scan of the whole namespace.
        found = (
            select(*columns)
            .where(*(k == o for k, o in zip(keys, outer_keys, strict=True)), *extra)
            .offset(0)
            .lateral()
        )
        return _Lookup(
            outer_keys, {c.key: found.c[c.key] for c in columns}, outer.join(found, true()), []
        )
    # SQLite's planner loops over the small outer query and probes the full primary key for a
    # join on all of its columns (EXPLAIN QUERY PLAN shows SEARCH on every key column).
    condition = and_(*(k == o for k, o in zip(keys, outer_keys, strict=True)), *extra)
    return _Lookup(outer_keys, {c.key: c for c in columns}, outer.join(table, condition), [])


@functools.cache
def get_latest(dialect: str) -> CompoundSelect[Any]:
    """The latest checkpoint of (namespace, thread_id, checkpoint_ns)."""
    return with_values_and_writes(dialect, _thread_page().limit(1))


@functools.cache
def get_by_id(dialect: str) -> CompoundSelect[Any]:
    """The checkpoint (namespace, thread_id, checkpoint_ns, checkpoint_id)."""
    return with_values_and_writes(
        dialect, _thread_page().where(CheckpointRow.checkpoint_id == bindparam("checkpoint_id"))
    )


def thread_page() -> Select[Any]:
    """The checkpoints of one thread (``thread_id``), newest first; callers add conditions.

    The thread's key is looked up once, first, so that the primary key (thread_key,
    checkpoint_ns, checkpoint_id) serves the order and the limit.
    """
    thread_key = (
        select(ThreadRow.key)
        .where(
            ThreadRow.namespace == bindparam("namespace"),
            ThreadRow.thread_id == bindparam("thread_id"),
            visible(),
        )
        .scalar_subquery()
    )
    return (
        _page(bindparam("thread_id", type_=String()))
        .where(CheckpointRow.thread_key == thread_key)
        .order_by(*(column.desc() for column in PAGE_ORDER))
    )


def _thread_page() -> Select[Any]:
    return thread_page().where(CheckpointRow.checkpoint_ns == bindparam("checkpoint_ns"))


def assemble(rows: Sequence[Any]) -> list[StoredCheckpoint]:
    """Checkpoints, newest first, from the rows of ``with_values_and_writes``."""
    checkpoints: list[tuple[int, StoredCheckpoint]] = []
    values: dict[tuple[int, str, str, str], Value] = {}
    writes: defaultdict[tuple[int, str, str], list[Write]] = defaultdict(list)
    for row in rows:
        kind = row[0]
        if kind == _CHECKPOINT:
            checkpoints.append(
                (
                    row.thread_key,
                    StoredCheckpoint(
                        thread_id=row.thread_id,
                        thread_key=row.thread_key,
                        checkpoint_ns=row.checkpoint_ns,
                        checkpoint_id=row.checkpoint_id,
                        parent_checkpoint_id=row.parent_checkpoint_id,
                        checkpoint_type=row.type,
                        checkpoint=row.data,
                        metadata_json=row.metadata_json,
                        channel_versions=json.loads(row.versions_json),
                        create_time=row.create_time,
                    ),
                )
            )
        elif kind == _VALUE:
            values[(row.thread_key, row.checkpoint_ns, row.channel, row.version)] = Value(
                row.channel, row.version, row.type, row.data
            )
        else:
            writes[(row.thread_key, row.checkpoint_ns, row.checkpoint_id)].append(
                Write(
                    task_id=row.task_id,
                    task_path=row.task_path,
                    idx=row.idx,
                    channel=row.channel,
                    type=row.type,
                    data=row.data,
                )
            )
    checkpoints.sort(key=lambda kc: (kc[1].checkpoint_id, kc[0], kc[1].checkpoint_ns), reverse=True)
    for thread_key, c in checkpoints:
        c.values = [
            value
            for channel, version in c.channel_versions.items()
            if (value := values.get((thread_key, c.checkpoint_ns, channel, version)))
        ]
        found = writes.get((thread_key, c.checkpoint_ns, c.checkpoint_id), [])
        c.writes = sorted(found, key=lambda w: (w.task_path, w.task_id, w.idx))
    return [c for _, c in checkpoints]


def params(**values: Any) -> dict[str, Any]:
    """Statement parameters from column values."""
    return {f"p_{name}": value for name, value in values.items()}


def _param(name: str, column: Any) -> Any:
    return bindparam(f"p_{name}", type_=column.type)


def shown_status() -> ColumnElement[str]:
    """The status a thread shows: busy while leased, else its latest checkpoint's writes' status.

    Parameters: ``p_now_epoch``.
    """
    return case(
        (leases.busy(), status.BUSY),
        (ThreadRow.status_checkpoint_id == ThreadRow.latest_checkpoint_id, ThreadRow.status),
        else_=status.IDLE,
    )


def visibility(ttl: TtlPolicy) -> dict[str, Any]:
    """The parameters of ``visible``: which threads reads may return now."""
    return params(now_epoch=time.time(), default_strategy=ttl.strategy)


def visible() -> ColumnElement[bool]:
    """Threads that reads return: all but those whose time to live ran out under ``delete``.

    Parameters: ``p_now_epoch``, ``p_default_strategy``.
    """
    return or_(
        ThreadRow.expire_epoch.is_(None),
        ThreadRow.expire_epoch > _param("now_epoch", ThreadRow.expire_epoch),
        func.coalesce(ThreadRow.ttl_strategy, _param("default_strategy", ThreadRow.ttl_strategy))
        != "delete",
    )


def upsert_thread(dialect: str, feed: Mapping[str, Any]) -> Insert:
    """Creates the thread (namespace, thread_id) or records an update of it; returns its key.

    For the writes outside the hot path (a copy's target thread); puts and writes keep the
    catalog row in ``postgres_writes`` and ``sqlite_writes``. ``feed`` holds the feed columns of
    a created row (``events.placed``). Parameters: ``p_namespace``, ``p_thread_id``, ``p_now``,
    ``p_now_epoch``, ``p_default_ttl`` (seconds or NULL), ``p_default_strategy``.
    """
    statement = insert_for(dialect)(ThreadRow).values(
        namespace=_param("namespace", ThreadRow.namespace),
        thread_id=_param("thread_id", ThreadRow.thread_id),
        create_time=_param("now", ThreadRow.create_time),
        update_time=_param("now", ThreadRow.update_time),
        metadata_={},
        status=status.IDLE,
        expire_epoch=_param("now_epoch", ThreadRow.expire_epoch)
        + _param("default_ttl", ThreadRow.ttl_seconds),
        **feed,
    )
    return statement.on_conflict_do_update(
        index_elements=["namespace", "thread_id"],
        # A thread whose time to live ran out is not brought back: nothing is returned, and
        # the caller deletes it before storing anything (see ThreadLifecycle).
        where=visible(),
        set_={
            "update_time": statement.excluded.update_time,
            "expire_epoch": _param("now_epoch", ThreadRow.expire_epoch)
            + func.coalesce(ThreadRow.ttl_seconds, _param("default_ttl", ThreadRow.ttl_seconds)),
        },
    ).returning(ThreadRow.key)


def thread_update(
    *, namespace: str, thread_id: str, now: datetime, default_ttl: int | None, default_strategy: str
) -> dict[str, Any]:
    """The parameters of ``upsert_thread``."""
    return params(
        namespace=namespace,
        thread_id=thread_id,
        now=now,
        now_epoch=now.timestamp(),
        default_ttl=default_ttl,
        default_strategy=default_strategy,
    )
