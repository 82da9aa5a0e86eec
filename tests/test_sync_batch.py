"""The sync saver shared by many threads: calls that pile up travel together, on both databases.

Threads released together by a barrier make the overlap a program with many threads makes; the
server's access log says which calls reached it, in the test's own namespace.
"""

from __future__ import annotations

import json
import operator
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Annotated, Any, TypedDict

import grpc
import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import Checkpoint, CheckpointTuple, empty_checkpoint
from langgraph.graph import END, START, StateGraph
from lgcheckpoint.v1.checkpoint_service_pb2_grpc import CheckpointServiceStub

from langgraph.checkpoint.grpc import GrpcSaver, GrpcSaverError
from tests.conftest import ServerProcess
from tests.test_leases import acquire

THREADS = 16
WAIT = 30.0  # seconds before a test gives up on a thread


def calls(server: ServerProcess, namespace: str) -> Counter[tuple[str, str]]:
    """The calls the server answered in ``namespace``, by (method, code), from its access log."""
    counted: Counter[tuple[str, str]] = Counter()
    for line in list(server.log):
        if '"checkpoint_server.access"' in line:
            record = json.loads(line)
            if record["namespace"] == namespace:
                counted[(record["method"], record["code"])] += 1
    return counted


def by_method(counted: Counter[tuple[str, str]]) -> Counter[str]:
    methods: Counter[str] = Counter()
    for (method, _code), count in counted.items():
        methods[method] += count
    return methods


def settled(server: ServerProcess, namespace: str) -> Counter[tuple[str, str]]:
    """``calls`` once the log has stopped growing (its lines arrive through a pipe)."""
    last = calls(server, namespace)
    while True:
        time.sleep(0.2)
        now = calls(server, namespace)
        if now == last:
            return now
        last = now


def together(count: int, work: Callable[[int], Any]) -> list[Any]:
    """``work(n)`` on ``count`` threads started at one moment; each one's value or error."""
    barrier = threading.Barrier(count)

    def run(n: int) -> Any:
        barrier.wait(WAIT)
        try:
            return work(n)
        except GrpcSaverError as error:
            return error

    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(run, n) for n in range(count)]
        return [future.result(WAIT) for future in futures]


def config_of(thread_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}


def checkpoints(n: int) -> list[Checkpoint]:
    """Thread ``n``'s three checkpoints, with channel values of their own."""
    made = []
    for step in range(3):
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"messages": [f"thread {n} step {step}"] * (step + 1)}
        checkpoint["channel_versions"] = {"messages": f"{step + 1:016}.0"}
        made.append(checkpoint)
    return made


def store(saver: GrpcSaver, n: int, made: list[Checkpoint]) -> CheckpointTuple | None:
    """Thread ``n``'s puts and writes, one after another as LangGraph makes them; then a get."""
    config = config_of(f"t{n}")
    for step, checkpoint in enumerate(made):
        versions = {"messages": checkpoint["channel_versions"]["messages"]}
        config = saver.put(config, checkpoint, {"step": step, "run_id": f"thread {n}"}, versions)
        saver.put_writes(config, [("messages", f"write {n}.{step}"), ("other", n)], "task-a")
        saver.put_writes(config, [("messages", step)], "task-b", "path-b")
    return saver.get_tuple(config_of(f"t{n}"))


def stored(saver: GrpcSaver, thread_id: str) -> list[tuple[Any, ...]]:
    """A thread's checkpoints as LangGraph reads them, newest first."""
    return [
        (
            t.config["configurable"]["checkpoint_id"],
            t.checkpoint,
            t.metadata,
            t.parent_config and t.parent_config["configurable"]["checkpoint_id"],
            t.pending_writes,
        )
        for t in saver.list(config_of(thread_id))
    ]


def test_threads_calls_travel_together_and_store_what_unary_calls_store(
    server: ServerProcess, namespace: str
) -> None:
    made = [checkpoints(n) for n in range(THREADS)]
    unary_namespace = f"{namespace}-unary"
    with GrpcSaver.from_conn_string(server.target, namespace=unary_namespace) as unary:
        for n in range(THREADS):  # one thread: each call finds the wire free
            store(unary, n, made[n])
        expected = [stored(unary, f"t{n}") for n in range(THREADS)]
    with GrpcSaver.from_conn_string(server.target, namespace=namespace) as saver:
        latest = together(THREADS, lambda n: store(saver, n, made[n]))
        gets = together(
            THREADS, lambda n: [saver.get_tuple(config_of(f"t{(n + k) % THREADS}")) for k in (0, 1)]
        )
        missing = together(THREADS, lambda n: saver.get_tuple(config_of(f"nobody-{n}")))
        assert [stored(saver, f"t{n}") for n in range(THREADS)] == expected
    assert by_method(settled(server, unary_namespace)).keys() == {
        "PutCheckpoint",
        "PutWrites",
        "GetCheckpoint",
        "ListCheckpoints",
    }
    for n, (tuple_, pair) in enumerate(zip(latest, gets, strict=True)):
        assert isinstance(tuple_, CheckpointTuple)
        assert tuple_.checkpoint == made[n][-1]
        assert tuple_.metadata == {"step": 2, "run_id": f"thread {n}"}
        assert [t and t.metadata["run_id"] for t in pair] == [
            f"thread {n}",
            f"thread {(n + 1) % THREADS}",
        ]
    assert missing == [None] * THREADS
    methods = by_method(settled(server, namespace))
    assert methods["BatchWrite"] > 0
    assert methods["BatchGetCheckpoints"] > 0
    # 48 puts and 96 writes; 48 reads and 16 misses.
    assert methods["BatchWrite"] + methods["PutCheckpoint"] + methods["PutWrites"] < THREADS * 9
    assert methods["BatchGetCheckpoints"] + methods["GetCheckpoint"] < THREADS * 4


