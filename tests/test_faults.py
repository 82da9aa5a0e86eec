"""Faults injected for real: PostgreSQL stopped under a running server, servers SIGKILLed."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypedDict

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata
from langgraph.graph import END, START, StateGraph
from lgcheckpoint.v1 import checkpoint_pb2 as pb
from lgcheckpoint.v1 import checkpoint_service_pb2 as api
from lgcheckpoint.v1 import thread_service_pb2 as thread_api
from lgcheckpoint.v1.checkpoint_service_pb2_grpc import CheckpointServiceStub
from lgcheckpoint.v1.thread_service_pb2_grpc import ThreadServiceStub

from langgraph.checkpoint.grpc import GrpcSaver, GrpcSaverError
from tests.conftest import POSTGRES_URL, ServerProcess, postgres_database
from tests.faults import ThrowawayPostgres, kill, throwaway_postgres
from tests.test_service import put_chain

_STATUS = health_pb2.HealthCheckResponse


@pytest.fixture(scope="module")
def postgres() -> Iterator[ThrowawayPostgres]:
    with throwaway_postgres() as running:
        yield running


def _health(channel: grpc.Channel) -> int:
    stub: Any = health_pb2_grpc.HealthStub(channel)
    try:
        status: int = stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status
    except grpc.RpcError:
        return -1
    return status


def _wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_health_and_calls_follow_the_database(postgres: ThrowawayPostgres) -> None:
    server = ServerProcess.start(postgres.url)
    try:
        with (
            grpc.insecure_channel(server.target) as channel,
            GrpcSaver.from_conn_string(f"grpc://{server.target}", namespace="outage") as saver,
        ):
            stub = CheckpointServiceStub(channel)
            request = api.ListCheckpointsRequest(namespace="outage", thread_id="t")
            assert _health(channel) == _STATUS.SERVING
            stub.ListCheckpoints(request, timeout=5)

            postgres.stop()
            assert _wait_for(lambda: _health(channel) == _STATUS.NOT_SERVING, 10)
            with pytest.raises(grpc.RpcError) as down:
                stub.ListCheckpoints(request, timeout=5)  # no retries on a bare stub
            assert down.value.code() == grpc.StatusCode.UNAVAILABLE
            # The hot writes, which take the driver's connection from the pool themselves, too.
            put = api.PutCheckpointRequest(
                namespace="outage",
                thread_id="t",
                checkpoint_id="c1",
                checkpoint=pb.Payload(type="json", data=b"{}"),
            )
            with pytest.raises(grpc.RpcError) as down:
                stub.PutCheckpoint(put, timeout=5)
            assert down.value.code() == grpc.StatusCode.UNAVAILABLE, down.value.details()
            get = api.GetCheckpointRequest(namespace="outage", thread_id="t")  # so does the get
            with pytest.raises(grpc.RpcError) as down:
                stub.GetCheckpoint(get, timeout=5)
            assert down.value.code() == grpc.StatusCode.UNAVAILABLE, down.value.details()
            # A batch fails every item at once, and says so once in the log, not per item.
            logged = len(server.log)
            items = [
                api.BatchWriteItem(
                    put_writes=api.PutWritesRequest(thread_id=f"t{n}", checkpoint_id="c1")
                )
                for n in range(100)
            ]
            batch = api.BatchWriteRequest(namespace="outage", items=items)
            results = stub.BatchWrite(batch, timeout=10).results
            assert {r.code for r in results} == {grpc.StatusCode.UNAVAILABLE.value[0]}
            time.sleep(0.5)  # the log is written by a thread of its own
            failures = [line for line in server.log[logged:] if "BatchWrite failed" in line]
            assert 1 <= len(failures) <= 2, failures

            # The saver's retries carry a call across a short outage.
            listed: list[int] = []
            call = threading.Thread(
                target=lambda: listed.append(len(list(saver.list(None, limit=1))))
            )
            call.start()
            time.sleep(1.5)
            postgres.start()
            call.join(timeout=30)
            assert listed == [0]

            assert _wait_for(lambda: _health(channel) == _STATUS.SERVING, 10)
            stub.ListCheckpoints(request, timeout=5)  # recovered without a restart
    finally:
        assert server.stop() == 0, "".join(server.log)
    assert "Traceback" not in "".join(server.log)


def test_start_up_waits_for_the_database(postgres: ThrowawayPostgres) -> None:
    postgres.stop()
    try:
        # The database comes up once the server has said it waits for it.
        server = ServerProcess.start(
            postgres.url, "--database-wait-seconds", "60", on_line=_start_when_waiting(postgres)
        )
    finally:
        postgres.start_if_stopped()
    assert server.stop() == 0
    assert any("not reachable yet" in line for line in server.log)


def _start_when_waiting(postgres: ThrowawayPostgres) -> Callable[[str], None]:
    def on_line(line: str) -> None:
        if "not reachable yet" in line:
            postgres.start_if_stopped()

    return on_line


# --- SIGKILL in the middle of graph runs -------------------------------------------------

_STEPS = 25


class _Count(TypedDict):
    n: int


def _step(state: _Count) -> dict[str, int]:
    time.sleep(0.005)  # a node does some work; kills land mid-run
    return {"n": state["n"] + 1}


def _graph() -> StateGraph[_Count]:
    builder = StateGraph(_Count)
    builder.add_node("step", _step)
    builder.add_edge(START, "step")
    builder.add_conditional_edges("step", lambda s: END if s["n"] >= _STEPS else "step")
    return builder


class _Recording(GrpcSaver):
    """A real GrpcSaver that remembers every checkpoint whose put the server acknowledged."""

    acknowledged: list[RunnableConfig]

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        stored = super().put(config, checkpoint, metadata, new_versions)
        self.acknowledged.append(stored)
        return stored

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        stored = await super().aput(config, checkpoint, metadata, new_versions)
        self.acknowledged.append(stored)
        return stored


def _runs(saver: GrpcSaver, *, use_async: bool, stop: threading.Event, done: list[str]) -> None:
    """Runs graphs, one thread after another, until ``stop``; records the finished threads."""
    graph = _graph().compile(checkpointer=saver)

    def config(thread_id: str) -> RunnableConfig:
        return {"configurable": {"thread_id": thread_id}, "recursion_limit": _STEPS * 4}

    async def arun() -> None:
        while not stop.is_set():
            thread_id = f"a{len(done)}"
            await graph.ainvoke({"n": 0}, config(thread_id))
            done.append(thread_id)

    if use_async:
        asyncio.run(arun())
        return
    while not stop.is_set():
        thread_id = f"s{len(done)}"
        graph.invoke({"n": 0}, config(thread_id))
        done.append(thread_id)


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_sigkill_mid_graph_runs_loses_no_acknowledged_checkpoint(
    own_database: str, use_async: bool
) -> None:
    server = ServerProcess.start(own_database)
    port = server.port
    saver = _Recording(f"grpc://{server.target}", namespace="kills", timeout=60)
    saver.acknowledged = []
    stop, done, failures = threading.Event(), list[str](), list[BaseException]()

    def work() -> None:
        try:
            _runs(saver, use_async=use_async, stop=stop, done=done)
        except BaseException as error:
            failures.append(error)

    worker = threading.Thread(target=work)
    worker.start()
    try:
        assert _wait_for(lambda: len(done) >= 1 or bool(failures), 30)
        for _ in range(3):
            time.sleep(0.4)  # mid-run: a run of 25 steps takes longer than this
            kill(server)
            server = ServerProcess.start(own_database, port=port)
        stop.set()
        worker.join(timeout=120)
        assert not worker.is_alive()
        assert failures == []  # no graph call failed across three kills
    finally:
        stop.set()
        worker.join(timeout=120)
        try:
            # Every checkpoint the client saw acknowledged is stored (sync and async alike).
            assert len(saver.acknowledged) > _STEPS
            for config in saver.acknowledged:
                stored = saver.get_tuple(config)
                assert stored is not None
                assert (
                    stored.config["configurable"]["checkpoint_id"]
                    == (config["configurable"]["checkpoint_id"])
                )
            # Each graph ran to its end once, from its last committed step on: one unbroken
            # chain of steps -1..25, no step run twice from the start.
            assert len(done) >= 2
            for thread_id in done:
                history = list(saver.list({"configurable": {"thread_id": thread_id}}))
                assert history[0].checkpoint["channel_values"]["n"] == _STEPS
                steps = [t.metadata["step"] for t in reversed(history)]
                assert steps == list(range(-1, len(steps) - 1))
        finally:
            saver.close()
            assert server.stop() == 0


def test_rolling_restart_behind_one_target_fails_no_call(own_database: str) -> None:
    first, second = ServerProcess.start(own_database), ServerProcess.start(own_database)
    servers = [first, second]
    target = f"ipv4:{first.target},{second.target}"  # the client knows both replicas
    saver = _Recording(target, namespace="rolling", timeout=60)
    saver.acknowledged = []
    stop, done, failures = threading.Event(), list[str](), list[BaseException]()

    def work() -> None:
        try:
            _runs(saver, use_async=False, stop=stop, done=done)
        except BaseException as error:
            failures.append(error)

    worker = threading.Thread(target=work)
    worker.start()
    try:
        assert _wait_for(lambda: len(done) >= 1 or bool(failures), 30)
        for index in range(2):  # one replica at a time: drain (SIGTERM), then start again
            port = servers[index].port
            assert servers[index].stop() == 0
            time.sleep(0.3)
            servers[index] = ServerProcess.start(own_database, port=port)
            time.sleep(0.3)
        stop.set()
        worker.join(timeout=120)
        assert failures == []
        assert len(done) >= 2
        for config in saver.acknowledged:
            assert saver.get_tuple(config) is not None
    finally:
        stop.set()
        worker.join(timeout=120)
        saver.close()
        for server in servers:
            if server.process.poll() is None:
                server.stop()


def _sessions(database_url: str) -> list[tuple[str, str]]:
    """(state, query) of every other session on the database, from pg_stat_activity."""
    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT state, query FROM pg_stat_activity WHERE datname = %s", (name,)
        ).fetchall()
    return [(str(state), str(query)) for state, query in rows]


def test_deadlines_and_cancellations_leak_no_transaction(postgres_url: str) -> None:
    with postgres_database("lgcp_deadline") as url:
        server = ServerProcess.start(url)
        try:
            with grpc.insecure_channel(server.target) as channel:
                stub = CheckpointServiceStub(channel)
                threads: Any = ThreadServiceStub(channel)
                saver = GrpcSaver(f"grpc://{server.target}", namespace="deadline")
                put_chain(saver, "t", 3)
                saver.close()
                listing = api.ListCheckpointsRequest(namespace="deadline", thread_id="t")
                get = api.GetCheckpointRequest(namespace="deadline", thread_id="t")
                codes: dict[str, int] = {}
                for index in range(300):
                    try:
                        # Deadlines from half a millisecond to 10 ms: many expire mid-call.
                        timeout = 0.0005 * (1 + index % 20)
                        if index % 2:
                            stub.GetCheckpoint(get, timeout=timeout)
                        else:
                            stub.ListCheckpoints(listing, timeout=timeout)
                        code = "OK"
                    except grpc.RpcError as error:
                        code = error.code().name
                    codes[code] = codes.get(code, 0) + 1
                for index in range(60):  # puts cut off inside their write transaction
                    timeout = 0.001 * (1 + index % 10)
                    hasty = GrpcSaver(f"grpc://{server.target}", namespace="ns", timeout=timeout)
                    with contextlib.suppress(GrpcSaverError):
                        put_chain(hasty, f"hasty-{index}", 2)
                    hasty.close()
                for _ in range(20):
                    watch = threads.WatchEvents(
                        thread_api.WatchEventsRequest(namespace="deadline", from_beginning=True)
                    )
                    next(watch)
                    watch.cancel()
                assert codes.get("DEADLINE_EXCEEDED", 0) > 0, codes
                assert set(codes) <= {"OK", "DEADLINE_EXCEEDED"}, codes
                # Some calls were cut off inside the server, not only before they reached it.
                cut = [line for line in server.log if '"code": "DEADLINE_EXCEEDED"' in line]
                cut += [line for line in server.log if '"code": "CANCELLED"' in line]
                assert len(cut) > 0
                # Still serving, and the pools hold no transaction open.
                stub.ListCheckpoints(listing, timeout=5)
                for _ in range(20):  # every connection of the pool serves a get again
                    stub.GetCheckpoint(get, timeout=5)
                assert _wait_for(
                    lambda: all(state != "idle in transaction" for state, _ in _sessions(url)), 5
                ), _sessions(url)
                assert len(_sessions(url)) <= 42  # two pools of 10 + 10 overflow, and LISTEN
        finally:
            assert server.stop() == 0
        assert "Traceback" not in "".join(server.log)


def test_gets_survive_a_column_type_changed_under_their_prepared_statements(
    postgres_url: str,
) -> None:
    """A migration that changes a column's type leaves no connection failing every get."""
    with postgres_database("lgcp_stale_plan") as url:
        server = ServerProcess.start(url)
        try:
            with grpc.insecure_channel(server.target) as channel:
                saver = GrpcSaver(f"grpc://{server.target}", namespace="stale")
                put_chain(saver, "t", 2)
                stub = CheckpointServiceStub(channel)
                get = api.GetCheckpointRequest(namespace="stale", thread_id="t")
                for _ in range(30):  # prepared on every connection of the pool
                    stub.GetCheckpoint(get, timeout=5)
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(
                        "ALTER TABLE checkpoints ALTER COLUMN parent_checkpoint_id TYPE text"
                    )
                codes = []
                for _ in range(30):
                    try:
                        stub.GetCheckpoint(get, timeout=5)
                        codes.append("OK")
                    except grpc.RpcError as error:
                        codes.append(error.code().name)
                # Each stale connection fails once, as the database being briefly unavailable
                # (which clients retry), and is replaced; then every get is served.
                assert set(codes) <= {"OK", "UNAVAILABLE"}, codes
                assert codes[-10:] == ["OK"] * 10, codes
                assert saver.get_tuple({"configurable": {"thread_id": "t"}}) is not None
                saver.close()
        finally:
            assert server.stop() == 0
        assert "Traceback" not in "".join(server.log)
