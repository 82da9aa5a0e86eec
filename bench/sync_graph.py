"""The sync API under many threads: bench.graph's graph through ``graph.invoke`` from a pool.

A web app or a worker pool shares one saver across threads. Here ``--threads`` graph threads,
each ``--turns`` turns of two ``invoke`` calls (input, then resume), run on a
``ThreadPoolExecutor`` of ``--workers`` threads, against three savers, each on a PostgreSQL
database of its own, taking turns within every round (the order rotates from round to round):

- ``GrpcSaver`` (sync API, batched): its puts, writes and gets that pile up travel together;
- ``GrpcSaver`` unbatched: every put, write and get a call of its own, as before sync batching
  (the state a server without the batch RPCs leaves the saver in);
- LangGraph's in-process ``PostgresSaver`` (one connection, as ``from_conn_string`` opens it;
  ``--postgres-pool N`` gives it a pool of N connections instead).

Reports super-steps (checkpoints written) per second, the per-round ratios (median, min to
max), the RPCs per super-step each GrpcSaver made (from the server's metrics) and the CPU
milliseconds per step of the benchmark process and of the server.

Run: ``.venv/bin/python -m bench.sync_graph`` (PostgreSQL at ``--postgres-url``).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.types import Command
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from bench.cpu import CpuSample
from bench.graph import build_graph
from bench.paired import rpc_counts
from bench.server import ServerProcess, free_port
from bench.stats import median
from langgraph.checkpoint.grpc import GrpcSaver

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass
class Saver:
    """One saver under test, and what its trials measured."""

    label: str
    saver: BaseCheckpointSaver[Any]
    metrics_url: str | None = None
    server_pid: int | None = None
    steps_per_second: list[float] = field(default_factory=list)
    rpcs_per_step: list[float] = field(default_factory=list)
    own_ms_per_step: list[float] = field(default_factory=list)
    server_ms_per_step: list[float] = field(default_factory=list)


def _config(thread_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id}}


def _run_thread(graph: Any, thread_id: str, turns: int) -> None:
    for turn in range(turns):
        question = HumanMessage(f"Question {turn} of {thread_id}: please draft a reply.")
        graph.invoke({"messages": [question]}, _config(thread_id))
        result = graph.invoke(Command(resume=f"Approved turn {turn}, ship it."), _config(thread_id))
        if "messages" not in result:
            raise RuntimeError(f"thread {thread_id} returned no messages")


def _rpcs(metrics_url: str | None) -> dict[str, float] | None:
    return asyncio.run(rpc_counts(metrics_url)) if metrics_url else None


def trial(saver: Saver, *, prefix: str, threads: int, turns: int, workers: int) -> None:
    """Runs the workload once on ``saver`` and appends what it measured."""
    graph = build_graph(saver.saver)
    thread_ids = [f"{prefix}-{n}" for n in range(threads)]
    calls_before = _rpcs(saver.metrics_url)
    cpu_before = CpuSample.take(saver.server_pid)
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda thread_id: _run_thread(graph, thread_id, turns), thread_ids))
    seconds = time.perf_counter() - started
    cpu = CpuSample.take(saver.server_pid).since(cpu_before)
    calls_after = _rpcs(saver.metrics_url)
    steps = sum(len(list(saver.saver.list(_config(t)))) for t in thread_ids)
    saver.steps_per_second.append(steps / seconds)
    saver.own_ms_per_step.append(cpu.own * 1000 / steps)
    if cpu.server is not None:
        saver.server_ms_per_step.append(cpu.server * 1000 / steps)
    if calls_before is not None and calls_after is not None:
        # ListCheckpoints is this benchmark's own count of the steps, after the run.
        made = sum(
            n - calls_before.get(method, 0.0)
            for method, n in calls_after.items()
            if method != "ListCheckpoints"
        )
        saver.rpcs_per_step.append(made / steps)


@contextmanager
def fresh_database(base_url: str) -> Iterator[str]:
    """A new PostgreSQL database next to ``base_url``'s, dropped on exit."""
    name = f"lgcp_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield base_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(base_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def grpc_saver(stack: ExitStack, url: str, label: str, *, batched: bool) -> Saver:
    """A GrpcSaver on a server process of its own, serving ``url``."""
    metrics = f"127.0.0.1:{free_port()}"
    server = ServerProcess.start(url, "--metrics-listen", metrics)
    stack.callback(server.stop)
    saver = stack.enter_context(GrpcSaver.from_conn_string(server.target, namespace="bench"))
    if not batched:
        # What a server without the batch RPCs leaves the saver with: every call on its own.
        saver._writes._batches = False
        saver._reads._batches = False
    return Saver(label, saver, f"http://{metrics}/metrics", server.process.pid)


