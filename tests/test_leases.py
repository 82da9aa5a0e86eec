"""One writer per thread: leases with fencing numbers, against a real server on both databases."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf.duration_pb2 import Duration
from lgcheckpoint.v1 import checkpoint_pb2 as pb
from lgcheckpoint.v1 import checkpoint_service_pb2 as api
from lgcheckpoint.v1 import thread_pb2
from lgcheckpoint.v1 import thread_service_pb2 as thread_api
from lgcheckpoint.v1.checkpoint_service_pb2_grpc import CheckpointServiceStub
from lgcheckpoint.v1.thread_service_pb2_grpc import ThreadServiceStub

from langgraph.checkpoint.grpc import GrpcSaver, GrpcSaverError
from tests import lease_worker
from tests.conftest import ServerProcess, fresh_sqlite_url

FAILED = grpc.StatusCode.FAILED_PRECONDITION


@pytest.fixture
def stub(server: ServerProcess) -> Iterator[CheckpointServiceStub]:
    with grpc.insecure_channel(server.target) as channel:
        yield CheckpointServiceStub(channel)


@pytest.fixture
def threads_stub(server: ServerProcess) -> Iterator[ThreadServiceStub]:
    with grpc.insecure_channel(server.target) as channel:
        yield ThreadServiceStub(channel)


def ttl(seconds: float) -> Duration:
    duration = Duration()
    duration.FromMilliseconds(round(seconds * 1000))
    return duration


def acquire(
    stub: CheckpointServiceStub, namespace: str, thread_id: str, seconds: float = 30
) -> pb.Lease:
    request = api.AcquireLeaseRequest(namespace=namespace, thread_id=thread_id, ttl=ttl(seconds))
    lease: pb.Lease = stub.AcquireLease(request).lease
    return lease


def put(
    stub: CheckpointServiceStub, namespace: str, thread_id: str, lease: pb.Lease | None = None
) -> str:
    """Stores a new root checkpoint; returns its ID."""
    checkpoint_id = str(uuid.uuid4())
    request = api.PutCheckpointRequest(
        namespace=namespace,
        thread_id=thread_id,
        checkpoint_id=checkpoint_id,
        checkpoint=pb.Payload(type="json", data=b"{}"),
    )
    if lease is not None:
        request.lease.CopyFrom(lease)
    stub.PutCheckpoint(request)
    return checkpoint_id


def write(
    stub: CheckpointServiceStub, namespace: str, thread_id: str, lease: pb.Lease | None = None
) -> None:
    request = api.PutWritesRequest(
        namespace=namespace,
        thread_id=thread_id,
        checkpoint_id="c1",
        writes=[pb.PendingWrite(task_id="t", idx=0, channel="c", value=pb.Payload(type="json"))],
    )
    if lease is not None:
        request.lease.CopyFrom(lease)
    stub.PutWrites(request)


def refusal(call: Any) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == FAILED, caught.value.details()
    details = caught.value.details()
    assert details is not None
    return details


def count(stub: CheckpointServiceStub, namespace: str, thread_id: str) -> int:
    request = api.ListCheckpointsRequest(namespace=namespace, thread_id=thread_id)
    return len(stub.ListCheckpoints(request).checkpoints)


# --- the contract, call by call ---------------------------------------------------------


def test_a_held_lease_refuses_every_other_write_and_writes_nothing(
    stub: CheckpointServiceStub, threads_stub: ThreadServiceStub, namespace: str
) -> None:
    thread = "t"
    lease = acquire(stub, namespace, thread)
    assert lease.fencing == 1
    assert len(lease.lease_id) == 32
    put(stub, namespace, thread, lease)

    for call in (
        lambda: put(stub, namespace, thread),
        lambda: write(stub, namespace, thread),
        lambda: stub.DeleteThread(api.DeleteThreadRequest(namespace=namespace, thread_id=thread)),
        lambda: threads_stub.UpdateThread(
            thread_api.UpdateThreadRequest(
                namespace=namespace, thread_id=thread, metadata_json=b'{"k": 1}'
            )
        ),
    ):
        details = refusal(call)
        assert lease.lease_id in details
        assert "until" in details
        assert "carries no lease" in details
    assert count(stub, namespace, thread) == 1

    forged = pb.Lease(lease_id=uuid.uuid4().hex, fencing=lease.fencing)
    assert "was released, expired or taken over" in refusal(
        lambda: put(stub, namespace, thread, forged)
    )
    write(stub, namespace, thread, lease)
    updated = threads_stub.UpdateThread(
        thread_api.UpdateThreadRequest(
            namespace=namespace, thread_id=thread, metadata_json=b'{"k": 2}', lease=lease
        )
    )
    assert json.loads(updated.thread.metadata_json) == {"k": 2}  # the refused {"k": 1} never was
    other_holder = refusal(lambda: acquire(stub, namespace, thread))
    assert lease.lease_id in other_holder
    assert "wait until" in other_holder

    release = api.ReleaseLeaseRequest(namespace=namespace, thread_id=thread, lease=lease)
    stub.ReleaseLease(release)
    stub.ReleaseLease(release)  # a retry changes nothing
    put(stub, namespace, thread)  # released: anyone may write again
    refusal(lambda: put(stub, namespace, thread, lease))  # but not with the released lease
    assert count(stub, namespace, thread) == 2
    stub.DeleteThread(api.DeleteThreadRequest(namespace=namespace, thread_id=thread))


def test_an_unrenewed_lease_expires_and_a_stale_fencing_number_stays_refused(
    stub: CheckpointServiceStub, namespace: str
) -> None:
    first = acquire(stub, namespace, "t", seconds=1)
    renewed = stub.RenewLease(
        api.RenewLeaseRequest(namespace=namespace, thread_id="t", lease=first, ttl=ttl(1))
    )
    assert renewed.expire_time.ToSeconds() > time.time()
    refusal(lambda: put(stub, namespace, "t"))
    time.sleep(1.2)
    put(stub, namespace, "t")  # expired: held by nobody
    second = acquire(stub, namespace, "t")
    assert second.fencing == first.fencing + 1
    details = refusal(lambda: put(stub, namespace, "t", first))
    assert second.lease_id in details
    assert f"fencing {first.fencing}" in details
    # The old ID with the new number is refused too: both must match.
    mixed = pb.Lease(lease_id=first.lease_id, fencing=second.fencing)
    refusal(lambda: write(stub, namespace, "t", mixed))
    refusal(
        lambda: stub.RenewLease(
            api.RenewLeaseRequest(namespace=namespace, thread_id="t", lease=first, ttl=ttl(5))
        )
    )
    put(stub, namespace, "t", second)
    assert count(stub, namespace, "t") == 2


def test_a_lease_in_one_namespace_does_not_touch_another(
    stub: CheckpointServiceStub, namespace: str
) -> None:
    lease = acquire(stub, namespace, "shared")
    other = f"{namespace}-b"
    put(stub, other, "shared")
    write(stub, other, "shared")
    assert acquire(stub, other, "shared").fencing == 1
    refusal(lambda: put(stub, namespace, "shared"))
    put(stub, namespace, "shared", lease)


def test_the_thread_is_busy_while_leased(
    stub: CheckpointServiceStub, threads_stub: ThreadServiceStub, namespace: str
) -> None:
    lease = acquire(stub, namespace, "t")
    put(stub, namespace, "t", lease)

    def shown() -> int:
        request = thread_api.GetThreadRequest(namespace=namespace, thread_id="t")
        status: int = threads_stub.GetThread(request).thread.status
        return status

    def busy_count() -> int:
        request = thread_api.CountThreadsRequest(
            namespace=namespace,
            filter=thread_api.ThreadFilter(status=thread_pb2.THREAD_STATUS_BUSY),
        )
        found: int = threads_stub.CountThreads(request).count
        return found

    assert shown() == thread_pb2.THREAD_STATUS_BUSY
    assert busy_count() == 1
    stub.ReleaseLease(api.ReleaseLeaseRequest(namespace=namespace, thread_id="t", lease=lease))
    assert shown() == thread_pb2.THREAD_STATUS_IDLE
    assert busy_count() == 0


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (api.AcquireLeaseRequest(thread_id="", ttl=ttl(5)), "thread_id"),
        (api.AcquireLeaseRequest(thread_id="t"), "ttl"),
        (api.AcquireLeaseRequest(thread_id="t", ttl=ttl(0.5)), "ttl"),
        (api.AcquireLeaseRequest(thread_id="t", ttl=Duration(seconds=10**9)), "ttl"),
        (api.AcquireLeaseRequest(thread_id="t", ttl=Duration(seconds=5, nanos=-1)), "ttl"),
        (api.RenewLeaseRequest(thread_id="t", ttl=ttl(5)), "lease"),
        (
            api.RenewLeaseRequest(
                thread_id="t", ttl=ttl(5), lease=pb.Lease(lease_id="../x", fencing=1)
            ),
            "lease.lease_id",
        ),
        (
            api.ReleaseLeaseRequest(thread_id="t", lease=pb.Lease(lease_id="a" * 32, fencing=0)),
            "lease.fencing",
        ),
        (
            api.PutCheckpointRequest(
                thread_id="t",
                checkpoint_id="c",
                checkpoint=pb.Payload(type="json"),
                lease=pb.Lease(lease_id="A" * 32, fencing=1),
            ),
            "lease.lease_id",
        ),
        (
            api.PutWritesRequest(
                thread_id="t", checkpoint_id="c", lease=pb.Lease(lease_id="a" * 32, fencing=-3)
            ),
            "lease.fencing",
        ),
        (
            api.DeleteThreadRequest(thread_id="t", lease=pb.Lease(lease_id="a" * 31, fencing=1)),
            "lease.lease_id",
        ),
    ],
)
def test_bad_lease_input_is_invalid_argument_naming_the_field(
    stub: CheckpointServiceStub, namespace: str, request_: Any, field: str
) -> None:
    request_.namespace = namespace
    method = getattr(stub, type(request_).__name__.removesuffix("Request"))
    with pytest.raises(grpc.RpcError) as caught:
        method(request_)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(caught.value.details()).startswith(f"{field}:"), caught.value.details()
    assert count(stub, namespace, "t") == 0


# --- the Python client ------------------------------------------------------------------


def test_saver_lease_fences_another_saver_and_keeps_time_travel(
    server: ServerProcess, namespace: str
) -> None:
    target = f"grpc://{server.target}"
    config: Any = {"configurable": {"thread_id": "t"}}
    with (
        GrpcSaver.from_conn_string(target, namespace=namespace) as mine,
        GrpcSaver.from_conn_string(target, namespace=namespace) as theirs,
    ):
        app = lease_worker.graph(mine, "mine")
        with mine.lease("t", ttl=1) as lease:
            app.invoke({"log": []}, config)
            time.sleep(1.5)  # longer than the TTL: only the background renewal keeps it
            app.invoke({"log": []}, config)
            with pytest.raises(GrpcSaverError) as caught:
                lease_worker.graph(theirs, "theirs").invoke({"log": []}, config)
            assert caught.value.code == FAILED
            assert str(lease.lease_id) in caught.value.details
            history = list(mine.list(config))
            first_turn = history[-1].config  # the input checkpoint of the first run
            forked = app.invoke(None, first_turn)  # time travel: replay from the first run
            assert forked["log"] == ["mine:0"]
            assert lease.lost is None
        assert len(list(mine.list(config))) > len(history)
        # Released: the other saver may write again, without a lease.
        assert lease_worker.graph(theirs, "theirs").invoke({"log": []}, config)


async def test_async_saver_lease(server: ServerProcess, namespace: str) -> None:
    target = f"grpc://{server.target}"
    config: Any = {"configurable": {"thread_id": "t"}}
    async with (
        GrpcSaver.from_conn_string(target, namespace=namespace) as mine,
        GrpcSaver.from_conn_string(target, namespace=namespace) as theirs,
    ):
        async with mine.lease("t", ttl=1) as lease:
            await lease_worker.graph(mine, "mine").ainvoke({"log": []}, config)
            await asyncio.sleep(1.5)
            await lease_worker.graph(mine, "mine").ainvoke({"log": []}, config)
            with pytest.raises(GrpcSaverError) as caught:
                await lease_worker.graph(theirs, "theirs").ainvoke({"log": []}, config)
            assert caught.value.code == FAILED
            assert str(lease.lease_id) in caught.value.details
        state = await lease_worker.graph(theirs, "theirs").ainvoke({"log": []}, config)
        assert state["log"] == ["mine:0", "mine:1", "theirs:2"]


# --- two worker processes ---------------------------------------------------------------


def _worker(server: ServerProcess, namespace: str, name: str, turns: int, mode: str) -> Any:
    """Starts a worker process on thread ``t`` and waits until it is ready."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.lease_worker",
            f"grpc://{server.target}",
            namespace,
            "t",
            name,
            str(turns),
            "1.0" if mode != "hang" else "0",
            mode,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert json.loads(process.stdout.readline()) == {"ready": True}
    return process


