"""Drops the events' time index: the retention sweep walks the log from its oldest event.

Every event paid for an entry in ``ix_events_time`` (about 60 bytes of a checkpoint's share of
the log, and one more index to update per write) only so that the sweep could find the
expired ones. Events are appended in time order, near enough, so the sweep now deletes from
the oldest (by ``seq``) up to the first one still within the retention (storage/threads.py).

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Drops ix_events_time; on PostgreSQL gives up after 10 s waiting for the table's lock.

    The drop needs the table to itself: behind a long transaction on it, every write would
    queue behind the migration's request. Failing, it leaves the schema as it was, to be
    migrated again.
    """
    if op.get_bind().dialect.name == "postgresql":
        op.execute("SET LOCAL lock_timeout = '10s'")
    op.drop_index("ix_events_time", table_name="events")


def downgrade() -> None:
    """Recreates ix_events_time, for a server that deletes expired events by time."""
    op.create_index("ix_events_time", "events", ["time"])
