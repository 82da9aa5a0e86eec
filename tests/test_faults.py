"""Faults injected for real: PostgreSQL stopped under a running server, servers SIGKILLed."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypedDict

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata
from langgraph.graph import END, START, StateGraph
from lgcheckpoint.v1 import checkpoint_service_pb2 as api
from lgcheckpoint.v1.checkpoint_service_pb2_grpc import CheckpointServiceStub

from langgraph.checkpoint.grpc import GrpcSaver
from tests.conftest import ServerProcess
from tests.faults import ThrowawayPostgres, kill, throwaway_postgres

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
    starter = threading.Timer(2.0, postgres.start)
    starter.start()
    try:
        server = ServerProcess.start(postgres.url, "--database-wait-seconds", "30")
    finally:
        starter.join()
    assert server.stop() == 0
    assert any("not reachable yet" in line for line in server.log)


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
            # Every checkpoint the client saw acknowledged is stored.
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
