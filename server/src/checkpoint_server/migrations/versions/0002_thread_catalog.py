"""The thread catalog: metadata, status, latest checkpoint, time to live.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    """Adds the catalog's columns and the indexes its searches and sweeper use."""
    with op.batch_alter_table("threads") as batch:
        batch.add_column(
            sa.Column("metadata", _json, nullable=False, server_default=sa.text("'{}'"))
        )
        batch.add_column(
            sa.Column("status", sa.String(), nullable=False, server_default=sa.text("'idle'"))
        )
        batch.add_column(sa.Column("status_checkpoint_id", sa.String(), nullable=True))
        batch.add_column(sa.Column("latest_checkpoint_id", sa.String(), nullable=True))
        batch.add_column(sa.Column("ttl_seconds", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("ttl_strategy", sa.String(), nullable=True))
        batch.add_column(sa.Column("expire_epoch", sa.Float(), nullable=True))
    op.create_index(
        "ix_threads_namespace_update_time", "threads", ["namespace", "update_time", "thread_id"]
    )
    op.create_index(
        "ix_threads_namespace_create_time", "threads", ["namespace", "create_time", "thread_id"]
    )
    op.create_index(
        "ix_threads_namespace_status_update_time",
        "threads",
        ["namespace", "status", "update_time", "thread_id"],
    )
    op.create_index(
        "ix_threads_expire_epoch",
        "threads",
        ["expire_epoch"],
        postgresql_where=sa.text("expire_epoch IS NOT NULL"),
        sqlite_where=sa.text("expire_epoch IS NOT NULL"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.create_index(
            "ix_threads_metadata",
            "threads",
            ["metadata"],
            postgresql_using="gin",
            postgresql_ops={"metadata": "jsonb_path_ops"},
        )
    # Threads stored before the catalog: their latest root checkpoint.
    op.execute(
        "UPDATE threads SET latest_checkpoint_id = (SELECT max(c.checkpoint_id) "
        "FROM checkpoints c WHERE c.thread_key = threads.key AND c.checkpoint_ns = '')"
    )


def downgrade() -> None:
    """Removes the catalog's columns and indexes."""
    op.drop_index("ix_threads_expire_epoch", "threads")
    op.drop_index("ix_threads_namespace_status_update_time", "threads")
    op.drop_index("ix_threads_namespace_create_time", "threads")
    op.drop_index("ix_threads_namespace_update_time", "threads")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_threads_metadata", "threads")
    with op.batch_alter_table("threads") as batch:
        for column in (
            "expire_epoch",
            "ttl_strategy",
            "ttl_seconds",
            "latest_checkpoint_id",
            "status_checkpoint_id",
            "status",
            "metadata",
        ):
            batch.drop_column(column)
