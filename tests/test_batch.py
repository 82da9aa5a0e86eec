"""BatchWrite: many puts and writes in one call, each stored or refused alone, on both databases."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Iterator
from functools import partial
from itertools import islice
from pathlib import Path

import grpc
import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import empty_checkpoint
from lgcheckpoint.v1 import checkpoint_pb2 as pb
from lgcheckpoint.v1 import checkpoint_service_pb2 as api
from lgcheckpoint.v1.checkpoint_service_pb2_grpc import CheckpointServiceStub

from langgraph.checkpoint.grpc import GrpcSaver
from tests.conftest import ServerProcess
from tests.test_leases import acquire

OK = grpc.StatusCode.OK.value[0]
INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]
FAILED = grpc.StatusCode.FAILED_PRECONDITION.value[0]


@pytest.fixture
def stub(server: ServerProcess) -> Iterator[CheckpointServiceStub]:
    with grpc.insecure_channel(server.target) as channel:
        yield CheckpointServiceStub(channel)


def checkpoint(thread_id: str, checkpoint_id: str, namespace: str = "") -> api.BatchWriteItem:
    return api.BatchWriteItem(
        put_checkpoint=api.PutCheckpointRequest(
            namespace=namespace,
            thread_id=thread_id,
            checkpoint_id=checkpoint_id,
            checkpoint=pb.Payload(type="json", data=b"{}"),
            metadata_json=b'{"source": "loop"}',
            new_values=[
                pb.ChannelValue(channel="c", version="1", value=pb.Payload(type="json", data=b"1"))
            ],
        )
    )


def writes(thread_id: str, checkpoint_id: str, namespace: str = "") -> api.BatchWriteItem:
    return api.BatchWriteItem(
        put_writes=api.PutWritesRequest(
            namespace=namespace,
            thread_id=thread_id,
            checkpoint_id=checkpoint_id,
            writes=[
                pb.PendingWrite(
                    task_id="t", idx=0, channel="c", value=pb.Payload(type="json", data=b"2")
                )
            ],
        )
    )


def stored(stub: CheckpointServiceStub, namespace: str, thread_id: str) -> list[str]:
    """The IDs of the thread's checkpoints, each with the number of its pending writes."""
    request = api.ListCheckpointsRequest(namespace=namespace, thread_id=thread_id)
    return [
        f"{c.checkpoint_id}+{len(c.pending_writes)}"
        for c in stub.ListCheckpoints(request).checkpoints
    ]


def test_every_item_is_stored_as_its_own_call_would_store_it(
    stub: CheckpointServiceStub, namespace: str
) -> None:
    items = []
    for n in range(5):
        items += [checkpoint(f"t{n}", "c1"), writes(f"t{n}", "c1"), checkpoint(f"t{n}", "c2")]
    response = stub.BatchWrite(api.BatchWriteRequest(namespace=namespace, items=items))
    assert [r.code for r in response.results] == [OK] * len(items)
    for n in range(5):
        assert stored(stub, namespace, f"t{n}") == ["c2+0", "c1+1"]
    # Again: every item is idempotent.
    stub.BatchWrite(api.BatchWriteRequest(namespace=namespace, items=items))
    assert stored(stub, namespace, "t0") == ["c2+0", "c1+1"]


def test_a_bad_item_fails_alone_naming_its_field(
    stub: CheckpointServiceStub, namespace: str
) -> None:
    bad = checkpoint("", "c1")
    empty = api.BatchWriteItem()
    items = [checkpoint("a", "c1"), bad, writes("a", "c1"), empty]
    response = stub.BatchWrite(api.BatchWriteRequest(namespace=namespace, items=items))
    assert [r.code for r in response.results] == [OK, INVALID, OK, INVALID]
    assert response.results[1].message.startswith("items[1].put_checkpoint.thread_id:")
    assert response.results[3].message.startswith("items[3]:")
    assert stored(stub, namespace, "a") == ["c1+1"]


def test_an_item_cannot_reach_another_namespace(
    stub: CheckpointServiceStub, namespace: str
) -> None:
    other = f"{namespace}-other"
    items = [checkpoint("a", "c1", namespace=other), writes("a", "c1", namespace=namespace)]
    response = stub.BatchWrite(api.BatchWriteRequest(namespace=namespace, items=items))
    assert [r.code for r in response.results] == [INVALID, OK]
    assert response.results[0].message.startswith("items[0].put_checkpoint.namespace:")
    assert stored(stub, other, "a") == []


