"""Graph throughput measured interleaved: GrpcSaver and the official saver take turns.

On a shared 2-core machine, one saver's run after the other's measures the machine's mood as
much as the savers: whatever else runs slows one of them and not the other. Here every round
runs the same graph workload on GrpcSaver and on the official saver of the same database back
to back (alternating which goes first), and the report gives the median of the per-round
ratios with their spread, plus the CPU each process spent per super-step: the benchmark process
(LangGraph and the saver or client), the checkpoint server, and PostgreSQL's backends.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psycopg
from prometheus_client.parser import text_string_to_metric_families

from bench.backends import Backend
from bench.cpu import process_cpu_seconds
from bench.graph import GraphResult, run_graph
from bench.stats import median


@dataclass(frozen=True)
class Trial:
    """One graph run of one saver, with the CPU each process spent on it."""

    graph: GraphResult
    postgres_cpu_seconds: float | None
    rpcs: dict[str, float] | None = None  # calls the server answered, by method

    @property
    def rpcs_per_step(self) -> float | None:
        """RPCs per super-step; None for in-process savers."""
        return None if self.rpcs is None else sum(self.rpcs.values()) / self.graph.steps

    @property
    def postgres_ms_per_step(self) -> float | None:
        """PostgreSQL backends' CPU milliseconds per super-step; None off PostgreSQL."""
        if self.postgres_cpu_seconds is None:
            return None
        return self.postgres_cpu_seconds * 1000 / self.graph.steps


@dataclass(frozen=True)
class PairedResult:
    """Every round of one pair at one concurrency."""

    concurrency: int
    grpc: list[Trial]
    official: list[Trial]

    @property
    def ratios(self) -> list[float]:
        """GrpcSaver ÷ official super-steps per second, round by round."""
        return [
            g.graph.steps_per_second / o.graph.steps_per_second
            for g, o in zip(self.grpc, self.official, strict=True)
        ]


class PostgresCpu:
    """CPU seconds of the PostgreSQL backends serving one database, read from ``/proc``.

    Backends are found in ``pg_stat_activity``; the monitoring connection leaves itself out.
    A backend that starts during a trial counts from zero; one that ends during it is lost,
    which the fixed pools of both savers make rare.
    """

    def __init__(self, conn: psycopg.AsyncConnection[tuple[int]]) -> None:
        self._conn = conn

    @classmethod
    async def connect(cls, url: str) -> PostgresCpu:
        """Monitors the database at ``url``."""
        return cls(await psycopg.AsyncConnection.connect(url, autocommit=True))

    async def sample(self) -> dict[int, float]:
        """CPU seconds per backend process now."""
        cursor = await self._conn.execute(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        seconds = {}
        for (pid,) in await cursor.fetchall():
            cpu = process_cpu_seconds(pid)
            if cpu is not None:
                seconds[pid] = cpu
        return seconds

    async def close(self) -> None:
        """Closes the monitoring connection."""
        await self._conn.close()


async def trial(
    backend: Backend,
    monitor: PostgresCpu | None,
    *,
    prefix: str,
    threads: int,
    turns: int,
    concurrency: int,
) -> Trial:
    """Runs the graph workload once on ``backend``."""
    before = await monitor.sample() if monitor else {}
    calls_before = await rpc_counts(backend.metrics_url)
    graph = await run_graph(
        backend.saver,
        prefix=prefix,
        threads=threads,
        turns=turns,
        concurrency=concurrency,
        server_pid=backend.server_pid,
    )
    calls_after = await rpc_counts(backend.metrics_url)
    rpcs = None
    if calls_before is not None and calls_after is not None:
        rpcs = {m: n - calls_before.get(m, 0.0) for m, n in calls_after.items()}
        # ListCheckpoints is the benchmark's own count of the checkpoints after the run
        # (LangGraph's invoke reads with GetCheckpoint).
        rpcs = {m: n for m, n in rpcs.items() if n and m != "ListCheckpoints"}
    if monitor is None:
        return Trial(graph, None, rpcs)
    after = await monitor.sample()
    spent = sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())
    return Trial(graph, spent, rpcs)


async def rpc_counts(metrics_url: str | None) -> dict[str, float] | None:
    """Calls the server has answered so far, by method, from its Prometheus endpoint."""
    if metrics_url is None:
        return None
    text = await asyncio.to_thread(_fetch, metrics_url)
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "checkpoint_server_rpcs_total":
                method = sample.labels["method"]
                counts[method] = counts.get(method, 0.0) + sample.value
    return counts


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - our own server
        body: bytes = response.read()
    return body.decode()


