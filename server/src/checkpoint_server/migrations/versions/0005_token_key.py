"""A random key, shared by every server of the database, that seals page tokens and cursors.

Revision ID: 0005
Revises: 0004
"""

import os

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Creates the server_keys table and draws the token key."""
    keys = op.create_table(
        "server_keys",
        sa.Column("name", sa.String(), primary_key=True),
        sa.Column("key", sa.LargeBinary(), nullable=False),
    )
    # Drawn once, here: every replica reads the same key, and it survives restarts.
    op.bulk_insert(keys, [{"name": "token", "key": os.urandom(32)}])


def downgrade() -> None:
    """Drops the keys; tokens issued with them stop being accepted."""
    op.drop_table("server_keys")
