"""Migrations over a database that holds data, both ways: the change feed's (0009 to 0012)."""

from __future__ import annotations

import asyncio
from importlib import resources

import psycopg
import sqlalchemy
from alembic import command
from alembic.config import Config
from langgraph.checkpoint.base import empty_checkpoint

from langgraph.checkpoint.grpc import GrpcSaver
from tests.conftest import ServerProcess, postgres_database
from tests.test_service import config
from tests.test_watch import _kinds, _put, _take

# The put functions of migrations 0004 to 0008, called as the server before 0009 called them:
# a checkpoint, then one write of it.
_OLD_PUTS = (
    "SELECT lgcp_put_checkpoint('ns', %(thread)s, now(), extract(epoch FROM now()), 3600, "
    "'keep', '', %(id)s, NULL, NULL, 'msgpack', '\\x00', '{}', '{}', NULL, '{}', '{}', '{}', "
    "'{}')",
    "SELECT lgcp_put_writes('ns', %(thread)s, now(), extract(epoch FROM now()), 3600, 'keep', "
    "'', %(id)s, NULL, '{task}', '{0}', '{\"\"}', '{value}', '{msgpack}', '{\"\\\\x00\"}', "
    "'{}', '{}', '{}', '{}', '{}', '{}')",
)
_OLD_EVENTS = [("thread_created", "old"), ("checkpoint_added", "old"), ("writes_added", "old")]


def _put_as_before(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in _OLD_PUTS:
            conn.execute(statement, {"thread": "old", "id": "1"})


def _migrate(url: str, revision: str, *, down: bool = False) -> None:
    engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as connection:
            settings = Config()
            settings.set_main_option(
                "script_location", str(resources.files("checkpoint_server") / "migrations")
            )
            settings.attributes["connection"] = connection
            (command.downgrade if down else command.upgrade)(settings, revision)
    finally:
        engine.dispose()


async def _events(server: ServerProcess, count: int) -> list[tuple[str, str]]:
    async with GrpcSaver.from_conn_string(f"grpc://{server.target}", namespace="ns") as saver:
        return _kinds(await _take(saver.athreads.watch(from_beginning=True), count))


async def test_downgrade_and_upgrade_keep_the_checkpoints(own_database: str) -> None:
    """Down to 0008 and up again: every checkpoint stays readable, and the feed goes on."""
    server = ServerProcess.start(own_database)
    try:
        async with GrpcSaver.from_conn_string(f"grpc://{server.target}", namespace="ns") as saver:
            before = await _put(saver, "before")
    finally:
        assert server.stop() == 0, "".join(server.log)
    _migrate(own_database, "0008", down=True)
    if own_database.startswith("postgresql"):
        # The put functions are 0004's again: they record their events in the log.
        _put_as_before(own_database)
        with psycopg.connect(own_database, autocommit=True) as conn:
            kinds = conn.execute("SELECT kind FROM events WHERE thread_id = 'old'").fetchall()
        assert [(k, "old") for (k,) in kinds] == _OLD_EVENTS
    _migrate(own_database, "head")
    server = ServerProcess.start(own_database)
    try:
        async with GrpcSaver.from_conn_string(f"grpc://{server.target}", namespace="ns") as saver:
            assert (await saver.aget_tuple(before)) is not None
            await saver.aput(config("after"), empty_checkpoint(), {"step": 0}, {})
        postgresql = own_database.startswith("postgresql")
        expected = [
            *(_OLD_EVENTS if postgresql else []),
            ("thread_created", "after"),
            ("checkpoint_added", "after"),
        ]
        events = await _events(server, len(expected))
    finally:
        assert server.stop() == 0, "".join(server.log)
    # The thread, checkpoint and writes stored between the upgrade and the downgrade lost their
    # events with the feed columns, as the downgrades say.
    assert events == expected


async def test_checkpoints_stored_before_the_feed_keep_their_events(
    postgres_url: str,
) -> None:
    """A checkpoint and writes stored before 0009 have their events in the log, once: not again
    from the feed.

    PostgreSQL only: before 0009 SQLite's puts ran in the server's Python, not in the database.
    """
    with postgres_database("lgcp_migrate") as url:
        await _stored_before_the_feed(url)


async def _stored_before_the_feed(own_database: str) -> None:
    _migrate(own_database, "0008")
    _put_as_before(own_database)
    server = ServerProcess.start(own_database)
    try:
        async with GrpcSaver.from_conn_string(f"grpc://{server.target}", namespace="ns") as saver:
            await saver.aput(config("new"), empty_checkpoint(), {"step": 0}, {})
        events = await asyncio.wait_for(_events(server, 5), 30)
    finally:
        assert server.stop() == 0, "".join(server.log)
    assert events == [
        *_OLD_EVENTS,
        ("thread_created", "new"),
        ("checkpoint_added", "new"),
    ]
