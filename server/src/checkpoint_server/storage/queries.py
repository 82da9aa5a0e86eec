"""Statements of the hot paths, built once per dialect and run with bound parameters.

Reading a checkpoint is one statement: the page of checkpoints, the values their channel
versions name and their pending writes, as one UNION ALL. Storing a checkpoint on PostgreSQL is
one statement too (its values go in a data-modifying CTE). One statement needs no transaction
to be atomic and consistent, and costs one round trip.
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
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
    bindparam,
    cast,
    func,
    literal,
    null,
    select,
    true,
    tuple_,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from checkpoint_server.storage.models import BlobRow, CheckpointRow, WriteRow
from checkpoint_server.storage.records import StoredCheckpoint, Value, Write

_CHECKPOINT, _VALUE, _WRITE = 0, 1, 2


def page(*conditions: ColumnElement[bool]) -> Select[Any]:
    """The checkpoints to read, newest first; callers add conditions and a limit."""
    return (
        select(
            CheckpointRow.thread_id,
            CheckpointRow.checkpoint_ns,
            CheckpointRow.checkpoint_id,
            CheckpointRow.parent_checkpoint_id,
            CheckpointRow.checkpoint_type,
            CheckpointRow.checkpoint,
            CheckpointRow.metadata_.label("metadata"),
            CheckpointRow.channel_versions,
            CheckpointRow.create_time,
        )
        .where(CheckpointRow.namespace == bindparam("namespace"), *conditions)
        .order_by(
            CheckpointRow.checkpoint_id.desc(),
            CheckpointRow.thread_id.desc(),
            CheckpointRow.checkpoint_ns.desc(),
        )
    )


def with_values_and_writes(dialect: str, checkpoints: Select[Any]) -> CompoundSelect[Any]:
    """One statement returning the checkpoints, each value they name once, and their writes."""
    pages = checkpoints.cte("page")
    if dialect == "postgresql":
        entries = func.jsonb_each_text(pages.c.channel_versions).table_valued("key", "value")
        versions: Any = entries.lateral("v")
    else:
        versions = func.json_each(pages.c.channel_versions).table_valued("key", "value").alias("v")
    wanted = (
        select(
            pages.c.thread_id,
            pages.c.checkpoint_ns,
            versions.c.key.label("channel"),
            versions.c.value.label("version"),
        )
        .select_from(pages.join(versions, true()))
        .distinct()
        .cte("wanted")
    )
    # Values and writes are looked up per checkpoint and per version, by primary key, whatever
    # the planner's statistics say (see _lookup).
    values = _lookup(
        dialect,
        wanted,
        [BlobRow.thread_id, BlobRow.checkpoint_ns, BlobRow.channel, BlobRow.version],
        [BlobRow.type, BlobRow.blob],
    )
    writes = _lookup(
        dialect,
        pages,
        [WriteRow.thread_id, WriteRow.checkpoint_ns, WriteRow.checkpoint_id],
        [
            WriteRow.task_path,
            WriteRow.task_id,
            WriteRow.channel,
            WriteRow.idx,
            WriteRow.type,
            WriteRow.blob,
        ],
    )
    text, number, stamp = String(), Integer(), DateTime(timezone=True)
    return union_all(
        select(
            literal(_CHECKPOINT).label("kind"),
            pages.c.thread_id,
            pages.c.checkpoint_ns,
            pages.c.checkpoint_id.label("a"),
            pages.c.parent_checkpoint_id.label("b"),
            cast(null(), text).label("c"),
            cast(null(), text).label("d"),
            cast(null(), number).label("idx"),
            pages.c.checkpoint_type.label("type"),
            pages.c.checkpoint.label("data"),
            cast(pages.c.metadata, Text).label("metadata_json"),
            cast(pages.c.channel_versions, Text).label("versions_json"),
            pages.c.create_time,
        ),
        values.select(
            literal(_VALUE),
            *values.keys,
            cast(null(), text),
            cast(null(), text),
            cast(null(), number),
            values["type"],
            values["blob"],
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
    )


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


def _lookup(dialect: str, outer: Any, keys: list[Any], columns: list[Any]) -> _Lookup:
    """Rows whose (namespace, ``keys``) match a row of ``outer``: its columns of those names."""
    table = keys[0].class_
    namespace = table.namespace == bindparam("namespace")
    outer_keys = [outer.c[k.key] for k in keys]
    if dialect == "postgresql":
        # A LATERAL subquery probes the key per outer row; OFFSET 0 keeps PostgreSQL from
        # flattening it into a join it may plan as a scan of the whole namespace.
        found = (
            select(*columns)
            .where(namespace, *(k == o for k, o in zip(keys, outer_keys, strict=True)))
            .offset(0)
            .lateral()
        )
        return _Lookup(
            outer_keys, {c.key: found.c[c.key] for c in columns}, outer.join(found, true()), []
        )
    # SQLite without statistics may loop over the table and probe the outer query. A row-value
    # IN over the outer query makes it probe the table's primary key once per outer row.
    return _Lookup(
        keys,
        {c.key: c for c in columns},
        table,
        [namespace, tuple_(*keys).in_(select(*outer_keys))],
    )


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


def _thread_page() -> Select[Any]:
    return page(
        CheckpointRow.thread_id == bindparam("thread_id"),
        CheckpointRow.checkpoint_ns == bindparam("checkpoint_ns"),
    )


def assemble(rows: Sequence[Any]) -> list[StoredCheckpoint]:
    """Checkpoints, newest first, from the rows of ``with_values_and_writes``.

    Columns ``a`` to ``d`` are, for a checkpoint: ID and parent ID; for a value: channel and
    version; for a write: checkpoint ID, task path, task ID and channel.
    """
    checkpoints: list[StoredCheckpoint] = []
    values: dict[tuple[str, str, str, str], Value] = {}
    writes: defaultdict[tuple[str, str, str], list[Write]] = defaultdict(list)
    for row in rows:
        kind = row[0]
        if kind == _CHECKPOINT:
            checkpoints.append(
                StoredCheckpoint(
                    thread_id=row.thread_id,
                    checkpoint_ns=row.checkpoint_ns,
                    checkpoint_id=row.a,
                    parent_checkpoint_id=row.b,
                    checkpoint_type=row.type,
                    checkpoint=row.data,
                    metadata_json=row.metadata_json,
                    channel_versions=json.loads(row.versions_json),
                    create_time=row.create_time,
                )
            )
        elif kind == _VALUE:
            values[(row.thread_id, row.checkpoint_ns, row.a, row.b)] = Value(
                row.a, row.b, row.type, row.data
            )
        else:
            writes[(row.thread_id, row.checkpoint_ns, row.a)].append(
                Write(
                    task_id=row.c,
                    task_path=row.b,
                    idx=row.idx,
                    channel=row.d,
                    type=row.type,
                    data=row.data,
                )
            )
    checkpoints.sort(key=lambda c: (c.checkpoint_id, c.thread_id, c.checkpoint_ns), reverse=True)
    for c in checkpoints:
        c.values = [
            value
            for channel, version in c.channel_versions.items()
            if (value := values.get((c.thread_id, c.checkpoint_ns, channel, version)))
        ]
        found = writes.get((c.thread_id, c.checkpoint_ns, c.checkpoint_id), [])
        c.writes = sorted(found, key=lambda w: (w.task_path, w.task_id, w.idx))
    return checkpoints


_BLOB_COLUMNS = ("namespace", "thread_id", "checkpoint_ns", "channel", "version", "type", "blob")
_WRITE_COLUMNS = (
    "namespace",
    "thread_id",
    "checkpoint_ns",
    "checkpoint_id",
    "task_id",
    "idx",
    "task_path",
    "channel",
    "type",
    "blob",
)
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


def _key(*names: str) -> list[Any]:
    # An INSERT reserves its column names as parameter names: these go by "key_<column>".
    return [bindparam(f"key_{name}", type_=String()) for name in names]


def key_params(**key: str) -> dict[str, str]:
    """The parameters ``_key`` binds, from column values."""
    return {f"key_{name}": value for name, value in key.items()}


def _array(name: str, item: Any) -> Any:
    return bindparam(name, type_=postgresql.ARRAY(item))


@functools.cache
def put_checkpoint(dialect: str) -> Insert:
    """Upserts the checkpoint row; on PostgreSQL also inserts its new values (``value_*``).

    On SQLite the values go first, through ``insert_values``, in the same transaction.
    """
    if dialect != "postgresql":
        lite = sqlite.insert(CheckpointRow)
        return lite.on_conflict_do_update(
            index_elements=_primary_key(CheckpointRow),
            set_={name: lite.excluded[name] for name in CHECKPOINT_UPDATES},
        )
    new = (
        func.unnest(
            _array("value_channels", String()),
            _array("value_versions", String()),
            _array("value_types", String()),
            _array("value_blobs", LargeBinary()),
        )
        .table_valued("channel", "version", "type", "blob")
        .render_derived()
    )
    values = (
        postgresql.insert(BlobRow)
        .from_select(
            list(_BLOB_COLUMNS),
            select(*_key("namespace", "thread_id", "checkpoint_ns"), *new.c),
        )
        .on_conflict_do_nothing()
        .cte("new_values")
    )
    statement = postgresql.insert(CheckpointRow)
    return statement.on_conflict_do_update(
        index_elements=_primary_key(CheckpointRow),
        set_={name: statement.excluded[name] for name in CHECKPOINT_UPDATES},
    ).add_cte(values)


@functools.cache
def insert_values(dialect: str) -> Insert:
    """Inserts channel values, keeping any already stored (SQLite; executed many)."""
    return sqlite.insert(BlobRow).on_conflict_do_nothing()


@functools.cache
def put_writes(dialect: str) -> Insert:
    """PostgreSQL: stores ``kept_*`` writes first-write-wins and ``replaced_*`` last-write-wins."""
    columns = [
        ("task_id", String()),
        ("idx", Integer()),
        ("task_path", String()),
        ("channel", String()),
        ("type", String()),
        ("blob", LargeBinary()),
    ]

    def rows(prefix: str) -> Select[Any]:
        arrays = (_array(f"{prefix}_{name}", t) for name, t in columns)
        new = func.unnest(*arrays).table_valued(*(name for name, _ in columns)).render_derived()
        return select(*_key("namespace", "thread_id", "checkpoint_ns", "checkpoint_id"), *new.c)

    kept = (
        postgresql.insert(WriteRow)
        .from_select(list(_WRITE_COLUMNS), rows("kept"))
        .on_conflict_do_nothing()
        .cte("kept")
    )
    statement = postgresql.insert(WriteRow).from_select(list(_WRITE_COLUMNS), rows("replaced"))
    return statement.on_conflict_do_update(
        index_elements=_primary_key(WriteRow),
        set_={name: statement.excluded[name] for name in WRITE_UPDATES},
    ).add_cte(kept)


@functools.cache
def insert_writes(dialect: str, *, replace: bool) -> Insert:
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