def _go(*processes: Any) -> None:
    start = f"{time.time() + 0.3}\n"
    for process in processes:
        process.stdin.write(start)
        process.stdin.flush()


def _workers(server: ServerProcess, namespace: str, mode: str, turns: int) -> Any:
    processes = [_worker(server, namespace, name, turns, mode) for name in ("w1", "w2")]
    _go(*processes)
    outcomes = []
    for process in processes:
        out, _ = process.communicate(timeout=60)
        assert process.returncode == 0
        outcomes.append([json.loads(line) for line in out.splitlines()])
    return outcomes


def _parents(saver: GrpcSaver, thread: str) -> Counter[str | None]:
    config: Any = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    return Counter(
        (t.parent_config or {}).get("configurable", {}).get("checkpoint_id")
        for t in saver.list(config)
    )


def test_two_workers_with_leases_take_turns_on_one_chain(
    server: ServerProcess, namespace: str
) -> None:
    turns = 3
    outcomes = _workers(server, namespace, "lease", turns)
    for turn in range(turns):
        won = [o[turn]["won"] for o in outcomes]
        assert sorted(won) == [False, True], outcomes
        loser = outcomes[won.index(False)][turn]
        assert "is leased by lease" in loser["error"]
        assert "until" in loser["error"]
    with GrpcSaver.from_conn_string(f"grpc://{server.target}", namespace=namespace) as saver:
        parents = _parents(saver, "t")
        assert max(parents.values()) == 1, parents  # no checkpoint has two children
        state = lease_worker.graph(saver, "check").get_state({"configurable": {"thread_id": "t"}})
        assert len(state.values["log"]) == turns


