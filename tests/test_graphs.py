"""Real LangGraph graphs checkpointed through GrpcSaver: sync and async, on both databases.

Each test drives a compiled graph through ``Driver``, which calls either the sync API (in a
worker thread, as a sync program would) or the async API of the same graph, so one test body
covers ``invoke`` and ``ainvoke``.
"""

from __future__ import annotations

import asyncio
import operator
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypedDict

import psycopg
import pytest
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, Durability, StateSnapshot, interrupt

from langgraph.checkpoint.grpc import GrpcSaver
from tests.conftest import ServerProcess

Mode = Literal["sync", "async"]
Graph = CompiledStateGraph[Any, Any, Any, Any]


# --- states and graph builders ----------------------------------------------------------


class Chat(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


class Flow(TypedDict, total=False):
    log: Annotated[list[str], operator.add]
    draft: str
    answer: str


class Answer(TypedDict):
    answer: str


def chat_graph(saver: GrpcSaver) -> Graph:
    """START -> reply -> END; the reply numbers the turn and echoes the last message."""

    def reply(state: Chat) -> Chat:
        turn = sum(isinstance(m, HumanMessage) for m in state["messages"])
        return {"messages": [AIMessage(f"turn {turn}: {state['messages'][-1].content}")]}

    builder = StateGraph(Chat)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    builder.add_edge("reply", END)
    return builder.compile(checkpointer=saver)


def _logger(name: str, calls: Counter[str]) -> Any:
    """A node that counts its calls and logs its name, with the draft it saw if any."""

    def node(state: Flow) -> Flow:
        calls[name] += 1
        draft = state.get("draft")
        return {"log": [f"{name}:{draft}" if draft else name]}

    return node


def pipeline_graph(
    saver: GrpcSaver, calls: Counter[str], *, interrupt_before: list[str] | None = None
) -> Graph:
    """START -> a -> b -> c -> END, each node logging into ``log``."""
    builder = StateGraph(Flow)
    previous = START
    for name in ("a", "b", "c"):
        builder.add_node(name, _logger(name, calls))
        builder.add_edge(previous, name)
        previous = name
    builder.add_edge(previous, END)
    return builder.compile(checkpointer=saver, interrupt_before=interrupt_before)


def _ask(calls: Counter[str]) -> Any:
    """A node that asks a human through ``interrupt()`` and stores the answer."""

    def ask(state: Flow) -> Flow:
        calls["ask"] += 1
        answer = interrupt({"question": f"approve {state['log']}?"})
        return {"answer": answer, "log": ["ask"]}

    return ask


def ask_graph(saver: GrpcSaver, calls: Counter[str]) -> Graph:
    """START -> prepare -> ask (interrupts) -> END."""
    builder = StateGraph(Flow)
    builder.add_node("prepare", _logger("prepare", calls))
    builder.add_node("ask", _ask(calls))
    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", "ask")
    builder.add_edge("ask", END)
    return builder.compile(checkpointer=saver)


def parent_graph(saver: GrpcSaver, calls: Counter[str]) -> Graph:
    """START -> intro -> sub -> outro -> END, where sub is a graph that interrupts in ask.

    The subgraph hands back only its answer, so its own log stays inside it.
    """
    sub = StateGraph(Flow, output_schema=Answer)
    sub.add_node("ask", _ask(calls))
    sub.add_edge(START, "ask")
    sub.add_edge("ask", END)

    builder = StateGraph(Flow)
    builder.add_node("intro", _logger("intro", calls))
    builder.add_node("sub", sub.compile())
    builder.add_node("outro", _logger("outro", calls))
    builder.add_edge(START, "intro")
    builder.add_edge("intro", "sub")
    builder.add_edge("sub", "outro")
    builder.add_edge("outro", END)
    return builder.compile(checkpointer=saver)


class FlakyError(Exception):
    """What the flaky branch raises on its first attempt."""


@dataclass
class FanOut:
    """The per-test bookkeeping of ``fanout_graph``."""

    calls: Counter[str] = field(default_factory=Counter)
    finished: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))