def test_a_refused_item_fails_alone_with_its_own_error(
    server: ServerProcess, namespace: str
) -> None:
    leased = range(0, THREADS, 4)  # another writer holds these threads
    with grpc.insecure_channel(server.target) as channel:
        holders = {n: acquire(CheckpointServiceStub(channel), namespace, f"t{n}") for n in leased}
    rounds = 5
    with GrpcSaver.from_conn_string(server.target, namespace=namespace) as saver:

        def put_all(n: int) -> list[GrpcSaverError | None]:
            outcomes: list[GrpcSaverError | None] = []
            for step in range(rounds):
                try:
                    saver.put(config_of(f"t{n}"), empty_checkpoint(), {"step": step}, {})
                    outcomes.append(None)
                except GrpcSaverError as error:
                    outcomes.append(error)
            return outcomes

        outcomes = together(THREADS, put_all)
        for n, mine in enumerate(outcomes):
            if n not in holders:
                assert mine == [None] * rounds
                assert len(list(saver.list(config_of(f"t{n}")))) == rounds
                continue
            for error in mine:
                assert isinstance(error, GrpcSaverError)
                assert error.code == grpc.StatusCode.FAILED_PRECONDITION
                assert f"thread 't{n}' is leased by lease '{holders[n].lease_id}'" in error.details
            assert list(saver.list(config_of(f"t{n}"))) == []
    counted = settled(server, namespace)
    assert counted[("BatchWrite", "OK")] > 0
    # Refused in a batch, not only in calls of their own (which the log shows refused).
    assert counted[("PutCheckpoint", "FAILED_PRECONDITION")] < len(holders) * rounds


