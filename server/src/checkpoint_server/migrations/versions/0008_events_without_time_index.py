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
    """Drops ix_events_time."""
    op.drop_index("ix_events_time", table_name="events")


def downgrade() -> None:
    """Recreates ix_events_time, for a server that deletes expired events by time."""
    op.create_index("ix_events_time", "events", ["time"])
