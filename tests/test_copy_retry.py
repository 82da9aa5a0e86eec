"""A retried CopyThread whose first reply was lost never makes a second copy."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from lgcheckpoint.v1 import checkpoint_pb2 as pb
from lgcheckpoint.v1 import checkpoint_service_pb2 as api
from lgcheckpoint.v1 import thread_service_pb2 as thread_api
from lgcheckpoint.v1.checkpoint_service_pb2_grpc import CheckpointServiceStub
from lgcheckpoint.v1.thread_service_pb2_grpc import ThreadServiceStub

from langgraph.checkpoint.grpc._threads import _Requests
from tests.conftest import ServerProcess


@pytest.fixture
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target) as channel:
        yield channel


def _source(stub: CheckpointServiceStub, namespace: str) -> None:
    for step, parent in (("1", ""), ("2", "1")):
        stub.PutCheckpoint(
            api.PutCheckpointRequest(
                namespace=namespace,
                thread_id="source",
                checkpoint_id=step,
                parent_checkpoint_id=parent,
                checkpoint=pb.Payload(type="json", data=b"{}"),
            )
        )


def test_the_same_copy_request_twice_makes_one_copy(channel: grpc.Channel, namespace: str) -> None:
    checkpoints, threads = CheckpointServiceStub(channel), ThreadServiceStub(channel)
    _source(checkpoints, namespace)
    # The request as the Python client builds it for ``saver.threads.copy("source")``.
    request = _Requests(namespace).copy("source", None, None)
    assert request.target_thread_id  # chosen by the client, so that a retry names it again
    first = checkpoints.CopyThread(request)
    retried = checkpoints.CopyThread(request)  # as if the first reply had been lost
    assert retried.target_thread_id == first.target_thread_id == request.target_thread_id
    counted = threads.CountThreads(thread_api.CountThreadsRequest(namespace=namespace))
    assert counted.count == 2
    copied = checkpoints.ListCheckpoints(
        api.ListCheckpointsRequest(namespace=namespace, thread_id=request.target_thread_id)
    )
    assert [c.checkpoint_id for c in copied.checkpoints] == ["2", "1"]


def test_a_target_with_other_checkpoints_is_still_refused(
    channel: grpc.Channel, namespace: str
) -> None:
    checkpoints = CheckpointServiceStub(channel)
    _source(checkpoints, namespace)
    checkpoints.PutCheckpoint(
        api.PutCheckpointRequest(
            namespace=namespace,
            thread_id="taken",
            checkpoint_id="9",
            checkpoint=pb.Payload(type="json", data=b"{}"),
        )
    )
    with pytest.raises(grpc.RpcError) as raised:
        checkpoints.CopyThread(
            api.CopyThreadRequest(
                namespace=namespace, source_thread_id="source", target_thread_id="taken"
            )
        )
    error: Any = raised.value
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS


def test_a_target_with_only_writes_is_refused_not_a_database_error(
    channel: grpc.Channel, namespace: str
) -> None:
    checkpoints = CheckpointServiceStub(channel)
    _source(checkpoints, namespace)
    for thread_id in ("source", "writes-only"):  # the same write, keyed alike, in both
        checkpoints.PutWrites(
            api.PutWritesRequest(
                namespace=namespace,
                thread_id=thread_id,
                checkpoint_id="2",
                writes=[pb.PendingWrite(task_id="task", channel="c", value=pb.Payload(type="j"))],
            )
        )
    with pytest.raises(grpc.RpcError) as raised:
        checkpoints.CopyThread(
            api.CopyThreadRequest(
                namespace=namespace, source_thread_id="source", target_thread_id="writes-only"
            )
        )
    error: Any = raised.value
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS, error.details()
