"""Benchmark of the thread catalog: ``.venv/bin/python -m bench.threads [--quick]``.

1. Thread search at scale on PostgreSQL: a namespace seeded through the service, then the
   latency of SearchThreads and CountThreads with metadata, status and sort options.
2. Put-to-event latency across replicas: two servers on one PostgreSQL database, a writer
   on one and a watcher on the other; with one writer and with several at once.
3. The same event latency on SQLite with a single server (skip with ``--no-sqlite``).

The Markdown report goes to stdout and to ``bench/results/threads.md``; progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import psycopg

from bench.backends import fresh_postgres_database, postgres_analyze
from bench.catalog import QueryResult, SeedResult, measure_searches, search_cases, seed
from bench.events import EventResult, establish, measure_events, watching
from bench.server import ServerProcess
from bench.threads_report import GinPending, ThreadsResults, render
from langgraph.checkpoint.grpc import GrpcSaver

DEFAULT_POSTGRES_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
RESULTS = Path(__file__).parent / "results" / "threads.md"
SEARCH_NAMESPACE = "bench-search"
EVENTS_NAMESPACE = "bench-events"


@dataclass(frozen=True)
class Plan:
    """How much work each measurement does."""

    threads: int
    checkpointed: int
    seed_concurrency: int
    search_samples: int
    search_warmup: int
    event_puts: int
    event_warmup: int
    load_writers: int
    load_puts_per_writer: int


FULL = Plan(
    threads=100_000,
    checkpointed=2_000,
    seed_concurrency=64,
    search_samples=200,
    search_warmup=20,
    event_puts=300,
    event_warmup=20,
    load_writers=8,
    load_puts_per_writer=100,
)
QUICK = Plan(
    threads=10_000,
    checkpointed=600,
    seed_concurrency=64,
    search_samples=50,
    search_warmup=10,
    event_puts=100,
    event_warmup=10,
    load_writers=8,
    load_puts_per_writer=50,
)


def _log(message: str) -> None:
    print(f"[threads {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def _postgres_facts(url: str) -> tuple[str, str]:
    """The server's version and its autovacuum setting."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        version = await (await conn.execute("SHOW server_version")).fetchone()
        autovacuum = await (await conn.execute("SHOW autovacuum")).fetchone()
    return (str(version[0]) if version else "?", str(autovacuum[0]) if autovacuum else "?")


async def _gin_pending(url: str) -> GinPending | None:
    """The pending list of the threads' metadata GIN index; None without ``pgstattuple``.

    The extension is created in the benchmark's own database, which is dropped at the end.
    """
    try:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
            row = await (
                await conn.execute(
                    "SELECT pending_pages, pending_tuples "
                    "FROM pgstatginindex('ix_threads_metadata')"
                )
            ).fetchone()
    except psycopg.Error:
        return None
    return GinPending(int(row[0]), int(row[1])) if row else None


