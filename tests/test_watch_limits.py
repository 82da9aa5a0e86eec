"""WatchEvents streams are bounded per namespace and per server; idle ones cost little."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from lgcheckpoint.v1 import thread_service_pb2 as api
from lgcheckpoint.v1.thread_service_pb2_grpc import ThreadServiceStub

from bench.load import rss_bytes
from tests.conftest import ServerProcess

if TYPE_CHECKING:
    from lgcheckpoint.v1.thread_service_pb2_grpc import ThreadServiceAsyncStub

_Call = Any  # grpc.aio.UnaryStreamCall, whose stubs are not generic here


@asynccontextmanager
async def _stub(server: ServerProcess) -> AsyncIterator[ThreadServiceAsyncStub]:
    async with grpc.aio.insecure_channel(server.target) as channel:
        yield ThreadServiceStub(channel)


async def _watching(stub: ThreadServiceAsyncStub, namespace: str) -> _Call:
    """A watch that holds its slot: it has received the namespace's first event."""
    call: _Call = stub.WatchEvents(api.WatchEventsRequest(namespace=namespace, from_beginning=True))
    response = await asyncio.wait_for(call.read(), 20)
    assert response.HasField("event")
    return call


async def _refused(stub: ThreadServiceAsyncStub, namespace: str) -> str:
    """Opens a watch that must be refused at once; returns the error's details."""
    call: _Call = stub.WatchEvents(api.WatchEventsRequest(namespace=namespace))
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await asyncio.wait_for(call.read(), 5)
    assert time.monotonic() - started < 2
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    return str(refused.value.details())


async def _reopen(stub: ThreadServiceAsyncStub, namespace: str, seconds: float = 5) -> _Call:
    """A watch in ``namespace`` once a slot there is free again, within ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await _watching(stub, namespace)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_watches_past_a_limit_are_refused_and_closed_ones_free_their_slot(
    own_database: str,
) -> None:
    server = ServerProcess.start(
        own_database, "--max-watchers-per-namespace", "3", "--max-watchers", "5"
    )
    try:
        async with _stub(server) as stub:
            for namespace in ("a", "b", "c"):
                await stub.CreateThread(api.CreateThreadRequest(namespace=namespace))
            in_a = [await _watching(stub, "a") for _ in range(3)]
            details = await _refused(stub, "a")
            assert "--max-watchers-per-namespace" in details
            assert "3" in details
            # Another namespace still has slots of its own, up to the server's total.
            in_b = [await _watching(stub, "b") for _ in range(2)]
            details = await _refused(stub, "c")
            assert "--max-watchers" in details
            assert "5" in details
            # A stream the client closes gives its slot back, to its namespace and the server.
            in_a.pop().cancel()
            in_a.append(await _reopen(stub, "a"))
            in_b.pop().cancel()
            in_c = await _reopen(stub, "c")
            # Refused streams took no slot: the open ones still get their events.
            await stub.CreateThread(api.CreateThreadRequest(namespace="a", thread_id="new"))
            for call in in_a:
                assert (await asyncio.wait_for(call.read(), 20)).event.thread_id == "new"
            for call in (*in_a, *in_b, in_c):
                call.cancel()
    finally:
        assert server.stop() == 0, "".join(server.log)


async def test_a_thousand_idle_watchers_at_the_default_limits_do_not_exhaust_the_server(
    own_database: str,
) -> None:
    server = ServerProcess.start(own_database)
    namespaces = [f"idle-{n}" for n in range(10)]
    try:
        async with _stub(server) as stub:
            for namespace in (*namespaces, "one-too-many"):
                await stub.CreateThread(api.CreateThreadRequest(namespace=namespace))
            before = rss_bytes(server.process.pid)
            channels = [grpc.aio.insecure_channel(server.target) for _ in namespaces]
            try:
                calls = await asyncio.gather(
                    *(
                        _watching(ThreadServiceStub(channel), namespace)
                        for channel, namespace in zip(channels, namespaces, strict=True)
                        for _ in range(100)
                    )
                )
                grown = rss_bytes(server.process.pid) - before
                # Each namespace holds its default 100, and the server its default 1,000.
                assert "--max-watchers-per-namespace" in await _refused(stub, namespaces[0])
                assert "--max-watchers" in await _refused(stub, "one-too-many")
                # Idle watchers cost little memory, and the server still answers at once.
                assert grown < 64 * 1024 * 1024, f"{grown} bytes for 1,000 watchers"
                started = time.monotonic()
                await stub.CreateThread(
                    api.CreateThreadRequest(namespace=namespaces[0], thread_id="wake")
                )
                assert time.monotonic() - started < 2
                # A commit wakes every watcher of its namespace.
                woken = await asyncio.wait_for(
                    asyncio.gather(*(call.read() for call in calls[:100])), 30
                )
                assert {response.event.thread_id for response in woken} == {"wake"}
                for call in calls:
                    call.cancel()
                await _reopen(stub, "one-too-many")
            finally:
                for channel in channels:
                    await channel.close()
    finally:
        assert server.stop() == 0, "".join(server.log)


# A client that opens a watch, says so, and then waits for ever (until it is stopped).
_WATCHER = """
import asyncio, sys, grpc
from lgcheckpoint.v1 import thread_service_pb2 as api
from lgcheckpoint.v1.thread_service_pb2_grpc import ThreadServiceStub

async def main():
    async with grpc.aio.insecure_channel(sys.argv[1]) as channel:
        request = api.WatchEventsRequest(namespace="gone", from_beginning=True)
        call = ThreadServiceStub(channel).WatchEvents(request)
        await call.read()
        print("watching", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


def _start_watcher(target: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _WATCHER, target], stdout=subprocess.PIPE, text=True
    )


async def test_a_watcher_that_vanishes_frees_its_slot_after_the_keepalive(
    own_database: str,
) -> None:
    server = ServerProcess.start(
        own_database, "--max-watchers-per-namespace", "1", "--keepalive-seconds", "1"
    )
    client = _start_watcher(server.target)
    try:
        async with _stub(server) as stub:
            await stub.CreateThread(api.CreateThreadRequest(namespace="gone"))
            assert client.stdout is not None
            assert await asyncio.to_thread(client.stdout.readline) == "watching\n"
            # Stopped, the client answers nothing, as if its host had gone: its connection
            # stays open, and only the server's pings find out.
            client.send_signal(signal.SIGSTOP)
            assert "--max-watchers-per-namespace" in await _refused(stub, "gone")
            (await _reopen(stub, "gone", seconds=15)).cancel()
    finally:
        client.kill()
        client.wait()
        assert client.stdout is not None
        client.stdout.close()
        assert server.stop() == 0, "".join(server.log)
