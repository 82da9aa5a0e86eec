"""PostgreSQL: the hot writes as functions planned once a session; NOTIFY names the namespace.

A put used to be one 5 KB statement with 69 parameters: past psycopg's query cache, so parsed
again in Python on every call, and planned again by PostgreSQL until prepared. As functions
the call is short and prepared, and PL/pgSQL keeps each inner statement's plan for the session.
Each function runs as one statement, so it is atomic by itself: the thread's catalog row, the
new values, the checkpoint or writes and their events commit together or not at all.

The thread row follows storage/status.py: latest_checkpoint_id and status_checkpoint_id only
grow, so puts and writes may arrive in any order. Its update time is that of the last root
checkpoint, status-setting write or catalog update. A thread whose time to live ran out (under
the delete strategy) is not touched: the functions return false and the caller deletes it
before trying again.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_TOUCH_THREAD = """
CREATE FUNCTION lgcp_touch_thread(
    p_namespace text, p_thread_id text, p_now timestamptz, p_now_epoch float8,
    p_default_ttl bigint, p_default_strategy text,
    p_root_checkpoint_id text, p_writes_checkpoint_id text, p_writes_status text,
    OUT thread_key bigint, OUT created boolean
) LANGUAGE plpgsql AS $$
BEGIN
    -- Writes that set no status, and sub-graph checkpoints, change nothing the catalog shows:
    -- they only need the thread's key, and take no lock on its row, so a thread's concurrent
    -- puts and writes do not queue on it.
    IF p_root_checkpoint_id IS NULL AND p_writes_checkpoint_id IS NULL THEN
        -- FOR KEY SHARE: a DeleteThread (which deletes this row first) waits for this
        -- call, or this call waits for it and then creates the thread anew; nothing is
        -- stored under a key that is gone. Puts updating the row are not held up.
        SELECT t.key, false INTO thread_key, created FROM threads AS t
        WHERE t.namespace = p_namespace AND t.thread_id = p_thread_id
            AND (t.expire_epoch IS NULL
                OR t.expire_epoch > p_now_epoch
                OR coalesce(t.ttl_strategy, p_default_strategy) <> 'delete')
        FOR KEY SHARE;
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;
    INSERT INTO threads AS t (
        namespace, thread_id, create_time, update_time, metadata, status,
        status_checkpoint_id, latest_checkpoint_id, expire_epoch
    ) VALUES (
        p_namespace, p_thread_id, p_now, p_now, '{}', coalesce(p_writes_status, 'idle'),
        p_writes_checkpoint_id, p_root_checkpoint_id, p_now_epoch + p_default_ttl
    )
    ON CONFLICT (namespace, thread_id) DO UPDATE SET
        update_time = excluded.update_time,
        expire_epoch = p_now_epoch + coalesce(t.ttl_seconds, p_default_ttl),
        latest_checkpoint_id = CASE
            WHEN p_root_checkpoint_id > t.latest_checkpoint_id OR t.latest_checkpoint_id IS NULL
            THEN coalesce(p_root_checkpoint_id, t.latest_checkpoint_id)
            ELSE t.latest_checkpoint_id END,
        status = CASE
            WHEN p_writes_checkpoint_id > t.status_checkpoint_id OR t.status_checkpoint_id IS NULL
            THEN coalesce(p_writes_status, t.status)
            WHEN p_writes_checkpoint_id = t.status_checkpoint_id AND t.status <> 'error'
            THEN p_writes_status
            ELSE t.status END,
        status_checkpoint_id = CASE
            WHEN p_writes_checkpoint_id > t.status_checkpoint_id OR t.status_checkpoint_id IS NULL
            THEN coalesce(p_writes_checkpoint_id, t.status_checkpoint_id)
            ELSE t.status_checkpoint_id END
    WHERE t.expire_epoch IS NULL
        OR t.expire_epoch > p_now_epoch
        OR coalesce(t.ttl_strategy, p_default_strategy) <> 'delete'
    RETURNING t.key, t.create_time = p_now INTO thread_key, created;
