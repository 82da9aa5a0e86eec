"""A fleet: several agent processes, one thread each, sharing one server, against the same
number of processes each with an in-process ``AsyncPostgresSaver`` on one database.

``.venv/bin/python -m bench.fleet [--agents 4] [--rounds 4] [--servers 1]`` (about 7 s a round)

Each round runs both fleets one after the other, in alternating order; every agent process
runs bench.graph's graph, one thread at a time. A fleet's rate is its super-steps over the time
of its slowest agent. Batches only group one client's calls, so this is the case that
group commit across clients, or several server processes, would serve: ``--servers`` starts
that many behind one port (``--reuse-port``), among which the agents' connections spread.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import uuid
from collections.abc import Sequence
from typing import Any

from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

from bench.backends import fresh_postgres_database
from bench.graph import run_graph
from bench.server import ServerProcess, free_port
from bench.stats import median
from langgraph.checkpoint.grpc import GrpcSaver

_THREADS = 4  # per agent, one after another
_TURNS = 2


def _agent(grpc: bool, target: str, prefix: str, results: Any) -> None:
    """One agent process: a warm-up thread, then the timed threads; puts (steps, seconds)."""

    async def main() -> tuple[int, float]:
        saver: Any = (
            GrpcSaver.from_conn_string(target, namespace="fleet")
            if grpc
            else AsyncPostgresSaver.from_conn_string(target)
        )
        async with saver as opened:
            await run_graph(opened, prefix=f"{prefix}-warm", threads=1, turns=1, concurrency=1)
            result = await run_graph(
                opened, prefix=prefix, threads=_THREADS, turns=_TURNS, concurrency=1
            )
        return result.steps, result.seconds

    results.put(asyncio.run(main()))


def _fleet(grpc: bool, target: str, agents: int) -> float:
    """Super-steps per second of ``agents`` processes running at once."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    label = "grpc" if grpc else "official"
    processes = [
        context.Process(
            target=_agent, args=(grpc, target, f"{label}-{uuid.uuid4().hex[:8]}", results)
        )
        for _ in range(agents)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get() for _ in processes]
    for process in processes:
        process.join()
    steps: int = sum(steps for steps, _ in outcomes)
    seconds: float = max(seconds for _, seconds in outcomes)
    return steps / seconds


async def run(agents: int, rounds: int, servers: int) -> list[tuple[float, float]]:
    """Each round's (GrpcSaver fleet, official fleet) steps per second."""
    base = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    async with fresh_postgres_database(base) as served, fresh_postgres_database(base) as own:
        async with AsyncPostgresSaver.from_conn_string(own) as official:
            await official.setup()
        listen = ("--listen", f"127.0.0.1:{free_port()}", "--reuse-port")
        started = [ServerProcess.start(served, *listen) for _ in range(servers)]
        target = started[0].target
        try:
            measured = []
            for index in range(rounds):
                order = (True, False) if index % 2 == 0 else (False, True)
                rate = {grpc: _fleet(grpc, target if grpc else own, agents) for grpc in order}
                measured.append((rate[True], rate[False]))
                print(
                    f"round {index + 1}/{rounds}: GrpcSaver {rate[True]:.0f} steps/s, "
                    f"AsyncPostgresSaver {rate[False]:.0f} steps/s, "
                    f"ratio {rate[True] / rate[False]:.2f}",
                    flush=True,
                )
            return measured
        finally:
            for server in started:
                server.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Runs the rounds and prints each, then the median ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--servers", type=int, default=1)
    args = parser.parse_args(argv)
    measured = asyncio.run(run(args.agents, args.rounds, args.servers))
    ratios = sorted(grpc / official for grpc, official in measured)
    print(
        f"{args.agents} agents, one thread each, {args.servers} server(s): "
        "GrpcSaver ÷ AsyncPostgresSaver "
        f"{median(ratios):.2f}x (rounds {ratios[0]:.2f} to {ratios[-1]:.2f})"
    )


if __name__ == "__main__":
    main()