def test_a_refused_lease_fails_only_its_item(stub: CheckpointServiceStub, namespace: str) -> None:
    lease = acquire(stub, namespace, "leased")
    items = [checkpoint("free", "c1"), checkpoint("leased", "c1"), writes("free", "c1")]
    response = stub.BatchWrite(api.BatchWriteRequest(namespace=namespace, items=items))
    assert [r.code for r in response.results] == [OK, FAILED, OK]
    assert "is leased by lease" in response.results[1].message
    assert stored(stub, namespace, "free") == ["c1+1"]
    assert stored(stub, namespace, "leased") == []
    held = checkpoint("leased", "c1")
    held.put_checkpoint.lease.CopyFrom(lease)
    response = stub.BatchWrite(api.BatchWriteRequest(namespace=namespace, items=[held]))
    assert [r.code for r in response.results] == [OK]


@pytest.mark.parametrize("count", [0, 1001])
def test_the_number_of_items_is_bounded(
    stub: CheckpointServiceStub, namespace: str, count: int
) -> None:
    items = [checkpoint(f"t{n}", "c1") for n in range(count)]
    with pytest.raises(grpc.RpcError) as caught:
        stub.BatchWrite(api.BatchWriteRequest(namespace=namespace, items=items))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith("items:")
    assert stored(stub, namespace, "t0") == []


async def test_the_async_saver_sends_concurrent_puts_together(
    server: ServerProcess, namespace: str
) -> None:
    async with GrpcSaver.from_conn_string(server.target, namespace=namespace) as saver:
        before = batch_calls(server)

        async def put(n: int) -> None:
            config: RunnableConfig = {"configurable": {"thread_id": f"t{n}", "checkpoint_ns": ""}}
            stored = await saver.aput(config, empty_checkpoint(), {"step": n}, {})
            await saver.aput_writes(stored, [("c", n)], "task")

        await asyncio.gather(*(put(n) for n in range(40)))
        reads_before = batch_calls(server, "BatchGetCheckpoints")
        found = await asyncio.gather(
            *(saver.aget_tuple({"configurable": {"thread_id": f"t{n}"}}) for n in range(41))
        )
        assert found[40] is None  # no such thread
        for n, tuple_ in enumerate(found[:40]):
            assert tuple_ is not None
            assert tuple_.metadata["step"] == n
            assert [(w[1], w[2]) for w in tuple_.pending_writes or []] == [("c", n)]
        # Calls made at once: most travelled in batches (the access log says how).
        for _ in range(50):
            if batch_calls(server) > before and batch_calls(server, "BatchGetCheckpoints") > (
                reads_before
            ):
                break
            await asyncio.sleep(0.1)
        assert batch_calls(server) > before
        assert batch_calls(server, "BatchGetCheckpoints") > reads_before


def batch_calls(server: ServerProcess, method: str = "BatchWrite") -> int:
    return sum(f'"method": "{method}"' in line for line in list(server.log))


def test_batch_get_reads_each_item_as_its_own_get_would(
    stub: CheckpointServiceStub, namespace: str
) -> None:
    items = [checkpoint("a", "c1"), writes("a", "c1"), checkpoint("a", "c2")]
    stub.BatchWrite(api.BatchWriteRequest(namespace=namespace, items=items))
    gets = [
        api.GetCheckpointRequest(thread_id="a"),
        api.GetCheckpointRequest(thread_id="a", checkpoint_id="c1"),
        api.GetCheckpointRequest(thread_id="nobody"),
        api.GetCheckpointRequest(thread_id=""),
        api.GetCheckpointRequest(namespace=f"{namespace}-other", thread_id="a"),
    ]
    request = api.BatchGetCheckpointsRequest(namespace=namespace, items=gets)
    results = stub.BatchGetCheckpoints(request).results
    codes = [grpc.StatusCode.OK.value[0]] * 2 + [
        grpc.StatusCode.NOT_FOUND.value[0],
        INVALID,
        INVALID,
    ]
    assert [r.code for r in results] == codes
    for result, get in zip(results[:2], gets[:2], strict=True):
        get.namespace = namespace
        assert result.checkpoint == stub.GetCheckpoint(get).checkpoint
    assert [len(r.checkpoint.pending_writes) for r in results[:2]] == [0, 1]
    assert results[3].message.startswith("items[3].thread_id:")
    assert results[4].message.startswith("items[4].namespace:")
    assert not results[4].HasField("checkpoint")