def test_two_workers_without_leases_fork_the_thread(server: ServerProcess, namespace: str) -> None:
    outcomes = _workers(server, namespace, "plain", 2)
    assert all(o["won"] for worker in outcomes for o in worker)
    with GrpcSaver.from_conn_string(f"grpc://{server.target}", namespace=namespace) as saver:
        parents = _parents(saver, "t")
    # Today's silent fork: both runs of a turn wrote children of the same checkpoint.
    assert max(parents.values()) >= 2, parents


def test_a_killed_holder_expires_and_another_worker_continues(
    server: ServerProcess, namespace: str
) -> None:
    holder = _worker(server, namespace, "dead", 2, "hang")
    _go(holder)
    lines = [json.loads(holder.stdout.readline()) for _ in range(2)]
    assert lines == [{"turn": 0, "won": True, "error": None}, {"holding": True}]
    holder.kill()
    holder.wait()
    holder.stdout.close()
    holder.stdin.close()
    config: Any = {"configurable": {"thread_id": "t"}}
    with GrpcSaver.from_conn_string(f"grpc://{server.target}", namespace=namespace) as saver:
        app = lease_worker.graph(saver, "next")
        committed = saver.get_tuple(config)
        assert committed is not None
        with pytest.raises(GrpcSaverError) as caught:
            saver.lease("t", ttl=2).__enter__()
        assert caught.value.code == FAILED
        deadline = time.time() + 5
        while True:
            try:
                with saver.lease("t", ttl=2) as lease:
                    state = app.invoke({"log": []}, config)
                break
            except GrpcSaverError as error:
                if error.code != FAILED or time.time() > deadline:
                    raise
                time.sleep(0.2)
        assert lease.fencing == 3  # the dead worker held 1 and 2
        assert state["log"] == ["dead:0", "next:1"]
        chain = list(saver.list(config))
        assert committed.config["configurable"]["checkpoint_id"] in {
            (t.parent_config or {})["configurable"]["checkpoint_id"]
            for t in chain
            if t.parent_config
        }


