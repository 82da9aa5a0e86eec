"""Migrations over a database that holds data, both ways: the change feed's (0009)."""

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

# The put function of migrations 0004 to 0008, called as the server before 0009 called it.
_OLD_PUT = (
    "SELECT lgcp_put_checkpoint('ns', %s, now(), extract(epoch FROM now()), 3600, 'keep', '', "
    "%s, NULL, NULL, 'msgpack', '\\x00', '{}', '{}', NULL, '{}', '{}', '{}', '{}')"
)


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
        # The put function is 0004's again: it records the checkpoint's event in the log.
        with psycopg.connect(own_database, autocommit=True) as conn:
            conn.execute(_OLD_PUT, ("old", "1"))
            kinds = conn.execute("SELECT kind FROM events WHERE thread_id = 'old'").fetchall()
        assert [k for (k,) in kinds] == ["thread_created", "checkpoint_added"]
    _migrate(own_database, "head")
    server = ServerProcess.start(own_database)
    try:
        async with GrpcSaver.from_conn_string(f"grpc://{server.target}", namespace="ns") as saver:
            assert (await saver.aget_tuple(before)) is not None
            await saver.aput(config("after"), empty_checkpoint(), {"step": 0}, {})
        postgresql = own_database.startswith("postgresql")
        expected = [
            ("thread_created", "before"),
            ("writes_added", "before"),
            *([("thread_created", "old"), ("checkpoint_added", "old")] if postgresql else []),
            ("thread_created", "after"),
            ("checkpoint_added", "after"),
        ]
        events = await _events(server, len(expected))
    finally:
        assert server.stop() == 0, "".join(server.log)
    # The checkpoint stored between the upgrade and the downgrade lost its event with the
    # feed columns (as the downgrade says); its writes' event is in the log.
    assert events == expected


async def test_checkpoints_stored_before_the_feed_keep_their_events(
    postgres_url: str,
) -> None:
    """A checkpoint stored before 0009 has its event in the log, once: not again from the feed.

    PostgreSQL only: before 0009 SQLite's puts ran in the server's Python, not in the database.
    """
    with postgres_database("lgcp_migrate") as url:
        await _stored_before_the_feed(url)


async def _stored_before_the_feed(own_database: str) -> None:
    _migrate(own_database, "0008")
    with psycopg.connect(own_database, autocommit=True) as conn:
        conn.execute(_OLD_PUT, ("old", "1"))
    server = ServerProcess.start(own_database)
    try:
        async with GrpcSaver.from_conn_string(f"grpc://{server.target}", namespace="ns") as saver:
            await saver.aput(config("new"), empty_checkpoint(), {"step": 0}, {})
        events = await asyncio.wait_for(_events(server, 4), 30)
    finally:
        assert server.stop() == 0, "".join(server.log)
    assert events == [
        ("thread_created", "old"),
        ("checkpoint_added", "old"),
        ("thread_created", "new"),
        ("checkpoint_added", "new"),
    ]