def fanout_graph(saver: GrpcSaver, fan: FanOut) -> Graph:
    """START -> fork -> (ok1 | ok2 | flaky) -> join -> END.

    On its first attempt ``flaky`` waits until ok1 and ok2 have returned, then raises: the
    failure cannot cancel them, so the test decides what resuming must not re-run.
    """

    def ok(name: str) -> Any:
        def node(state: Flow) -> Flow:
            fan.calls[name] += 1
            fan.finished.release()
            return {"log": [name]}

        return node

    def flaky(state: Flow) -> Flow:
        fan.calls["flaky"] += 1
        if fan.calls["flaky"] == 1:
            for _ in range(2):
                assert fan.finished.acquire(timeout=10), "the other branches never ran"
            time.sleep(0.2)  # let the runner commit the other branches' writes first
            raise FlakyError("first attempt fails")
        return {"log": ["flaky"]}

    builder = StateGraph(Flow)
    builder.add_node("fork", _logger("fork", fan.calls))
    builder.add_node("ok1", ok("ok1"))
    builder.add_node("ok2", ok("ok2"))
    builder.add_node("flaky", flaky)
    builder.add_node("join", _logger("join", fan.calls))
    builder.add_edge(START, "fork")
    for branch in ("ok1", "ok2", "flaky"):
        builder.add_edge("fork", branch)
    builder.add_edge(["ok1", "ok2", "flaky"], "join")
    builder.add_edge("join", END)
    return builder.compile(checkpointer=saver)


# --- driving a graph sync or async --------------------------------------------------------


@dataclass
class Driver:
    """Calls the sync API of ``graph`` in a worker thread, or its async API."""

    graph: Graph
    mode: Mode

    async def invoke(
        self, input: Any, config: RunnableConfig, *, durability: Durability | None = None
    ) -> Any:
        if self.mode == "async":
            return await self.graph.ainvoke(input, config, durability=durability)
        return await asyncio.to_thread(
            lambda: self.graph.invoke(input, config, durability=durability)
        )

    async def get_state(self, config: RunnableConfig, *, subgraphs: bool = False) -> StateSnapshot:
        if self.mode == "async":
            return await self.graph.aget_state(config, subgraphs=subgraphs)
        return await asyncio.to_thread(self.graph.get_state, config, subgraphs=subgraphs)

    async def update_state(self, config: RunnableConfig, values: Any) -> RunnableConfig:
        if self.mode == "async":
            return await self.graph.aupdate_state(config, values)
        return await asyncio.to_thread(self.graph.update_state, config, values)

    async def history(self, config: RunnableConfig) -> list[StateSnapshot]:
        if self.mode == "async":
            return [s async for s in self.graph.aget_state_history(config)]
        return await asyncio.to_thread(lambda: list(self.graph.get_state_history(config)))


def thread(thread_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id}}


def checkpoint_id(config: RunnableConfig) -> str:
    value: str = config["configurable"]["checkpoint_id"]
    return value


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> Mode:
    value: Mode = request.param
    return value


@pytest.fixture
async def saver(server: ServerProcess, namespace: str) -> AsyncIterator[GrpcSaver]:
    saver = GrpcSaver(server.target, namespace=namespace)
    yield saver
    await saver.aclose()


# --- 1. memory per thread -----------------------------------------------------------------


async def test_messages_accumulate_per_thread(saver: GrpcSaver, mode: Mode) -> None:
    run = Driver(chat_graph(saver), mode)

    await run.invoke({"messages": [HumanMessage("hello")]}, thread("A"))
    result = await run.invoke({"messages": [HumanMessage("again")]}, thread("A"))
    other = await run.invoke({"messages": [HumanMessage("hi from B")]}, thread("B"))

    assert [m.content for m in result["messages"]] == [
        "hello",
        "turn 1: hello",
        "again",
        "turn 2: again",
    ]
    assert [m.content for m in other["messages"]] == ["hi from B", "turn 1: hi from B"]
    stored = await run.get_state(thread("A"))
    assert [type(m) for m in stored.values["messages"]] == [HumanMessage, AIMessage] * 2
    assert stored.values["messages"] == result["messages"]
    assert stored.next == ()


# --- 2. interrupt_before + update_state ---------------------------------------------------


async def test_interrupt_before_update_state_and_resume(saver: GrpcSaver, mode: Mode) -> None:
    calls: Counter[str] = Counter()
    run = Driver(pipeline_graph(saver, calls, interrupt_before=["b"]), mode)
    config = thread("T")

    paused = await run.invoke({"log": ["start"]}, config)
    assert paused["log"] == ["start", "a"]
    before = await run.get_state(config)
    assert before.next == ("b",)
    assert calls == {"a": 1}

    updated = await run.update_state(config, {"draft": "approved", "log": ["human"]})
    assert checkpoint_id(updated) != checkpoint_id(before.config)
    after_update = await run.get_state(config)
    assert after_update.next == ("b",)
    assert after_update.values == {"log": ["start", "a", "human"], "draft": "approved"}

    final = await run.invoke(None, config)
    assert final == {
        "log": ["start", "a", "human", "b:approved", "c:approved"],
        "draft": "approved",
    }
    assert calls == {"a": 1, "b": 1, "c": 1}
    assert (await run.get_state(config)).next == ()


