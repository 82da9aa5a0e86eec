"""A fleet: several agent processes, one thread each, sharing one server, against the same
number of processes each with an in-process ``AsyncPostgresSaver`` on one database.

``.venv/bin/python -m bench.fleet [--agents 4] [--rounds 4] [--servers 1]`` (about 7 s a round)

Each round runs both fleets one after the other, in alternating order; every agent process
runs bench.graph's graph, one thread at a time, once every agent is warm. A fleet's rate is
its super-steps over the time of its slowest agent; CPU per super-step is counted for the
agents, the server (the first, with several) and the database's PostgreSQL backends. Client
batches only group one client's calls; this is the case the server's group commit across
clients serves, and several server processes: ``--servers`` starts that many behind one port
(``--reuse-port``), among which the agents' connections spread.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

from bench.backends import fresh_postgres_database
from bench.cpu import process_cpu_seconds
from bench.graph import run_graph
from bench.paired import PostgresCpu
from bench.server import ServerProcess, free_port
from bench.stats import median
from langgraph.checkpoint.grpc import GrpcSaver

_THREADS = 4  # per agent, one after another
_TURNS = 2


def _agent(grpc: bool, target: str, prefix: str, gates: Any, results: Any) -> None:
    """One agent process: a warm-up thread, then the timed threads once every agent is warm.

    Puts (steps, seconds, CPU seconds of the timed threads), then waits for the parent to
    read the other processes' CPU before it exits (its database connection with it).
    """
    start, end = gates

    async def main() -> None:
        saver: Any = (
            GrpcSaver.from_conn_string(target, namespace="fleet")
            if grpc
            else AsyncPostgresSaver.from_conn_string(target)
        )
        async with saver as opened:
            await run_graph(opened, prefix=f"{prefix}-warm", threads=1, turns=1, concurrency=1)
            # The timed threads of one agent must not overlap another's start-up (importing
            # LangGraph costs a second or two of CPU).
            start.wait()
            result = await run_graph(
                opened, prefix=prefix, threads=_THREADS, turns=_TURNS, concurrency=1
            )
            results.put((result.steps, result.seconds, result.cpu.own))
            end.wait()

    asyncio.run(main())


@dataclass(frozen=True)
class FleetRun:
    """A fleet's super-steps per second and CPU milliseconds per super-step, by process."""

    rate: float
    agents_ms: float
    server_ms: float
    postgres_ms: float


async def _fleet(
    grpc: bool, target: str, agents: int, server_pid: int | None, url: str
) -> FleetRun:
    """Runs ``agents`` processes at once; CPU counted from when all are warm to when all end."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    # An agent that dies breaks the barriers (after a timeout) instead of hanging the run.
    gates = (context.Barrier(agents + 1, timeout=300), context.Barrier(agents + 1, timeout=300))
    label = "grpc" if grpc else "official"
    processes = [
        context.Process(
            target=_agent,
            args=(grpc, target, f"{label}-{uuid.uuid4().hex[:8]}", gates, results),
        )
        for _ in range(agents)
    ]
    for process in processes:
        process.start()
    monitor = await PostgresCpu.connect(url)
    try:
        await asyncio.to_thread(gates[0].wait)
        postgres, server = await monitor.sample(), _cpu(server_pid)
        outcomes = [await asyncio.to_thread(results.get, timeout=300) for _ in processes]
        postgres_after, server_after = await monitor.sample(), _cpu(server_pid)
        await asyncio.to_thread(gates[1].wait)
    finally:
        await monitor.close()
    for process in processes:
        process.join()
    steps = sum(steps for steps, _, _ in outcomes)
    used = sum(postgres_after[pid] - postgres.get(pid, 0.0) for pid in postgres_after)
    return FleetRun(
        rate=steps / max(seconds for _, seconds, _ in outcomes),
        agents_ms=1000 * sum(cpu for _, _, cpu in outcomes) / steps,
        server_ms=1000 * (server_after - server) / steps,
        postgres_ms=1000 * used / steps,
    )


def _cpu(pid: int | None) -> float:
    return (process_cpu_seconds(pid) or 0.0) if pid is not None else 0.0


async def run(agents: int, rounds: int, servers: int) -> list[tuple[FleetRun, FleetRun]]:
    """Each round's (GrpcSaver fleet, official fleet)."""
    base = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    async with fresh_postgres_database(base) as served, fresh_postgres_database(base) as own:
        async with AsyncPostgresSaver.from_conn_string(own) as official:
            await official.setup()
        listen = ("--listen", f"127.0.0.1:{free_port()}", "--reuse-port")
        started = [ServerProcess.start(served, *listen) for _ in range(servers)]
        target = started[0].target
        # With several servers, CPU is counted for the first only.
        pid = started[0].process.pid if servers == 1 else None
        try:
            measured = []
            for index in range(rounds):
                order = (True, False) if index % 2 == 0 else (False, True)
                runs = {
                    grpc: await _fleet(
                        grpc,
                        target if grpc else own,
                        agents,
                        pid if grpc else None,
                        served if grpc else own,
                    )
                    for grpc in order
                }
                measured.append((runs[True], runs[False]))
                print(
                    f"round {index + 1}/{rounds}: GrpcSaver {runs[True].rate:.0f} steps/s, "
                    f"AsyncPostgresSaver {runs[False].rate:.0f} steps/s, "
                    f"ratio {runs[True].rate / runs[False].rate:.2f}",
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
    ratios = sorted(grpc.rate / official.rate for grpc, official in measured)
    print(
        f"{args.agents} agents, one thread each, {args.servers} server(s): "
        "GrpcSaver ÷ AsyncPostgresSaver "
        f"{median(ratios):.2f}x (rounds {ratios[0]:.2f} to {ratios[-1]:.2f})"
    )
    print("CPU ms per super-step, medians of rounds: agents / server / PostgreSQL")
    fleets = (
        ("GrpcSaver", [g for g, _ in measured]),
        ("AsyncPostgresSaver", [o for _, o in measured]),
    )
    for label, runs in fleets:
        print(
            f"  {label}: {median([r.agents_ms for r in runs]):.2f} / "
            f"{median([r.server_ms for r in runs]):.2f} / "
            f"{median([r.postgres_ms for r in runs]):.2f}"
        )


if __name__ == "__main__":
    main()
