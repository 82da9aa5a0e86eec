"""Table definitions: threads, checkpoints, channel values stored once per version, writes.

A thread is found by (namespace, thread_id), which scopes every query to one tenant; its rows
are stored under its integer key.
"""

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# JSONB on PostgreSQL keeps numbers exactly (1 stays 1, 1.0 stays 1.0) and can be indexed.
JsonDocument = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    """Declarative base with one naming convention for every constraint."""

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class ThreadRow(Base):
    """A thread of a namespace, and the integer key its rows are stored under.

    Checkpoints, values and writes refer to a thread by ``key``, not by (namespace, thread_id):
    every primary key and index of theirs is smaller, and a thread's rows are scoped to its
    namespace through this table.
    """

    __tablename__ = "threads"

    key: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    namespace: Mapped[str] = mapped_column(String)
    thread_id: Mapped[str] = mapped_column(String)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JsonDocument)
    # Derived from the latest checkpoint of the root graph and its pending writes. The status
    # belongs to status_checkpoint_id: writes may be stored before their checkpoint.
    status: Mapped[str] = mapped_column(String)
    status_checkpoint_id: Mapped[str | None] = mapped_column(String)
    latest_checkpoint_id: Mapped[str | None] = mapped_column(String)
    # The thread's own time to live; NULL follows the server's default.
    ttl_seconds: Mapped[int | None] = mapped_column(BigInteger)
    ttl_strategy: Mapped[str | None] = mapped_column(String)
    # Seconds since the epoch (UTC) when the time to live in force runs out: update time plus
    # the thread's own TTL or the server's default at that update. A number, so that both
    # databases compute it with plain arithmetic; it orders the sweeper's queue.
    expire_epoch: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        UniqueConstraint("namespace", "thread_id"),
        Index("ix_threads_namespace_update_time", "namespace", "update_time", "thread_id"),
        Index("ix_threads_namespace_create_time", "namespace", "create_time", "thread_id"),
        Index(
            "ix_threads_namespace_status_update_time",
            "namespace",
            "status",
            "update_time",
            "thread_id",
        ),
        Index(
            "ix_threads_expire_epoch",
            "expire_epoch",
            postgresql_where=text("expire_epoch IS NOT NULL"),
            sqlite_where=text("expire_epoch IS NOT NULL"),
        ),
        Index(
            "ix_threads_metadata",
            "metadata",
            postgresql_using="gin",
            postgresql_ops={"metadata": "jsonb_path_ops"},
        ).ddl_if(dialect="postgresql"),
    )


class CheckpointRow(Base):
    """One checkpoint of one thread, without its channel values."""

    __tablename__ = "checkpoints"

    thread_key: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    checkpoint_ns: Mapped[str] = mapped_column(String, primary_key=True)
    checkpoint_id: Mapped[str] = mapped_column(String, primary_key=True)
    # Repeated from the thread for the indexes below: listing a namespace, deleting runs.
    namespace: Mapped[str] = mapped_column(String)
    parent_checkpoint_id: Mapped[str | None] = mapped_column(String)
    run_id: Mapped[str | None] = mapped_column(String)
    checkpoint_type: Mapped[str] = mapped_column(String)
    checkpoint: Mapped[bytes] = mapped_column(LargeBinary)
    # "metadata" is reserved on declarative classes, hence the attribute name.
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JsonDocument)
    channel_versions: Mapped[dict[str, str]] = mapped_column(JsonDocument)
    delta_channels: Mapped[list[str] | None] = mapped_column(JsonDocument)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The checkpoint's place in its namespace's change feed, ordered as events are (see
    # EventRow): the checkpoints table is the feed of checkpoint_added events. NULL for a copy,
    # which is not an added checkpoint (the copy has an event of its own).
    feed_xid: Mapped[int | None] = mapped_column(BigInteger)
    feed_seq: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        # Listing every thread of a namespace newest first.
        Index("ix_checkpoints_namespace_checkpoint_id", "namespace", "checkpoint_id"),
        Index(
            "ix_checkpoints_namespace_feed_xid_feed_seq",
            "namespace",
            "feed_xid",
            "feed_seq",
            postgresql_where=text("feed_xid IS NOT NULL"),
            sqlite_where=text("feed_xid IS NOT NULL"),
        ),
        Index(
            "ix_checkpoints_namespace_run_id",
            "namespace",
            "run_id",
            postgresql_where=text("run_id IS NOT NULL"),
            sqlite_where=text("run_id IS NOT NULL"),
        ),
    )