# --- 3. interrupt() + Command(resume=...) -------------------------------------------------


async def test_interrupt_and_resume_with_command(saver: GrpcSaver, mode: Mode) -> None:
    calls: Counter[str] = Counter()
    run = Driver(ask_graph(saver, calls), mode)
    config = thread("T")

    paused = await run.invoke({"log": ["start"]}, config)
    assert [i.value for i in paused["__interrupt__"]] == [
        {"question": "approve ['start', 'prepare']?"}
    ]

    pending = await run.get_state(config)
    assert pending.next == ("ask",)
    assert [t.name for t in pending.tasks] == ["ask"]
    (interrupt_,) = pending.tasks[0].interrupts
    assert interrupt_.value == {"question": "approve ['start', 'prepare']?"}
    assert [i.id for i in pending.interrupts] == [interrupt_.id]
    assert "answer" not in pending.values

    final = await run.invoke(Command(resume="yes, ship it"), config)
    assert final == {"log": ["start", "prepare", "ask"], "answer": "yes, ship it"}
    done = await run.get_state(config)
    assert done.next == ()
    assert done.interrupts == ()
    assert done.values["answer"] == "yes, ship it"
    # The interrupted node runs again from its start when resumed; prepare does not.
    assert calls == {"prepare": 1, "ask": 2}


# --- 4. history, replay and fork ----------------------------------------------------------


def lineage(history: list[StateSnapshot], head: StateSnapshot) -> list[str]:
    """The checkpoint IDs from ``head`` back to the first, following parent configs."""
    by_id = {checkpoint_id(s.config): s for s in history}
    ids = [checkpoint_id(head.config)]
    while (parent := by_id[ids[-1]].parent_config) is not None:
        ids.append(checkpoint_id(parent))
    return ids


async def test_history_replay_and_fork(saver: GrpcSaver, mode: Mode) -> None:
    calls: Counter[str] = Counter()
    run = Driver(pipeline_graph(saver, calls), mode)
    config = thread("T")

    final = await run.invoke({"log": ["start"]}, config)
    assert final == {"log": ["start", "a", "b", "c"]}

    history = await run.history(config)
    steps = [s.metadata["step"] for s in history if s.metadata is not None]
    assert steps == [3, 2, 1, 0, -1]
    assert all(type(step) is int for step in steps)
    assert [s.next for s in history] == [(), ("c",), ("b",), ("a",), ("__start__",)]
    assert [s.values for s in history] == [
        final,
        {"log": ["start", "a", "b"]},
        {"log": ["start", "a"]},
        {"log": ["start"]},
        {"log": []},
    ]
    original_ids = [checkpoint_id(s.config) for s in history]
    assert lineage(history, history[0]) == original_ids
    before_b = history[2]

    # Replay from the checkpoint before b: LangGraph forks it, then b and c run again.
    replayed = await run.invoke(None, before_b.config)
    assert replayed == final
    assert calls == {"a": 1, "b": 2, "c": 2}
    history = await run.history(config)
    assert len(history) == 8
    assert [s.metadata["source"] for s in history[:3] if s.metadata] == ["loop", "loop", "fork"]
    assert lineage(history, history[0])[3:] == original_ids[2:]

    # Fork from the same checkpoint with an edit: a third branch, the others stay.
    fork_config = await run.update_state(before_b.config, {"draft": "forked"})
    forked = await run.invoke(None, fork_config)
    assert forked == {"log": ["start", "a", "b:forked", "c:forked"], "draft": "forked"}
    assert calls == {"a": 1, "b": 3, "c": 3}

    history = await run.history(config)
    assert len(history) == 11
    assert history[0].values == forked
    assert (await run.get_state(config)).values == forked
    fork_lineage = lineage(history, history[0])
    assert fork_lineage[2] == checkpoint_id(fork_config)
    assert fork_lineage[3:] == original_ids[2:]
    # The first run's checkpoints are all still there and still read the same.
    assert set(original_ids) <= {checkpoint_id(s.config) for s in history}
    assert (await run.get_state(history[-1].config)).values == {"log": []}
    original_end = await run.get_state(
        {"configurable": {**config["configurable"], "checkpoint_id": original_ids[0]}}
    )
    assert original_end.values == final
    assert original_end.next == ()


# --- 5. subgraphs -------------------------------------------------------------------------


