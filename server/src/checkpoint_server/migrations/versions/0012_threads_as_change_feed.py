"""The threads table serves as the change feed of created threads, as checkpoints and writes do.

The last event the hot path inserted was ``thread_created``, on a put or writes call that
creates its thread: some 130 bytes with three index entries, about 300 bytes a thread. Now the
thread's own row carries its place in the feed (``feed_xid``, ``feed_seq``, taken as an event's
are; its time is the row's ``create_time``) under one partial index, and WatchEvents reads
created threads from there (storage/events.py). The columns are set when the row is inserted
(on SQLite right after, in the same transaction) and never changed: a put's update of the row
changes no indexed column and stays HOT (0011). A deleted thread takes its creation with it;
the deletion has an event of its own. Threads created before this migration have no place in
the feed; their events stay in the events table until its retention ends.

On PostgreSQL the thread-touching function takes the columns, and the put functions (0009's and
0010's) no longer insert the event. SQLite places a thread it creates in its own statements.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import context, op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_INDEX = "ix_threads_namespace_feed_xid_feed_seq"

# In 0004's function, the inserted row's columns, before and after.
_INSERTED = (
    """        status_checkpoint_id, latest_checkpoint_id, expire_epoch
    ) VALUES (
        p_namespace, p_thread_id, p_now, p_now, '{}', coalesce(p_writes_status, 'idle'),
        p_writes_checkpoint_id, p_root_checkpoint_id, p_now_epoch + p_default_ttl
    )""",
    # Evaluated before the conflict is found, so a put to an existing thread takes a number of
    # the sequence it does not use: positions need not be consecutive, only ordered.
    """        status_checkpoint_id, latest_checkpoint_id, expire_epoch, feed_xid, feed_seq
    ) VALUES (
        p_namespace, p_thread_id, p_now, p_now, '{}', coalesce(p_writes_status, 'idle'),
        p_writes_checkpoint_id, p_root_checkpoint_id, p_now_epoch + p_default_ttl,
        pg_current_xact_id()::text::bigint, nextval('events_seq_seq')
    )""",
)
# In 0009's and 0010's put functions, the event insert this migration takes out.
_EVENT_INSERT = "    IF v_created THEN\n        INSERT INTO events "


def _replaced(function: str, old: str, new: str) -> str:
    """``function`` with ``old``, which it holds once, replaced by ``new``."""
    if function.count(old) != 1:
        raise RuntimeError("an earlier migration's function is not the text this one expects")
    return function.replace(old, new)


def _without_event(function: str) -> str:
    """A put function without its ``IF v_created THEN INSERT INTO events … END IF;`` block."""
    start = function.index(_EVENT_INSERT)
    end = function.index("    END IF;\n", start) + len("    END IF;\n")
    return _replaced(function, function[start:end], "")


def _functions() -> tuple[str, str, str]:
    """The functions as they were before this migration: touch thread, put checkpoint, writes."""
    touch = context.script.get_revision("0004").module._TOUCH_THREAD
    return (
        _replaced(touch, "CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"),
        context.script.get_revision("0009").module._PUT_CHECKPOINT,
        context.script.get_revision("0010").module._PUT_WRITES,
    )


def upgrade() -> None:
    """Adds the feed columns and their index, and the functions that fill them.

    Every existing row's feed columns are NULL, so the partial index starts empty. On
    PostgreSQL the migration gives up after 10 s waiting for the table's lock (see 0008).
    """
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        op.execute("SET LOCAL lock_timeout = '10s'")
    op.add_column("threads", sa.Column("feed_xid", sa.BigInteger(), nullable=True))
    op.add_column("threads", sa.Column("feed_seq", sa.BigInteger(), nullable=True))
    placed = sa.text("feed_xid IS NOT NULL")
    op.create_index(
        _INDEX,
        "threads",
        ["namespace", "feed_xid", "feed_seq"],
        postgresql_where=placed,
        sqlite_where=placed,
    )
    if postgresql:
        touch, put_checkpoint, put_writes = _functions()
        op.execute(_replaced(touch, *_INSERTED))
        op.execute(_without_event(put_checkpoint))
        op.execute(_without_event(put_writes))


def downgrade() -> None:
    """Restores the functions as they were and drops the feed columns.

    Threads created since the upgrade then have no event: a watcher of the older server does
    not see their creation.
    """
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        op.execute("SET LOCAL lock_timeout = '10s'")
        for function in _functions():
            op.execute(function)
    op.drop_index(_INDEX, table_name="threads")
    # Not batch_alter_table: on SQLite it copies the table as reflected, and the reflection
    # garbles 0011's generated columns. SQLite drops a column in place from 3.35 on, which the
    # server needs anyway (for RETURNING).
    op.drop_column("threads", "feed_seq")
    op.drop_column("threads", "feed_xid")
