"""Parent chains are client input: a loop in one never freezes the server."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lgcheckpoint.v1 import checkpoint_pb2 as pb
from lgcheckpoint.v1 import checkpoint_service_pb2 as api
from lgcheckpoint.v1 import thread_pb2 as thread_pb
from lgcheckpoint.v1 import thread_service_pb2 as thread_api
from lgcheckpoint.v1.checkpoint_service_pb2_grpc import CheckpointServiceStub
from lgcheckpoint.v1.thread_service_pb2_grpc import ThreadServiceStub

from tests.conftest import ServerProcess


@pytest.fixture
def stub(server: ServerProcess) -> Iterator[CheckpointServiceStub]:
    with grpc.insecure_channel(server.target) as channel:
        yield CheckpointServiceStub(channel)


def _put(
    stub: CheckpointServiceStub,
    namespace: str,
    thread_id: str,
    checkpoint_id: str,
    parent: str,
    *,
    delta: bool = False,
) -> None:
    stub.PutCheckpoint(
        api.PutCheckpointRequest(
            namespace=namespace,
            thread_id=thread_id,
            checkpoint_id=checkpoint_id,
            parent_checkpoint_id=parent,
            checkpoint=pb.Payload(type="json", data=b"{}"),
            metadata_json=b"{}",
            # The delta channel has no stored value anywhere: a walk looks for it to the end.
            delta_channels=["items"] if delta else [],
        ),
        timeout=10,
    )


def _looped_thread(stub: CheckpointServiceStub, namespace: str, thread_id: str) -> None:
    """A thread whose two checkpoints are each other's parent."""
    _put(stub, namespace, thread_id, "1", "2", delta=True)
    _put(stub, namespace, thread_id, "2", "1", delta=True)


def _code(call: Any, request: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call(request, timeout=10)
    error: Any = raised.value
    return error.code(), error.details()


def test_a_checkpoint_that_is_its_own_parent_is_refused(
    stub: CheckpointServiceStub, namespace: str
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        _put(stub, namespace, "self", "1", "1")
    error: Any = raised.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "parent_checkpoint_id" in error.details()


def test_walking_a_looped_chain_fails_cleanly_and_the_server_stays_healthy(
    server: ServerProcess, stub: CheckpointServiceStub, namespace: str
) -> None:
    _looped_thread(stub, namespace, "loop")
    history = api.GetDeltaChannelHistoryRequest(
        namespace=namespace, thread_id="loop", checkpoint_id="2", channels=["items"]
    )
    code, details = _code(stub.GetDeltaChannelHistory, history)
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "loops" in details
    assert "'2'" in details
    prune = api.PruneThreadsRequest(
        namespace=namespace, thread_ids=["loop"], strategy=pb.PRUNE_STRATEGY_KEEP_LATEST
    )
    code, details = _code(stub.PruneThreads, prune)
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "loops" in details
    # Nothing was pruned, and the server still answers.
    listed = stub.ListCheckpoints(api.ListCheckpointsRequest(namespace=namespace, thread_id="loop"))
    assert [c.checkpoint_id for c in listed.checkpoints] == ["2", "1"]
    with grpc.insecure_channel(server.target) as channel:
        health: Any = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_the_sweeper_moves_past_a_looped_thread(own_database: str) -> None:
    server = ServerProcess.start(own_database, "--sweep-interval-seconds", "0.2")
    namespace = f"loop-{uuid.uuid4().hex[:8]}"
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = CheckpointServiceStub(channel)
            threads = ThreadServiceStub(channel)
            keep_latest = thread_pb.ThreadTtl(
                ttl=Duration(seconds=1), strategy=thread_pb.TTL_STRATEGY_KEEP_LATEST
            )
            _looped_thread(stub, namespace, "loop")
            for thread_id in ("loop", "plain"):
                if thread_id == "plain":
                    _put(stub, namespace, "plain", "1", "")
                    _put(stub, namespace, "plain", "2", "1")
                threads.UpdateThread(
                    thread_api.UpdateThreadRequest(
                        namespace=namespace, thread_id=thread_id, ttl=keep_latest
                    ),
                    timeout=10,
                )
            # The plain thread, which expires after the looped one, is pruned all the same.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                plain = stub.ListCheckpoints(
                    api.ListCheckpointsRequest(namespace=namespace, thread_id="plain"), timeout=5
                )
                if len(plain.checkpoints) == 1:
                    break
                time.sleep(0.2)
            assert [c.checkpoint_id for c in plain.checkpoints] == ["2"]
            looped = stub.ListCheckpoints(
                api.ListCheckpointsRequest(namespace=namespace, thread_id="loop"), timeout=5
            )
            assert [c.checkpoint_id for c in looped.checkpoints] == ["2", "1"]
            health: Any = health_pb2_grpc.HealthStub(channel)
            reply = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        if own_database.startswith("postgresql"):
            name = own_database.rsplit("/", 1)[1]
            with psycopg.connect(own_database.replace("+psycopg", "")) as conn:
                idle = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = %s AND state LIKE 'idle in transaction%%'",
                    (name,),
                ).fetchone()
            assert idle == (0,)
        log = "".join(server.log)
        assert "left thread 'loop'" in log
        assert "Traceback" not in log
    finally:
        assert server.stop() == 0
