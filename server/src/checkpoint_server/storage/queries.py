"""Statements of the hot paths, built once per dialect and run with bound parameters.

Reading a checkpoint is one statement: the page of checkpoints, the values their channel
versions name and their pending writes, as one UNION ALL. One statement needs no transaction to
be consistent, and costs one round trip. (PostgreSQL stores checkpoints and writes through SQL
functions, see ``functions``; SQLite through the statements here, in one transaction.)
"""

from __future__ import annotations

import functools
import json
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    DateTime,
    Integer,
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
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from checkpoint_server.storage import leases, status
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
    text, number, stamp = String(), Integer(), DateTime(timezone=True)
    branches = [
        select(
            literal(_CHECKPOINT).label("kind"),
            pages.c.thread_key,
            pages.c.checkpoint_ns,
            pages.c.checkpoint_id.label("a"),
            pages.c.parent_checkpoint_id.label("b"),
            pages.c.thread_id.label("c"),
            cast(null(), text).label("d"),
            cast(null(), number).label("idx"),
            pages.c.checkpoint_type.label("type"),
            pages.c.checkpoint.label("data"),
            cast(pages.c.metadata, Text).label("metadata_json"),
            cast(pages.c.channel_versions, Text).label("versions_json"),
            pages.c.create_time,
        ),
        found.select(
            literal(_VALUE),
            *found.keys,
            cast(null(), text),
            cast(null(), text),
            cast(null(), number),
            found["type"],
            found["blob"],
            cast(null(), Text),
            cast(null(), Text),
            cast(null(), stamp),
        ),
        writes.select(
            literal(_WRITE),
            *writes.keys,
            writes["task_path"],
            writes["task_id"],
            writes["channel"],
            writes["idx"],
            writes["type"],
            writes["blob"],
            cast(null(), Text),
            cast(null(), Text),
            cast(null(), stamp),
        ),
    ]
    if not values:
        del branches[1]
    return union_all(*branches)


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
    """Checkpoints, newest first, from the rows of ``with_values_and_writes``.

    Columns ``a`` to ``d`` are, for a checkpoint: ID, parent ID and thread ID; for a value:
    channel and version; for a write: checkpoint ID, task path, task ID and channel.
    """
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
                        thread_id=row.c,
                        thread_key=row.thread_key,
                        checkpoint_ns=row.checkpoint_ns,
                        checkpoint_id=row.a,
                        parent_checkpoint_id=row.b,
                        checkpoint_type=row.type,
                        checkpoint=row.data,
                        metadata_json=row.metadata_json,
                        channel_versions=json.loads(row.versions_json),
                        create_time=row.create_time,
                    ),
                )
            )
        elif kind == _VALUE:
            values[(row.thread_key, row.checkpoint_ns, row.a, row.b)] = Value(
                row.a, row.b, row.type, row.data
            )
        else:
            writes[(row.thread_key, row.checkpoint_ns, row.a)].append(
                Write(
                    task_id=row.c,
                    task_path=row.b,
                    idx=row.idx,
                    channel=row.d,
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


CHECKPOINT_UPDATES = (
    "parent_checkpoint_id",
    "run_id",
    "checkpoint_type",
    "checkpoint",
    "metadata",
    "channel_versions",
    "delta_channels",
)
WRITE_UPDATES = ("task_path", "channel", "type", "blob")
# Parameters go by "p_<name>": an INSERT reserves its column names as parameter names.
_CHECKPOINT_PARAMS = (
    "checkpoint_ns",
    "checkpoint_id",
    "namespace",
    "parent_checkpoint_id",
    "run_id",
    "checkpoint_type",
    "checkpoint",
    "metadata",
    "channel_versions",
    "delta_channels",
    "create_time",
)


def params(**values: Any) -> dict[str, Any]:
    """Statement parameters from column values."""
    return {f"p_{name}": value for name, value in values.items()}


def _param(name: str, column: Any) -> Any:
    return bindparam(f"p_{name}", type_=column.type)


def shown_status() -> ColumnElement[str]:
    """The status a thread shows (``status.shown`` in SQL), ``busy`` while it is leased.

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


@functools.cache
def upsert_thread(dialect: str) -> Insert:
    """Creates the thread (namespace, thread_id) or records an update of it; returns its key.

    Parameters: ``p_namespace``, ``p_thread_id``, ``p_now``, ``p_now_epoch``, ``p_default_ttl``
    (seconds or NULL); ``p_root_checkpoint_id`` when a root checkpoint is stored (it becomes
    the latest unless a newer one is); ``p_writes_checkpoint_id`` and ``p_writes_status`` when
    root writes that set a status (error, interrupted) are stored.
    """
    insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
    root = _param("root_checkpoint_id", ThreadRow.latest_checkpoint_id)
    written = _param("writes_checkpoint_id", ThreadRow.status_checkpoint_id)
    writes_status = _param("writes_status", ThreadRow.status)
    expire = _param("now_epoch", ThreadRow.expire_epoch) + _param(
        "default_ttl", ThreadRow.ttl_seconds
    )
    statement = insert_(ThreadRow).values(
        namespace=_param("namespace", ThreadRow.namespace),
        thread_id=_param("thread_id", ThreadRow.thread_id),
        create_time=_param("now", ThreadRow.create_time),
        update_time=_param("now", ThreadRow.update_time),
        metadata_={},
        status=func.coalesce(writes_status, status.IDLE),
        status_checkpoint_id=written,
        latest_checkpoint_id=root,
        expire_epoch=expire,
    )
    latest = ThreadRow.latest_checkpoint_id
    held = ThreadRow.status_checkpoint_id
    # Both registers only grow (see storage/status.py), so whichever of a checkpoint's put and
    # its writes comes second, and in whatever order a thread's puts arrive, the row ends the
    # same. Both statements lock the thread's row, so neither misses what the other did.
    becomes_latest = and_(root.is_not(None), or_(latest.is_(None), latest < root))
    newer_status = and_(written.is_not(None), or_(held.is_(None), held < written))
    same_status = and_(written.is_not(None), held == written)
    return statement.on_conflict_do_update(
        index_elements=["namespace", "thread_id"],
        # A thread whose time to live ran out is not brought back: nothing is returned, and
        # the caller deletes it before storing anything (see CheckpointStore).
        where=visible(),
        set_={
            "update_time": statement.excluded.update_time,
            "expire_epoch": _param("now_epoch", ThreadRow.expire_epoch)
            + func.coalesce(ThreadRow.ttl_seconds, _param("default_ttl", ThreadRow.ttl_seconds)),
            "latest_checkpoint_id": case((becomes_latest, root), else_=latest),
            "status": case(
                (newer_status, writes_status),
                (
                    same_status,
                    case((ThreadRow.status == status.ERROR, status.ERROR), else_=writes_status),
                ),
                else_=ThreadRow.status,
            ),
            "status_checkpoint_id": case((newer_status, written), else_=held),
        },
    ).returning(
        ThreadRow.key,
        # A thread row just inserted has its create time equal to this update's.
        (ThreadRow.create_time == _param("now", ThreadRow.create_time)).label("inserted"),
    )


def thread_update(
    *,
    namespace: str,
    thread_id: str,
    now: datetime,
    default_ttl: int | None,
    default_strategy: str,
    root_checkpoint_id: str | None = None,
    writes_checkpoint_id: str | None = None,
    writes_status: str | None = None,
) -> dict[str, Any]:
    """The parameters of ``upsert_thread``."""
    return params(
        namespace=namespace,
        thread_id=thread_id,
        now=now,
        now_epoch=now.timestamp(),
        default_ttl=default_ttl,
        default_strategy=default_strategy,
        root_checkpoint_id=root_checkpoint_id,
        writes_checkpoint_id=writes_checkpoint_id,
        writes_status=writes_status,
    )


@functools.cache
def put_checkpoint() -> Insert:
    """SQLite: upserts a checkpoint row.

    The caller runs ``upsert_thread`` and ``insert_values`` first, in the same transaction, and
    passes ``p_thread_key``. PostgreSQL stores checkpoints through ``functions.put_checkpoint``.
    """
    columns = ["thread_key", *_CHECKPOINT_PARAMS]
    checkpoint_values = [_param(name, CheckpointRow.__table__.c[name]) for name in columns[1:]]
    statement = sqlite.insert(CheckpointRow).from_select(
        columns, select(_param("thread_key", CheckpointRow.thread_key), *checkpoint_values)
    )
    return statement.on_conflict_do_update(
        index_elements=_primary_key(CheckpointRow),
        set_={name: statement.excluded[name] for name in CHECKPOINT_UPDATES},
    )


@functools.cache
def insert_values() -> Insert:
    """Inserts channel values, keeping any already stored (SQLite; executed many)."""
    return sqlite.insert(BlobRow).on_conflict_do_nothing()


@functools.cache
def insert_writes(*, replace: bool) -> Insert:
    """SQLite: stores writes (executed many), replacing stored ones when ``replace``."""
    statement = sqlite.insert(WriteRow)
    if not replace:
        return statement.on_conflict_do_nothing()
    return statement.on_conflict_do_update(
        index_elements=_primary_key(WriteRow),
        set_={name: statement.excluded[name] for name in WRITE_UPDATES},
    )


def _primary_key(model: Any) -> list[str]:
    return [column.name for column in model.__table__.primary_key.columns]
