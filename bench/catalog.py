"""Thread search at scale: seeding a namespace through the service, then timing searches.

Threads are created with CreateThread, many calls in flight at once. A spread-out subset then
gets a checkpoint (``aput``), and some of those an interrupt or an error write, so that
statuses, latest checkpoints and update times differ between threads.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import Checkpoint, CheckpointMetadata
from langgraph.checkpoint.base.id import uuid6
from langgraph.types import Interrupt

from bench.stats import Latency
from langgraph.checkpoint.grpc import GrpcSaver

TEAMS = tuple(f"team-{k}" for k in range(10))
USERS = 1000
# Where the checkpointed threads stand: a third each interrupted, failed, idle.
_STATUS_CYCLE = ("interrupted", "error", "idle")
_PROGRESS_EVERY = 10_000


def thread_metadata(index: int, rng: random.Random) -> dict[str, Any]:
    """The metadata of seeded thread ``index``: a user, a team and a tier."""
    return {"user": f"u{index % USERS}", "team": rng.choice(TEAMS), "tier": index % 3}


def thread_id(index: int) -> str:
    """The ID of seeded thread ``index``."""
    return f"thread-{index:07d}"


@dataclass(frozen=True)
class SmallCheckpoint:
    """A one-channel checkpoint of a new thread, ready for ``aput``."""

    config: RunnableConfig
    checkpoint: Checkpoint
    metadata: CheckpointMetadata
    new_versions: dict[str, str | int | float]

    @property
    def checkpoint_id(self) -> str:
        """The checkpoint's ID."""
        return self.checkpoint["id"]

    @property
    def thread_id(self) -> str:
        """The checkpoint's thread."""
        return str(self.config["configurable"]["thread_id"])


def small_checkpoint(saver: GrpcSaver, thread: str, step: int = 0) -> SmallCheckpoint:
    """The first checkpoint of ``thread``: one small channel, no parent."""
    version = saver.get_next_version(None, None)
    checkpoint: Checkpoint = {
        "v": 4,
        "id": str(uuid6(clock_seq=step)),
        "ts": datetime.now(UTC).isoformat(),
        "channel_values": {"step": step, "note": f"step {step} of {thread}"},
        "channel_versions": {"step": version, "note": version},
        "versions_seen": {},
        "updated_channels": ["step", "note"],
    }
    return SmallCheckpoint(
        config={"configurable": {"thread_id": thread, "checkpoint_ns": ""}},
        checkpoint=checkpoint,
        metadata={"source": "loop", "step": step, "parents": {}},
        new_versions={"step": version, "note": version},
    )


async def bounded(
    jobs: Iterable[Callable[[], Awaitable[None]]], concurrency: int
) -> AsyncIterator[int]:
    """Runs ``jobs`` with at most ``concurrency`` in flight; yields the running count done.

    ``concurrency`` workers pull from one iterator, so no more than that many coroutines
    exist at any time, however many jobs there are. The count is yielded after each job.
    """
    source: Iterator[Callable[[], Awaitable[None]]] = iter(jobs)
    done: asyncio.Queue[int | BaseException] = asyncio.Queue()

    async def worker() -> None:
        try:
            for job in source:
                await job()
                done.put_nowait(1)
        except BaseException as error:  # handed to the consumer below
            done.put_nowait(error)
        finally:
            done.put_nowait(0)

    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    try:
        finished = count = 0
        while finished < concurrency:
            item = await done.get()
            if isinstance(item, BaseException):
                raise item
            if item == 0:
                finished += 1
            else:
                count += 1
                yield count
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)


@dataclass(frozen=True)
class SeedResult:
    """How seeding the namespace went."""

    threads: int
    create_seconds: float
    checkpointed: int
    checkpoint_seconds: float
    concurrency: int
    statuses: dict[str, int]

    @property
    def creates_per_second(self) -> float:
        """CreateThread calls completed per wall-clock second."""
        return self.threads / self.create_seconds