async def test_no_write_without_the_lease_lands_after_acquire_returns(
    server: ServerProcess, namespace: str
) -> None:
    """Once AcquireLease returns, writes without the lease stop landing: none slips in after."""
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = CheckpointServiceStub(channel)
        for round_ in range(5):
            thread = f"race-{round_}"
            stop = asyncio.Event()

            async def hammer(worker: int, thread: str = thread, stop: asyncio.Event = stop) -> None:
                step = 0
                while not stop.is_set():
                    step += 1
                    request = api.PutCheckpointRequest(
                        namespace=namespace,
                        thread_id=thread,
                        checkpoint_id=f"{worker}-{step:06d}",
                        checkpoint=pb.Payload(type="json", data=b"{}"),
                    )
                    try:
                        await stub.PutCheckpoint(request)
                    except grpc.aio.AioRpcError as error:
                        if error.code() != FAILED:
                            raise
                        return

            hammers = [asyncio.create_task(hammer(w)) for w in range(6)]
            await asyncio.sleep(0.2)
            await stub.AcquireLease(
                api.AcquireLeaseRequest(namespace=namespace, thread_id=thread, ttl=ttl(30))
            )
            listing = api.ListCheckpointsRequest(
                namespace=namespace, thread_id=thread, page_size=1000
            )
            seen = len((await stub.ListCheckpoints(listing)).checkpoints)
            await asyncio.wait_for(asyncio.gather(*hammers), timeout=10)
            stop.set()
            assert len((await stub.ListCheckpoints(listing)).checkpoints) == seen


