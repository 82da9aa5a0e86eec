"""The checkpoints table serves as the change feed of added checkpoints.

An added checkpoint used to be copied into the events table as well: a second row of about
130 bytes with three index entries (some 280 bytes a checkpoint in all), inserted, indexed and
passed through the notifying trigger on every put. Now the checkpoint's own row carries its
place in the feed (``feed_xid``, ``feed_seq``, taken as an event's xid and seq are) under one
partial index, and WatchEvents reads added checkpoints from there (storage/events.py). Other
events, writes among them, stay in the events table. Checkpoints stored before this migration
have no place in the feed; their events stay in the events table until its retention ends.

On PostgreSQL the put function takes the new columns and notifies by itself; it no longer
inserts an event for the checkpoint. SQLite takes every position from ``feed_position``, a
counter that only goes up: one more than the greatest row would go back when that row is
deleted.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import context, op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_PUT_CHECKPOINT = """
CREATE OR REPLACE FUNCTION lgcp_put_checkpoint(
    p_namespace text, p_thread_id text, p_now timestamptz, p_now_epoch float8,
    p_default_ttl bigint, p_default_strategy text,
    p_checkpoint_ns text, p_checkpoint_id text, p_parent_checkpoint_id text, p_run_id text,
    p_checkpoint_type text, p_checkpoint bytea, p_metadata jsonb, p_channel_versions jsonb,
    p_delta_channels jsonb,
    p_value_channels text[], p_value_versions text[], p_value_types text[], p_value_blobs bytea[]
) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_key bigint;
    v_created boolean;
BEGIN
    SELECT thread_key, created INTO v_key, v_created FROM lgcp_touch_thread(
        p_namespace, p_thread_id, p_now, p_now_epoch, p_default_ttl, p_default_strategy,
        CASE WHEN p_checkpoint_ns = '' THEN p_checkpoint_id END, NULL, NULL);
    IF v_key IS NULL THEN
        RETURN false;
    END IF;
    IF v_created THEN
        INSERT INTO events (xid, namespace, thread_id, kind, time)
        VALUES (pg_current_xact_id()::text::bigint, p_namespace, p_thread_id, 'thread_created',
            p_now);
    END IF;
    INSERT INTO checkpoint_blobs (thread_key, checkpoint_ns, channel, version, type, blob)
    SELECT v_key, p_checkpoint_ns, v.channel, v.version, v.type, v.blob
    FROM unnest(p_value_channels, p_value_versions, p_value_types, p_value_blobs)
        AS v (channel, version, type, blob)
    ON CONFLICT DO NOTHING;
    -- Stored again, a checkpoint moves to the end of the feed: it is added anew.
    INSERT INTO checkpoints AS c (
        thread_key, checkpoint_ns, checkpoint_id, namespace, parent_checkpoint_id, run_id,
        checkpoint_type, checkpoint, metadata, channel_versions, delta_channels, create_time,
        feed_xid, feed_seq
    ) VALUES (
        v_key, p_checkpoint_ns, p_checkpoint_id, p_namespace, p_parent_checkpoint_id, p_run_id,
        p_checkpoint_type, p_checkpoint, p_metadata, p_channel_versions, p_delta_channels, p_now,
        pg_current_xact_id()::text::bigint, nextval('events_seq_seq')
    )
    ON CONFLICT (thread_key, checkpoint_ns, checkpoint_id) DO UPDATE SET
        parent_checkpoint_id = excluded.parent_checkpoint_id,
        run_id = excluded.run_id,
        checkpoint_type = excluded.checkpoint_type,
        checkpoint = excluded.checkpoint,
        metadata = excluded.metadata,
        channel_versions = excluded.channel_versions,
        delta_channels = excluded.delta_channels,
        feed_xid = excluded.feed_xid,
        feed_seq = excluded.feed_seq;
    PERFORM pg_notify('lgcp_events', p_namespace);
    RETURN true;
END $$
"""


def upgrade() -> None:
    """Adds the feed columns and their index, and the put function that fills them.

    Every existing row's feed columns are NULL, so the partial index starts empty. On
    PostgreSQL the migration gives up after 10 s waiting for the table's lock (see 0008).
    """
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        op.execute("SET LOCAL lock_timeout = '10s'")
    op.add_column("checkpoints", sa.Column("feed_xid", sa.BigInteger(), nullable=True))
    op.add_column("checkpoints", sa.Column("feed_seq", sa.BigInteger(), nullable=True))
    op.create_index(
        "ix_checkpoints_namespace_feed_xid_feed_seq",
        "checkpoints",
        ["namespace", "feed_xid", "feed_seq"],
        postgresql_where=sa.text("feed_xid IS NOT NULL"),
        sqlite_where=sa.text("feed_xid IS NOT NULL"),
    )
    # SQLite's positions, from a counter that starts after every event already logged.
    op.create_table(
        "feed_position",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("last", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feed_position")),
    )
    op.execute("INSERT INTO feed_position (id, last) SELECT 1, coalesce(max(seq), 0) FROM events")
    if postgresql:
        op.execute(_PUT_CHECKPOINT)


def downgrade() -> None:
    """Restores 0004's put function and drops the feed columns.

    Checkpoints added since the upgrade then have no event: a watcher of the older server does
    not see them.
    """
    if op.get_bind().dialect.name == "postgresql":
        op.execute("SET LOCAL lock_timeout = '10s'")
        restored = context.script.get_revision("0004").module._PUT_CHECKPOINT
        op.execute(restored.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
    op.drop_table("feed_position")
    op.drop_index("ix_checkpoints_namespace_feed_xid_feed_seq", table_name="checkpoints")
    with op.batch_alter_table("checkpoints") as batch:
        batch.drop_column("feed_seq")
        batch.drop_column("feed_xid")
