"""A bounded load test: many concurrent clients mixing every kind of call against one server.

``.venv/bin/python -m bench.load [--seconds 60] [--clients 32] [--database sqlite|postgres]``

Starts a server on a fresh database (on 127.0.0.1), opens watchers in every namespace, then
runs ``--clients`` clients for ``--seconds``: each writes checkpoints and pending writes to a
thread of its own and reads them back, lists its thread's history, searches and counts the
threads of its namespace and updates its thread's metadata. It reports every failed call by
method and status, p50/p99 latency and calls per second per RPC, whether each watcher received
every checkpoint of its namespace, and the server's resident memory at the start and the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from lgcheckpoint.v1 import checkpoint_pb2 as pb
from lgcheckpoint.v1 import checkpoint_service_pb2 as api
from lgcheckpoint.v1 import thread_pb2 as thread_pb
from lgcheckpoint.v1 import thread_service_pb2 as thread_api
from lgcheckpoint.v1.checkpoint_service_pb2_grpc import CheckpointServiceStub
from lgcheckpoint.v1.thread_service_pb2_grpc import ThreadServiceStub

if TYPE_CHECKING:
    from lgcheckpoint.v1.checkpoint_service_pb2_grpc import CheckpointServiceAsyncStub
    from lgcheckpoint.v1.thread_service_pb2_grpc import ThreadServiceAsyncStub

from bench.backends import fresh_postgres_database
from bench.server import ServerProcess
from bench.stats import Latency

NAMESPACES = 4
WATCHERS_PER_NAMESPACE = 5
_CHANNELS = 4
_CALL_TIMEOUT = 30.0
# How long watchers may take, after the last put, to deliver the last events.
_DRAIN_SECONDS = 15.0
# Memory is compared from this share of the run on: caches and pools fill up before it.
_WARM_UP_SHARE = 0.2
_VALUE = pb.Payload(type="json", data=b'{"messages": ["hello", "world"]}' * 8)

_Result = TypeVar("_Result")


@dataclass
class Recorder:
    """Every call's latency by method, and every failure by method and status code."""

    samples: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)

    async def call(self, method: str, pending: Awaitable[_Result]) -> _Result | None:
        """Awaits one call; returns its response, or None after recording its failure."""
        started = time.perf_counter()
        try:
            result = await pending
        except grpc.aio.AioRpcError as error:
            self.errors[(method, error.code().name)] += 1
            return None
        self.samples[method].append(time.perf_counter() - started)
        return result


@dataclass
class Watcher:
    """A WatchEvents stream open for the whole run, counting the checkpoints it receives."""

    namespace: str
    call: Any
    checkpoints: int = 0
    error: str | None = None

    async def follow(self) -> None:
        """Counts events until the stream ends; a failure other than cancelling is kept."""
        try:
            # read(), not iteration: the first event was read so already (gRPC forbids mixing).
            while (response := await self.call.read()) is not grpc.aio.EOF:
                if response.event.kind == thread_pb.EVENT_KIND_CHECKPOINT_ADDED:
                    self.checkpoints += 1
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                self.error = error.code().name
        except asyncio.CancelledError:
            pass


@dataclass
class Report:
    """What one run measured."""

    database: str
    clients: int
    seconds: float
    latencies: dict[str, Latency]
    errors: Counter[tuple[str, str]]
    rss_start: int
    rss_warm: int
    rss_peak: int
    rss_end: int
    checkpoints_put: dict[str, int]
    watchers: list[Watcher]

    @property
    def missed_events(self) -> int:
        """Checkpoints put that some watcher of their namespace never received."""
        return sum(
            max(0, self.checkpoints_put.get(w.namespace, 0) - w.checkpoints) for w in self.watchers
        )

    @property
    def failures(self) -> list[str]:
        """Every failed call and watcher, one line each; empty for a clean run."""
        lines = [f"{method}: {count} x {code}" for (method, code), count in self.errors.items()]
        lines += [f"watcher in {w.namespace}: {w.error}" for w in self.watchers if w.error]
        if self.missed_events:
            lines.append(f"watchers missed {self.missed_events} checkpoint events")
        return lines

    def markdown(self) -> str:
        """The report as a Markdown table and a few lines of summary."""
        total = sum(latency.count for latency in self.latencies.values())
        rows = [
            f"Load: {self.clients} clients, {self.seconds:.0f} s, {self.database}, "
            f"{NAMESPACES} namespaces with {WATCHERS_PER_NAMESPACE} watchers each",
            "",
            "| RPC | calls | calls/s | p50 | p99 |",
            "|---|---:|---:|---:|---:|",
        ]
        for method, latency in sorted(self.latencies.items()):
            rows.append(
                f"| {method} | {latency.count:,} | {latency.count / self.seconds:,.0f} | "
                f"{latency.p50 * 1000:.1f} ms | {latency.p99 * 1000:.1f} ms |"
            )
        delivered = sum(w.checkpoints for w in self.watchers)
        rows += [
            f"| all | {total:,} | {total / self.seconds:,.0f} | | |",
            "",
            f"Watch events: {delivered:,} checkpoint events delivered to "
            f"{len(self.watchers)} watchers, {self.missed_events} missed.",
            f"Server memory (RSS): {_mib(self.rss_start)} before the load, "
            f"{_mib(self.rss_warm)} after {_WARM_UP_SHARE:.0%} of it, "
            f"{_mib(self.rss_peak)} at the peak, {_mib(self.rss_end)} at the end.",
            "Errors: none." if not self.failures else "Errors:\n- " + "\n- ".join(self.failures),
        ]
        return "\n".join(rows)


