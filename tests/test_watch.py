"""WatchEvents: commit order, resuming without gaps or duplicates, across server replicas."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from langgraph.checkpoint.base import empty_checkpoint
from sqlalchemy import insert, select

from checkpoint_server.storage.database import open_database
from checkpoint_server.storage.models import EventRow
from checkpoint_server.storage.threads import ThreadCatalog
from langgraph.checkpoint.grpc import Event, GrpcSaver, GrpcSaverError
from tests.conftest import ServerProcess, postgres_database
from tests.test_service import config


async def _take(events: AsyncIterator[Event], count: int, seconds: float = 20) -> list[Event]:
    taken: list[Event] = []

    async def take() -> None:
        async for event in events:
            taken.append(event)
            if len(taken) == count:
                return

    await asyncio.wait_for(take(), seconds)
    return taken


async def _put(saver: GrpcSaver, thread_id: str) -> Any:
    stored = await saver.aput(config(thread_id), empty_checkpoint(), {"step": 0}, {})
    await saver.aput_writes(stored, [("value", 1)], "task")
    return stored


def _kinds(events: list[Event]) -> list[tuple[str, str]]:
    return [(e.kind, e.thread_id) for e in events]


async def test_events_arrive_in_order_for_every_kind(server: ServerProcess, namespace: str) -> None:
    async with GrpcSaver.from_conn_string(f"grpc://{server.target}", namespace=namespace) as saver:
        watch = saver.athreads.watch()
        # The stream starts "from now" once the server has it: open it before writing.
        first = asyncio.ensure_future(_take(watch, 9))
        await asyncio.sleep(0.5)
        await _put(saver, "a")
        await saver.athreads.update("a", metadata={"x": 1})
        await saver.athreads.copy("a", target_thread_id="b")
        await saver.athreads.prune(["a"])
        await saver.athreads.delete("b")
        await saver.athreads.create("c")
        events = await first
    assert _kinds(events) == [
        ("thread_created", "a"),
        ("checkpoint_added", "a"),
        ("writes_added", "a"),
        ("thread_updated", "a"),
        ("thread_created", "b"),
        ("thread_copied", "b"),
        ("thread_pruned", "a"),
        ("thread_deleted", "b"),
        ("thread_created", "c"),
    ]
    assert events[5].source_thread_id == "a"
    assert events[1].checkpoint_id is not None


async def test_created_threads_and_added_checkpoints_and_writes_are_in_the_feed_as_they_are(
    server: ServerProcess, namespace: str
) -> None:
    """Created threads and added checkpoints and writes are read from their own tables: a
    deleted thread's creation and checkpoints go with it, a copy's are not added ones, and those
    stored again move to the end of the feed."""
    async with GrpcSaver.from_conn_string(f"grpc://{server.target}", namespace=namespace) as saver:
        await _put(saver, "gone")
        kept = await _put(saver, "kept")
        await saver.athreads.copy("kept", target_thread_id="copy")
        await saver.athreads.delete("gone")
        # Stored again: the same checkpoint and writes, added anew after everything above.
        await saver.aput(config("kept"), empty_checkpoint() | {"id": _id(kept)}, {"step": 0}, {})
        await saver.aput_writes(kept, [("value", 1)], "task")
        events = await _take(saver.athreads.watch(from_beginning=True), 6)
    assert _kinds(events) == [
        ("thread_created", "kept"),
        ("thread_created", "copy"),
        ("thread_copied", "copy"),
        ("thread_deleted", "gone"),
        ("checkpoint_added", "kept"),
        ("writes_added", "kept"),
    ]
    assert events[-2].checkpoint_id == events[-1].checkpoint_id == _id(kept)


async def test_a_copy_into_an_expired_thread_deletes_it_then_creates_it(
    own_database: str,
) -> None:
    """CopyThread into a thread whose time to live ran out, before any sweep: the old thread's
    deletion, then the new one's creation and copy, in that order."""
    server = ServerProcess.start(
        own_database, "--thread-ttl-seconds", "1", "--sweep-interval-seconds", "3600"
    )
    try:
        async with GrpcSaver.from_conn_string(f"grpc://{server.target}", namespace="ns") as saver:
            await _put(saver, "target")
            await asyncio.sleep(1.5)  # the target has expired; the source is new
            await _put(saver, "source")
            await saver.athreads.copy("source", target_thread_id="target")
            events = await _take(saver.athreads.watch("target", from_beginning=True), 3)
    finally:
        assert server.stop() == 0, "".join(server.log)
    assert _kinds(events) == [
        ("thread_deleted", "target"),
        ("thread_created", "target"),
        ("thread_copied", "target"),
    ]


