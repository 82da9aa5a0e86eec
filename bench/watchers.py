"""Idle watchers: what a thousand WatchEvents streams that wait for events cost the server.

``.venv/bin/python -m bench.watchers [--watchers 1000] [--database sqlite|postgres]``

Starts a server on a fresh database, then measures, with no watcher and again with
``--watchers`` streams open in namespaces of their own that see no writes: the server's CPU at
rest (a quiet interval), and the latency of puts in another namespace while they wait.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
from lgcheckpoint.v1 import thread_service_pb2 as thread_api
from lgcheckpoint.v1.thread_service_pb2_grpc import ThreadServiceStub

from bench.backends import fresh_postgres_database
from bench.catalog import small_checkpoint
from bench.cpu import process_cpu_seconds
from bench.server import ServerProcess
from bench.stats import Latency
from langgraph.checkpoint.grpc import GrpcSaver

_QUIET_SECONDS = 10.0
_PUTS = 200
_CHANNELS = 10


@asynccontextmanager
async def _database(kind: str) -> AsyncIterator[str]:
    if kind == "postgres":
        url = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
        async with fresh_postgres_database(url) as fresh:
            yield fresh
        return
    with tempfile.TemporaryDirectory(prefix="lgcp-watchers-") as tmp:
        yield f"sqlite:///{Path(tmp) / 'checkpoints.db'}"


async def _cpu_at_rest(pid: int) -> float:
    """The server's CPU use over a quiet interval, in percent of one core."""
    before = process_cpu_seconds(pid) or 0.0
    await asyncio.sleep(_QUIET_SECONDS)
    after = process_cpu_seconds(pid) or 0.0
    return (after - before) / _QUIET_SECONDS * 100


async def _put_latency(saver: GrpcSaver, label: str) -> Latency:
    samples = []
    for index in range(_PUTS):
        put = small_checkpoint(saver, f"{label}-{index}")
        started = time.perf_counter()
        await saver.aput(put.config, put.checkpoint, put.metadata, put.new_versions)
        samples.append(time.perf_counter() - started)
    return Latency.of(samples)


async def measure(kind: str, watchers: int) -> list[str]:
    """Both phases on one server; the report's lines."""
    async with _database(kind) as url:
        server = ServerProcess.start(url)
        try:
            address = server.target.removeprefix("grpc://")
            async with GrpcSaver.from_conn_string(server.target, namespace="busy") as saver:
                await _put_latency(saver, "warm-up")
                rest_without = await _cpu_at_rest(server.process.pid)
                puts_without = await _put_latency(saver, "alone")
                channels = [grpc.aio.insecure_channel(address) for _ in range(_CHANNELS)]
                streams = [
                    ThreadServiceStub(channels[i % _CHANNELS]).WatchEvents(
                        thread_api.WatchEventsRequest(namespace=f"idle-{i}")
                    )
                    for i in range(watchers)
                ]
                await asyncio.sleep(2)  # every stream established and waiting
                rest_with = await _cpu_at_rest(server.process.pid)
                puts_with = await _put_latency(saver, "watched")
                for stream in streams:
                    stream.cancel()
                for channel in channels:
                    await channel.close()
        finally:
            server.stop()
    return [
        f"| {kind} | 0 | {rest_without:.1f} % | {puts_without.p50 * 1000:.2f} ms "
        f"| {puts_without.p99 * 1000:.2f} ms |",
        f"| {kind} | {watchers} | {rest_with:.1f} % | {puts_with.p50 * 1000:.2f} ms "
        f"| {puts_with.p99 * 1000:.2f} ms |",
    ]


def main(argv: Sequence[str] | None = None) -> None:
    """Runs the measurement and prints a Markdown table."""
    parser = argparse.ArgumentParser(prog="python -m bench.watchers", description=__doc__)
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--database", choices=("sqlite", "postgres", "both"), default="both")
    args = parser.parse_args(argv)
    kinds = ("sqlite", "postgres") if args.database == "both" else (args.database,)
    lines = [
        "| database | idle watchers | server CPU at rest | put p50 (other namespace) | put p99 |",
        "|---|---:|---:|---:|---:|",
    ]

    async def both() -> None:
        # One event loop for every phase: gRPC's asyncio channels outlive a closed loop badly.
        for kind in kinds:
            lines.extend(await measure(kind, args.watchers))

    asyncio.run(both())
    print("\n".join(lines))


if __name__ == "__main__":
    main()
