"""The writes table serves as the change feed of added writes, as the checkpoints table does.

Every PutWrites call used to insert a ``writes_added`` row into the events table: some 130 bytes
with three index entries, about 300 bytes a call, and a pass through the notifying trigger. Now
the call's first write carries the call's place in the feed (``feed_xid`` and ``feed_seq``,
taken as an event's are), its namespace and its time, under one partial index; the other writes
leave the four columns NULL. WatchEvents reads added writes from there (storage/events.py).
Writes stored before this migration have no place in the feed; their events stay in the events
table until its retention ends.

The call's first write is the first of those whose first write wins (``idx >= 0``), else the
first of those whose last write wins. Stored again, it takes the new call's place: the call is
added anew, as a checkpoint stored again is. On PostgreSQL the put function takes the columns
and notifies by itself; it records only a thread's creation as an event, and
``lgcp_record_events``, which no function calls any more, is dropped.

Both feeds also get an index per thread, ``(thread_key, feed_xid, feed_seq)``: a watch of one
thread read the whole thread's checkpoints and writes on every read, so its cost grew with the
thread (a client replaying a long thread again and again could keep the database busy).

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import context, op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_FEED_COLUMNS = (
    ("feed_namespace", sa.String()),
    ("feed_xid", sa.BigInteger()),
    ("feed_seq", sa.BigInteger()),
    ("feed_time", sa.DateTime(timezone=True)),
)

# (table, index, columns) of the feeds' partial indexes this migration adds.
_FEED_INDEXES = (
    (
        "checkpoint_writes",
        "ix_checkpoint_writes_feed_namespace_feed_xid_feed_seq",
        ["feed_namespace", "feed_xid", "feed_seq"],
    ),
    (
        "checkpoint_writes",
        "ix_checkpoint_writes_thread_key_feed_xid_feed_seq",
        ["thread_key", "feed_xid", "feed_seq"],
    ),
    (
        "checkpoints",
        "ix_checkpoints_thread_key_feed_xid_feed_seq",
        ["thread_key", "feed_xid", "feed_seq"],
    ),
)
_RECORD_EVENTS = "lgcp_record_events(text, text, timestamptz, boolean, text, text, text)"

_PUT_WRITES = """
CREATE OR REPLACE FUNCTION lgcp_put_writes(
    p_namespace text, p_thread_id text, p_now timestamptz, p_now_epoch float8,
    p_default_ttl bigint, p_default_strategy text,
    p_checkpoint_ns text, p_checkpoint_id text, p_writes_status text,
    p_kept_task_id text[], p_kept_idx integer[], p_kept_task_path text[],
    p_kept_channel text[], p_kept_type text[], p_kept_blob bytea[],
    p_replaced_task_id text[], p_replaced_idx integer[], p_replaced_task_path text[],
    p_replaced_channel text[], p_replaced_type text[], p_replaced_blob bytea[]
) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_key bigint;
    v_created boolean;
    v_xid bigint := pg_current_xact_id()::text::bigint;
    -- The call's first write is the first kept one, else the first replaced one.
    v_replaced_first integer := CASE WHEN cardinality(p_kept_task_id) = 0 THEN 1 END;