async def interleave(
    pairs: Sequence[tuple[Backend, Backend]],
    *,
    rounds: int,
    concurrency: Sequence[int],
    threads_at_1: int,
    turns: int,
    log: Callable[[str], None],
) -> dict[tuple[str, int], PairedResult]:
    """Runs ``rounds`` rounds; in each, every pair at every concurrency, A then B or B then A.

    Returns results keyed by (GrpcSaver spec key, concurrency).
    """
    monitors: dict[str, PostgresCpu] = {}
    for pair in pairs:
        for backend in pair:
            if backend.postgres_url is not None:
                monitors[backend.spec.key] = await PostgresCpu.connect(backend.postgres_url)
    results = {
        (grpc.spec.key, c): PairedResult(c, [], [])
        for grpc, _official in pairs
        for c in concurrency
    }
    try:
        for number in range(rounds):
            for c in concurrency:
                for grpc, official in pairs:
                    result = results[(grpc.spec.key, c)]
                    order = [(grpc, result.grpc), (official, result.official)]
                    if number % 2:
                        order.reverse()
                    for backend, trials in order:
                        trials.append(
                            await trial(
                                backend,
                                monitors.get(backend.spec.key),
                                prefix=f"paired-r{number}-c{c}",
                                threads=threads_at_1 if c == 1 else c,
                                turns=turns,
                                concurrency=c,
                            )
                        )
                    log(
                        f"round {number + 1}/{rounds}, c={c}, {grpc.spec.label}: "
                        f"{result.ratios[-1]:.2f}x"
                    )
    finally:
        for monitor in monitors.values():
            await monitor.close()
        await asyncio.sleep(0)
    return results


def _spread(values: Sequence[float]) -> str:
    return f"{median(values):.2f}x ({min(values):.2f} to {max(values):.2f})"


def _ms(values: Sequence[float | None]) -> str:
    present = [v for v in values if v is not None]
    return f"{median(present):.2f}" if present else "-"


def render(results: dict[tuple[str, int], PairedResult], labels: dict[str, str]) -> list[str]:
    """The Markdown table: median ratio with its range, and CPU ms per super-step."""
    lines = [
        "| Pair | c | rounds | GrpcSaver ÷ official steps/s, median (min to max) "
        "| steps/s Grpc / official | agent CPU ms/step Grpc / official | server CPU ms/step "
        "| PostgreSQL CPU ms/step Grpc / official | RPCs/step |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (key, c), result in results.items():
        g, o = result.grpc, result.official
        lines.append(
            "| "
            + " | ".join(
                [
                    labels[key],
                    str(c),
                    str(len(result.ratios)),
                    _spread(result.ratios),
                    f"{_ms([t.graph.steps_per_second for t in g])} / "
                    f"{_ms([t.graph.steps_per_second for t in o])}",
                    f"{_ms([t.graph.own_cpu_ms_per_step for t in g])} / "
                    f"{_ms([t.graph.own_cpu_ms_per_step for t in o])}",
                    _ms([t.graph.server_cpu_ms_per_step for t in g]),
                    f"{_ms([t.postgres_ms_per_step for t in g])} / "
                    f"{_ms([t.postgres_ms_per_step for t in o])}",
                    _ms([t.rpcs_per_step for t in g]),
                ]
            )
            + " |"
        )
    lines += ["", "RPCs per super-step by method (median of rounds):", ""]
    for (key, c), result in results.items():
        methods = sorted({m for t in result.grpc for m in (t.rpcs or {})})
        split = ", ".join(
            f"{m} {median([(t.rpcs or {}).get(m, 0.0) / t.graph.steps for t in result.grpc]):.2f}"
            for m in methods
        )
        lines.append(f"- {labels[key]}, c={c}: {split or '-'}")
    lines += [
        "",
        "Threads running at once, averaged over each run (median of rounds, Grpc / official; "
        "below c while the first threads start and the last ones finish):",
        "",
    ]
    for (key, c), result in results.items():
        lines.append(
            f"- {labels[key]}, c={c}: "
            f"{median([t.graph.mean_in_flight for t in result.grpc]):.1f} / "
            f"{median([t.graph.mean_in_flight for t in result.official]):.1f}"
        )
    return lines
