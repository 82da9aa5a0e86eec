"""How the async saver groups its puts and writes: which calls wait, and what each caller learns.

The transport here is a function that records the calls and answers as told; tests/test_batch.py
runs the same path against a real server.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from lgcheckpoint.v1 import checkpoint_service_pb2 as api

from langgraph.checkpoint.grpc import GrpcSaverError
from langgraph.checkpoint.grpc._batch import MAX_IN_FLIGHT, WRITES, Batcher

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


class Transport:
    """Answers calls after a tick; ``answers`` decides each item's code by thread ID."""

    def __init__(self, *, batches: bool = True, codes: dict[str, grpc.StatusCode] | None = None):
        self.calls: list[tuple[str, list[str]]] = []
        self.batches = batches
        self.codes = codes or {}

    async def __call__(self, method: str, request: Any) -> Any:
        await asyncio.sleep(0.01)
        if method != "BatchWrite":
            self.calls.append((method, [request.thread_id]))
            code = self.codes.pop(request.thread_id, grpc.StatusCode.OK)
            if code != grpc.StatusCode.OK:
                raise GrpcSaverError(code, "no")
            return None
        threads = [getattr(i, i.WhichOneof("item")).thread_id for i in request.items]
        self.calls.append((method, threads))
        if not self.batches:
            raise GrpcSaverError(grpc.StatusCode.UNIMPLEMENTED, "unknown method")
        results = []
        for thread in threads:
            code = self.codes.pop(thread, grpc.StatusCode.OK)
            results.append(api.BatchWriteResult(code=code.value[0], message=f"{thread} failed"))
        return api.BatchWriteResponse(results=results)


def put(thread_id: str) -> api.PutCheckpointRequest:
    return api.PutCheckpointRequest(thread_id=thread_id, checkpoint_id="c1")


async def test_calls_go_at_once_until_the_wire_is_busy_then_together() -> None:
    transport = Transport()
    batcher = Batcher("ns", transport, max_bytes=1 << 20, kind=WRITES)
    threads = [f"t{n}" for n in range(10)]
    await asyncio.gather(*(batcher.send("PutCheckpoint", put(t)) for t in threads))
    alone = threads[:MAX_IN_FLIGHT]
    assert transport.calls[:MAX_IN_FLIGHT] == [("PutCheckpoint", [t]) for t in alone]
    assert transport.calls[MAX_IN_FLIGHT:] == [("BatchWrite", threads[MAX_IN_FLIGHT:])]


async def test_each_caller_learns_its_own_items_outcome() -> None:
    codes = {"t5": grpc.StatusCode.FAILED_PRECONDITION, "t6": UNAVAILABLE}
    transport = Transport(codes=codes)
    batcher = Batcher("ns", transport, max_bytes=1 << 20, kind=WRITES)
    outcomes = await asyncio.gather(
        *(batcher.send("PutCheckpoint", put(f"t{n}")) for n in range(8)), return_exceptions=True
    )
    failed = {n: o for n, o in enumerate(outcomes) if o is not None}
    assert list(failed) == [5]
    assert isinstance(failed[5], GrpcSaverError)
    assert failed[5].code == grpc.StatusCode.FAILED_PRECONDITION
    assert failed[5].details == "t5 failed"
    # The unavailable item was sent again on its own, and stored.
    assert ("PutCheckpoint", ["t6"]) in transport.calls


async def test_a_server_without_batches_gets_unary_calls() -> None:
    transport = Transport(batches=False)
    batcher = Batcher("ns", transport, max_bytes=1 << 20, kind=WRITES)
    for _ in range(2):
        await asyncio.gather(*(batcher.send("PutCheckpoint", put(f"t{n}")) for n in range(6)))
    batch_calls = [call for call in transport.calls if call[0] == "BatchWrite"]
    assert len(batch_calls) == 1
    assert sorted(t for m, ts in transport.calls if m == "PutCheckpoint" for t in ts) == sorted(
        [f"t{n}" for n in range(6)] * 2
    )


async def test_an_unreachable_server_fails_every_item_of_the_call() -> None:
    class Down(Transport):
        async def __call__(self, method: str, request: Any) -> Any:
            await asyncio.sleep(0.01)
            raise GrpcSaverError(UNAVAILABLE, "down")

    batcher = Batcher("ns", Down(), max_bytes=1 << 20, kind=WRITES)
    outcomes = await asyncio.gather(
        *(batcher.send("PutCheckpoint", put(f"t{n}")) for n in range(5)), return_exceptions=True
    )
    assert all(isinstance(o, GrpcSaverError) and o.code == UNAVAILABLE for o in outcomes)


async def test_a_cancelled_caller_does_not_stall_the_others() -> None:
    transport = Transport()
    batcher = Batcher("ns", transport, max_bytes=1 << 20, kind=WRITES)
    first = [asyncio.ensure_future(batcher.send("PutCheckpoint", put(f"t{n}"))) for n in range(2)]
    waiting = asyncio.ensure_future(batcher.send("PutCheckpoint", put("gone")))
    kept = asyncio.ensure_future(batcher.send("PutCheckpoint", put("kept")))
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.gather(*first, kept)
    with pytest.raises(asyncio.CancelledError):
        await waiting
    sent = [t for _, ts in transport.calls for t in ts]
    assert "gone" not in sent
    assert "kept" in sent


async def test_a_wrong_number_of_results_fails_every_item_of_the_call() -> None:
    class Short(Transport):
        async def __call__(self, method: str, request: Any) -> Any:
            response = await super().__call__(method, request)
            if method == "BatchWrite":
                del response.results[-1]
            return response

    batcher = Batcher("ns", Short(), max_bytes=1 << 20, kind=WRITES)
    outcomes = await asyncio.gather(
        *(batcher.send("PutCheckpoint", put(f"t{n}")) for n in range(5)), return_exceptions=True
    )
    batched = outcomes[MAX_IN_FLIGHT:]
    assert all(isinstance(o, GrpcSaverError) for o in batched)
    assert all(o.code == grpc.StatusCode.INTERNAL for o in batched if isinstance(o, GrpcSaverError))


async def test_closing_fails_the_calls_that_wait() -> None:
    transport = Transport()
    batcher = Batcher("ns", transport, max_bytes=1 << 20, kind=WRITES)
    calls = [asyncio.ensure_future(batcher.send("PutCheckpoint", put(f"t{n}"))) for n in range(4)]
    await asyncio.sleep(0)
    batcher.close()
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert outcomes[:MAX_IN_FLIGHT] == [None] * MAX_IN_FLIGHT
    closed = outcomes[MAX_IN_FLIGHT:]
    assert all(isinstance(o, GrpcSaverError) for o in closed)
    assert all(o.code == grpc.StatusCode.CANCELLED for o in closed if isinstance(o, GrpcSaverError))
    assert [t for _, ts in transport.calls for t in ts] == [f"t{n}" for n in range(MAX_IN_FLIGHT)]