async def test_interrupt_inside_subgraph(saver: GrpcSaver, mode: Mode) -> None:
    calls: Counter[str] = Counter()
    run = Driver(parent_graph(saver, calls), mode)
    config = thread("T")

    paused = await run.invoke({"log": ["start"]}, config)
    assert [i.value for i in paused["__interrupt__"]] == [
        {"question": "approve ['start', 'intro']?"}
    ]

    state = await run.get_state(config, subgraphs=True)
    assert state.next == ("sub",)
    (task,) = state.tasks
    assert task.name == "sub"
    assert isinstance(task.state, StateSnapshot)
    sub_state = task.state
    assert sub_state.values == {"log": ["start", "intro"]}
    assert sub_state.next == ("ask",)
    assert sub_state.config["configurable"]["checkpoint_ns"].startswith("sub:")
    (sub_task,) = sub_state.tasks
    assert [i.value for i in sub_task.interrupts] == [{"question": "approve ['start', 'intro']?"}]
    # Without subgraphs=True the task only points at the subgraph's config.
    shallow = await run.get_state(config)
    assert not isinstance(shallow.tasks[0].state, StateSnapshot)

    final = await run.invoke(Command(resume="ok"), config)
    assert final == {"log": ["start", "intro", "outro"], "answer": "ok"}
    assert calls == {"intro": 1, "ask": 2, "outro": 1}
    done = await run.get_state(config, subgraphs=True)
    assert done.next == ()
    assert done.tasks == ()


# --- 6. a failing branch in a parallel super-step -----------------------------------------


async def test_failed_branch_resumes_without_rerunning_the_others(
    saver: GrpcSaver, mode: Mode
) -> None:
    fan = FanOut()
    run = Driver(fanout_graph(saver, fan), mode)
    config = thread("T")

    with pytest.raises(FlakyError):
        await run.invoke({"log": ["start"]}, config)
    assert fan.calls == {"fork": 1, "ok1": 1, "ok2": 1, "flaky": 1}

    # The writes of ok1 and ok2 were saved: only flaky is left, with its error recorded.
    failed = await run.get_state(config)
    assert failed.next == ("flaky",)
    assert sorted(failed.values["log"]) == ["fork", "ok1", "ok2", "start"]
    tasks = {t.name: t for t in failed.tasks}
    assert tasks["ok1"].result == {"log": ["ok1"]}
    assert tasks["ok2"].result == {"log": ["ok2"]}
    assert tasks["flaky"].result is None
    assert "first attempt fails" in str(tasks["flaky"].error)

    final = await run.invoke(None, config)
    assert final["log"][:2] == ["start", "fork"]
    assert sorted(final["log"][2:5]) == ["flaky", "ok1", "ok2"]
    assert final["log"][5:] == ["join"]
    assert fan.calls == {"fork": 1, "ok1": 1, "ok2": 1, "flaky": 2, "join": 1}
    assert (await run.get_state(config)).next == ()


# --- 7. durability modes ------------------------------------------------------------------


async def test_durability_modes_persist_the_final_state(
    server: ServerProcess, namespace: str, saver: GrpcSaver, mode: Mode
) -> None:
    calls: Counter[str] = Counter()
    run = Driver(pipeline_graph(saver, calls), mode)
    durabilities: tuple[Durability, ...] = ("sync", "async", "exit")
    for durability in durabilities:
        result = await run.invoke({"log": [durability]}, thread(durability), durability=durability)
        assert result == {"log": [durability, "a", "b", "c"]}

    # A saver of its own reads what each run left on the server.
    async with GrpcSaver.from_conn_string(server.target, namespace=namespace) as reader:
        check = Driver(pipeline_graph(reader, Counter()), mode)
        counts: dict[str, int] = {}
        for durability in durabilities:
            state = await check.get_state(thread(durability))
            assert state.values == {"log": [durability, "a", "b", "c"]}
            assert state.next == ()
            counts[durability] = len(await check.history(thread(durability)))
    # "exit" saves only the last checkpoint; the other two save every step.
    assert counts == {"sync": 5, "async": 5, "exit": 1}


# --- 8. one saver for invoke and ainvoke --------------------------------------------------


