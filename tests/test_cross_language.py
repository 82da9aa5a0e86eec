"""Threads shared by Python and LangGraph.js agents, through JsonSerializer, on both databases."""

from __future__ import annotations

import json
import operator
import re
import shutil
import subprocess
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Command, Interrupt, Send, interrupt

from langgraph.checkpoint.grpc import GrpcSaver, JsonSerializer
from tests.conftest import ServerProcess

CLIENT = Path(__file__).parent.parent / "typescript_client"


class Chat(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


class Fan(TypedDict, total=False):
    items: list[str]
    results: Annotated[list[str], operator.add]
    answer: str


def chat_graph(saver: GrpcSaver) -> Any:
    """The graph typescript_client/test/cross/chat.ts runs too: it numbers the human turns."""

    def reply(state: Chat) -> Chat:
        turn = sum(isinstance(m, HumanMessage) for m in state["messages"])
        return {"messages": [AIMessage(f"turn {turn}: {state['messages'][-1].content}")]}

    return StateGraph(Chat).add_node(reply).add_edge(START, "reply").compile(checkpointer=saver)


def typescript(*args: str) -> Any:
    """Runs the LangGraph.js side and returns what it printed."""
    npx = shutil.which("npx")
    assert npx is not None, "Node.js is required: see the README's TypeScript section"
    completed = subprocess.run(
        [npx, "tsx", "test/cross/chat.ts", *args],
        cwd=CLIENT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def _messages(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    return [{"type": m.type, "content": m.content, "id": m.id} for m in messages]


# --- the serializer on its own ------------------------------------------------------------


def test_messages_are_written_under_the_ids_langgraph_js_knows() -> None:
    serde = JsonSerializer()
    message = AIMessage("hi", tool_calls=[{"name": "f", "args": {"a": 1}, "id": "c1"}])
    kind, data = serde.dumps_typed({"messages": [message]})
    assert kind == "json"
    stored = json.loads(data)["messages"][0]
    assert stored["id"] == ["langchain_core", "messages", "AIMessage"]
    assert stored["kwargs"]["tool_calls"][0]["args"] == {"a": 1}


def test_values_round_trip_in_python() -> None:
    serde = JsonSerializer()
    values: list[Any] = [
        None,
        True,
        1.5,
        "é",
        b"\x00raw",
        {"nested": [1, {"a": None}]},
        [HumanMessage("h", id="1"), SystemMessage("s"), ToolMessage("t", tool_call_id="c")],
        Send("node", {"x": 1}),
        [Interrupt(value={"ask": "name?"}, id="i1")],
        {3, 1, 2},
        uuid.UUID(int=7),
        Decimal("1.10"),
    ]
    for value in values:
        assert serde.loads_typed(serde.dumps_typed(value)) == value
    # Tuples come back as lists, Command's default goto among them.
    command = serde.loads_typed(serde.dumps_typed(Command(resume="Ada", goto=("a",))))
    assert command == Command(resume="Ada", goto=["a"])


def test_what_does_not_cross_is_refused() -> None:
    serde = JsonSerializer()
    with pytest.raises(TypeError, match="datetime"):
        serde.dumps_typed({"when": __import__("datetime").datetime(2024, 1, 1)})
    with pytest.raises(ValueError, match="JSON"):
        serde.dumps_typed(float("nan"))


def test_reads_what_the_default_serializer_wrote() -> None:
    value = {"messages": [HumanMessage("old")]}
    assert JsonSerializer().loads_typed(JsonPlusSerializer().dumps_typed(value)) == value


# --- graphs through the service ------------------------------------------------------------


def test_python_graphs_run_on_json_values(server: ServerProcess, namespace: str) -> None:
    def fan_out(state: Fan) -> list[Send]:
        return [Send("work", {"items": [item]}) for item in state["items"]]

    def work(state: Fan) -> Fan:
        return {"results": [state["items"][0].upper()]}

    def ask(state: Fan) -> Fan:
        return {"answer": interrupt({"question": "ok?"})}

    with GrpcSaver.from_conn_string(
        server.target, namespace=namespace, serde=JsonSerializer()
    ) as saver:
        graph = (
            StateGraph(Fan)
            .add_node(work)
            .add_node(ask)
            .add_conditional_edges(START, fan_out, ["work"])
            .add_edge("work", "ask")
            .compile(checkpointer=saver)
        )
        config: Any = {"configurable": {"thread_id": "fan"}}
        first = graph.invoke({"items": ["a", "b"]}, config)
        assert first["__interrupt__"][0].value == {"question": "ok?"}
        done = graph.invoke(Command(resume="yes"), config)
        assert sorted(done["results"]) == ["A", "B"]
        assert done["answer"] == "yes"


def test_a_conversation_moves_between_python_and_langgraph_js(
    server: ServerProcess, namespace: str
) -> None:
    target = f"grpc://{server.target}"
    config: Any = {"configurable": {"thread_id": "chat"}}
    with GrpcSaver.from_conn_string(target, namespace=namespace, serde=JsonSerializer()) as saver:
        graph = chat_graph(saver)
        graph.invoke({"messages": [HumanMessage("hello from Python")]}, config)
        saver.threads.update("chat", metadata={"owner": "both"})

        # LangGraph.js sees the Python turn (its reply counts two human messages) and adds one.
        after_js = typescript("turn", target, namespace, "chat", "hello from TypeScript")
        assert [m["content"] for m in after_js["messages"]] == [
            "hello from Python",
            "turn 1: hello from Python",
            "hello from TypeScript",
            "turn 2: hello from TypeScript",
        ]

        # Python continues the thread LangGraph.js wrote, with real message objects.
        final = graph.invoke({"messages": [HumanMessage("back in Python")]}, config)
        messages = final["messages"]
        assert [type(m) for m in messages] == [HumanMessage, AIMessage] * 3
        assert messages[-1].content == "turn 3: back in Python"
        assert _messages(messages[:4]) == after_js["messages"]

        # Versions minted by both languages have one form and keep one order.
        oldest_first = list(reversed(list(saver.list(config))))
        latest: dict[str, str] = {}
        for stored in oldest_first:
            for channel, version in stored.checkpoint["channel_versions"].items():
                assert re.fullmatch(r"\d{16}\.[0-9a-f]{12}", str(version)), version
                assert str(version) >= latest.get(channel, ""), channel
                latest[channel] = str(version)

        # Both languages read the same state, history, thread and feed.
        seen = typescript("read", target, namespace, "chat")
        assert seen["messages"] == _messages(graph.get_state(config).values["messages"])
        history = [
            {
                "checkpoint_id": t.config["configurable"]["checkpoint_id"],
                "parent_checkpoint_id": (t.parent_config or {})
                .get("configurable", {})
                .get("checkpoint_id"),
                "step": t.metadata["step"],
                "source": t.metadata["source"],
            }
            for t in saver.threads.history("chat", values=False)
        ]
        assert seen["history"] == history
        assert len(history) == 9
        thread = saver.threads.get("chat")
        assert seen["thread"] == {
            "status": thread.status,
            "metadata": thread.metadata,
            "latest_checkpoint_id": thread.latest_checkpoint_id,
        }
        assert thread.metadata == {"owner": "both"}
        events = []
        for event in saver.threads.watch("chat", from_beginning=True):
            events.append(
                {"cursor": event.cursor, "kind": event.kind, "checkpoint_id": event.checkpoint_id}
            )
            if (
                event.kind == "checkpoint_added"
                and event.checkpoint_id == history[0]["checkpoint_id"]
            ):
                break
        assert seen["events"] == events


def test_a_langgraph_js_thread_is_unreadable_with_the_default_python_serializer(
    server: ServerProcess, namespace: str
) -> None:
    # Why the serializer exists: Python's default writes msgpack, which LangGraph.js refuses.
    target = f"grpc://{server.target}"
    with GrpcSaver.from_conn_string(target, namespace=namespace) as saver:
        chat_graph(saver).invoke(
            {"messages": [HumanMessage("msgpack")]}, {"configurable": {"thread_id": "mp"}}
        )
    npx = shutil.which("npx")
    assert npx is not None
    completed = subprocess.run(
        [npx, "tsx", "test/cross/chat.ts", "turn", target, namespace, "mp", "hi"],
        cwd=CLIENT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode != 0
    assert "msgpack" in completed.stderr
