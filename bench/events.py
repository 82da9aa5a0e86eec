"""Put-to-event latency: from just before ``aput`` to a watcher receiving checkpoint_added.

The writer and the watcher may talk to different servers of one database (PostgreSQL: the
event crosses servers through the events table and LISTEN/NOTIFY) or to the same one.
Each put is on a thread of its own and is matched to its event by thread and checkpoint ID.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from bench.catalog import small_checkpoint
from bench.stats import Latency
from langgraph.checkpoint.grpc import GrpcSaver

# How long a put's event may take before it counts as lost.
_EVENT_TIMEOUT = 10.0
# Warm-up puts made before giving up on the watch stream being established.
_ESTABLISH_ATTEMPTS = 50


class EventClock:
    """Notes when each awaited checkpoint_added event reaches the watcher."""

    def __init__(self) -> None:
        """No event awaited yet."""
        self._waiting: dict[tuple[str, str], asyncio.Future[float]] = {}
        self.events = 0

    def expect(self, thread_id: str, checkpoint_id: str) -> asyncio.Future[float]:
        """A future set to the ``perf_counter`` time the checkpoint's event arrives."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiting[(thread_id, checkpoint_id)] = future
        return future

    async def watch(self, saver: GrpcSaver) -> None:
        """Watches ``saver``'s namespace from now on, until cancelled."""
        async for event in saver.athreads.watch():
            arrived = time.perf_counter()
            self.events += 1
            if event.kind != "checkpoint_added" or event.checkpoint_id is None:
                continue
            future = self._waiting.pop((event.thread_id, event.checkpoint_id), None)
            if future is not None and not future.done():
                future.set_result(arrived)


@asynccontextmanager
async def watching(saver: GrpcSaver) -> AsyncIterator[EventClock]:
    """An ``EventClock`` fed by a watch on ``saver`` for the duration of the block."""
    clock = EventClock()
    task = asyncio.create_task(clock.watch(saver))
    try:
        yield clock
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@dataclass(frozen=True)
class EventResult:
    """Put-to-event latency of one setup.

    ``put`` is the ``aput`` call alone, ``event`` from just before ``aput`` to the event's
    arrival, ``delivery`` from ``aput`` returning to the event's arrival.
    """

    label: str
    writers: int
    puts: int
    received: int
    put: Latency
    event: Latency
    delivery: Latency
    seconds: float

    @property
    def lost(self) -> int:
        """Puts whose event did not arrive within the timeout."""
        return self.puts - self.received


async def _put(
    writer: GrpcSaver, clock: EventClock, thread: str
) -> tuple[float, float, asyncio.Future[float]]:
    """Stores a small checkpoint on ``thread``: its start time, put time and event future."""
    put = small_checkpoint(writer, thread)
    arrival = clock.expect(put.thread_id, put.checkpoint_id)
    started = time.perf_counter()
    await writer.aput(put.config, put.checkpoint, put.metadata, put.new_versions)
    return started, time.perf_counter() - started, arrival


async def establish(writer: GrpcSaver, clock: EventClock, prefix: str, warmup: int) -> None:
    """Warm-up puts, each awaited, until the watch delivers and ``warmup`` puts came through.

    The watch starts "from now" when its server receives the request, so the first puts
    may predate it; the count only starts with the first event received.

    Raises:
        RuntimeError: No event arrived after many puts.
    """
    delivered = 0
    for attempt in range(_ESTABLISH_ATTEMPTS + warmup):
        _, _, arrival = await _put(writer, clock, f"{prefix}-warmup-{attempt}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(arrival, 1.0 if delivered == 0 else _EVENT_TIMEOUT)
        if arrival.done() and not arrival.cancelled():
            delivered += 1
            if delivered >= warmup:
                return
    raise RuntimeError(f"the watch delivered {delivered} of the warm-up puts' events")


async def measure_events(
    writer: GrpcSaver,
    clock: EventClock,
    *,
    label: str,
    prefix: str,
    writers: int,
    puts_per_writer: int,
) -> EventResult:
    """``writers`` writers each store ``puts_per_writer`` checkpoints, one at a time.

    Every put is on a new thread. Writers share ``writer``'s channel and run at once. A
    writer does not wait for the event of its put before the next put: the watcher keeps up
    with the writers or falls behind, as it would in service. Events are awaited at the end.
    """
    samples: list[tuple[float, float, asyncio.Future[float]]] = []

    async def write(number: int) -> None:
        for n in range(puts_per_writer):
            samples.append(await _put(writer, clock, f"{prefix}-w{number}-{n}"))

    started = time.perf_counter()
    await asyncio.gather(*(write(number) for number in range(writers)))
    arrivals = [future for _, _, future in samples]
    await asyncio.wait(arrivals, timeout=_EVENT_TIMEOUT)
    seconds = time.perf_counter() - started
    arrived = [
        (future.result() - start, put)
        for start, put, future in samples
        if future.done() and not future.cancelled()
    ]
    event_seconds = [event for event, _ in arrived]
    for future in arrivals:
        future.cancel()
    if not event_seconds:
        raise RuntimeError(f"{label}: no event arrived")
    return EventResult(
        label=label,
        writers=writers,
        puts=len(samples),
        received=len(event_seconds),
        put=Latency.of([put for _, put, _ in samples]),
        event=Latency.of(event_seconds),
        delivery=Latency.of([event - put for event, put in arrived]),
        seconds=seconds,
    )