def _mib(size: int) -> str:
    return f"{size / 1024 / 1024:.0f} MiB"


def rss_bytes(pid: int) -> int:
    """A process's resident memory, from ``/proc``."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


@dataclass
class _Stubs:
    checkpoints: CheckpointServiceAsyncStub
    threads: ThreadServiceAsyncStub


async def _client(
    recorder: Recorder, stubs: _Stubs, index: int, stop_at: float, put: Counter[str]
) -> None:
    """One client's loop: a put, its writes, reads, a list, a search, a count, an update."""
    namespace, thread_id = f"load-{index % NAMESPACES}", f"client-{index}"
    group = json.dumps({"group": index % 3}).encode()
    call, c, t = recorder.call, stubs.checkpoints, stubs.threads
    create = thread_api.CreateThreadRequest(
        namespace=namespace, thread_id=thread_id, metadata_json=group
    )
    await call("CreateThread", t.CreateThread(create, timeout=_CALL_TIMEOUT))
    parent, step = "", 0
    while time.monotonic() < stop_at:
        step += 1
        checkpoint_id = f"{step:010d}"
        request = api.PutCheckpointRequest(
            namespace=namespace,
            thread_id=thread_id,
            checkpoint_id=checkpoint_id,
            parent_checkpoint_id=parent,
            checkpoint=pb.Payload(type="json", data=b'{"v": 1}'),
            metadata_json=json.dumps({"step": step, "source": "loop"}).encode(),
            channel_versions={"messages": str(step)},
            new_values=[pb.ChannelValue(channel="messages", version=str(step), value=_VALUE)],
        )
        if await call("PutCheckpoint", c.PutCheckpoint(request, timeout=_CALL_TIMEOUT)) is None:
            continue
        put[namespace] += 1
        parent = checkpoint_id
        writes = api.PutWritesRequest(
            namespace=namespace,
            thread_id=thread_id,
            checkpoint_id=checkpoint_id,
            writes=[
                pb.PendingWrite(task_id="task", idx=i, channel="messages", value=_VALUE)
                for i in range(2)
            ],
        )
        await call("PutWrites", c.PutWrites(writes, timeout=_CALL_TIMEOUT))
        latest = api.GetCheckpointRequest(namespace=namespace, thread_id=thread_id)
        await call("GetCheckpoint", c.GetCheckpoint(latest, timeout=_CALL_TIMEOUT))
        history = api.ListCheckpointsRequest(namespace=namespace, thread_id=thread_id, page_size=10)
        await call("ListCheckpoints", c.ListCheckpoints(history, timeout=_CALL_TIMEOUT))
        which = thread_api.ThreadFilter(metadata_filter_json=group)
        search = thread_api.SearchThreadsRequest(namespace=namespace, filter=which, page_size=20)
        await call("SearchThreads", t.SearchThreads(search, timeout=_CALL_TIMEOUT))
        count = thread_api.CountThreadsRequest(namespace=namespace, filter=which)
        await call("CountThreads", t.CountThreads(count, timeout=_CALL_TIMEOUT))
        if step % 5 == 0:
            update = thread_api.UpdateThreadRequest(
                namespace=namespace, thread_id=thread_id, metadata_json=b'{"seen": true}'
            )
            await call("UpdateThread", t.UpdateThread(update, timeout=_CALL_TIMEOUT))
            got = thread_api.GetThreadRequest(namespace=namespace, thread_id=thread_id)
            await call("GetThread", t.GetThread(got, timeout=_CALL_TIMEOUT))


