"""Thread rows are updated in place: their indexes hold the minute of a time, not the time.

Every root checkpoint's put updates its thread's ``update_time`` and ``expire_epoch``. Both were
indexed, so on PostgreSQL no such update could be HOT (heap-only: the new row version on the
same page, no new index entries): each put added an entry to all seven of the table's indexes
and left a dead row version behind, about 120 bytes a checkpoint in the benchmark's workload.

Now the indexes hold ``update_minute`` and ``expire_minute``, columns the database generates
from the two times, which change at most once a minute; a thread's puts within a minute change
no indexed column and are HOT. Searches still order by the exact time: by the minute first,
which the index gives (the minute only grows with the time), then by the time within it. The
table gets a fillfactor of 70, leaving room on each page for the new row versions.

PostgreSQL stores the generated columns (adding them rewrites the table, under its lock: the
migration gives up after 10 s waiting for it, as 0008 does); SQLite, which has no HOT updates
and cannot add a stored column, computes them when read or indexed. SQLite's minute has the
text form SQLAlchemy gives a time there, so that it compares with a bound time.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_MINUTE = {
    # The minute in UTC, from immutable functions only, as a generated column needs (not
    # date_bin: PostgreSQL 14 or newer).
    "postgresql": "timezone('UTC', date_trunc('minute', timezone('UTC', update_time)))",
    # The colon escaped: SQLAlchemy's text() would take ":00" for a parameter.
    "sqlite": "substr(update_time, 1, 16) || '\\:00.000000'",
}
# The same text on both: each database rounds its own way, and queries compare with the same
# expression of the time they look for, so each is consistent with itself.
_EXPIRE_MINUTE = "CAST(expire_epoch / 60 AS BIGINT)"

# (name, columns) of the indexes before and after.
_OLD_INDEXES = (
    ("ix_threads_namespace_update_time", ["namespace", "update_time", "thread_id"]),
    (
        "ix_threads_namespace_status_update_time",
        ["namespace", "status", "update_time", "thread_id"],
    ),
)
_NEW_INDEXES = (
    ("ix_threads_namespace_update_minute", ["namespace", "update_minute"]),
    ("ix_threads_namespace_status_update_minute", ["namespace", "status", "update_minute"]),
)


def _index_set(column: str) -> None:
    """The sweeper's index: the threads whose ``column`` is set, in its order."""
    condition = sa.text(f"{column} IS NOT NULL")
    op.create_index(
        f"ix_threads_{column}",
        "threads",
        [column],
        postgresql_where=condition,
        sqlite_where=condition,
    )


def upgrade() -> None:
    """Adds the generated columns, indexes them instead of the times, sets the fillfactor."""
    dialect = op.get_bind().dialect.name
    postgresql = dialect == "postgresql"
    if postgresql:
        op.execute("SET LOCAL lock_timeout = '10s'")
        # Before the columns: adding them rewrites the table, with this fillfactor.
        op.execute("ALTER TABLE threads SET (fillfactor = 70)")
    op.add_column(
        "threads",
        sa.Column(
            "update_minute",
            sa.DateTime(timezone=True),
            sa.Computed(_MINUTE[dialect], persisted=postgresql),
        ),
    )
    op.add_column(
        "threads",
        sa.Column(
            "expire_minute", sa.BigInteger(), sa.Computed(_EXPIRE_MINUTE, persisted=postgresql)
        ),
    )
    for name, _ in _OLD_INDEXES:
        op.drop_index(name, table_name="threads")
    op.drop_index("ix_threads_expire_epoch", table_name="threads")
    for name, columns in _NEW_INDEXES:
        op.create_index(name, "threads", columns)
    _index_set("expire_minute")


def downgrade() -> None:
    """Indexes the times again and drops the generated columns."""
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        op.execute("SET LOCAL lock_timeout = '10s'")
    op.drop_index("ix_threads_expire_minute", table_name="threads")
    for name, _ in _NEW_INDEXES:
        op.drop_index(name, table_name="threads")
    for name, columns in _OLD_INDEXES:
        op.create_index(name, "threads", columns)
    _index_set("expire_epoch")
    with op.batch_alter_table("threads") as batch:
        batch.drop_column("expire_minute")
        batch.drop_column("update_minute")
    if postgresql:
        op.execute("ALTER TABLE threads RESET (fillfactor)")