BEGIN
    SELECT thread_key, created INTO v_key, v_created FROM lgcp_touch_thread(
        p_namespace, p_thread_id, p_now, p_now_epoch, p_default_ttl, p_default_strategy,
        NULL, CASE WHEN p_writes_status IS NOT NULL THEN p_checkpoint_id END, p_writes_status);
    IF v_key IS NULL THEN
        RETURN false;
    END IF;
    IF v_created THEN
        INSERT INTO events (xid, namespace, thread_id, kind, time)
        VALUES (v_xid, p_namespace, p_thread_id, 'thread_created', p_now);
    END IF;
    -- idx >= 0: the first write of a (task, idx) wins; a retried task leaves it as it was,
    -- except that the call's first write takes the call's place in the feed. Only that row
    -- is locked if it exists, as an update must; the others are left alone.
    INSERT INTO checkpoint_writes (
        thread_key, checkpoint_ns, checkpoint_id, task_id, idx, task_path, channel, type, blob,
        feed_namespace, feed_xid, feed_seq, feed_time
    )
    SELECT v_key, p_checkpoint_ns, p_checkpoint_id, w.task_id, w.idx, w.task_path, w.channel,
        w.type, w.blob, p_namespace, v_xid, nextval('events_seq_seq'), p_now
    FROM unnest(p_kept_task_id, p_kept_idx, p_kept_task_path, p_kept_channel, p_kept_type,
        p_kept_blob) WITH ORDINALITY AS w (task_id, idx, task_path, channel, type, blob, n)
    WHERE w.n = 1
    ON CONFLICT (thread_key, checkpoint_ns, checkpoint_id, task_id, idx) DO UPDATE SET
        feed_namespace = excluded.feed_namespace,
        feed_xid = excluded.feed_xid,
        feed_seq = excluded.feed_seq,
        feed_time = excluded.feed_time;
    INSERT INTO checkpoint_writes (
        thread_key, checkpoint_ns, checkpoint_id, task_id, idx, task_path, channel, type, blob
    )
    SELECT v_key, p_checkpoint_ns, p_checkpoint_id, w.task_id, w.idx, w.task_path, w.channel,
        w.type, w.blob
    FROM unnest(p_kept_task_id, p_kept_idx, p_kept_task_path, p_kept_channel, p_kept_type,
        p_kept_blob) WITH ORDINALITY AS w (task_id, idx, task_path, channel, type, blob, n)
    WHERE w.n > 1
    ON CONFLICT DO NOTHING;
    -- idx < 0 (special writes such as interrupts and errors): the last write wins; a write
    -- that is not the call's first keeps its place in the feed, if it had one.
    INSERT INTO checkpoint_writes AS cw (
        thread_key, checkpoint_ns, checkpoint_id, task_id, idx, task_path, channel, type, blob,
        feed_namespace, feed_xid, feed_seq, feed_time
    )
    SELECT v_key, p_checkpoint_ns, p_checkpoint_id, w.task_id, w.idx, w.task_path, w.channel,
        w.type, w.blob,
        CASE WHEN w.n = v_replaced_first THEN p_namespace END,
        CASE WHEN w.n = v_replaced_first THEN v_xid END,
        CASE WHEN w.n = v_replaced_first THEN nextval('events_seq_seq') END,
        CASE WHEN w.n = v_replaced_first THEN p_now END
    FROM unnest(p_replaced_task_id, p_replaced_idx, p_replaced_task_path, p_replaced_channel,
        p_replaced_type, p_replaced_blob)
        WITH ORDINALITY AS w (task_id, idx, task_path, channel, type, blob, n)
    ON CONFLICT (thread_key, checkpoint_ns, checkpoint_id, task_id, idx) DO UPDATE SET
        task_path = excluded.task_path,
        channel = excluded.channel,
        type = excluded.type,
        blob = excluded.blob,
        feed_namespace = coalesce(excluded.feed_namespace, cw.feed_namespace),
        feed_xid = coalesce(excluded.feed_xid, cw.feed_xid),
        feed_seq = coalesce(excluded.feed_seq, cw.feed_seq),
        feed_time = coalesce(excluded.feed_time, cw.feed_time);
    PERFORM pg_notify('lgcp_events', p_namespace);
    RETURN true;
END $$
"""


def upgrade() -> None:
    """Adds the feed columns and their index, and the put-writes function that fills them.

    Every existing row's feed columns are NULL, so the partial index starts empty. On
    PostgreSQL the migration gives up after 10 s waiting for the table's lock (see 0008).
    """
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        op.execute("SET LOCAL lock_timeout = '10s'")
    for name, kind in _FEED_COLUMNS:
        op.add_column("checkpoint_writes", sa.Column(name, kind, nullable=True))
    placed = sa.text("feed_xid IS NOT NULL")
    for table, name, columns in _FEED_INDEXES:
        op.create_index(name, table, columns, postgresql_where=placed, sqlite_where=placed)
    if postgresql:
        op.execute(_PUT_WRITES)
        op.execute(f"DROP FUNCTION {_RECORD_EVENTS}")


def downgrade() -> None:
    """Restores 0004's put-writes function and drops the feed columns.

    Writes added since the upgrade then have no event: a watcher of the older server does not
    see them.
    """
    if op.get_bind().dialect.name == "postgresql":
        op.execute("SET LOCAL lock_timeout = '10s'")
        functions = context.script.get_revision("0004").module
        op.execute(functions._RECORD_EVENTS)
        op.execute(
            functions._PUT_WRITES.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
        )
    for table, name, _ in _FEED_INDEXES:
        op.drop_index(name, table_name=table)
    with op.batch_alter_table("checkpoint_writes") as batch:
        for name, _ in reversed(_FEED_COLUMNS):
            batch.drop_column(name)