async def _vacuum_threads(url: str) -> None:
    """``VACUUM threads``, as autovacuum would: it also empties the GIN pending list."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("VACUUM threads")


async def _open_transactions(url: str) -> int:
    """Transactions anywhere on the cluster holding a transaction ID for more than a second.

    Watch streams on PostgreSQL hold back the events of every younger transaction until the
    oldest of them ends.
    """
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        row = await (
            await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_xid IS NOT NULL "
                "AND pid <> pg_backend_pid() AND xact_start < now() - interval '1 second'"
            )
        ).fetchone()
    return int(row[0]) if row else 0


def _load_average() -> str:
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "?"
    return f"{one:.2f} (1 min), {five:.2f} (5 min)"


async def _events(
    writer_target: str, watcher_target: str, plan: Plan, *, database: str, replicas: bool
) -> list[EventResult]:
    """Put-to-event latency with one writer, then with ``plan.load_writers`` writers."""
    where = "A → B" if replicas else "one server"
    async with (
        GrpcSaver.from_conn_string(writer_target, namespace=EVENTS_NAMESPACE) as writer,
        GrpcSaver.from_conn_string(watcher_target, namespace=EVENTS_NAMESPACE) as watcher,
        watching(watcher) as clock,
    ):
        _log(f"{database}: establishing the watch ({where})")
        await establish(writer, clock, f"{database}-warm", plan.event_warmup)
        results = []
        runs = ((1, plan.event_puts), (plan.load_writers, plan.load_puts_per_writer))
        for writers, puts in runs:
            _log(f"{database}: put-to-event, {writers} writer(s) x {puts} puts")
            results.append(
                await measure_events(
                    writer,
                    clock,
                    label=f"{database}, {where}",
                    prefix=f"{database}-c{writers}",
                    writers=writers,
                    puts_per_writer=puts,
                )
            )
    return results


@dataclass
class _Collected:
    seed: SeedResult | None = None
    searches: list[QueryResult] = field(default_factory=list)
    vacuumed: list[QueryResult] = field(default_factory=list)
    pending: dict[str, GinPending | None] = field(default_factory=dict)
    events: list[EventResult] = field(default_factory=list)
    open_transactions: int | None = None


async def _postgres(plan: Plan, base_url: str, collected: _Collected) -> None:
    """Seeds through servers A and B, searches through A, then measures events from A to B."""
    async with fresh_postgres_database(base_url) as url:
        server_a = ServerProcess.start(url)
        try:
            server_b = ServerProcess.start(url)
            try:
                async with (
                    GrpcSaver.from_conn_string(server_a.target, namespace=SEARCH_NAMESPACE) as a,
                    GrpcSaver.from_conn_string(server_b.target, namespace=SEARCH_NAMESPACE) as b,
                ):
                    _log(f"PostgreSQL: seeding {plan.threads:,} threads through A and B")
                    collected.seed = await seed(
                        [a, b],
                        threads=plan.threads,
                        checkpointed=plan.checkpointed,
                        concurrency=plan.seed_concurrency,
                    )
                    _log("PostgreSQL: ANALYZE")
                    await postgres_analyze(url)
                    collected.pending["after ANALYZE"] = await _gin_pending(url)
                    _log("PostgreSQL: timing searches on A")
                    collected.searches = await measure_searches(
                        a, search_cases(), samples=plan.search_samples, warmup=plan.search_warmup
                    )
                    _log("PostgreSQL: VACUUM threads, timing searches again")
                    await _vacuum_threads(url)
                    collected.pending["after VACUUM"] = await _gin_pending(url)
                    # Half the calls: these figures only show what VACUUM changes.
                    collected.vacuumed = await measure_searches(
                        a,
                        search_cases(),
                        samples=plan.search_samples // 2,
                        warmup=plan.search_warmup // 2,
                    )
                collected.open_transactions = await _open_transactions(url)
                collected.events = await _events(
                    server_a.target, server_b.target, plan, database="PostgreSQL", replicas=True
                )
            finally:
                server_b.stop()
        finally:
            server_a.stop()


async def _sqlite(plan: Plan) -> list[EventResult]:
    """Event latency with one server on a fresh SQLite file."""
    with tempfile.TemporaryDirectory(prefix="lgcp-threads-") as tmp:
        server = ServerProcess.start(f"sqlite:///{Path(tmp) / 'events.db'}")
        try:
            return await _events(
                server.target, server.target, plan, database="SQLite", replicas=False
            )
        finally:
            server.stop()


async def run(plan: Plan, postgres_url: str, *, sqlite: bool) -> tuple[ThreadsResults, str]:
    """Every measurement; returns the results and the PostgreSQL facts for the report."""
    version, autovacuum = await _postgres_facts(postgres_url)
    collected = _Collected()
    await _postgres(plan, postgres_url, collected)
    events = list(collected.events)
    if sqlite:
        events += await _sqlite(plan)
    facts = f"PostgreSQL {version}, autovacuum={autovacuum}"
    results = ThreadsResults(
        seed=collected.seed,
        searches=collected.searches,
        vacuumed=collected.vacuumed,
        pending=collected.pending,
        events=events,
        autovacuum=autovacuum,
        open_transactions=collected.open_transactions,
    )
    return results, facts


def _settings(
    plan: Plan, *, quick: bool, elapsed: float, facts: str, argv: str, load: str
) -> list[str]:
    return [
        f"Command: `{argv}`",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {'--quick' if quick else 'full'} run in "
        f"{elapsed:.0f} s; {os.cpu_count()} CPUs (load average at start {load}), "
        f"Python {platform.python_version()}; {facts}.",
        f"Seed: {plan.threads:,} threads in namespace `{SEARCH_NAMESPACE}` through "
        f"CreateThread on servers A and B alternately ({plan.seed_concurrency} calls in "
        "flight), metadata "
        "`{user: u{i % 1000}, team: one of 10 (seeded random), tier: i % 3}`; "
        f"{plan.checkpointed:,} spread-out threads then get a checkpoint, a third of them an "
        "interrupt write and a third an error write. Then `ANALYZE` on the database "
        "(autovacuum may be off, as the line above says: without ANALYZE the planner would "
        "have no statistics for the new rows).",
        f"Searches: page size 20, {plan.search_warmup} warm-up calls then "
        f"{plan.search_samples} timed calls each, one at a time, through server A; timed "
        f"once after ANALYZE (targets) and again after `VACUUM threads` "
        f"({plan.search_warmup // 2} + {plan.search_samples // 2} calls).",
        f"Events: two server processes (A, B) on the same PostgreSQL database; writer on A, "
        f"watcher `saver.athreads.watch()` on B, namespace `{EVENTS_NAMESPACE}` (same "
        f"database as the seed). {plan.event_warmup} warm-up puts, then {plan.event_puts} "
        f"puts by one writer, then {plan.load_writers} writers x "
        f"{plan.load_puts_per_writer} puts at once. SQLite: one server, writer and watcher "
        "on it.",
    ]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.threads", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    parser.add_argument("--threads", type=int, help="threads to seed")
    parser.add_argument("--no-sqlite", action="store_true", help="skip the SQLite event run")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> None:
    """Parses the command line, runs the measurements and prints the report."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(arguments)
    # SIGTERM unwinds like Ctrl-C, so servers stop and databases are dropped.
    signal.signal(signal.SIGTERM, _interrupt)
    plan = QUICK if args.quick else FULL
    if args.threads:
        plan = replace(
            plan, threads=args.threads, checkpointed=min(plan.checkpointed, args.threads)
        )
    load = _load_average()
    started = time.perf_counter()
    try:
        results, facts = asyncio.run(run(plan, args.postgres_url, sqlite=not args.no_sqlite))
    except KeyboardInterrupt:
        _log("interrupted; servers stopped and databases dropped")
        raise SystemExit(130) from None
    command = shlex.join([".venv/bin/python", "-m", "bench.threads", *arguments])
    settings = _settings(
        plan,
        quick=args.quick,
        elapsed=time.perf_counter() - started,
        facts=facts,
        argv=command,
        load=load,
    )
    report = render(
        results, title="Thread catalog: search at scale and event latency", settings=settings
    )
    print(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report, encoding="utf-8")
    _log(f"report written to {args.output}")


if __name__ == "__main__":
    main()