def test_acquire_waits_for_a_write_admitted_before_it(
    server: ServerProcess, stub: CheckpointServiceStub, namespace: str
) -> None:
    """PostgreSQL: a write whose lease check passed holds the new holder off until it commits.

    The test plays that write by hand: a transaction that ran the hot path's check (as the
    put's FROM clause does) and has not committed yet.
    """
    if not server.database_url.startswith("postgresql"):
        pytest.skip("SQLite's BEGIN IMMEDIATE serializes every write transaction")
    with psycopg.connect(server.database_url) as conn:
        conn.execute(
            "SELECT lgcp_check_lease(%s, %s, NULL, NULL, %s)", (namespace, "t", time.time())
        )
        pending = stub.AcquireLease.future(
            api.AcquireLeaseRequest(namespace=namespace, thread_id="t", ttl=ttl(30))
        )
        time.sleep(0.5)
        assert not pending.done()  # the write admitted first commits first
        conn.commit()
        assert pending.result(timeout=10).lease.fencing == 1


# --- the sweeper drops lease rows nobody needs --------------------------------------------


def _lease_rows(database_url: str, namespace: str) -> dict[str, int]:
    """The thread IDs of the namespace's lease rows, with their fencing numbers."""
    query = "SELECT thread_id, fencing FROM thread_leases WHERE namespace = ?"
    if database_url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(database_url.removeprefix("sqlite:///"))) as db:
            return dict(db.execute(query, (namespace,)).fetchall())
    with psycopg.connect(database_url) as conn:
        return dict(conn.execute(query.replace("?", "%s"), (namespace,)).fetchall())


def _backdate_leases(database_url: str, namespace: str, seconds: float) -> None:
    """Moves the expiry of the namespace's leases ``seconds`` into the past."""
    statement = "UPDATE thread_leases SET expire_epoch = ? WHERE namespace = ?"
    arguments = (time.time() - seconds, namespace)
    if database_url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(database_url.removeprefix("sqlite:///"))) as db:
            db.execute(statement, arguments)
            db.commit()
        return
    with psycopg.connect(database_url) as conn:
        conn.execute(statement.replace("?", "%s"), arguments)