class _OlderServer(grpc.GenericRpcHandler):
    """A server that forwards every unary call to the real one but knows no batch RPC."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel
        self.seen: Counter[str] = Counter()

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        full_name = handler_call_details.method
        name = full_name.rsplit("/", 1)[1]
        self.seen[name] += 1
        if name.startswith("Batch"):
            return None  # answered UNIMPLEMENTED, as by a server of before the batch RPCs
        forward: grpc.UnaryUnaryMultiCallable[bytes, bytes] = self.channel.unary_unary(full_name)

        def behavior(request: bytes, context: grpc.ServicerContext) -> bytes:
            try:
                response: bytes = forward(request, timeout=context.time_remaining())
            except grpc.RpcError as error:
                context.abort(error.code(), error.details() or "")
            return response

        return grpc.unary_unary_rpc_method_handler(behavior)


@contextmanager
def older_server(target: str) -> Iterator[tuple[str, _OlderServer]]:
    with grpc.insecure_channel(target) as channel:
        handler = _OlderServer(channel)
        proxy = grpc.server(ThreadPoolExecutor(THREADS), handlers=[handler])
        port = proxy.add_insecure_port("127.0.0.1:0")
        proxy.start()
        try:
            yield f"127.0.0.1:{port}", handler
        finally:
            proxy.stop(None)


def test_a_server_without_batches_gets_unary_calls(server: ServerProcess, namespace: str) -> None:
    made = [checkpoints(n) for n in range(THREADS)]
    with older_server(server.target) as (target, older):
        with GrpcSaver.from_conn_string(target, namespace=namespace) as saver:
            for _ in range(2):
                latest = together(THREADS, lambda n: store(saver, n, made[n]))
                found = together(THREADS, lambda n: saver.get_tuple(config_of(f"t{n}")))
            for n in range(THREADS):
                for tuple_ in (latest[n], found[n]):
                    assert isinstance(tuple_, CheckpointTuple)
                    assert tuple_.checkpoint == made[n][-1]
                    assert len(tuple_.pending_writes or []) == 3
        # One try of each batch RPC, then one call per put, write and get.
        assert older.seen["BatchWrite"] == 1
        assert older.seen["BatchGetCheckpoints"] == 1
        assert older.seen["PutCheckpoint"] == 2 * THREADS * 3
        assert older.seen["PutWrites"] == 2 * THREADS * 6
    assert by_method(settled(server, namespace)).keys() == {
        "PutCheckpoint",
        "PutWrites",
        "GetCheckpoint",
    }


def _nobody_listens() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


@pytest.mark.parametrize(
    ("fail_fast", "timeout", "code"),
    [
        (False, 1.0, grpc.StatusCode.DEADLINE_EXCEEDED),  # waits for the server until its deadline
        (True, 10.0, grpc.StatusCode.UNAVAILABLE),  # gives up after gRPC's own few retries
    ],
)
def test_an_unreachable_server_fails_every_waiting_thread_promptly(
    fail_fast: bool, timeout: float, code: grpc.StatusCode
) -> None:
    with GrpcSaver.from_conn_string(
        _nobody_listens(), timeout=timeout, fail_fast=fail_fast
    ) as saver:
        started = time.monotonic()
        outcomes = together(
            THREADS,
            lambda n: saver.put(config_of(f"t{n}"), empty_checkpoint(), {}, {}),
        )
        seconds = time.monotonic() - started
    assert all(isinstance(o, GrpcSaverError) and o.code == code for o in outcomes), outcomes
    # The call on the wire, then the batch that waited for it: two calls' time, no more.
    assert seconds < (2 * timeout + 2 if not fail_fast else 8)


def test_closing_the_saver_fails_the_threads_that_wait() -> None:
    saver = GrpcSaver(_nobody_listens(), timeout=60)
    outcomes: dict[int, BaseException] = {}

    def put(n: int) -> None:
        try:
            saver.put(config_of(f"t{n}"), empty_checkpoint(), {}, {})
        except Exception as error:  # the test looks at it
            outcomes[n] = error

    first = threading.Thread(target=put, args=(0,))
    first.start()
    time.sleep(0.3)  # on the wire, waiting for a server to connect to
    others = [threading.Thread(target=put, args=(n,)) for n in range(1, THREADS)]
    for other in others:
        other.start()
    time.sleep(0.3)
    started = time.monotonic()
    saver.close()
    for worker in [first, *others]:
        worker.join(5)
        assert not worker.is_alive()
    assert time.monotonic() - started < 5  # not the 60 seconds of the deadline
    for n in range(1, THREADS):
        error = outcomes[n]
        assert isinstance(error, GrpcSaverError)
        assert error.code == grpc.StatusCode.CANCELLED
        assert error.details == "the saver was closed"
    # The call on the wire ends too, its channel closed, with the same code.
    assert isinstance(outcomes[0], GrpcSaverError), outcomes[0]
    assert outcomes[0].code == grpc.StatusCode.CANCELLED
    with pytest.raises(GrpcSaverError) as after:  # and so does any call after close
        saver.get_tuple(config_of("t0"))
    assert after.value.code == grpc.StatusCode.CANCELLED


class Fan(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


def fan_graph(saver: GrpcSaver, width: int) -> Any:
    """START -> width parallel branches -> join: a step whose tasks' writes overlap."""
    builder = StateGraph(Fan)
    builder.add_node("start", lambda state: {"log": ["start"]})
    for b in range(width):
        builder.add_node(f"b{b}", lambda state, b=b: {"log": [f"b{b}"]})
        builder.add_edge("start", f"b{b}")
    builder.add_node("join", lambda state: {"log": ["join"]})
    builder.add_edge([f"b{b}" for b in range(width)], "join")
    builder.add_edge(START, "start")
    builder.add_edge("join", END)
    return builder.compile(checkpointer=saver)


def test_many_threads_invoking_one_graph_share_batches(
    server: ServerProcess, namespace: str
) -> None:
    width, turns = 3, 3

    def run(graph: Any, n: int) -> list[str]:
        config: RunnableConfig = {"configurable": {"thread_id": f"g{n}"}}
        for _ in range(turns):
            result: list[str] = graph.invoke({"log": [f"turn of {n}"]}, config)["log"]
        return result

    def history(saver: GrpcSaver, n: int) -> list[Any]:
        return [t.metadata["step"] for t in saver.list({"configurable": {"thread_id": f"g{n}"}})]

    with GrpcSaver.from_conn_string(server.target, namespace=f"{namespace}-alone") as alone:
        run(fan_graph(alone, width), 0)
        steps = history(alone, 0)
    with GrpcSaver.from_conn_string(server.target, namespace=namespace) as saver:
        graph = fan_graph(saver, width)
        logs = together(THREADS, lambda n: run(graph, n))
        for n, log in enumerate(logs):
            turn = sorted([f"turn of {n}", "start", *(f"b{b}" for b in range(width)), "join"])
            chunks = [sorted(log[i : i + len(turn)]) for i in range(0, len(log), len(turn))]
            assert chunks == [turn] * turns
            assert history(saver, n) == steps
    methods = by_method(settled(server, namespace))
    assert methods["BatchWrite"] > 0
    assert methods["BatchGetCheckpoints"] > 0
