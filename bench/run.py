"""Run the benchmark: ``.venv/bin/python -m bench.run [--quick] [--savers ...]``.

Every saver is open at once, each on a fresh database of its own. The graph workload runs
interleaved (see ``bench.paired``): round after round, GrpcSaver and the official saver of the
same database take turns. Then each saver's operations and long history are measured alone.
The Markdown report goes to stdout and to ``bench/results/latest.md``; progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from types import FrameType

from bench.backends import ALL_SPECS, PAIRS, Backend, SaverSpec, open_backend
from bench.graph import run_graph
from bench.ops import measure_history, measure_operations
from bench.paired import PairedResult, interleave
from bench.report import render
from bench.results import SaverResult

DEFAULT_POSTGRES_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
RESULTS = Path(__file__).parent / "results" / "latest.md"


@dataclass(frozen=True)
class Plan:
    """How much work each measurement does."""

    rounds: int
    serial_threads: int
    concurrency: int
    turns: int
    op_samples: int
    history: int
    latest_samples: int
    read_runs: int


FULL = Plan(
    rounds=12,
    # About 160 steps a run at one thread: CPU is counted in 10 ms clock ticks, so a figure
    # per step is good to about 0.06 ms (with 4 threads, 40 steps, it came in 0.25 ms steps).
    serial_threads=16,
    concurrency=32,
    turns=2,
    op_samples=300,
    history=5000,
    latest_samples=200,
    read_runs=3,
)
QUICK = Plan(
    rounds=2,
    serial_threads=2,
    concurrency=32,
    turns=1,
    op_samples=60,
    history=2000,
    latest_samples=50,
    read_runs=1,
)


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def _warm_up(backend: Backend) -> None:
    """Opens connections and fills caches so the first timed call is not an outlier."""
    await run_graph(backend.saver, prefix="warmup", threads=2, turns=1, concurrency=2)


async def bench_saver(backend: Backend, plan: Plan) -> SaverResult:
    """The measurements of one open saver that need it alone: operations and history."""
    started = time.perf_counter()
    saver, label = backend.saver, backend.spec.label
    storage = await backend.storage()
    _log(f"{label}: per-operation latency")
    operations = await measure_operations(saver, "ops", plan.op_samples)
    _log(f"{label}: {plan.history:,}-checkpoint history")
    history = await measure_history(
        saver,
        "history",
        checkpoints=plan.history,
        samples=plan.latest_samples,
        read_runs=plan.read_runs,
        settle=backend.settle,
    )
    seconds = time.perf_counter() - started
    _log(
        f"{label}: done in {seconds:.0f} s (history built in {history.build_seconds:.0f} s, "
        f"read in {history.read_seconds:.1f} s)"
    )
    return SaverResult(backend.spec, storage, operations, history, seconds)


async def run(
    specs: Sequence[SaverSpec], plan: Plan, postgres_url: str
) -> tuple[dict[str, SaverResult], dict[tuple[str, int], PairedResult]]:
    """Opens every saver, runs the graph interleaved, then each saver's own measurements."""
    results: dict[str, SaverResult] = {}
    with tempfile.TemporaryDirectory(prefix="lgcp-bench-") as tmp:
        async with AsyncExitStack() as stack:
            backends = {}
            for spec in specs:
                _log(f"{spec.label}: starting")
                backend = await stack.enter_async_context(
                    open_backend(spec, Path(tmp), postgres_url)
                )
                await _warm_up(backend)
                backends[spec.key] = backend
            pairs = [
                (backends[grpc.key], backends[official.key])
                for grpc, official in PAIRS
                if grpc.key in backends and official.key in backends
            ]
            paired = await interleave(
                pairs,
                rounds=plan.rounds,
                concurrency=(1, plan.concurrency),
                threads_at_1=plan.serial_threads,
                turns=plan.turns,
                log=_log,
            )
            for key, backend in backends.items():
                results[key] = await bench_saver(backend, plan)
    return results, paired


def _settings(plan: Plan, quick: bool, elapsed: float) -> list[str]:
    versions = ", ".join(
        f"{name} {version(name)}"
        for name in ("langgraph", "langgraph-checkpoint-postgres", "langgraph-checkpoint-sqlite")
    )
    return [
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {'--quick' if quick else 'full'} run in "
        f"{elapsed:.0f} s; {os.cpu_count()} CPUs, Python {platform.python_version()}, {versions}",
        "GrpcSaver talks to a server process of its own (one per database); the official "
        "savers run inside the benchmark process. Each saver gets a fresh database; all are "
        "open at once.",
        "Graph: respond -> review (interrupt) -> finalize, `add_messages` channel; "
        f"{plan.turns} turns per thread, each turn = 2 `ainvoke` (input, then "
        f"`Command(resume=...)`); c=1: {plan.serial_threads} threads one after another; "
        f"c={plan.concurrency}: {plan.concurrency} threads at once on one saver instance. "
        "Super-steps = checkpoints stored, counted afterwards. "
        f"{plan.rounds} interleaved rounds: in each, GrpcSaver and the official saver of the "
        "same database run the workload back to back, in alternating order.",
        f"Operations: {plan.op_samples} timed calls each on one thread; get latest: "
        f"{plan.latest_samples} calls per thread, alternating; history read: median of "
        f"{plan.read_runs}. Direct checkpoints hold an 8-message window that changes every "
        "step, a step counter and a status changing every 100 steps.",
        "Bytes per checkpoint: PostgreSQL = pg_total_relation_size of every table in the "
        "saver's own database but GrpcSaver's event log (reported on its own row: it keeps "
        "each change for WatchEvents for 7 days, not for the life of the checkpoint) "
        "(indexes and TOAST included); SQLite = file size after "
        "`wal_checkpoint(TRUNCATE)`; both divided by the checkpoints stored by the graph run. "
        "PostgreSQL databases are ANALYZEd after the long thread is written (autovacuum "
        "may be off), for both savers alike.",
    ]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run (under 2 minutes)")
    parser.add_argument(
        "--savers",
        default=",".join(spec.key for spec in ALL_SPECS),
        help="comma-separated subset of: " + ", ".join(spec.key for spec in ALL_SPECS),
    )
    parser.add_argument("--history", type=int, help="checkpoints in the long thread")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> None:
    """Parses the command line, runs the savers and prints the report."""
    args = _parser().parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so servers stop and databases are dropped.
    signal.signal(signal.SIGTERM, _interrupt)
    by_key = {spec.key: spec for spec in ALL_SPECS}
    wanted = [key.strip() for key in args.savers.split(",") if key.strip()]
    unknown = [key for key in wanted if key not in by_key]
    if unknown:
        raise SystemExit(f"unknown saver(s): {', '.join(unknown)}")
    plan = QUICK if args.quick else FULL
    if args.history:
        plan = Plan(**{**plan.__dict__, "history": args.history})
    started = time.perf_counter()
    try:
        results, paired = asyncio.run(run([by_key[key] for key in wanted], plan, args.postgres_url))
    except KeyboardInterrupt:
        _log("interrupted; servers stopped and databases dropped")
        raise SystemExit(130) from None
    report = render(
        results,
        paired,
        title="Checkpoint savers: GrpcSaver vs LangGraph's own",
        settings=_settings(plan, args.quick, time.perf_counter() - started),
        concurrency=plan.concurrency,
        history=plan.history,
    )
    print(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report, encoding="utf-8")
    _log(f"report written to {args.output}")


if __name__ == "__main__":
    main()
