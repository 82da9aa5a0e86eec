"""Measurements 2 to 4: per-operation latency, get-latest against history length, full reads."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver

from bench.chain import ChainBuilder, build_thread, put_checkpoint, put_writes
from bench.stats import Latency, median

SHORT_HISTORY = 10


@dataclass(frozen=True)
class OperationLatencies:
    """Latency of each saver operation on a thread of moderate state."""

    aput: Latency
    aput_writes: Latency
    aget_tuple: Latency
    alist10: Latency


@dataclass(frozen=True)
class HistoryResult:
    """Get-latest on a short and a long thread, and reading the long thread whole."""

    checkpoints: int
    latest_short: Latency
    latest_long: Latency
    read_seconds: float
    read_runs: int
    build_seconds: float

    @property
    def latest_ratio(self) -> float:
        """p50 of get-latest at the long thread over p50 at the short one."""
        return self.latest_long.p50 / self.latest_short.p50


def _thread(thread_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}


async def _timed_get_latest(saver: BaseCheckpointSaver[Any], config: RunnableConfig) -> float:
    started = time.perf_counter()
    found = await saver.aget_tuple(config)
    elapsed = time.perf_counter() - started
    if found is None:
        raise RuntimeError(f"no checkpoint for {config}")
    return elapsed


async def measure_operations(
    saver: BaseCheckpointSaver[Any], thread_id: str, samples: int, *, warmup: int = 5
) -> OperationLatencies:
    """Times ``samples`` calls of aput, aput_writes, aget_tuple (latest) and alist(limit=10).

    The first ``warmup`` calls of each operation are made but not recorded.
    """
    builder = ChainBuilder(saver, thread_id)
    puts: list[float] = []
    writes: list[float] = []
    for _ in range(warmup + samples):
        step = builder.next_step()
        started = time.perf_counter()
        config = await put_checkpoint(saver, step)
        middle = time.perf_counter()
        await put_writes(saver, config, step)
        puts.append(middle - started)
        writes.append(time.perf_counter() - middle)
    config = _thread(thread_id)
    gets = [await _timed_get_latest(saver, config) for _ in range(warmup + samples)]
    lists: list[float] = []
    for _ in range(warmup + samples):
        started = time.perf_counter()
        listed = [item async for item in saver.alist(config, limit=10)]
        lists.append(time.perf_counter() - started)
        if len(listed) != 10:
            raise RuntimeError(f"alist(limit=10) returned {len(listed)} checkpoints")
    return OperationLatencies(
        aput=Latency.of(puts[warmup:]),
        aput_writes=Latency.of(writes[warmup:]),
        aget_tuple=Latency.of(gets[warmup:]),
        alist10=Latency.of(lists[warmup:]),
    )


async def read_history(saver: BaseCheckpointSaver[Any], thread_id: str, expected: int) -> float:
    """Seconds to read a whole thread with ``alist``, newest first.

    Raises:
        RuntimeError: The thread does not hold ``expected`` checkpoints.
    """
    started = time.perf_counter()
    count = 0
    async for _ in saver.alist(_thread(thread_id)):
        count += 1
    elapsed = time.perf_counter() - started
    if count != expected:
        raise RuntimeError(f"read {count} checkpoints of {thread_id}, expected {expected}")
    return elapsed


async def measure_history(
    saver: BaseCheckpointSaver[Any],
    prefix: str,
    *,
    checkpoints: int,
    samples: int,
    read_runs: int,
    settle: Callable[[], Awaitable[None]],
) -> HistoryResult:
    """Builds a short and a long thread, then times get-latest on each and reading the long one.

    ``settle`` runs between building and timing (PostgreSQL: ANALYZE). Get-latest alternates
    between the two threads so that drift affects both alike.
    """
    short, long = f"{prefix}-short", f"{prefix}-long"
    started = time.perf_counter()
    await build_thread(saver, short, SHORT_HISTORY)
    await build_thread(saver, long, checkpoints)
    build_seconds = time.perf_counter() - started
    await settle()
    short_config, long_config = _thread(short), _thread(long)
    short_times: list[float] = []
    long_times: list[float] = []
    for _ in range(samples):
        short_times.append(await _timed_get_latest(saver, short_config))
        long_times.append(await _timed_get_latest(saver, long_config))
    reads = [await read_history(saver, long, checkpoints) for _ in range(read_runs)]
    return HistoryResult(
        checkpoints=checkpoints,
        latest_short=Latency.of(short_times),
        latest_long=Latency.of(long_times),
        read_seconds=median(reads),
        read_runs=read_runs,
        build_seconds=build_seconds,
    )