def test_batch_get_stays_within_the_message_size_limit(postgres_url: str, namespace: str) -> None:
    server = ServerProcess.start(postgres_url, "--max-message-bytes", "300000")
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = CheckpointServiceStub(channel)
            big = checkpoint("big", "c1")
            big.put_checkpoint.checkpoint.data = b"x" * 120_000
            other = checkpoint("other", "c1")
            other.put_checkpoint.checkpoint.data = b"y" * 120_000
            stub.BatchWrite(api.BatchWriteRequest(namespace=namespace, items=[big]))
            stub.BatchWrite(api.BatchWriteRequest(namespace=namespace, items=[other]))
            gets = [api.GetCheckpointRequest(thread_id=t) for t in ("big", "other", "big")]
            request = api.BatchGetCheckpointsRequest(namespace=namespace, items=gets)
            results = stub.BatchGetCheckpoints(request).results
            exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
            assert [r.code for r in results] == [OK, OK, exhausted]
            assert "read this checkpoint alone" in results[2].message
            # Error results take room too: the checkpoint gives way, the call still answers.
            huge = checkpoint("huge", "c1")
            huge.put_checkpoint.checkpoint.data = b"z" * 250_000
            stub.BatchWrite(api.BatchWriteRequest(namespace=namespace, items=[huge]))
            gets = [api.GetCheckpointRequest(thread_id="huge")] + [
                api.GetCheckpointRequest(thread_id=f"nobody-{n}") for n in range(999)
            ]
            request = api.BatchGetCheckpointsRequest(namespace=namespace, items=gets)
            results = stub.BatchGetCheckpoints(request).results
            missing = grpc.StatusCode.NOT_FOUND.value[0]
            assert [r.code for r in results] == [exhausted] + [missing] * 999
            # A thousand reads of the same large checkpoint: the server stops reading once a
            # response cannot hold more, so its memory does not grow by what was asked.
            before = _rss(server)
            gets = [api.GetCheckpointRequest(thread_id="huge")] * 1000
            request = api.BatchGetCheckpointsRequest(namespace=namespace, items=gets)
            results = stub.BatchGetCheckpoints(request).results
            assert {r.code for r in results} == {exhausted}  # a thousand refusals fill it
            assert _rss(server) - before < 50 * 2**20  # 1000 reads would hold 250 MB
    finally:
        server.stop()


def test_watchers_see_every_item_of_a_batch(
    server: ServerProcess, stub: CheckpointServiceStub, namespace: str
) -> None:
    items = [checkpoint("a", "c1"), writes("a", "c1"), checkpoint("b", "c1")]
    stub.BatchWrite(api.BatchWriteRequest(namespace=namespace, items=items))
    with GrpcSaver.from_conn_string(server.target, namespace=namespace) as saver:
        seen = [
            (event.kind, event.thread_id, event.checkpoint_id)
            for event in islice(saver.threads.watch(from_beginning=True), 5)
        ]
    assert sorted(seen) == [
        ("checkpoint_added", "a", "c1"),
        ("checkpoint_added", "b", "c1"),
        ("thread_created", "a", None),
        ("thread_created", "b", None),
        ("writes_added", "a", "c1"),
    ]


def test_cut_off_batches_leave_no_broken_connection_behind(
    postgres_url: str, namespace: str
) -> None:
    """Batches cut off at random points, then calls: each is answered, each put is stored."""
    server = ServerProcess.start(postgres_url)
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = CheckpointServiceStub(channel)
            rng = random.Random(7)  # noqa: S311 - timeouts, not secrets
            for n in range(300):
                items = [checkpoint(f"cut-{n}-{i}", "c1") for i in range(5)]
                request = api.BatchWriteRequest(namespace=namespace, items=items)
                with contextlib.suppress(grpc.RpcError):
                    stub.BatchWrite(request, timeout=rng.uniform(0.001, 0.05))
            codes = []
            for n in range(100):
                get = api.GetCheckpointRequest(namespace=namespace, thread_id=f"cut-{n}-0")
                codes.append(_code(partial(stub.GetCheckpoint, get)))
            assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND}, codes
            for n in range(40):
                item = checkpoint(f"after-{n}", "c1").put_checkpoint
                item.namespace = namespace
                stub.PutCheckpoint(item)
            for n in range(40):
                assert stored(stub, namespace, f"after-{n}") == ["c1+0"], n
    finally:
        server.stop()


def _code(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        return code
    return grpc.StatusCode.OK


def _rss(server: ServerProcess) -> int:
    """The server process's peak resident memory, in bytes."""
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return (
        int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])
        * 1024
    )
