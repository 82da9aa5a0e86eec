"""The server's limits: request bytes in flight, metadata size, page sizes."""

from __future__ import annotations

import json
import socket
import sqlite3
import time
import urllib.request
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import grpc
import pytest
from lgcheckpoint.v1 import checkpoint_pb2 as pb
from lgcheckpoint.v1 import checkpoint_service_pb2 as api
from lgcheckpoint.v1 import thread_service_pb2 as thread_api
from lgcheckpoint.v1.checkpoint_service_pb2_grpc import CheckpointServiceStub
from lgcheckpoint.v1.thread_service_pb2_grpc import ThreadServiceStub

from tests.conftest import ServerProcess, fresh_sqlite_url

MiB = 1024 * 1024


def _put(checkpoint_id: str, size: int) -> api.PutCheckpointRequest:
    return api.PutCheckpointRequest(
        namespace="limits",
        thread_id="t",
        checkpoint_id=checkpoint_id,
        checkpoint=pb.Payload(type="bytes", data=b"x" * size),
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _refusals_seen(server: ServerProcess, metrics_port: int) -> tuple[list[str], float]:
    """The access log's PutCheckpoint codes, and the metrics' count of refused puts."""
    records = [json.loads(line) for line in server.log if line.startswith("{")]
    codes = [
        str(r["code"])
        for r in records
        if r["logger"] == "checkpoint_server.access" and r["method"] == "PutCheckpoint"
    ]
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    wanted = 'checkpoint_server_rpcs_total{code="RESOURCE_EXHAUSTED",method="PutCheckpoint"}'
    counted = [
        float(line.rpartition(" ")[2]) for line in text.splitlines() if line.startswith(wanted)
    ]
    return codes, sum(counted)


def test_requests_past_the_bytes_in_flight_are_refused_until_calls_end(tmp_path: Path) -> None:
    url = fresh_sqlite_url(tmp_path)
    metrics_port = _free_port()
    server = ServerProcess.start(
        url,
        "--max-request-bytes-in-flight",
        str(8 * MiB),
        "--metrics-listen",
        f"127.0.0.1:{metrics_port}",
    )
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
            # The refusal is logged and counted like any other call's end.
            deadline = time.monotonic() + 5
            while _refusals_seen(server, metrics_port) != (["RESOURCE_EXHAUSTED"], 1):
                assert time.monotonic() < deadline, _refusals_seen(server, metrics_port)
                time.sleep(0.05)
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


def _metadata(size: int) -> bytes:
    """A JSON object of exactly ``size`` bytes."""
    return b'{"x":"' + b"m" * (size - 8) + b'"}'


def test_metadata_past_one_mib_is_refused_naming_the_field_and_the_limit(
    server: ServerProcess, namespace: str
) -> None:
    too_big, largest = _metadata(MiB + 1), _metadata(MiB)
    with grpc.insecure_channel(server.target) as channel:
        checkpoints, threads = CheckpointServiceStub(channel), ThreadServiceStub(channel)
        put = _put("1", 10)
        put.namespace, put.metadata_json = namespace, too_big
        calls: list[tuple[Any, Any, str]] = [
            (checkpoints.PutCheckpoint, put, "metadata_json"),
            (
                threads.CreateThread,
                thread_api.CreateThreadRequest(namespace=namespace, metadata_json=too_big),
                "metadata_json",
            ),
            (
                threads.UpdateThread,
                thread_api.UpdateThreadRequest(
                    namespace=namespace, thread_id="t", metadata_json=too_big
                ),
                "metadata_json",
            ),
            (
                checkpoints.CopyThread,
                api.CopyThreadRequest(
                    namespace=namespace, source_thread_id="t", metadata_json=too_big
                ),
                "metadata_json",
            ),
            (
                checkpoints.ListCheckpoints,
                api.ListCheckpointsRequest(namespace=namespace, metadata_filter_json=too_big),
                "metadata_filter_json",
            ),
            (
                threads.SearchThreads,
                thread_api.SearchThreadsRequest(
                    namespace=namespace,
                    filter=thread_api.ThreadFilter(metadata_filter_json=too_big),
                ),
                "filter.metadata_filter_json",
            ),
        ]
        for call, request, field in calls:
            with pytest.raises(grpc.RpcError) as refused:
                call(request, timeout=10)
            error: Any = refused.value
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
            assert error.details() == f"{field}: is longer than {MiB} bytes"
        # Nothing was written, and metadata of exactly the limit is stored.
        assert threads.CountThreads(thread_api.CountThreadsRequest(namespace=namespace)).count == 0
        put.metadata_json = largest
        checkpoints.PutCheckpoint(put, timeout=30)
        got = checkpoints.GetCheckpoint(
            api.GetCheckpointRequest(namespace=namespace, thread_id="t", checkpoint_id="1")
        )
        assert json.loads(got.checkpoint.metadata_json) == json.loads(largest)


@pytest.mark.parametrize("page_size", [-1, 1001])
def test_page_sizes_past_the_maximum_are_refused(
    server: ServerProcess, namespace: str, page_size: int
) -> None:
    with grpc.insecure_channel(server.target) as channel:
        requests: list[tuple[Any, Any]] = [
            (
                CheckpointServiceStub(channel).ListCheckpoints,
                api.ListCheckpointsRequest(namespace=namespace, page_size=page_size),
            ),
            (
                ThreadServiceStub(channel).SearchThreads,
                thread_api.SearchThreadsRequest(namespace=namespace, page_size=page_size),
            ),
        ]
        for call, request in requests:
            with pytest.raises(grpc.RpcError) as refused:
                call(request, timeout=10)
            error: Any = refused.value
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert error.details() == "page_size: must be between 0 and 1000"


def test_updates_cannot_grow_a_threads_metadata_past_one_mib(
    server: ServerProcess, namespace: str
) -> None:
    half = "m" * (600 * 1024)
    with grpc.insecure_channel(server.target) as channel:
        threads = ThreadServiceStub(channel)
        threads.CreateThread(thread_api.CreateThreadRequest(namespace=namespace, thread_id="t"))

        def update(key: str) -> Any:
            return threads.UpdateThread(
                thread_api.UpdateThreadRequest(
                    namespace=namespace,
                    thread_id="t",
                    metadata_json=json.dumps({key: half}).encode(),
                ),
                timeout=30,
            )

        update("a")
        with pytest.raises(grpc.RpcError) as refused:
            update("b")
        error: Any = refused.value
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details() == (
            f"metadata_json: would make the thread's metadata longer than {MiB} bytes"
        )
        # The refused update changed nothing; replacing a key keeps the size and is fine.
        update("a")
        got = threads.GetThread(thread_api.GetThreadRequest(namespace=namespace, thread_id="t"))
        assert json.loads(got.thread.metadata_json) == {"a": half}


def test_calls_that_wait_too_long_for_a_database_connection_are_unavailable(
    tmp_path: Path,
) -> None:
    url = fresh_sqlite_url(tmp_path)
    server = ServerProcess.start(url)
    # While the write lock is held elsewhere, the first put holds the server's one write
    # connection and the others queue for it past the pool's timeout (30 s).
    lock = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        with grpc.insecure_channel(server.target) as channel, ThreadPoolExecutor(3) as pool:
            stub = CheckpointServiceStub(channel)

            def put(checkpoint_id: str) -> str:
                try:
                    stub.PutCheckpoint(_put(checkpoint_id, 10), timeout=90)
                except grpc.RpcError as error:
                    return str(error.code().name)
                return "OK"

            lock.execute("BEGIN IMMEDIATE")
            codes = list(pool.map(put, ["1", "2", "3"]))
            lock.execute("ROLLBACK")
            # Overload is a status clients retry, never INTERNAL; once it passes, puts work.
            assert set(codes) == {"UNAVAILABLE"}, codes
            assert put("4") == "OK"
    finally:
        lock.close()
        assert server.stop() == 0