async def _open_watchers(stubs: Sequence[_Stubs]) -> list[Watcher]:
    """Opens the watchers and waits until the server holds each one (it received a seed)."""
    watchers = []
    for n in range(NAMESPACES):
        namespace = f"load-{n}"
        seed = thread_api.CreateThreadRequest(namespace=namespace, thread_id="seed")
        await stubs[0].threads.CreateThread(seed, timeout=_CALL_TIMEOUT)
        for w in range(WATCHERS_PER_NAMESPACE):
            request = thread_api.WatchEventsRequest(namespace=namespace, from_beginning=True)
            call = stubs[(n + w) % len(stubs)].threads.WatchEvents(request)
            await asyncio.wait_for(call.read(), _CALL_TIMEOUT)  # the seed's event
            watchers.append(Watcher(namespace, call))
    return watchers


async def _sample_rss(pid: int, warm_at: float, samples: list[int], stop: asyncio.Event) -> None:
    """Appends the RSS every half second; the first sample is taken at ``warm_at``."""
    await asyncio.sleep(max(0.0, warm_at - time.monotonic()))
    while not stop.is_set():
        samples.append(rss_bytes(pid))
        await asyncio.sleep(0.5)


async def _drain(report_put: Counter[str], watchers: Sequence[Watcher]) -> None:
    """Waits until every watcher has every checkpoint of its namespace, or the drain ends."""
    deadline = time.monotonic() + _DRAIN_SECONDS
    while time.monotonic() < deadline:
        if all(w.checkpoints >= report_put[w.namespace] or w.error for w in watchers):
            return
        await asyncio.sleep(0.1)


async def run(target: str, pid: int, *, seconds: float, clients: int, database: str) -> Report:
    """Runs the load against the server at ``target`` (process ``pid``) and reports it."""
    channels = [grpc.aio.insecure_channel(target) for _ in range(_CHANNELS)]
    try:
        stubs = [_Stubs(CheckpointServiceStub(ch), ThreadServiceStub(ch)) for ch in channels]
        watchers = await _open_watchers(stubs)
        following = [asyncio.create_task(w.follow()) for w in watchers]
        rss_start, samples, stop = rss_bytes(pid), list[int](), asyncio.Event()
        recorder, put = Recorder(), Counter[str]()
        started = time.monotonic()
        warm_at = started + seconds * _WARM_UP_SHARE
        sampler = asyncio.create_task(_sample_rss(pid, warm_at, samples, stop))
        await asyncio.gather(
            *(
                _client(recorder, stubs[i % len(stubs)], i, started + seconds, put)
                for i in range(clients)
            )
        )
        elapsed = time.monotonic() - started
        await _drain(put, watchers)
        stop.set()
        await sampler
        rss_end = rss_bytes(pid)
        samples.append(rss_end)
        for watcher in watchers:
            watcher.call.cancel()
        await asyncio.gather(*following)
    finally:
        for channel in channels:
            await channel.close()
    return Report(
        database,
        clients,
        elapsed,
        {method: Latency.of(samples) for method, samples in recorder.samples.items()},
        recorder.errors,
        rss_start,
        samples[0],
        max(samples),
        rss_end,
        dict(put),
        watchers,
    )


@asynccontextmanager
async def fresh_database(kind: str) -> AsyncIterator[str]:
    """A new, empty database of ``kind`` (``sqlite`` or ``postgres``), removed on exit."""
    if kind == "postgres":
        url = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
        async with fresh_postgres_database(url) as fresh:
            yield fresh
        return
    with tempfile.TemporaryDirectory(prefix="lgcp-load-") as tmp:
        yield f"sqlite:///{Path(tmp) / 'checkpoints.db'}"


async def _main(seconds: float, clients: int, database: str) -> Report:
    async with fresh_database(database) as url:
        server = ServerProcess.start(url)
        try:
            target = f"127.0.0.1:{server.port}"
            return await run(
                target, server.process.pid, seconds=seconds, clients=clients, database=database
            )
        finally:
            server.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Runs the load test and prints its report; exits 1 if any call failed."""
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="default %(default)s")
    parser.add_argument("--clients", type=int, default=32, help="default %(default)s")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args(argv)
    report = asyncio.run(_main(args.seconds, args.clients, args.database))
    print(report.markdown())
    raise SystemExit(1 if report.failures else 0)


if __name__ == "__main__":
    main()