class BlobRow(Base):
    """The value of one channel at one version, shared by every checkpoint at that version."""

    __tablename__ = "checkpoint_blobs"

    thread_key: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    checkpoint_ns: Mapped[str] = mapped_column(String, primary_key=True)
    channel: Mapped[str] = mapped_column(String, primary_key=True)
    version: Mapped[str] = mapped_column(String, primary_key=True)
    type: Mapped[str] = mapped_column(String)
    blob: Mapped[bytes] = mapped_column(LargeBinary)


class WriteRow(Base):
    """A pending write of one task, stored against the checkpoint it follows."""

    __tablename__ = "checkpoint_writes"

    thread_key: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    checkpoint_ns: Mapped[str] = mapped_column(String, primary_key=True)
    checkpoint_id: Mapped[str] = mapped_column(String, primary_key=True)
    task_id: Mapped[str] = mapped_column(String, primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_path: Mapped[str] = mapped_column(String)
    channel: Mapped[str] = mapped_column(String)
    type: Mapped[str] = mapped_column(String)
    blob: Mapped[bytes] = mapped_column(LargeBinary)
    # The place in its namespace's change feed of the PutWrites call this write was the first
    # of (see EventRow; the writes table is the feed of writes_added events), NULL on every
    # other write and on a copy. The namespace is repeated here for the feed's index.
    feed_namespace: Mapped[str | None] = mapped_column(String)
    feed_xid: Mapped[int | None] = mapped_column(BigInteger)
    feed_seq: Mapped[int | None] = mapped_column(BigInteger)
    feed_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index(
            "ix_checkpoint_writes_feed_namespace_feed_xid_feed_seq",
            "feed_namespace",
            "feed_xid",
            "feed_seq",
            postgresql_where=text("feed_xid IS NOT NULL"),
            sqlite_where=text("feed_xid IS NOT NULL"),
        ),
    )


class EventRow(Base):
    """A change to a thread, for WatchEvents, other than added checkpoints and writes.

    Added checkpoints and writes are read from their own tables, by their feed columns, which
    take their positions as events do (storage/events.py). Events are ordered by (xid, seq). On
    PostgreSQL ``xid`` is the inserting transaction's ID and a reader only takes events of
    transactions older than every running one, so an event never appears behind a cursor
    already handed out. On SQLite, whose writes are serial, ``xid`` is 0 and ``seq`` alone
    orders them.
    """

    __tablename__ = "events"

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    xid: Mapped[int] = mapped_column(BigInteger)
    namespace: Mapped[str] = mapped_column(String)
    thread_id: Mapped[str] = mapped_column(String)
    kind: Mapped[str] = mapped_column(String)
    checkpoint_ns: Mapped[str | None] = mapped_column(String)
    checkpoint_id: Mapped[str | None] = mapped_column(String)
    source_thread_id: Mapped[str | None] = mapped_column(String)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_events_namespace_xid_seq", "namespace", "xid", "seq"),
        Index("ix_events_namespace_thread_id_xid_seq", "namespace", "thread_id", "xid", "seq"),
    )


class FeedPositionRow(Base):
    """SQLite's last position taken in the change feed (storage/events.py): one row, only raised.

    A position must never go back, even when the row that held the greatest is deleted, or a
    watcher past it would miss what follows. PostgreSQL takes positions from the events'
    sequence and does not use the table.
    """

    __tablename__ = "feed_position"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last: Mapped[int] = mapped_column(BigInteger)


class LeaseRow(Base):
    """The lease of a thread: who may write it, until when, with which fencing number.

    Keyed by (namespace, thread_id), not by the thread's key: a lease may be taken before the
    thread's first checkpoint, and its row outlives a deletion of the thread, so the fencing
    number keeps growing and a superseded holder stays refused. The sweeper drops the row an
    hour after a deleted thread's last lease is over, raising its namespace's
    ``LeaseFloorRow`` (see storage/leases.py).
    """

    __tablename__ = "thread_leases"

    namespace: Mapped[str] = mapped_column(String, primary_key=True)
    thread_id: Mapped[str] = mapped_column(String, primary_key=True)
    # NULL once released; the row stays to keep the fencing number.
    lease_id: Mapped[str | None] = mapped_column(String)
    fencing: Mapped[int] = mapped_column(BigInteger)
    # Seconds since the epoch (UTC), as threads.expire_epoch.
    expire_epoch: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_thread_leases_expire_epoch", "expire_epoch"),)


class LeaseFloorRow(Base):
    """Per namespace, the greatest fencing number of the lease rows the sweeper dropped.

    A thread's first lease row starts from it, so fencing numbers never go back.
    """

    __tablename__ = "lease_fencing_floors"

    namespace: Mapped[str] = mapped_column(String, primary_key=True)
    fencing: Mapped[int] = mapped_column(BigInteger)