async def test_a_writes_call_has_one_event_if_it_stores_any_write(
    server: ServerProcess, namespace: str
) -> None:
    """One writes_added per PutWrites call that holds writes, whichever kinds: the call's
    first write carries its place in the feed, and an empty call has none."""
    async with GrpcSaver.from_conn_string(f"grpc://{server.target}", namespace=namespace) as saver:
        stored = await saver.aput(config("t"), empty_checkpoint(), {"step": 0}, {})
        await saver.aput_writes(stored, [], "empty")
        await saver.aput_writes(stored, [("__interrupt__", ["ask"])], "special")  # idx < 0
        await saver.aput_writes(stored, [("value", 1), ("__error__", "boom")], "both")
        await saver.athreads.update("t", metadata={"seen": True})
        events = await _take(saver.athreads.watch(from_beginning=True), 5)
    assert _kinds(events) == [
        ("thread_created", "t"),
        ("checkpoint_added", "t"),
        ("writes_added", "t"),
        ("writes_added", "t"),
        ("thread_updated", "t"),
    ]
    assert {e.checkpoint_id for e in events[1:4]} == {_id(stored)}


async def test_deleting_the_newest_checkpoint_moves_no_position_back(
    server: ServerProcess, namespace: str
) -> None:
    """A watcher past the newest checkpoint still gets its thread's deletion and what follows:
    positions never go back, though the row that held the greatest is gone."""
    async with GrpcSaver.from_conn_string(f"grpc://{server.target}", namespace=namespace) as saver:
        await saver.athreads.create("first")
        await saver.aput(config("newest"), empty_checkpoint(), {"step": 0}, {})
        seen = await _take(saver.athreads.watch(from_beginning=True), 3)
        assert _kinds(seen)[-1] == ("checkpoint_added", "newest")
        await saver.athreads.delete("newest")
        await saver.athreads.create("after")
        events = await _take(saver.athreads.watch(after=seen[-1].cursor), 2)
    assert _kinds(events) == [("thread_deleted", "newest"), ("thread_created", "after")]


def _id(stored: Any) -> str:
    return str(stored["configurable"]["checkpoint_id"])


async def test_resume_after_a_disconnect_misses_nothing(
    server: ServerProcess, namespace: str
) -> None:
    async with GrpcSaver.from_conn_string(f"grpc://{server.target}", namespace=namespace) as saver:
        for index in range(5):
            await _put(saver, f"t{index}")
        everything = await _take(saver.athreads.watch(from_beginning=True), 15)
        # A watcher reads 4 events and goes away; writes go on; it comes back with its cursor.
        seen = await _take(saver.athreads.watch(from_beginning=True), 4)
        for index in range(5, 8):
            await _put(saver, f"t{index}")
        rest = await _take(saver.athreads.watch(after=seen[-1].cursor), 15 - 4 + 9)
        full = await _take(saver.athreads.watch(from_beginning=True), 24)
    assert [e.cursor for e in seen + rest] == [e.cursor for e in full]
    assert [e.cursor for e in full[:15]] == [e.cursor for e in everything]
    one_thread = await _take_thread(server, namespace, "t6")
    assert _kinds(one_thread) == [
        ("thread_created", "t6"),
        ("checkpoint_added", "t6"),
        ("writes_added", "t6"),
    ]