def test_the_sweeper_drops_old_leases_of_gone_threads_and_fencing_keeps_growing(
    own_database: str, namespace: str
) -> None:
    server = ServerProcess.start(own_database, "--sweep-interval-seconds", "0.2")
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = CheckpointServiceStub(channel)
            for thread_id in ("gone", "kept", "recent"):
                lease = acquire(stub, namespace, thread_id)
                assert lease.fencing == 1
                if thread_id == "kept":
                    put(stub, namespace, thread_id, lease)  # the thread exists
                stub.ReleaseLease(
                    api.ReleaseLeaseRequest(namespace=namespace, thread_id=thread_id, lease=lease)
                )
            # Two hours past expiry for every lease but "recent"'s.
            _backdate_leases(own_database, namespace, 7200)
            recent = acquire(stub, namespace, "recent")
            stub.ReleaseLease(
                api.ReleaseLeaseRequest(namespace=namespace, thread_id="recent", lease=recent)
            )
            deadline = time.monotonic() + 10
            while "gone" in _lease_rows(own_database, namespace):
                assert time.monotonic() < deadline, "the sweeper kept the lease row of 'gone'"
                time.sleep(0.1)
            # The row of a thread that exists, and a lease over only just now, stay.
            assert _lease_rows(own_database, namespace) == {"kept": 1, "recent": 2}
            # A dropped row's numbers go on from where they were, and so do the kept row's.
            assert acquire(stub, namespace, "gone").fencing == 2
            assert acquire(stub, namespace, "kept").fencing == 2
    finally:
        assert server.stop() == 0, "".join(server.log)


# --- a renewal is no use after the lease expired -------------------------------------------


@contextlib.contextmanager
def _paused(server: ServerProcess) -> Iterator[None]:
    """The server stopped (SIGSTOP): calls reach it and get no answer until it continues."""
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


def _assert_lost_in_time(lease: Any, acquired: float) -> None:
    # The renewal's deadline is the time left on the 2 s lease, not the saver's 30 s timeout.
    assert time.monotonic() - acquired < 3.5, "the renewal outlived the lease"
    assert lease.lost is not None
    assert lease.lost.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert lease.lease_id in lease.lost.details
    # Paused past the lease's expiry on the server too (the client counts from before it
    # sent the acquire), so that a renewal still queued there is refused when it continues.
    time.sleep(max(acquired + 3.5 - time.monotonic(), 0))


def test_a_renewal_that_cannot_finish_before_the_lease_expires_loses_it(
    tmp_path: Path, namespace: str
) -> None:
    server = ServerProcess.start(fresh_sqlite_url(tmp_path))
    try:
        with (
            GrpcSaver.from_conn_string(f"grpc://{server.target}", namespace=namespace) as saver,
            saver.lease("t", ttl=2) as lease,
        ):
            acquired = time.monotonic()
            with _paused(server):
                while lease.lost is None and time.monotonic() - acquired < 3.5:
                    time.sleep(0.05)
                _assert_lost_in_time(lease, acquired)
            # The user learns it as from a refusal: the thread's writes under it are refused.
            with pytest.raises(GrpcSaverError) as refused:
                saver.delete_thread("t")
            assert refused.value.code == FAILED
    finally:
        assert server.stop() == 0, "".join(server.log)


async def test_an_async_renewal_that_cannot_finish_before_the_lease_expires_loses_it(
    tmp_path: Path, namespace: str
) -> None:
    server = ServerProcess.start(fresh_sqlite_url(tmp_path))
    try:
        async with (
            GrpcSaver.from_conn_string(f"grpc://{server.target}", namespace=namespace) as saver,
            saver.lease("t", ttl=2) as lease,
        ):
            acquired = time.monotonic()
            with _paused(server):
                for _ in range(70):  # 3.5 s
                    if lease.lost is not None:
                        break
                    await asyncio.sleep(0.05)
                _assert_lost_in_time(lease, acquired)
            with pytest.raises(GrpcSaverError) as refused:
                await saver.adelete_thread("t")
            assert refused.value.code == FAILED
    finally:
        assert server.stop() == 0, "".join(server.log)