async def test_one_saver_serves_invoke_and_ainvoke_on_one_thread(saver: GrpcSaver) -> None:
    graph = chat_graph(saver)
    config = thread("T")

    await asyncio.to_thread(graph.invoke, {"messages": [HumanMessage("one")]}, config)
    await graph.ainvoke({"messages": [HumanMessage("two")]}, config)
    result = await asyncio.to_thread(graph.invoke, {"messages": [HumanMessage("three")]}, config)

    expected = ["one", "turn 1: one", "two", "turn 2: two", "three", "turn 3: three"]
    assert [m.content for m in result["messages"]] == expected
    sync_state = await asyncio.to_thread(graph.get_state, config)
    async_state = await graph.aget_state(config)
    assert sync_state == async_state
    sync_history = await asyncio.to_thread(lambda: list(graph.get_state_history(config)))
    async_history = [s async for s in graph.aget_state_history(config)]
    assert sync_history == async_history
    # Each of the three runs saved its input, the step running reply, and the end, in one
    # sequence of steps whichever API wrote them.
    metadata = [s.metadata for s in sync_history if s.metadata is not None]
    assert [m["step"] for m in metadata] == list(range(7, -2, -1))
    assert [m["source"] for m in metadata] == ["loop", "loop", "input"] * 3


# --- 9. encryption: the server only stores ciphertext -------------------------------------


KEY = b"0123456789abcdef"


# Rows are stored under their thread's key; the thread row holds the namespace.
_NAMESPACE_ROWS = (
    'SELECT r.{column} FROM {table} AS r JOIN threads AS t ON t."key" = r.thread_key '
    "WHERE t.namespace = ?"
)


def stored_values(database_url: str, namespace: str) -> dict[str, list[bytes]]:
    """The serialized columns of a namespace, read straight from the server's database."""
    columns = {
        "checkpoints": "checkpoint",
        "checkpoint_blobs": "blob",
        "checkpoint_writes": "blob",
    }
    found: dict[str, list[bytes]] = {}
    if database_url.startswith("sqlite:///"):
        path = database_url.removeprefix("sqlite:///")
        with closing(sqlite3.connect(path)) as conn:
            for table, column in columns.items():
                rows = conn.execute(
                    _NAMESPACE_ROWS.format(column=column, table=table), (namespace,)
                )
                found[table] = [bytes(row[0]) for row in rows]
    else:
        with psycopg.connect(database_url) as conn:
            for table, column in columns.items():
                query = _NAMESPACE_ROWS.format(column=column, table=table).replace("?", "%s")
                cursor = conn.execute(query, (namespace,))
                found[table] = [bytes(row[0]) for row in cursor]
    return found


def _contains(values: dict[str, list[bytes]], needle: bytes) -> dict[str, bool]:
    return {table: any(needle in blob for blob in blobs) for table, blobs in values.items()}


async def test_encrypted_serde_stores_only_ciphertext(
    server: ServerProcess, namespace: str, mode: Mode
) -> None:
    secret = f"top-secret-{namespace}"
    expected = {"log": ["start", "a:" + secret, "b:" + secret, "c:" + secret], "draft": secret}
    serde = EncryptedSerializer.from_pycryptodome_aes(key=KEY)
    plain_namespace = namespace + "-plain"

    async with (
        GrpcSaver.from_conn_string(server.target, namespace=namespace, serde=serde) as saver,
        GrpcSaver.from_conn_string(server.target, namespace=plain_namespace) as plain,
    ):
        run = Driver(pipeline_graph(saver, Counter()), mode)
        assert await run.invoke({"log": ["start"], "draft": secret}, thread("T")) == expected
        assert (await run.get_state(thread("T"))).values == expected

        # The same run without encryption, as a control that the check below can see plaintext.
        control = Driver(pipeline_graph(plain, Counter()), mode)
        assert await control.invoke({"log": ["start"], "draft": secret}, thread("T")) == expected

        encrypted_rows = stored_values(server.database_url, namespace)
        plain_rows = stored_values(server.database_url, plain_namespace)
        assert all(encrypted_rows.values()), {t: len(r) for t, r in encrypted_rows.items()}
        assert _contains(plain_rows, secret.encode())["checkpoint_blobs"]
        assert _contains(plain_rows, secret.encode())["checkpoint_writes"]
        assert _contains(encrypted_rows, secret.encode()) == dict.fromkeys(encrypted_rows, False)

        # A saver without the key, in the encrypted namespace, cannot read the thread.
        async with GrpcSaver.from_conn_string(server.target, namespace=namespace) as keyless:
            with pytest.raises(NotImplementedError, match=r"msgpack\+aes"):
                await Driver(pipeline_graph(keyless, Counter()), mode).get_state(thread("T"))
        wrong_key = EncryptedSerializer.from_pycryptodome_aes(key=b"fedcba9876543210")
        async with GrpcSaver.from_conn_string(
            server.target, namespace=namespace, serde=wrong_key
        ) as wrong:
            with pytest.raises(ValueError, match="MAC check failed"):
                await Driver(pipeline_graph(wrong, Counter()), mode).get_state(thread("T"))
