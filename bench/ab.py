"""Two servers, A and B, through the graph workload in alternating turns: is B faster?

``.venv/bin/python -m bench.ab --b-src /path/to/worktree/server/src`` compares the server of
another checkout (B) with this one's (A); ``--b-flags "--max-group-writes 1"`` compares
settings. Each server gets a fresh database; GrpcSaver, from this checkout, talks to both. Round
after round, A and B run the same workload, in alternating order, and the report gives the
median of the per-round ratios B ÷ A with their range, and each side's CPU per super-step. The
full benchmark (``bench.run``) compares GrpcSaver with the official savers instead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

from bench.backends import fresh_postgres_database, grpc_backend
from bench.graph import GraphResult, run_graph
from bench.run import DEFAULT_POSTGRES_URL
from bench.stats import median


@dataclass(frozen=True)
class Side:
    """One of the two servers: its extra flags, and where its code comes from."""

    name: str
    flags: list[str]
    source: Path | None  # a server/src folder put first on the server's PYTHONPATH


@contextmanager
def _python_path(source: Path | None) -> Iterator[None]:
    """A server started inside this block imports ``checkpoint_server`` from ``source``."""
    before = os.environ.get("PYTHONPATH")
    if source is not None:
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), before]))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


@asynccontextmanager
async def _database(kind: str, postgres_url: str, folder: Path, name: str) -> AsyncIterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{folder / f'{name}.db'}"
        return
    async with fresh_postgres_database(postgres_url) as url:
        yield url


async def compare(
    sides: tuple[Side, Side],
    *,
    database: str,
    postgres_url: str,
    rounds: int,
    concurrency: int,
    threads: int,
    turns: int,
) -> list[str]:
    """Runs the rounds; returns the report's lines."""
    results: dict[str, list[GraphResult]] = {side.name: [] for side in sides}
    with TemporaryDirectory(prefix="bench-ab-") as folder:
        async with AsyncExitStack() as stack:
            servers = {}
            for side in sides:
                url = await stack.enter_async_context(
                    _database(database, postgres_url, Path(folder), side.name)
                )
                with _python_path(side.source):
                    saver, pid, _ = await stack.enter_async_context(grpc_backend(url, *side.flags))
                servers[side.name] = saver, pid
                await run_graph(saver, prefix="warmup", threads=4, turns=1, concurrency=2)
            for number in range(rounds):
                order = sides if number % 2 == 0 else sides[::-1]
                for side in order:
                    saver, pid = servers[side.name]
                    results[side.name].append(
                        await run_graph(
                            saver,
                            prefix=f"r{number}",
                            threads=threads,
                            turns=turns,
                            concurrency=concurrency,
                            server_pid=pid,
                        )
                    )
    a, b = (results[side.name] for side in sides)
    ratios = [y.steps_per_second / x.steps_per_second for x, y in zip(a, b, strict=True)]
    lines = [
        f"{database}, c={concurrency}, {threads} threads x {turns} turns, {rounds} rounds",
        f"B ÷ A steps/s: {median(ratios):.3f}x ({min(ratios):.3f} to {max(ratios):.3f})",
    ]
    for side in sides:
        runs = results[side.name]
        server = [r.server_cpu_ms_per_step for r in runs if r.server_cpu_ms_per_step is not None]
        lines.append(
            f"{side.name} ({shlex.join(side.flags) or 'no flags'}"
            f"{f', {side.source}' if side.source else ''}): "
            f"{median([r.steps_per_second for r in runs]):.0f} steps/s, "
            f"server {median(server):.2f} ms/step, "
            f"agent {median([r.own_cpu_ms_per_step for r in runs]):.2f} ms/step"
        )
    return lines


def main() -> None:
    """Parses the command line and prints the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--threads", type=int, help="default: 40 at c=1, else 4 per slot")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=6)
    for side in ("a", "b"):
        parser.add_argument(f"--{side}-flags", default="", help=f"server flags of {side.upper()}")
        parser.add_argument(
            f"--{side}-src", type=Path, help=f"a server/src folder for {side.upper()}'s code"
        )
    args = parser.parse_args()
    sides = (
        Side("A", shlex.split(args.a_flags), args.a_src),
        Side("B", shlex.split(args.b_flags), args.b_src),
    )
    threads = args.threads or (40 if args.concurrency == 1 else 4 * args.concurrency)
    lines = asyncio.run(
        compare(
            sides,
            database=args.database,
            postgres_url=args.postgres_url,
            rounds=args.rounds,
            concurrency=args.concurrency,
            threads=threads,
            turns=args.turns,
        )
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
