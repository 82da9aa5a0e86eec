"""Events for WatchEvents, and on PostgreSQL a NOTIFY when they are committed.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Creates the events table, its indexes and, on PostgreSQL, the notifying trigger."""
    op.create_table(
        "events",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("xid", sa.BigInteger(), nullable=False),
        sa.Column("namespace", sa.String(), nullable=False),
        sa.Column("thread_id", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("checkpoint_ns", sa.String(), nullable=True),
        sa.Column("checkpoint_id", sa.String(), nullable=True),
        sa.Column("source_thread_id", sa.String(), nullable=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_events"),
    )
    op.create_index("ix_events_namespace_xid_seq", "events", ["namespace", "xid", "seq"])
    op.create_index(
        "ix_events_namespace_thread_id_xid_seq",
        "events",
        ["namespace", "thread_id", "xid", "seq"],
    )
    op.create_index("ix_events_time", "events", ["time"])
    if op.get_bind().dialect.name == "postgresql":
        # Every server LISTENs; the notification is sent when the inserting transaction
        # commits, and repeated ones within a transaction are folded into one.
        op.execute(
            "CREATE FUNCTION lgcp_notify_events() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM pg_notify('lgcp_events', ''); RETURN NULL; END $$"
        )
        op.execute(
            "CREATE TRIGGER lgcp_events_notify AFTER INSERT ON events "
            "FOR EACH STATEMENT EXECUTE FUNCTION lgcp_notify_events()"
        )


def downgrade() -> None:
    """Drops the events table (and the trigger and function with it)."""
    op.drop_table("events")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION lgcp_notify_events()")
