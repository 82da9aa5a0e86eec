"""Group commit on a real server: many clients' concurrent writes to one namespace share
transactions, each is stored as it would be alone, and a refused one fails only itself.

Each client here is a channel of its own making unary calls (no client-side batching), as a
fleet of agents or an older client does; on both databases.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator

import grpc
import pytest
from lgcheckpoint.v1 import checkpoint_pb2 as pb
from lgcheckpoint.v1 import checkpoint_service_pb2 as api
from lgcheckpoint.v1.checkpoint_service_pb2_grpc import CheckpointServiceStub

from tests.conftest import ServerProcess
from tests.test_leases import acquire
from tests.test_operations import _free_port, _scrape

CLIENTS = 12
PUTS = 15
GROUPS = "checkpoint_server_write_groups_total"
TOGETHER = 'checkpoint_server_batch_items_total{stored="together"}'
ALONE = 'checkpoint_server_batch_items_total{stored="alone"}'


def _server(database_url: str, *args: str) -> tuple[ServerProcess, int]:
    port = _free_port()
    return ServerProcess.start(database_url, "--metrics-listen", f"127.0.0.1:{port}", *args), port


@pytest.fixture
def grouped(own_database: str) -> Iterator[tuple[ServerProcess, int]]:
    server, port = _server(own_database)
    yield server, port
    assert server.stop() == 0


def _put(stub: CheckpointServiceStub, thread_id: str, step: int, lease: pb.Lease | None) -> None:
    request = api.PutCheckpointRequest(
        namespace="fleet",
        thread_id=thread_id,
        checkpoint_id=f"{step:04d}-{uuid.uuid4()}",
        checkpoint=pb.Payload(type="json", data=b'{"step": %d}' % step),
        metadata_json=b'{"step": %d}' % step,
    )
    if lease is not None:
        request.lease.CopyFrom(lease)
    stub.PutCheckpoint(request)


def _burst(target: str, work: Callable[[CheckpointServiceStub, int], None]) -> list[Exception]:
    """Runs ``work(stub, client)`` on CLIENTS channels at once; the errors they raised."""
    start = threading.Barrier(CLIENTS)
    errors: list[Exception] = []

    def client(i: int) -> None:
        with grpc.insecure_channel(target) as channel:
            stub = CheckpointServiceStub(channel)
            grpc.channel_ready_future(channel).result(timeout=10)
            start.wait()
            try:
                work(stub, i)
            except Exception as error:  # collected for the test to assert on
                errors.append(error)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


def _steps(stub: CheckpointServiceStub, thread_id: str) -> list[int]:
    response = stub.ListCheckpoints(
        api.ListCheckpointsRequest(namespace="fleet", thread_id=thread_id, page_size=100)
    )
    return sorted(int(c.checkpoint_id[:4]) for c in response.checkpoints)


def _puts(stub: CheckpointServiceStub, client: int) -> None:
    for step in range(PUTS):
        _put(stub, f"thread-{client}", step, None)


def test_concurrent_clients_share_transactions_and_every_write_is_stored(
    grouped: tuple[ServerProcess, int],
) -> None:
    server, port = grouped
    assert _burst(server.target, _puts) == []
    samples = _scrape(port)
    # Some of the 180 puts waited for a running transaction and went in one with others.
    assert samples[GROUPS] >= 1
    assert samples[TOGETHER] >= 2 * samples[GROUPS]
    assert samples[ALONE] == 0
    with grpc.insecure_channel(server.target) as channel:
        stub = CheckpointServiceStub(channel)
        for client in range(CLIENTS):
            assert _steps(stub, f"thread-{client}") == list(range(PUTS))
            latest = stub.GetCheckpoint(
                api.GetCheckpointRequest(namespace="fleet", thread_id=f"thread-{client}")
            ).checkpoint
            assert latest.checkpoint.data == b'{"step": %d}' % (PUTS - 1)


def test_one_write_a_transaction_when_groups_are_off(own_database: str) -> None:
    server, port = _server(own_database, "--max-group-writes", "1")
    try:
        assert _burst(server.target, _puts) == []
        samples = _scrape(port)
    finally:
        assert server.stop() == 0
    assert samples.get(GROUPS, 0) == 0
    assert samples.get(TOGETHER, 0) == 0


def test_a_refused_write_in_a_group_fails_only_itself(
    grouped: tuple[ServerProcess, int],
) -> None:
    """One client writes a thread whose lease another holds, among clients writing their own:
    its every put is refused, every other put is stored."""
    server, port = grouped
    with grpc.insecure_channel(server.target) as channel:
        held = acquire(CheckpointServiceStub(channel), "fleet", "leased")
    refused: list[grpc.StatusCode] = []

    def work(stub: CheckpointServiceStub, client: int) -> None:
        if client == 0:
            for step in range(PUTS):
                try:
                    _put(stub, "leased", step, None)
                except grpc.RpcError as error:
                    refused.append(error.code())
            return
        lease = held if client == 1 else None
        for step in range(PUTS):
            _put(stub, "leased" if client == 1 else f"thread-{client}", step, lease)

    assert _burst(server.target, work) == []
    assert refused == [grpc.StatusCode.FAILED_PRECONDITION] * PUTS
    with grpc.insecure_channel(server.target) as channel:
        stub = CheckpointServiceStub(channel)
        assert _steps(stub, "leased") == list(range(PUTS))  # only the holder's puts
        for client in range(2, CLIENTS):
            assert _steps(stub, f"thread-{client}") == list(range(PUTS))
    samples = _scrape(port)
    assert samples[GROUPS] >= 1
    # A refused put that shared a group sent the group's items to be stored one by one.
    assert samples[ALONE] >= 1