END $$
"""

_RECORD_EVENTS = """
CREATE FUNCTION lgcp_record_events(
    p_namespace text, p_thread_id text, p_now timestamptz, p_created boolean, p_kind text,
    p_checkpoint_ns text, p_checkpoint_id text
) RETURNS void LANGUAGE sql AS $$
    INSERT INTO events (xid, namespace, thread_id, kind, checkpoint_ns, checkpoint_id, time)
    SELECT pg_current_xact_id()::text::bigint, p_namespace, p_thread_id, e.kind, e.ns, e.id, p_now
    FROM (VALUES (0, 'thread_created', NULL, NULL), (1, p_kind, p_checkpoint_ns, p_checkpoint_id))
        AS e (o, kind, ns, id)
    WHERE e.o = 1 OR p_created
    ORDER BY e.o
$$
"""

_PUT_CHECKPOINT = """
CREATE FUNCTION lgcp_put_checkpoint(
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
    INSERT INTO checkpoint_blobs (thread_key, checkpoint_ns, channel, version, type, blob)
    SELECT v_key, p_checkpoint_ns, v.channel, v.version, v.type, v.blob
    FROM unnest(p_value_channels, p_value_versions, p_value_types, p_value_blobs)
        AS v (channel, version, type, blob)
    ON CONFLICT DO NOTHING;
    INSERT INTO checkpoints AS c (
        thread_key, checkpoint_ns, checkpoint_id, namespace, parent_checkpoint_id, run_id,
        checkpoint_type, checkpoint, metadata, channel_versions, delta_channels, create_time
    ) VALUES (
        v_key, p_checkpoint_ns, p_checkpoint_id, p_namespace, p_parent_checkpoint_id, p_run_id,
        p_checkpoint_type, p_checkpoint, p_metadata, p_channel_versions, p_delta_channels, p_now
    )
    ON CONFLICT (thread_key, checkpoint_ns, checkpoint_id) DO UPDATE SET
        parent_checkpoint_id = excluded.parent_checkpoint_id,
        run_id = excluded.run_id,
        checkpoint_type = excluded.checkpoint_type,
        checkpoint = excluded.checkpoint,
        metadata = excluded.metadata,
        channel_versions = excluded.channel_versions,
        delta_channels = excluded.delta_channels;
    PERFORM lgcp_record_events(
        p_namespace, p_thread_id, p_now, v_created, 'checkpoint_added',
        p_checkpoint_ns, p_checkpoint_id);
    RETURN true;
END $$
"""

_PUT_WRITES = """
CREATE FUNCTION lgcp_put_writes(
    p_namespace text, p_thread_id text, p_now timestamptz, p_now_epoch float8,
    p_default_ttl bigint, p_default_strategy text,
    p_checkpoint_ns text, p_checkpoint_id text, p_writes_status text,
    p_kept_task_id text[], p_kept_idx integer[], p_kept_task_path text[],
    p_kept_channel text[], p_kept_type text[], p_kept_blob bytea[],
    p_replaced_task_id text[], p_replaced_idx integer[], p_replaced_task_path text[],
    p_replaced_channel text[], p_replaced_type text[], p_replaced_blob bytea[]
) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_key bigint;
    v_created boolean;
BEGIN
    SELECT thread_key, created INTO v_key, v_created FROM lgcp_touch_thread(
        p_namespace, p_thread_id, p_now, p_now_epoch, p_default_ttl, p_default_strategy,
        NULL, CASE WHEN p_writes_status IS NOT NULL THEN p_checkpoint_id END, p_writes_status);
    IF v_key IS NULL THEN
        RETURN false;
    END IF;
    -- idx >= 0: the first write of a (task, idx) wins; a retried task leaves it as it was.
    INSERT INTO checkpoint_writes (
        thread_key, checkpoint_ns, checkpoint_id, task_id, idx, task_path, channel, type, blob
    )
    SELECT v_key, p_checkpoint_ns, p_checkpoint_id, w.task_id, w.idx, w.task_path, w.channel,
        w.type, w.blob
    FROM unnest(p_kept_task_id, p_kept_idx, p_kept_task_path, p_kept_channel, p_kept_type,
        p_kept_blob) AS w (task_id, idx, task_path, channel, type, blob)
    ON CONFLICT DO NOTHING;
    -- idx < 0 (special writes such as interrupts and errors): the last write wins.
    INSERT INTO checkpoint_writes AS cw (
        thread_key, checkpoint_ns, checkpoint_id, task_id, idx, task_path, channel, type, blob
    )
    SELECT v_key, p_checkpoint_ns, p_checkpoint_id, w.task_id, w.idx, w.task_path, w.channel,
        w.type, w.blob
    FROM unnest(p_replaced_task_id, p_replaced_idx, p_replaced_task_path, p_replaced_channel,
        p_replaced_type, p_replaced_blob) AS w (task_id, idx, task_path, channel, type, blob)
    ON CONFLICT (thread_key, checkpoint_ns, checkpoint_id, task_id, idx) DO UPDATE SET
        task_path = excluded.task_path,
        channel = excluded.channel,
        type = excluded.type,
        blob = excluded.blob;
    PERFORM lgcp_record_events(
        p_namespace, p_thread_id, p_now, v_created, 'writes_added',
        p_checkpoint_ns, p_checkpoint_id);
    RETURN true;
END $$
"""

# The notification names the namespace whose events were committed, so that a server wakes only
# that namespace's watchers (a namespace is at most 256 characters: well within a payload's
# 8000 bytes). PostgreSQL folds equal notifications of one transaction into one.
_NOTIFY_BY_NAMESPACE = (
    "CREATE OR REPLACE FUNCTION lgcp_notify_events() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN PERFORM pg_notify('lgcp_events', n.namespace) "
    "FROM (SELECT DISTINCT namespace FROM new_events) AS n; RETURN NULL; END $$",
    "DROP TRIGGER lgcp_events_notify ON events",
    "CREATE TRIGGER lgcp_events_notify AFTER INSERT ON events REFERENCING NEW TABLE AS "
    "new_events FOR EACH STATEMENT EXECUTE FUNCTION lgcp_notify_events()",
)
_NOTIFY_EVERYONE = (
    "CREATE OR REPLACE FUNCTION lgcp_notify_events() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN PERFORM pg_notify('lgcp_events', ''); RETURN NULL; END $$",
    "DROP TRIGGER lgcp_events_notify ON events",
    "CREATE TRIGGER lgcp_events_notify AFTER INSERT ON events "
    "FOR EACH STATEMENT EXECUTE FUNCTION lgcp_notify_events()",
)

_FUNCTIONS = (
    "lgcp_put_writes(text, text, timestamptz, float8, bigint, text, text, text, text, "
    "text[], integer[], text[], text[], text[], bytea[], "
    "text[], integer[], text[], text[], text[], bytea[])",
    "lgcp_put_checkpoint(text, text, timestamptz, float8, bigint, text, text, text, text, "
    "text, text, bytea, jsonb, jsonb, jsonb, text[], text[], text[], bytea[])",
    "lgcp_record_events(text, text, timestamptz, boolean, text, text, text)",
    "lgcp_touch_thread(text, text, timestamptz, float8, bigint, text, text, text, text)",
)


def upgrade() -> None:
    """Installs the functions on PostgreSQL; SQLite runs its writes from Python."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in (
        _TOUCH_THREAD,
        _RECORD_EVENTS,
        _PUT_CHECKPOINT,
        _PUT_WRITES,
        *_NOTIFY_BY_NAMESPACE,
    ):
        op.execute(statement)


def downgrade() -> None:
    """Drops the functions."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in _NOTIFY_EVERYONE:
        op.execute(statement)
    for signature in _FUNCTIONS:
        op.execute(f"DROP FUNCTION {signature}")