def _progress(message: str) -> None:
    print(f"[threads {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def seed(
    savers: Sequence[GrpcSaver], *, threads: int, checkpointed: int, concurrency: int
) -> SeedResult:
    """Creates ``threads`` threads, then gives ``checkpointed`` of them a checkpoint.

    Calls go round-robin to ``savers`` (servers of one database), ``concurrency`` in flight.
    Checkpointed threads are spread evenly over the creation order. A third of them also get
    an ``interrupt()`` write (status ``interrupted``) and a third an error write (``error``).
    """
    rng = random.Random(0)
    metadata = [thread_metadata(i, rng) for i in range(threads)]

    def create(index: int) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            saver = savers[index % len(savers)]
            await saver.athreads.create(thread_id(index), metadata=metadata[index])

        return job

    started = time.perf_counter()
    async for done in bounded((create(i) for i in range(threads)), concurrency):
        if done % _PROGRESS_EVERY == 0:
            _progress(f"created {done:,} of {threads:,} threads")
    create_seconds = time.perf_counter() - started

    stride = max(1, threads // checkpointed) if checkpointed else 0
    chosen = list(range(0, threads, stride))[:checkpointed] if stride else []

    def checkpoint(order: int, index: int) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            saver = savers[order % len(savers)]
            put = small_checkpoint(saver, thread_id(index))
            config = await saver.aput(put.config, put.checkpoint, put.metadata, put.new_versions)
            status = _STATUS_CYCLE[order % len(_STATUS_CYCLE)]
            if status == "interrupted":
                value = [Interrupt(value="approve?", id=f"interrupt-{index}")]
                await saver.aput_writes(config, [("__interrupt__", value)], f"task-{index}")
            elif status == "error":
                await saver.aput_writes(config, [("__error__", "boom")], f"task-{index}")

        return job

    started = time.perf_counter()
    async for _ in bounded((checkpoint(o, i) for o, i in enumerate(chosen)), concurrency):
        pass
    checkpoint_seconds = time.perf_counter() - started
    statuses = {
        s: await savers[0].athreads.count(status=s) for s in ("idle", "interrupted", "error")
    }
    return SeedResult(
        threads=threads,
        create_seconds=create_seconds,
        checkpointed=len(chosen),
        checkpoint_seconds=checkpoint_seconds,
        concurrency=concurrency,
        statuses=statuses,
    )


@dataclass(frozen=True)
class QueryResult:
    """The latency of one kind of catalog call, and how many threads it matched."""

    label: str
    call: str
    matches: int
    returned: int | None
    latency: Latency


async def _timed(
    call: Callable[[], Awaitable[int]], samples: int, warmup: int
) -> tuple[Latency, int]:
    results: list[int] = []
    durations: list[float] = []
    for attempt in range(warmup + samples):
        started = time.perf_counter()
        results.append(await call())
        if attempt >= warmup:
            durations.append(time.perf_counter() - started)
    return Latency.of(durations), results[-1]


@dataclass(frozen=True)
class SearchCase:
    """A search (or a count, without ``sort_by``) to time, with the client call it makes."""

    label: str
    call: str
    metadata: dict[str, Any]
    status: str | None = None
    sort_by: str | None = "updated_at"


def search_cases() -> list[SearchCase]:
    """The catalog calls the benchmark times."""
    return [
        SearchCase(
            "Search by user (sort updated_at desc)",
            "search(metadata={'user': 'u42'}, limit=20)",
            {"user": "u42"},
        ),
        SearchCase(
            "Search by status + team (sort updated_at desc)",
            "search(status='interrupted', metadata={'team': 'team-3'}, limit=20)",
            {"team": "team-3"},
            status="interrupted",
        ),
        SearchCase(
            "Search by user, sort created_at desc",
            "search(metadata={'user': 'u42'}, sort_by='created_at', limit=20)",
            {"user": "u42"},
            sort_by="created_at",
        ),
        SearchCase(
            "Search by team (sort updated_at desc)",
            "search(metadata={'team': 'team-3'}, limit=20)",
            {"team": "team-3"},
        ),
        SearchCase(
            "Count by user",
            "count(metadata={'user': 'u42'})",
            {"user": "u42"},
            sort_by=None,
        ),
        SearchCase(
            "Count by team",
            "count(metadata={'team': 'team-3'})",
            {"team": "team-3"},
            sort_by=None,
        ),
    ]


def _call(saver: GrpcSaver, case: SearchCase, limit: int) -> Callable[[], Awaitable[int]]:
    """The client call of ``case``; it returns the count, or the threads on the page."""
    status: Any = case.status
    sort_by: Any = case.sort_by

    async def count() -> int:
        return await saver.athreads.count(metadata=case.metadata, status=status)

    async def search() -> int:
        page = await saver.athreads.search(
            metadata=case.metadata, status=status, sort_by=sort_by, limit=limit
        )
        return len(page.threads)

    return count if case.sort_by is None else search


async def measure_searches(
    saver: GrpcSaver, cases: list[SearchCase], *, samples: int, warmup: int, limit: int = 20
) -> list[QueryResult]:
    """Times each case: ``warmup`` untimed calls, then ``samples`` timed ones, one at a time."""
    results: list[QueryResult] = []
    for case in cases:
        status: Any = case.status
        matches = await saver.athreads.count(metadata=case.metadata, status=status)
        latency, last = await _timed(_call(saver, case, limit), samples, warmup)
        returned = None if case.sort_by is None else last
        results.append(QueryResult(case.label, case.call, matches, returned, latency))
    return results