async def _take_thread(server: ServerProcess, namespace: str, thread_id: str) -> list[Event]:
    async with GrpcSaver.from_conn_string(f"grpc://{server.target}", namespace=namespace) as saver:
        return await _take(saver.athreads.watch(thread_id, from_beginning=True), 3)


async def test_namespaces_see_only_their_events(server: ServerProcess) -> None:
    suffix = uuid.uuid4().hex[:8]
    target = f"grpc://{server.target}"
    async with (
        GrpcSaver.from_conn_string(target, namespace=f"a-{suffix}") as a,
        GrpcSaver.from_conn_string(target, namespace=f"b-{suffix}") as b,
    ):
        await _put(b, "shared")
        await _put(a, "mine")
        events = await _take(a.athreads.watch(from_beginning=True), 3)
        assert {e.thread_id for e in events} == {"mine"}
        with pytest.raises(TimeoutError):
            await _take(a.athreads.watch(from_beginning=True), 4, seconds=1.5)
        # Nor another namespace's thread of the same ID.
        with pytest.raises(TimeoutError):
            await _take(a.athreads.watch("shared", from_beginning=True), 1, seconds=1.5)


@pytest.fixture
def two_replicas(postgres_url: str) -> Any:
    with postgres_database("lgcp_watch") as url:
        servers = [ServerProcess.start(url) for _ in range(2)]
        try:
            yield servers
        finally:
            for server in servers:
                assert server.stop() == 0


