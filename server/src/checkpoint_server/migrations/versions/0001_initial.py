"""Threads, checkpoints, channel values per version, pending writes.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_key = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Creates the four tables and their indexes."""
    op.create_table(
        "threads",
        sa.Column("key", _key, primary_key=True, autoincrement=True),
        sa.Column("namespace", sa.String(), nullable=False),
        sa.Column("thread_id", sa.String(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_threads"),
        sa.UniqueConstraint("namespace", "thread_id", name="uq_threads_namespace_thread_id"),
    )
    op.create_table(
        "checkpoints",
        sa.Column("thread_key", sa.BigInteger(), nullable=False),
        sa.Column("checkpoint_ns", sa.String(), nullable=False),
        sa.Column("checkpoint_id", sa.String(), nullable=False),
        sa.Column("namespace", sa.String(), nullable=False),
        sa.Column("parent_checkpoint_id", sa.String(), nullable=True),
        sa.Column("run_id", sa.String(), nullable=True),
        sa.Column("checkpoint_type", sa.String(), nullable=False),
        sa.Column("checkpoint", sa.LargeBinary(), nullable=False),
        sa.Column("metadata", _json, nullable=False),
        sa.Column("channel_versions", _json, nullable=False),
        sa.Column("delta_channels", _json, nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "thread_key", "checkpoint_ns", "checkpoint_id", name="pk_checkpoints"
        ),
    )
    op.create_index(
        "ix_checkpoints_namespace_checkpoint_id", "checkpoints", ["namespace", "checkpoint_id"]
    )
    op.create_index(
        "ix_checkpoints_namespace_run_id",
        "checkpoints",
        ["namespace", "run_id"],
        postgresql_where=sa.text("run_id IS NOT NULL"),
        sqlite_where=sa.text("run_id IS NOT NULL"),
    )
    op.create_table(
        "checkpoint_blobs",
        sa.Column("thread_key", sa.BigInteger(), nullable=False),
        sa.Column("checkpoint_ns", sa.String(), nullable=False),
        sa.Column("channel", sa.String(), nullable=False),
        sa.Column("version", sa.String(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("blob", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint(
            "thread_key", "checkpoint_ns", "channel", "version", name="pk_checkpoint_blobs"
        ),
    )
    op.create_table(
        "checkpoint_writes",
        sa.Column("thread_key", sa.BigInteger(), nullable=False),
        sa.Column("checkpoint_ns", sa.String(), nullable=False),
        sa.Column("checkpoint_id", sa.String(), nullable=False),
        sa.Column("task_id", sa.String(), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("task_path", sa.String(), nullable=False),
        sa.Column("channel", sa.String(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("blob", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint(
            "thread_key",
            "checkpoint_ns",
            "checkpoint_id",
            "task_id",
            "idx",
            name="pk_checkpoint_writes",
        ),
    )


def downgrade() -> None:
    """Drops everything."""
    op.drop_table("checkpoint_writes")
    op.drop_table("checkpoint_blobs")
    op.drop_table("checkpoints")
    op.drop_table("threads")