def postgres_saver(stack: ExitStack, url: str, pool_size: int) -> Saver:
    """LangGraph's sync PostgresSaver in this process: one connection, or a pool."""
    if pool_size:
        pool = stack.enter_context(
            ConnectionPool(
                url,
                min_size=pool_size,
                max_size=pool_size,
                kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
            )
        )
        saver = PostgresSaver(pool)  # type: ignore[arg-type]
        label = f"PostgresSaver (pool of {pool_size})"
    else:
        saver = stack.enter_context(PostgresSaver.from_conn_string(url))
        label = "PostgresSaver"
    saver.setup()
    return Saver(label, saver)


def _analyze(urls: list[str]) -> None:
    # Planner statistics, as autovacuum soon would: plans made for empty tables stay otherwise.
    for url in urls:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE")


def _spread(values: list[float]) -> str:
    return f"{median(values):.2f}x ({min(values):.2f} to {max(values):.2f})"


def _cell(values: list[float]) -> str:
    return f"{median(values):.2f}" if values else "-"


def report(savers: list[Saver], log: Callable[[str], None]) -> None:
    """The per-saver figures and the ratios of each pair, as a Markdown table."""
    log(
        "| Saver | steps/s, median (min to max) | RPCs/step | agent CPU ms/step | "
        "server CPU ms/step |"
    )
    log("|---|---:|---:|---:|---:|")
    for s in savers:
        rates = s.steps_per_second
        log(
            f"| {s.label} | {median(rates):.0f} ({min(rates):.0f} to {max(rates):.0f}) | "
            f"{_cell(s.rpcs_per_step)} | {_cell(s.own_ms_per_step)} | "
            f"{_cell(s.server_ms_per_step)} |"
        )
    log("")
    log("| steps/s ratio, per round | median (min to max) |")
    log("|---|---:|")
    for i, a in enumerate(savers):
        for b in savers[i + 1 :]:
            ratios = [x / y for x, y in zip(a.steps_per_second, b.steps_per_second, strict=True)]
            log(f"| {a.label} ÷ {b.label} | {_spread(ratios)} |")


def main() -> None:
    """Parses the command line, runs the rounds and prints the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=32, help="graph threads per trial")
    parser.add_argument("--turns", type=int, default=2, help="turns per graph thread")
    parser.add_argument("--workers", type=int, default=32, help="threads of the pool")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--postgres-pool", type=int, default=0, help="0: one connection")
    args = parser.parse_args()

    def log(line: str) -> None:
        print(line, flush=True)

    with ExitStack() as stack:
        urls = [stack.enter_context(fresh_database(args.postgres_url)) for _ in range(3)]
        savers = [
            grpc_saver(stack, urls[0], "GrpcSaver sync, batched", batched=True),
            grpc_saver(stack, urls[1], "GrpcSaver sync, unbatched", batched=False),
            postgres_saver(stack, urls[2], args.postgres_pool),
        ]
        for saver in savers:  # warm-up, not counted
            trial(Saver(saver.label, saver.saver), prefix="warmup", threads=4, turns=1, workers=4)
        _analyze(urls)
        log(
            f"{args.rounds} rounds; in each, every saver runs {args.threads} graph threads x "
            f"{args.turns} turns (2 invoke each) on {args.workers} worker threads."
        )
        for number in range(args.rounds):
            order = savers[number % len(savers) :] + savers[: number % len(savers)]
            for saver in order:
                trial(
                    saver,
                    prefix=f"r{number}",
                    threads=args.threads,
                    turns=args.turns,
                    workers=args.workers,
                )
            log(
                f"round {number + 1}/{args.rounds}: "
                + ", ".join(f"{s.label} {s.steps_per_second[-1]:.0f} steps/s" for s in savers)
            )
        log("")
        report(savers, log)


if __name__ == "__main__":
    main()
