"""The request bytes that concurrent calls hold are bounded: past the bound, RESOURCE_EXHAUSTED."""

from __future__ import annotations

import sqlite3
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import grpc
from lgcheckpoint.v1 import checkpoint_pb2 as pb
from lgcheckpoint.v1 import checkpoint_service_pb2 as api
from lgcheckpoint.v1.checkpoint_service_pb2_grpc import CheckpointServiceStub

from tests.conftest import ServerProcess, fresh_sqlite_url

MiB = 1024 * 1024


def _put(checkpoint_id: str, size: int) -> api.PutCheckpointRequest:
    return api.PutCheckpointRequest(
        namespace="limits",
        thread_id="t",
        checkpoint_id=checkpoint_id,
        checkpoint=pb.Payload(type="bytes", data=b"x" * size),
    )


def test_requests_past_the_bytes_in_flight_are_refused_until_calls_end(tmp_path: Path) -> None:
    url = fresh_sqlite_url(tmp_path)
    server = ServerProcess.start(url, "--max-request-bytes-in-flight", str(8 * MiB))
    # Holding SQLite's write lock keeps the first put in flight, with its bytes, for as long
    # as the test needs.
    lock = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        options = [("grpc.max_receive_message_length", 64 * MiB)]
        with (
            grpc.insecure_channel(server.target, options=options) as channel,
            ThreadPoolExecutor(2) as pool,
        ):
            stub = CheckpointServiceStub(channel)
            lock.execute("BEGIN IMMEDIATE")
            # Two large puts at once: whichever arrives first waits for the lock with its
            # bytes, and the other is refused at once.
            puts = [
                pool.submit(stub.PutCheckpoint, _put(checkpoint_id, 5 * MiB), timeout=30)
                for checkpoint_id in ("1", "2")
            ]
            done, waiting = wait(puts, timeout=20, return_when=FIRST_COMPLETED)
            assert len(done) == 1
            assert len(waiting) == 1
            error: Any = done.pop().exception()
            assert error is not None
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "--max-request-bytes-in-flight" in error.details()
            # A small call still fits beside the held one.
            listed = stub.ListCheckpoints(api.ListCheckpointsRequest(namespace="limits"))
            assert list(listed.checkpoints) == []
            lock.execute("ROLLBACK")
            waiting.pop().result()
            # The bytes came back when the call ended: large puts run again, one after another.
            for checkpoint_id in ("1", "2", "3", "4"):
                stub.PutCheckpoint(_put(checkpoint_id, 5 * MiB), timeout=30)
            # One request larger than the whole budget runs when it is alone.
            stub.PutCheckpoint(_put("5", 10 * MiB), timeout=30)
            for checkpoint_id in ("1", "2", "3", "4", "5"):
                got = stub.GetCheckpoint(
                    api.GetCheckpointRequest(
                        namespace="limits", thread_id="t", checkpoint_id=checkpoint_id
                    )
                )
                assert got.checkpoint.checkpoint_id == checkpoint_id
    finally:
        lock.close()
        assert server.stop() == 0