async def test_watch_across_replicas_with_concurrent_writers(
    two_replicas: list[ServerProcess],
) -> None:
    writer_server, watcher_server = two_replicas
    threads, puts = 8, 5
    async with (
        GrpcSaver.from_conn_string(f"grpc://{writer_server.target}") as writer,
        GrpcSaver.from_conn_string(f"grpc://{watcher_server.target}") as watcher,
    ):
        expected = threads * (1 + 2 * puts)  # created, then a checkpoint and writes per put
        watch = watcher.athreads.watch()
        collecting = asyncio.ensure_future(_take(watch, expected // 2))
        await asyncio.sleep(0.5)

        async def write(thread_id: str) -> None:
            for _ in range(puts):
                await _put(writer, thread_id)

        await asyncio.gather(*(write(f"w{i}") for i in range(threads)))
        first_half = await collecting
        # The watcher drops mid-stream and resumes on the other replica.
        async with GrpcSaver.from_conn_string(f"grpc://{writer_server.target}") as other:
            rest = await _take(
                other.athreads.watch(after=first_half[-1].cursor), expected - len(first_half)
            )
            everything = await _take(other.athreads.watch(from_beginning=True), expected)
    received = first_half + rest
    assert [e.cursor for e in received] == [e.cursor for e in everything]
    assert len({e.cursor for e in received}) == expected
    for index in range(threads):
        kinds = [e.kind for e in received if e.thread_id == f"w{index}"]
        assert kinds == ["thread_created"] + ["checkpoint_added", "writes_added"] * puts


async def test_a_transaction_left_open_in_another_database_holds_nothing_back(
    two_replicas: list[ServerProcess],
) -> None:
    import psycopg

    from tests.conftest import POSTGRES_URL

    writer_server, watcher_server = two_replicas
    with psycopg.connect(POSTGRES_URL) as elsewhere:
        # An open transaction with an ID, in another database of the same PostgreSQL server.
        elsewhere.execute("SELECT pg_current_xact_id()")
        async with (
            GrpcSaver.from_conn_string(f"grpc://{writer_server.target}") as writer,
            GrpcSaver.from_conn_string(f"grpc://{watcher_server.target}") as watcher,
        ):
            watching = asyncio.ensure_future(_take(watcher.athreads.watch(), 3, seconds=5))
            await asyncio.sleep(0.5)
            await _put(writer, "prompt")
            events = await watching
        elsewhere.rollback()
    assert _kinds(events) == [
        ("thread_created", "prompt"),
        ("checkpoint_added", "prompt"),
        ("writes_added", "prompt"),
    ]


async def test_events_past_the_retention_are_deleted_and_their_cursors_refused(
    own_database: str,
) -> None:
    """The sweep deletes events older than ``--event-retention-seconds``, and only those; a
    cursor from before the retention is refused rather than resumed with a gap. The events of
    created threads and added checkpoints and writes live as long as those do (their tables
    are their feed)."""
    server = ServerProcess.start(
        own_database, "--event-retention-seconds", "2", "--sweep-interval-seconds", "0.2"
    )
    try:
        async with GrpcSaver.from_conn_string(f"grpc://{server.target}", namespace="ns") as saver:
            await _put(saver, "old")
            await saver.athreads.update("old", metadata={"seen": True})
            old = await _take(saver.athreads.watch(from_beginning=True), 4)
            assert _kinds(old) == [
                ("thread_created", "old"),
                ("checkpoint_added", "old"),
                ("writes_added", "old"),
                ("thread_updated", "old"),
            ]
            await asyncio.sleep(2.5)  # the old events are past the retention now
            await _put(saver, "new")
            await saver.athreads.update("new", metadata={"seen": True})  # the log's newest
            deadline = asyncio.get_running_loop().time() + 20
            while True:
                first = await _take(saver.athreads.watch(from_beginning=True), 7)
                if first[3].thread_id == "new" or asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert _kinds(first) == [
                ("thread_created", "old"),
                ("checkpoint_added", "old"),
                ("writes_added", "old"),
                ("thread_created", "new"),
                ("checkpoint_added", "new"),
                ("writes_added", "new"),
                ("thread_updated", "new"),
            ]
            with pytest.raises(GrpcSaverError) as refused:
                await _take(saver.athreads.watch(after=old[0].cursor, reconnect=False), 1)
            assert refused.value.code == grpc.StatusCode.OUT_OF_RANGE
            assert "retention" in str(refused.value)
    finally:
        assert server.stop() == 0, "".join(server.log)


async def test_a_live_watcher_gets_what_comes_after_every_event_expired(
    own_database: str,
) -> None:
    """Once every event is past the retention, the newest stays: SQLite numbers new events after
    the greatest left, and numbers below an open watcher's cursor would never reach it."""
    server = ServerProcess.start(
        own_database, "--event-retention-seconds", "1", "--sweep-interval-seconds", "0.2"
    )
    try:
        async with GrpcSaver.from_conn_string(f"grpc://{server.target}", namespace="ns") as saver:
            await _put(saver, "a")
            await _put(saver, "b")
            watch = saver.athreads.watch()  # from now on
            live = asyncio.ensure_future(_take(watch, 3))
            await asyncio.sleep(2.5)  # every event is past the retention, and swept
            await _put(saver, "c")
            assert _kinds(await live) == [
                ("thread_created", "c"),
                ("checkpoint_added", "c"),
                ("writes_added", "c"),
            ]
    finally:
        assert server.stop() == 0, "".join(server.log)


async def test_an_event_stamped_ahead_does_not_hold_back_the_sweep(own_database: str) -> None:
    """A replica whose clock runs a day ahead stamped one event: the expired events after it
    are deleted all the same."""
    database = await open_database(own_database)
    try:
        now = datetime.now(UTC)

        def event(thread_id: str, time: datetime) -> dict[str, Any]:
            return {"xid": 0, "namespace": "ns", "thread_id": thread_id, "kind": "x", "time": time}

        month_ago = now - timedelta(days=30)
        rows = [event("old", month_ago), event("ahead", now + timedelta(days=1))]
        rows += [event(f"old-{i}", month_ago) for i in range(100)] + [event("new", now)]
        async with database.write() as conn:
            await conn.execute(insert(EventRow), rows)
        await ThreadCatalog(database).prune_events(7 * 24 * 3600)
        async with database.read() as conn:
            left = (await conn.execute(select(EventRow.thread_id).order_by(EventRow.seq))).all()
        assert [row.thread_id for row in left] == ["new"]
    finally:
        await database.dispose()
