"""What lets the sweeper drop lease rows without fencing numbers ever going back.

A lease row is the only record of its thread's last fencing number. The sweeper drops the rows
of threads that no longer exist once their last lease has been over for an hour (storage/
leases.py); ``lease_fencing_floors`` keeps, per namespace, the greatest fencing number it
dropped, and a thread's first lease row starts from there. The expiry index serves the
sweeper's search.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Creates lease_fencing_floors and indexes the leases' expiry."""
    op.create_table(
        "lease_fencing_floors",
        sa.Column("namespace", sa.String(), nullable=False),
        sa.Column("fencing", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("namespace", name=op.f("pk_lease_fencing_floors")),
    )
    op.create_index(
        op.f("ix_thread_leases_expire_epoch"), "thread_leases", ["expire_epoch"], unique=False
    )


def downgrade() -> None:
    """Drops the floors and the index: dropped lease rows' numbers are forgotten."""
    op.drop_index(op.f("ix_thread_leases_expire_epoch"), table_name="thread_leases")
    op.drop_table("lease_fencing_floors")
