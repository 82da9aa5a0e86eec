"""What one call costs, one at a time: each process's CPU per call, beside Python gRPC's floor.

``.venv/bin/python -m bench.calls [--calls 3000] [--database sqlite|postgres|both]``

One saver makes ``--calls`` calls in a row (a get of the latest checkpoint, a put of writes,
a put of a checkpoint), as one thread of a graph does. For each, the report gives the wall
time and the CPU each process spent per call: the caller, the server, and PostgreSQL's
backends. The floor is a bare ``grpc.aio`` echo server (no handler, no database, no
interceptor) in a process of its own, called with the same payload size by unary calls and
by messages on one bidirectional stream: what Python gRPC costs before the service does
anything.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import uvloop
from grpc import aio
from langgraph.checkpoint.base import empty_checkpoint

from bench.backends import fresh_postgres_database
from bench.cpu import process_cpu_seconds
from bench.paired import PostgresCpu
from bench.server import ServerProcess, free_port
from langgraph.checkpoint.grpc import GrpcSaver

_ECHO_PAYLOAD = b"x" * 300  # about a small get's response
_WARM_UP = 200


@dataclass(frozen=True)
class Cost:
    """Milliseconds per call: wall time, and the CPU of each process (None where none)."""

    label: str
    wall: float
    caller: float
    server: float
    postgres: float | None


async def _measure(
    label: str,
    call: Callable[[int], Awaitable[Any]],
    calls: int,
    server_pid: int,
    postgres: PostgresCpu | None,
) -> Cost:
    for i in range(_WARM_UP):
        await call(i)
    pg_before = await postgres.sample() if postgres else {}
    server_before = process_cpu_seconds(server_pid) or 0.0
    caller_before = time.process_time()
    started = time.perf_counter()
    for i in range(calls):
        await call(_WARM_UP + i)
    wall = time.perf_counter() - started
    caller = time.process_time() - caller_before
    server = (process_cpu_seconds(server_pid) or 0.0) - server_before
    pg = None
    if postgres is not None:
        after = await postgres.sample()
        pg = sum(cpu - pg_before.get(pid, 0.0) for pid, cpu in after.items()) * 1000 / calls
    per = 1000 / calls
    return Cost(label, wall * per, caller * per, server * per, pg)


async def _saver_costs(database: str, url: str, calls: int) -> list[Cost]:
    server = ServerProcess.start(url)
    postgres = await PostgresCpu.connect(url) if database == "PostgreSQL" else None
    try:
        async with GrpcSaver.from_conn_string(server.target, namespace="calls") as saver:
            config: Any = {"configurable": {"thread_id": "calls", "checkpoint_ns": ""}}
            stored = await saver.aput(config, empty_checkpoint(), {"source": "input"}, {})
            latest = stored

            async def get(_: int) -> Any:
                return await saver.aget_tuple(config)

            async def put_writes(i: int) -> Any:
                return await saver.aput_writes(stored, [("channel", i)], f"task-{i}")

            async def put(i: int) -> Any:
                nonlocal latest
                checkpoint = empty_checkpoint()
                checkpoint["channel_values"] = {"channel": i}
                checkpoint["channel_versions"] = {"channel": i + 1}
                versions: dict[str, str | int | float] = {"channel": i + 1}
                latest = await saver.aput(latest, checkpoint, {"step": i}, versions)

            pid = server.process.pid
            return [
                await _measure(f"{database}: GetCheckpoint", get, calls, pid, postgres),
                await _measure(f"{database}: PutWrites", put_writes, calls, pid, postgres),
                await _measure(f"{database}: PutCheckpoint", put, calls, pid, postgres),
            ]
    finally:
        if postgres is not None:
            await postgres.close()
        server.stop()


def _identity(data: bytes) -> bytes:
    return data


async def _echo_serve(port: int) -> None:
    async def unary(request: bytes, _: Any) -> bytes:
        return request

    async def stream(requests: AsyncIterator[bytes], _: Any) -> AsyncIterator[bytes]:
        async for request in requests:
            yield request

    handlers = grpc.method_handlers_generic_handler(
        "Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary, _identity, _identity),
            "Stream": grpc.stream_stream_rpc_method_handler(stream, _identity, _identity),
        },
    )
    server = aio.server()
    server.add_generic_rpc_handlers((handlers,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


@asynccontextmanager
async def _echo_server() -> AsyncIterator[tuple[int, int]]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.calls", "--echo-server", str(port)
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        yield process.pid, port
    finally:
        process.terminate()
        await process.wait()


async def _echo_costs(calls: int) -> list[Cost]:
    async with _echo_server() as (pid, port), aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        unary = channel.unary_unary(
            "/Echo/Unary", request_serializer=_identity, response_deserializer=_identity
        )
        stream = channel.stream_stream(
            "/Echo/Stream", request_serializer=_identity, response_deserializer=_identity
        )
        messages = stream()

        async def one_unary(_: int) -> Any:
            return await unary(_ECHO_PAYLOAD)

        async def one_message(_: int) -> Any:
            await messages.write(_ECHO_PAYLOAD)
            return await messages.read()

        costs = [
            await _measure("bare grpc.aio echo: unary call", one_unary, calls, pid, None),
            await _measure("bare grpc.aio echo: stream message", one_message, calls, pid, None),
        ]
        await messages.done_writing()
        return costs


def render(costs: Sequence[Cost]) -> str:
    """The Markdown table of ``costs``."""
    lines = [
        "| ms per call, one at a time | wall | caller CPU | server CPU | PostgreSQL CPU |",
        "|---|---:|---:|---:|---:|",
    ]
    for c in costs:
        pg = "-" if c.postgres is None else f"{c.postgres:.2f}"
        lines.append(f"| {c.label} | {c.wall:.2f} | {c.caller:.2f} | {c.server:.2f} | {pg} |")
    return "\n".join(lines)


async def run(calls: int, databases: Sequence[str]) -> list[Cost]:
    """Measures the saver on each of ``databases`` (SQLite, PostgreSQL), then the floor."""
    costs: list[Cost] = []
    for database in databases:
        if database == "SQLite":
            with tempfile.TemporaryDirectory(prefix="lgcp-calls-") as tmp:
                costs += await _saver_costs(database, f"sqlite:///{tmp}/checkpoints.db", calls)
        else:
            base = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
            async with fresh_postgres_database(base) as url:
                costs += await _saver_costs(database, url, calls)
    return costs + await _echo_costs(calls)


def main(argv: Sequence[str] | None = None) -> None:
    """Runs the measurement and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--database", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--echo-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.echo_server:
        uvloop.run(_echo_serve(args.echo_server))
        return
    chosen = {"sqlite": ["SQLite"], "postgres": ["PostgreSQL"], "both": ["SQLite", "PostgreSQL"]}
    costs = asyncio.run(run(args.calls, chosen[args.database]))
    print(render(costs))


if __name__ == "__main__":
    main()
