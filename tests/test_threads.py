"""The thread catalog: create, get, update, search, count, copy, prune, TTL, on both databases."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, TypedDict

import grpc
import psycopg
import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt
from sqlalchemy import update

from checkpoint_server.storage.database import open_database
from checkpoint_server.storage.models import ThreadRow
from langgraph.checkpoint.grpc import GrpcSaver, GrpcSaverError
from tests.conftest import ServerProcess, postgres_database
from tests.test_service import config, put_chain


@pytest.fixture
def saver(server: ServerProcess, namespace: str) -> Iterator[GrpcSaver]:
    with GrpcSaver.from_conn_string(f"grpc://{server.target}", namespace=namespace) as saver:
        yield saver


def _append(left: list[str], right: list[str]) -> list[str]:
    return left + right


class State(TypedDict):
    log: Annotated[list[str], _append]


FAILURES: dict[str, int] = {}


def _graph(saver: GrpcSaver) -> Any:
    def ask(state: State) -> dict[str, Any]:
        return {"log": [f"answer:{interrupt('approve?')}"]}

    def fragile(state: State) -> dict[str, Any]:
        key = state["log"][0]
        if FAILURES.get(key, 0) < 1:
            FAILURES[key] = FAILURES.get(key, 0) + 1
            raise RuntimeError("first attempt fails")
        return {"log": ["fragile:ok"]}

    builder = StateGraph(State)
    builder.add_node("ask", ask)
    builder.add_node("fragile", fragile)
    builder.add_conditional_edges(START, lambda s: "fragile" if "fail" in s["log"][0] else "ask")
    builder.add_edge("ask", END)
    builder.add_edge("fragile", END)
    return builder.compile(checkpointer=saver)


def test_a_thread_exists_from_its_first_checkpoint(saver: GrpcSaver) -> None:
    latest = put_chain(saver, "t", 3)[-1]
    saver.put_writes(latest, [("value", "w")], "task")
    thread = saver.threads.get("t")
    assert thread.thread_id == "t"
    assert thread.metadata == {}
    assert thread.status == "idle"
    assert thread.latest_checkpoint_id == latest["configurable"]["checkpoint_id"]
    assert thread.checkpoint_count == 3
    assert (thread.values_bytes or 0) > 0
    assert (thread.writes_bytes or 0) > 0
    assert thread.created_at <= thread.updated_at <= datetime.now(UTC)
    basic = saver.threads.get("t", full=False)
    assert basic.checkpoint_count is None


def test_create_get_update(saver: GrpcSaver) -> None:
    created = saver.threads.create("c", metadata={"user": "ada", "tier": 1})
    assert created.metadata == {"user": "ada", "tier": 1}
    with pytest.raises(GrpcSaverError) as exists:
        saver.threads.create("c")
    assert exists.value.code == grpc.StatusCode.ALREADY_EXISTS
    again = saver.threads.create("c", metadata={"other": 1}, if_exists="do_nothing")
    assert again.metadata == {"user": "ada", "tier": 1}
    generated = saver.threads.create()
    assert uuid.UUID(generated.thread_id)

    updated = saver.threads.update("c", metadata={"tier": 2, "plan": "pro"})
    assert updated.metadata == {"user": "ada", "tier": 2, "plan": "pro"}
    assert updated.updated_at > created.updated_at
    with pytest.raises(GrpcSaverError) as missing:
        saver.threads.get("nope")
    assert missing.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(GrpcSaverError) as missing_update:
        saver.threads.update("nope", metadata={"a": 1})
    assert missing_update.value.code == grpc.StatusCode.NOT_FOUND


async def test_status_follows_interrupts_and_errors(saver: GrpcSaver) -> None:
    graph = _graph(saver)
    asking = config("asking")
    await graph.ainvoke({"log": ["hello"]}, asking)
    assert (await saver.athreads.get("asking")).status == "interrupted"
    await graph.ainvoke(Command(resume="yes"), asking)
    assert (await saver.athreads.get("asking")).status == "idle"

    failing = config("failing")
    key = f"fail-{uuid.uuid4().hex}"
    with pytest.raises(RuntimeError):
        await graph.ainvoke({"log": [key]}, failing)
    assert (await saver.athreads.get("failing")).status == "error"
    assert [t.thread_id for t in (await saver.athreads.search(status="error")).threads] == [
        "failing"
    ]
    await graph.ainvoke(None, failing)
    assert (await saver.athreads.get("failing")).status == "idle"


def test_search_filters_sorts_and_counts(saver: GrpcSaver) -> None:
    for index, team in enumerate(["red", "blue", "red", "green", "red"]):
        saver.threads.create(f"t{index}", metadata={"team": team, "n": index})
    red = saver.threads.search(metadata={"team": "red"}, sort_by="thread_id", sort_order="asc")
    assert [t.thread_id for t in red.threads] == ["t0", "t2", "t4"]
    assert saver.threads.count(metadata={"team": "red"}) == 3
    assert saver.threads.count() == 5
    newest = saver.threads.search(sort_by="created_at", limit=2)
    assert [t.thread_id for t in newest.threads] == ["t4", "t3"]
    oldest = saver.threads.search(sort_by="created_at", sort_order="asc", limit=1)
    assert [t.thread_id for t in oldest.threads] == ["t0"]
    middle = saver.threads.get("t2").created_at
    assert saver.threads.count(created_after=middle) == 3
    assert saver.threads.count(created_before=middle) == 2
    put_chain(saver, "t1", 1)  # t1 is now the most recently updated
    assert saver.threads.search(limit=1).threads[0].thread_id == "t1"
    assert saver.threads.count(updated_after=saver.threads.get("t1").updated_at) == 1
    full = saver.threads.search(full=True, metadata={"n": 1}).threads
    assert [t.checkpoint_count for t in full] == [1]


def test_search_pages_are_stable_while_threads_are_written(saver: GrpcSaver) -> None:
    for index in range(12):
        saver.threads.create(f"p{index:02}")
    seen: list[str] = []
    page = saver.threads.search(limit=5)
    seen += [t.thread_id for t in page.threads]
    # Writes during the listing: an unseen thread and a seen one jump to the front.
    put_chain(saver, "p00", 1)
    put_chain(saver, seen[0], 1)
    saver.threads.create("late")
    while page.next_page_token:
        page = saver.threads.search(limit=5, page_token=page.next_page_token)
        seen += [t.thread_id for t in page.threads]
    assert len(seen) == len(set(seen)), "a thread appeared twice"
    assert "late" not in seen
    assert set(seen) <= {f"p{i:02}" for i in range(12)}
    first = saver.threads.search(limit=2)
    with pytest.raises(GrpcSaverError) as mixed:
        saver.threads.search(limit=2, sort_by="thread_id", page_token=first.next_page_token)
    assert mixed.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_search_by_update_time_pages_through_every_minute(
    server: ServerProcess, database_url: str, namespace: str
) -> None:
    """Threads updated in one minute and in different ones: every page of the update-time
    order, both ways, follows the exact times, though the index holds only their minutes."""
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    offsets = [0, 1.5, 59.999, 60, 60, 61, 119, 180, 3000]  # seconds after a whole minute
    ids = [f"m{i}" for i in range(len(offsets))]
    async with GrpcSaver.from_conn_string(f"grpc://{server.target}", namespace=namespace) as saver:
        for thread_id in ids:
            await saver.athreads.create(thread_id)
        database = await open_database(database_url)
        try:
            async with database.write() as conn:
                for thread_id, offset in zip(ids, offsets, strict=True):
                    await conn.execute(
                        update(ThreadRow)
                        .where(ThreadRow.namespace == namespace, ThreadRow.thread_id == thread_id)
                        .values(update_time=start + timedelta(seconds=offset))
                    )
        finally:
            await database.dispose()
        ascending = [thread_id for _, thread_id in sorted(zip(offsets, ids, strict=True))]
        orders: list[tuple[Literal["asc", "desc"], list[str]]] = [
            ("asc", ascending),
            ("desc", ascending[::-1]),
        ]
        for order, expected in orders:
            seen: list[str] = []
            token = None
            while True:
                page = await saver.athreads.search(
                    sort_by="updated_at", sort_order=order, limit=2, page_token=token
                )
                seen += [t.thread_id for t in page.threads]
                token = page.next_page_token
                if not token:
                    break
            assert seen == expected, order


async def test_a_threads_puts_update_its_row_in_place(postgres_url: str) -> None:
    """PostgreSQL: a thread's puts within a minute change none of its row's indexed columns,
    so each updates the row in place (HOT), adding no index entries. PostgreSQL only: SQLite
    has no such updates."""
    with postgres_database("lgcp_hot") as url:
        server = ServerProcess.start(url)
        try:
            async with GrpcSaver.from_conn_string(f"grpc://{server.target}") as saver:
                await saver.athreads.create("t")  # the insert, before the updates counted
                if time.time() % 60 > 50:  # all within one minute: a new minute moves the row
                    await asyncio.sleep(61 - time.time() % 60)
                puts = 20
                stored = await saver.aput(config("t"), empty_checkpoint(), {"step": 0}, {})
                for step in range(1, puts):
                    checkpoint = empty_checkpoint()
                    stored = await saver.aput(stored, checkpoint, {"step": step}, {})
        finally:
            assert server.stop() == 0, "".join(server.log)
        # The server's backends report their counts within seconds of going idle.
        with psycopg.connect(url, autocommit=True) as conn:
            deadline = time.monotonic() + 30
            while True:
                counts = conn.execute(
                    "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                    "WHERE relname = 'threads'"
                ).fetchone()
                assert counts is not None
                updated, hot = counts
                if updated >= puts or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
    assert updated >= puts
    assert hot >= updated - 1, f"{hot} of {updated} updates of the thread's row were HOT"


def test_copy_prune_delete(saver: GrpcSaver) -> None:
    put_chain(saver, "source", 4)
    saver.threads.update("source", metadata={"owner": "ada"})
    copied = saver.threads.copy("source")
    assert saver.threads.get(copied).metadata == {"owner": "ada"}
    assert saver.threads.get(copied).checkpoint_count == 4
    named = saver.threads.copy("source", target_thread_id="named", metadata={"owner": "bob"})
    assert named == "named"
    assert saver.threads.get("named").metadata == {"owner": "bob"}
    assert saver.threads.get("named").latest_checkpoint_id == (
        saver.threads.get("source").latest_checkpoint_id
    )
    with pytest.raises(GrpcSaverError) as missing:
        saver.threads.copy("nope")
    assert missing.value.code == grpc.StatusCode.NOT_FOUND

    saver.threads.prune(["source", copied], strategy="keep_latest")
    assert saver.threads.get("source").checkpoint_count == 1
    saver.threads.prune([copied], strategy="delete")
    saver.threads.delete("named")
    assert {t.thread_id for t in saver.threads.search().threads} == {"source"}


def test_every_catalog_operation_stays_in_its_namespace(server: ServerProcess) -> None:
    suffix = uuid.uuid4().hex[:8]
    target = f"grpc://{server.target}"
    with (
        GrpcSaver.from_conn_string(target, namespace=f"a-{suffix}") as a,
        GrpcSaver.from_conn_string(target, namespace=f"b-{suffix}") as b,
    ):
        b.threads.create("shared", metadata={"owner": "b"})
        put_chain(b, "shared", 2)
        a.threads.create("shared", metadata={"owner": "a"})
        a.threads.update("shared", metadata={"changed": True})
        a.threads.copy("shared", target_thread_id="copy")
        a.threads.prune(["shared"], strategy="delete")
        assert a.threads.count() == 1
        assert b.threads.count() == 1
        assert b.threads.get("shared").metadata == {"owner": "b"}
        assert b.threads.get("shared").checkpoint_count == 2
        assert [t.thread_id for t in b.threads.search().threads] == ["shared"]
        with pytest.raises(GrpcSaverError):
            b.threads.get("copy")


def _ttl_servers(database_url: str, count: int, *extra: str) -> list[ServerProcess]:
    return [
        ServerProcess.start(database_url, "--sweep-interval-seconds", "0.2", *extra)
        for _ in range(count)
    ]


def _swept(server: ServerProcess) -> int:
    found = (re.search(r"time to live of (\d+) threads", line) for line in server.log)
    return sum(int(m.group(1)) for m in found if m)


async def _eventually(check: Any, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_ttl_is_swept_once_by_two_servers(own_database: str) -> None:
    servers = _ttl_servers(own_database, 2 if "postgresql" in own_database else 1)
    try:
        async with (
            GrpcSaver.from_conn_string(f"grpc://{servers[0].target}") as first,
            GrpcSaver.from_conn_string(f"grpc://{servers[-1].target}") as last,
        ):
            short = timedelta(seconds=1)
            for index in range(6):
                await first.athreads.create(f"gone{index}", ttl=short)
                await first.aput(config(f"gone{index}"), *_checkpoint())
            await first.athreads.create("kept", ttl=short, ttl_strategy="keep_latest")
            for _ in range(3):
                await first.aput(config("kept"), *_checkpoint())
            await first.athreads.create("forever")

            async def gone() -> bool:
                return await last.athreads.count() == 2

            await _eventually(gone)
            # Reads hide an expired thread at once, before (or without) the sweep.
            assert await last.aget_tuple(config("gone0")) is None
            with pytest.raises(GrpcSaverError):
                await last.athreads.get("gone0")

            async def pruned() -> bool:
                return (await last.athreads.get("kept")).checkpoint_count == 1

            await _eventually(pruned)
            assert (await last.athreads.get("kept")).expires_at is None
    finally:
        for server in servers:
            assert server.stop() == 0
    # Each expired thread was handled by exactly one server.
    assert sum(_swept(server) for server in servers) == 7


def _checkpoint() -> tuple[Any, ...]:
    from langgraph.checkpoint.base import empty_checkpoint

    return empty_checkpoint(), {"step": 0}, {}


async def test_server_default_ttl_and_its_override(own_database: str) -> None:
    (server,) = _ttl_servers(own_database, 1, "--thread-ttl-seconds", "1")
    try:
        async with GrpcSaver.from_conn_string(f"grpc://{server.target}") as saver:
            await saver.aput(config("default"), *_checkpoint())
            await saver.athreads.create("own", ttl=timedelta(hours=1))
            thread = await saver.athreads.get("default")
            assert thread.expires_at is not None
            assert thread.ttl is None

            async def expired() -> bool:
                return [t.thread_id for t in (await saver.athreads.search()).threads] == ["own"]

            await _eventually(expired)
            own = await saver.athreads.get("own")
            assert own.ttl == timedelta(hours=1)
            cleared = await saver.athreads.update("own", clear_ttl=True)
            assert cleared.ttl is None
            assert cleared.expires_at is not None  # the server's default applies again
    finally:
        assert server.stop() == 0


async def test_history_without_values_for_dashboards(saver: GrpcSaver) -> None:
    graph = _graph(saver)
    cfg = config("dash")
    await graph.ainvoke({"log": ["x" * 10_000]}, cfg)
    full = [t async for t in saver.athreads.history("dash")]
    light = [t async for t in saver.athreads.history("dash", values=False)]
    assert [t.checkpoint["id"] for t in light] == [t.checkpoint["id"] for t in full]
    assert [t.metadata["step"] for t in light] == [t.metadata["step"] for t in full]
    assert full[0].checkpoint["channel_values"]["log"] == ["x" * 10_000]
    assert all(t.checkpoint["channel_values"] == {} for t in light)
    # The pending interrupt is there; the state is not.
    assert [w[1] for w in light[0].pending_writes or []] == ["__interrupt__"]
    only_log = [t async for t in saver.athreads.history("dash", channels=["log"], limit=1)]
    assert set(only_log[0].checkpoint["channel_values"]) == {"log"}
    sync = list(saver.threads.history("dash", values=False, before=light[0].checkpoint["id"]))
    assert [t.checkpoint["id"] for t in sync] == [t.checkpoint["id"] for t in light[1:]]


async def test_recreating_an_expired_thread_drops_its_old_rows(saver: GrpcSaver) -> None:
    # The session's servers sweep once a minute: this thread expires without being swept.
    await saver.athreads.create("phoenix", ttl=timedelta(seconds=1))
    await saver.aput(config("phoenix"), *_checkpoint())
    await asyncio.sleep(1.5)
    assert await saver.aget_tuple(config("phoenix")) is None
    reborn = await saver.athreads.create("phoenix")
    assert reborn.expires_at is None
    assert (await saver.athreads.get("phoenix")).checkpoint_count == 0
    assert await saver.aget_tuple(config("phoenix")) is None


async def test_writing_to_an_expired_thread_starts_it_anew(saver: GrpcSaver) -> None:
    await saver.athreads.create("lazarus", metadata={"old": True}, ttl=timedelta(seconds=1))
    await saver.aput(config("lazarus"), *_checkpoint())
    await asyncio.sleep(1.5)
    fresh = await saver.aput(config("lazarus"), *_checkpoint())
    history = [t.checkpoint["id"] async for t in saver.alist(config("lazarus"))]
    assert history == [fresh["configurable"]["checkpoint_id"]]
    thread = await saver.athreads.get("lazarus")
    assert thread.metadata == {}
    assert thread.ttl is None
    # Writes alone do it too.
    await saver.athreads.update("lazarus", ttl=timedelta(seconds=1))
    await asyncio.sleep(1.5)
    await saver.aput_writes(fresh, [("value", 1)], "task")
    assert (await saver.athreads.get("lazarus")).checkpoint_count == 0


_ORDER_STEPS = ("parent", "child", "child's interrupt", "parent's error")


@pytest.mark.parametrize("order", list(itertools.permutations(_ORDER_STEPS)), ids=" then ".join)
def test_status_is_right_whatever_order_puts_and_writes_arrive_in(
    saver: GrpcSaver, order: tuple[str, ...]
) -> None:
    # LangGraph does not make put_writes wait for earlier puts: any order can reach the server.
    thread_id = f"order-{uuid.uuid4().hex[:8]}"
    parent, child = empty_checkpoint(), empty_checkpoint()
    assert parent["id"] < child["id"]
    steps: dict[str, Callable[[], object]] = {
        "parent": lambda: saver.put(config(thread_id), parent, {"step": 0}, {}),
        "child": lambda: saver.put(
            config(thread_id, checkpoint_id=parent["id"]), child, {"step": 1}, {}
        ),
        "child's interrupt": lambda: saver.put_writes(
            config(thread_id, checkpoint_id=child["id"]), [("__interrupt__", "approve?")], "t1"
        ),
        "parent's error": lambda: saver.put_writes(
            config(thread_id, checkpoint_id=parent["id"]), [("__error__", "boom")], "t0"
        ),
    }
    for step in order:
        steps[step]()
    thread = saver.threads.get(thread_id)
    assert (thread.status, thread.latest_checkpoint_id) == ("interrupted", child["id"])
    assert thread_id in [t.thread_id for t in saver.threads.search(status="interrupted").threads]
    assert saver.threads.count(status="idle") == 0


async def test_create_thread_racing_a_first_put_loses_nothing(
    server: ServerProcess, namespace: str
) -> None:
    """CreateThread and a thread's first put at once, again and again: the put's checkpoint is
    never lost, and CreateThread creates the thread or finds it there (ALREADY_EXISTS, as
    asked), never an internal error."""
    async with GrpcSaver.from_conn_string(f"grpc://{server.target}", namespace=namespace) as saver:

        async def create(thread_id: str) -> grpc.StatusCode:
            try:
                await saver.athreads.create(thread_id, metadata={"by": "create"})
            except GrpcSaverError as error:
                return error.code
            return grpc.StatusCode.OK

        async def race(thread_id: str) -> grpc.StatusCode:
            stored, created = await asyncio.gather(
                saver.aput(config(thread_id), empty_checkpoint(), {"step": 0}, {}),
                create(thread_id),
            )
            assert await saver.aget_tuple(stored) is not None, thread_id
            code: grpc.StatusCode = created
            return code

        codes: set[grpc.StatusCode] = set()
        for round_ in range(25):
            codes.update(await asyncio.gather(*(race(f"race-{round_}-{i}") for i in range(8))))
    assert codes <= {grpc.StatusCode.OK, grpc.StatusCode.ALREADY_EXISTS}
