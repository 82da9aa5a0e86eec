"""Measurement 1: a LangGraph graph with a growing ``messages`` channel and an interrupt per turn.

Each turn of a thread is two ``ainvoke`` calls: a new human message that runs ``respond``
and stops at the interrupt in ``review``, then ``Command(resume=...)`` that finishes
``review`` and runs ``finalize``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Command, interrupt

from bench.cpu import CpuSample
from bench.stats import Latency

_DRAFT = (
    "Here is a draft answer. It restates the question, lists the assumptions that were made, "
    "and proposes two options with their trade-offs so that a reviewer can pick one. "
)


class ChatState(TypedDict, total=False):
    """The graph's state: a growing message list and a turn counter."""

    messages: Annotated[list[AnyMessage], add_messages]
    turn: int


def _respond(state: ChatState) -> dict[str, Any]:
    turn = state.get("turn", 0) + 1
    return {"messages": [AIMessage(f"[turn {turn}] " + _DRAFT * 2)], "turn": turn}


def _review(state: ChatState) -> dict[str, Any]:
    feedback = interrupt({"question": "Approve the draft?", "turn": state.get("turn", 0)})
    return {"messages": [HumanMessage(str(feedback))]}


def _finalize(state: ChatState) -> dict[str, Any]:
    return {"messages": [AIMessage("Final answer after review: " + _DRAFT)]}


def build_graph(saver: BaseCheckpointSaver[Any]) -> Any:
    """The compiled graph ``respond -> review (interrupt) -> finalize`` saving to ``saver``."""
    builder = StateGraph(ChatState)
    builder.add_node("respond", _respond)
    builder.add_node("review", _review)
    builder.add_node("finalize", _finalize)
    builder.add_edge(START, "respond")
    builder.add_edge("respond", "review")
    builder.add_edge("review", "finalize")
    builder.add_edge("finalize", END)
    return builder.compile(checkpointer=saver)


@dataclass(frozen=True)
class GraphResult:
    """The outcome of running threads through the graph."""

    concurrency: int
    threads: int
    invokes: int
    steps: int
    seconds: float
    latency: Latency
    cpu: CpuSample
    # Threads running, averaged over the run: below ``concurrency`` while the gate fills and
    # once fewer threads are left than it admits.
    mean_in_flight: float

    @property
    def steps_per_second(self) -> float:
        """Super-steps (checkpoints written) per wall-clock second."""
        return self.steps / self.seconds

    @property
    def own_cpu_ms_per_step(self) -> float:
        """CPU milliseconds of the benchmark process (graph + client or saver) per step."""
        return self.cpu.own * 1000 / self.steps

    @property
    def server_cpu_ms_per_step(self) -> float | None:
        """CPU milliseconds of the server process per step; None for in-process savers."""
        return None if self.cpu.server is None else self.cpu.server * 1000 / self.steps


def _config(thread_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id}}


async def _run_thread(graph: Any, thread_id: str, turns: int, latencies: list[float]) -> None:
    config = _config(thread_id)
    for turn in range(turns):
        question = HumanMessage(f"Question {turn} of {thread_id}: please draft a reply.")
        requests: tuple[dict[str, Any], Command[str]] = (
            {"messages": [question]},
            Command(resume=f"Approved turn {turn}, ship it."),
        )
        for request in requests:
            started = time.perf_counter()
            result = await graph.ainvoke(request, config)
            latencies.append(time.perf_counter() - started)
            if "messages" not in result:
                raise RuntimeError(f"thread {thread_id} returned no messages")


async def count_checkpoints(saver: BaseCheckpointSaver[Any], thread_ids: list[str]) -> int:
    """The number of checkpoints stored for ``thread_ids`` (one per super-step)."""
    total = 0
    for thread_id in thread_ids:
        async for _ in saver.alist(_config(thread_id)):
            total += 1
    return total


async def run_graph(
    saver: BaseCheckpointSaver[Any],
    *,
    prefix: str,
    threads: int,
    turns: int,
    concurrency: int,
    server_pid: int | None = None,
) -> GraphResult:
    """Runs ``threads`` threads of ``turns`` turns, at most ``concurrency`` at a time.

    Every thread shares one compiled graph and one saver. Super-steps are counted afterwards
    from the stored checkpoints, outside the timed section. CPU time is taken for this process
    and for ``server_pid`` when given.
    """
    graph = build_graph(saver)
    thread_ids = [f"{prefix}-{i}" for i in range(threads)]
    latencies: list[float] = []
    running: list[float] = []  # each thread's seconds from start to end
    gate = asyncio.Semaphore(concurrency)

    async def worker(thread_id: str) -> None:
        async with gate:
            began = time.perf_counter()
            await _run_thread(graph, thread_id, turns, latencies)
            running.append(time.perf_counter() - began)

    cpu_before = CpuSample.take(server_pid)
    started = time.perf_counter()
    await asyncio.gather(*(worker(t) for t in thread_ids))
    seconds = time.perf_counter() - started
    cpu = CpuSample.take(server_pid).since(cpu_before)
    steps = await count_checkpoints(saver, thread_ids)
    return GraphResult(
        concurrency=concurrency,
        threads=threads,
        invokes=len(latencies),
        steps=steps,
        seconds=seconds,
        latency=Latency.of(latencies),
        cpu=cpu,
        mean_in_flight=sum(running) / seconds,
    )
