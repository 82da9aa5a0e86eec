"""Thread leases with fencing numbers; PostgreSQL checks them inside the hot-path call.

The check is a function that takes a shared advisory lock on the thread (namespace, thread
ID) for the rest of the transaction and then reads its lease row. AcquireLease takes the same
lock exclusively: a new holder waits until every write admitted before it has committed, and
a write that comes later waits for the new lease and sees it. Writers share the lock, so they
never queue on one another, and no row is locked or written by a check.
storage/functions.py calls it in the FROM clause of the put and the writes: one statement, one
transaction, no gap between the check and the write. A refusal raises SQLSTATE LGL01 with
the lease row as JSON in its detail; storage/leases.py turns that into the same error as on
SQLite, where the check runs in Python inside the write's BEGIN IMMEDIATE transaction.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_CHECK_LEASE = """
CREATE FUNCTION lgcp_check_lease(
    p_namespace text, p_thread_id text, p_lease_id text, p_fencing bigint, p_now_epoch float8
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_lease_id text;
    v_fencing bigint;
    v_expire_epoch float8;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtext(p_namespace), hashtext(p_thread_id));
    SELECT l.lease_id, l.fencing, l.expire_epoch INTO v_lease_id, v_fencing, v_expire_epoch
    FROM thread_leases AS l
    WHERE l.namespace = p_namespace AND l.thread_id = p_thread_id;
    IF v_lease_id IS NOT NULL AND v_expire_epoch <= p_now_epoch THEN
        v_lease_id := NULL;  -- expired: held by nobody
    END IF;
    IF v_lease_id IS NOT DISTINCT FROM p_lease_id
        AND (p_lease_id IS NULL OR v_fencing = p_fencing) THEN
        RETURN;
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'LGL01', MESSAGE = 'lease refused',
        DETAIL = json_build_object(
            'lease_id', v_lease_id, 'fencing', v_fencing, 'expire_epoch', v_expire_epoch)::text;
END $$
"""


def upgrade() -> None:
    """Creates the thread_leases table and, on PostgreSQL, the lease check."""
    op.create_table(
        "thread_leases",
        sa.Column("namespace", sa.String(), nullable=False),
        sa.Column("thread_id", sa.String(), nullable=False),
        sa.Column("lease_id", sa.String(), nullable=True),
        sa.Column("fencing", sa.BigInteger(), nullable=False),
        sa.Column("expire_epoch", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("namespace", "thread_id", name=op.f("pk_thread_leases")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_CHECK_LEASE)


def downgrade() -> None:
    """Drops the leases: every thread is writable by anyone again."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION lgcp_check_lease(text, text, text, bigint, float8)")
    op.drop_table("thread_leases")
