"""The service's own promises: namespaces, durability, limits, bad input, lifecycle."""

from __future__ import annotations

import asyncio
import json
import operator
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Annotated, Any, TypedDict

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from langchain_core.runnables import RunnableConfig
from langgraph.channels.delta import DeltaChannel
from langgraph.checkpoint.base import BaseCheckpointSaver, Checkpoint, empty_checkpoint
from langgraph.graph import START, StateGraph
from lgcheckpoint.v1 import checkpoint_pb2 as pb
from lgcheckpoint.v1 import checkpoint_service_pb2 as api
from lgcheckpoint.v1.checkpoint_service_pb2_grpc import CheckpointServiceStub

from langgraph.checkpoint.grpc import GrpcSaver, GrpcSaverError
from tests.conftest import ServerProcess, fresh_sqlite_url

MiB = 1024 * 1024


def config(thread_id: str, checkpoint_ns: str = "", **extra: Any) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns, **extra}}


def put_chain(
    saver: GrpcSaver, thread_id: str, count: int, *, checkpoint_ns: str = "", **metadata: Any
) -> list[RunnableConfig]:
    """Stores ``count`` checkpoints, each the child of the one before, with a changing value."""
    stored: list[RunnableConfig] = []
    parent = config(thread_id, checkpoint_ns)
    for step in range(count):
        checkpoint: Checkpoint = empty_checkpoint()
        version = saver.get_next_version(None if step == 0 else str(step), None)
        checkpoint["channel_versions"] = {"value": version}
        checkpoint["channel_values"] = {"value": f"{thread_id}-{step}"}
        stored_metadata: Any = {"source": "loop", "step": step, **metadata}
        parent = saver.put(parent, checkpoint, stored_metadata, {"value": version})
        stored.append(parent)
    return stored


def ids(saver: GrpcSaver, cfg: RunnableConfig | None, **kwargs: Any) -> list[str]:
    return [t.checkpoint["id"] for t in saver.list(cfg, **kwargs)]


@pytest.fixture
def saver(server: ServerProcess, namespace: str) -> Iterator[GrpcSaver]:
    with GrpcSaver.from_conn_string(f"grpc://{server.target}", namespace=namespace) as saver:
        yield saver


@pytest.fixture
def stub(server: ServerProcess) -> Iterator[CheckpointServiceStub]:
    with grpc.insecure_channel(server.target) as channel:
        yield CheckpointServiceStub(channel)


# --- namespaces -----------------------------------------------------------------------


def test_namespaces_are_isolated_for_every_operation(server: ServerProcess) -> None:
    target = f"grpc://{server.target}"
    suffix = uuid.uuid4().hex[:8]
    with (
        GrpcSaver.from_conn_string(target, namespace=f"a-{suffix}") as a,
        GrpcSaver.from_conn_string(target, namespace=f"b-{suffix}") as b,
    ):
        a_configs = put_chain(a, "shared", 3, run_id="run-1")
        b_configs = put_chain(b, "shared", 2, run_id="run-1")
        b.put_writes(b_configs[-1], [("value", "b-write")], "task-b")
        b_ids = ids(b, None)

        # The same thread ID in two namespaces is two threads.
        a_latest = a.get_tuple(config("shared"))
        assert a_latest is not None
        assert a_latest.checkpoint["channel_values"] == {"value": "shared-2"}
        assert a_latest.pending_writes == []
        assert ids(a, None) == [c["configurable"]["checkpoint_id"] for c in reversed(a_configs)]
        # Reading another namespace's checkpoint by ID finds nothing.
        assert a.get_tuple(b_configs[0]) is None

        a.copy_thread("shared", "copied")
        a.prune(["shared"], strategy="keep_latest")
        a.delete_for_runs(["run-1"])
        a.delete_thread("shared")
        assert ids(a, None) == []
        assert ids(b, None) == b_ids
        with pytest.raises(GrpcSaverError) as refused:
            b.copy_thread("shared", "shared")
        assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
        b_latest = b.get_tuple(config("shared"))
        assert b_latest is not None
        assert b_latest.pending_writes == [("task-b", "value", "b-write")]


def test_empty_namespace_is_default(server: ServerProcess) -> None:
    thread_id = uuid.uuid4().hex
    with (
        GrpcSaver.from_conn_string(f"grpc://{server.target}") as implicit,
        GrpcSaver.from_conn_string(f"grpc://{server.target}", namespace="default") as explicit,
    ):
        put_chain(implicit, thread_id, 1)
        assert explicit.get_tuple(config(thread_id)) is not None
        implicit.delete_thread(thread_id)


# --- metadata, listing, copying -------------------------------------------------------


def test_metadata_keeps_json_types_and_filters_exactly(saver: GrpcSaver) -> None:
    put_chain(saver, "t", 1, score=1.0, big=2**60, tags=["x", "y"], nested={"k": None})
    put_chain(saver, "u", 1, score=1, tags=["x"], nested={"k": 0})
    (stored,) = list(saver.list(config("t")))
    assert type(stored.metadata["step"]) is int
    assert type(stored.metadata["score"]) is float  # type: ignore[typeddict-item]
    assert stored.metadata["big"] == 2**60  # type: ignore[typeddict-item]
    assert [
        t.config["configurable"]["thread_id"] for t in saver.list(None, filter={"tags": ["x"]})
    ] == ["u"]
    assert [
        t.config["configurable"]["thread_id"]
        for t in saver.list(None, filter={"nested": {"k": None}})
    ] == ["t"]
    assert ids(saver, None, filter={"step": 0, "tags": ["x", "y"]}) == ids(saver, config("t"))
    assert ids(saver, None, filter={"missing": None}) == []


def test_listing_pages_are_contiguous_newest_first(
    saver: GrpcSaver, stub: CheckpointServiceStub
) -> None:
    put_chain(saver, "long", 25)
    put_chain(saver, "other", 5)
    seen: list[str] = []
    request = api.ListCheckpointsRequest(namespace=saver.namespace, page_size=7)
    while True:
        response = stub.ListCheckpoints(request)
        seen += [c.checkpoint_id for c in response.checkpoints]
        if not response.next_page_token:
            break
        request.page_token = response.next_page_token
    assert len(set(seen)) == len(seen) == 30
    assert seen == sorted(seen, reverse=True)
    assert seen == ids(saver, None)
    assert len(ids(saver, None, limit=12)) == 12
    long_ids = ids(saver, config("long"))
    assert (
        ids(saver, config("long"), before=config("long", checkpoint_id=long_ids[9]))
        == long_ids[10:]
    )


def test_copy_keeps_the_chain_and_refuses_to_overwrite(saver: GrpcSaver) -> None:
    source = put_chain(saver, "source", 4)
    saver.put_writes(source[-1], [("value", "pending")], "task-1")
    saver.copy_thread("source", "copy")
    copied = list(saver.list(config("copy")))
    assert [t.checkpoint["id"] for t in copied] == ids(saver, config("source"))
    assert copied[0].pending_writes == [("task-1", "value", "pending")]
    assert copied[0].checkpoint["channel_values"] == {"value": "source-3"}
    assert copied[1].parent_config == config("copy", checkpoint_id=copied[2].checkpoint["id"])

    put_chain(saver, "taken", 1)
    with pytest.raises(GrpcSaverError) as refused:
        saver.copy_thread("source", "taken")
    assert refused.value.code == grpc.StatusCode.ALREADY_EXISTS
    assert len(ids(saver, config("taken"))) == 1


def test_delete_for_runs_frees_values_only_when_unreferenced(saver: GrpcSaver) -> None:
    put_chain(saver, "t", 2, run_id="keep")
    later = put_chain(saver, "t", 1, run_id="drop")
    saver.delete_for_runs(["drop"])
    remaining = list(saver.list(config("t")))
    assert len(remaining) == 2
    assert all(t.config != later[0] for t in remaining)
    assert remaining[0].checkpoint["channel_values"] == {"value": "t-1"}


def test_prune_and_delete_for_runs_take_more_ids_than_one_call_carries(saver: GrpcSaver) -> None:
    """The server takes at most 1,000 IDs a call; the saver sends more in several calls."""
    for thread_id in ("first", "last"):
        put_chain(saver, thread_id, 3, run_id=f"run-{thread_id}")
    others = [f"other-{i}" for i in range(1500)]
    saver.prune(["first", *others, "last"], strategy="keep_latest")
    assert [len(list(saver.list(config(t)))) for t in ("first", "last")] == [1, 1]
    saver.delete_for_runs(["run-first", *others, "run-last"])
    assert [list(saver.list(config(t))) for t in ("first", "last")] == [[], []]


# --- DeltaChannel-safe pruning ---------------------------------------------------------


def _concat(state: list[int], writes: Any) -> list[int]:
    return state + [item for write in writes for item in write]


class DeltaState(TypedDict):
    items: Annotated[list[int], DeltaChannel(_concat, snapshot_frequency=4)]
    turns: Annotated[int, operator.add]


def _delta_graph(saver: GrpcSaver) -> Any:
    def add(state: DeltaState) -> dict[str, Any]:
        return {"items": [state["turns"]]}

    builder = StateGraph(DeltaState)
    builder.add_node("add", add)
    builder.add_edge(START, "add")
    return builder.compile(checkpointer=saver)


def test_prune_keep_latest_keeps_what_delta_channels_are_rebuilt_from(saver: GrpcSaver) -> None:
    graph = _delta_graph(saver)
    cfg = config("delta")
    for _ in range(10):
        graph.invoke({"turns": 1}, cfg)
    before = graph.get_state(cfg).values
    assert before["items"] == list(range(1, 11))
    history = len(list(saver.list(cfg)))

    saver.prune(["delta"], strategy="keep_latest")

    assert graph.get_state(cfg).values == before
    kept = len(list(saver.list(cfg)))
    assert 1 < kept < history  # kept back to the last snapshot, not everything
    graph.invoke({"turns": 1}, cfg)
    assert graph.get_state(cfg).values["items"] == list(range(1, 12))


async def test_delta_channel_history_matches_the_base_walk(saver: GrpcSaver) -> None:
    graph = _delta_graph(saver)
    cfg = config("walk")
    for _ in range(6):
        await graph.ainvoke({"turns": 1}, cfg)
    for target in [t.config async for t in saver.alist(cfg)]:
        fast = await saver.aget_delta_channel_history(config=target, channels=["items", "turns"])
        # The base class's walk: get_tuple along parent_config, one ancestor at a time.
        slow = await BaseCheckpointSaver.aget_delta_channel_history(
            saver, config=target, channels=["items", "turns"]
        )
        assert fast == slow


def test_prune_rejects_unknown_strategy_and_deletes(saver: GrpcSaver) -> None:
    put_chain(saver, "t", 3)
    with pytest.raises(ValueError, match="Unknown prune strategy"):
        saver.prune(["t"], strategy="everything")
    assert len(ids(saver, config("t"))) == 3
    saver.prune(["t"], strategy="delete")
    assert ids(saver, config("t")) == []


# --- bad input ------------------------------------------------------------------------


def _valid_put(namespace: str) -> api.PutCheckpointRequest:
    return api.PutCheckpointRequest(
        namespace=namespace,
        thread_id="t",
        checkpoint_id="1",
        checkpoint=pb.Payload(type="json", data=b"{}"),
        metadata_json=b'{"step": 1}',
    )


def _invalid(call: Any, request: Any) -> str:
    with pytest.raises(grpc.RpcError) as raised:
        call(request)
    error: Any = raised.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    details: str = error.details()
    return details


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"thread_id": ""}, "thread_id"),
        ({"checkpoint_id": ""}, "checkpoint_id"),
        ({"thread_id": "a\x00b"}, "thread_id"),
        ({"thread_id": "x" * 2000}, "thread_id"),
        ({"metadata_json": b"[1, 2]"}, "metadata_json"),
        ({"metadata_json": b"{not json"}, "metadata_json"),
        ({"metadata_json": b'{"a": NaN}'}, "metadata_json"),
        ({"metadata_json": b'{"a": "\\u0000"}'}, "metadata_json"),
        ({"metadata_json": b'{"a": "\xff"}'}, "metadata_json"),
        ({"checkpoint": pb.Payload(type="", data=b"x")}, "checkpoint.type"),
        ({"new_values": [pb.ChannelValue(channel="c", version="1")]}, "new_values[0].value"),
        ({"channel_versions": {"c": ""}}, "channel_versions"),
    ],
)
def test_bad_put_is_refused_naming_the_field(
    stub: CheckpointServiceStub, namespace: str, change: dict[str, Any], field: str
) -> None:
    request = _valid_put(namespace)
    for name, value in change.items():
        if isinstance(value, pb.Payload):
            getattr(request, name).CopyFrom(value)
        elif isinstance(value, list):
            getattr(request, name).extend(value)
        elif isinstance(value, dict):
            getattr(request, name).update(value)
        else:
            setattr(request, name, value)
    assert field in _invalid(stub.PutCheckpoint, request)
    listed = stub.ListCheckpoints(api.ListCheckpointsRequest(namespace=namespace))
    assert list(listed.checkpoints) == []


@pytest.mark.parametrize(
    ("method", "request_", "field"),
    [
        ("GetCheckpoint", api.GetCheckpointRequest(), "thread_id"),
        ("PutWrites", api.PutWritesRequest(thread_id="t"), "checkpoint_id"),
        (
            "PutWrites",
            api.PutWritesRequest(
                thread_id="t",
                checkpoint_id="1",
                writes=[pb.PendingWrite(channel="c", value=pb.Payload(type="json"))],
            ),
            "writes[0].task_id",
        ),
        ("ListCheckpoints", api.ListCheckpointsRequest(page_size=100_000), "page_size"),
        ("ListCheckpoints", api.ListCheckpointsRequest(page_size=-1), "page_size"),
        (
            "ListCheckpoints",
            api.ListCheckpointsRequest(page_token="garbage"),  # noqa: S106
            "page_token",
        ),
        (
            "ListCheckpoints",
            api.ListCheckpointsRequest(metadata_filter_json=b'{"step": '),
            "metadata_filter_json",
        ),
        (
            "ListCheckpoints",
            api.ListCheckpointsRequest(metadata_filter_json=b'"step"'),
            "metadata_filter_json",
        ),
        ("DeleteThread", api.DeleteThreadRequest(), "thread_id"),
        ("DeleteForRuns", api.DeleteForRunsRequest(run_ids=["ok", ""]), "run_ids[1]"),
        ("CopyThread", api.CopyThreadRequest(target_thread_id="a"), "source_thread_id"),
        ("PruneThreads", api.PruneThreadsRequest(thread_ids=["t"]), "strategy"),
        (
            "PruneThreads",
            api.PruneThreadsRequest(thread_ids=["t"], strategy=99),  # type: ignore[arg-type]
            "strategy",
        ),
        (
            "PruneThreads",
            api.PruneThreadsRequest(thread_ids=["t"] * 1001, strategy=pb.PRUNE_STRATEGY_DELETE),
            "thread_ids",
        ),
        ("GetDeltaChannelHistory", api.GetDeltaChannelHistoryRequest(), "thread_id"),
    ],
)
def test_bad_request_is_refused_naming_the_field(
    stub: CheckpointServiceStub, method: str, request_: Any, field: str
) -> None:
    assert field in _invalid(getattr(stub, method), request_)


def test_invalid_utf8_is_refused_naming_the_field(
    server: ServerProcess, stub: CheckpointServiceStub, namespace: str
) -> None:
    request = _valid_put(namespace)
    request.new_values.add(channel="CHANNEL", version="1", value=pb.Payload(type="json"))
    raw = request.SerializeToString().replace(b"CHANNEL", b"CH\xffNNEL")
    with grpc.insecure_channel(server.target) as channel:
        put_raw = channel.unary_unary(
            "/lgcheckpoint.v1.CheckpointService/PutCheckpoint",
            request_serializer=lambda data: data,
            response_deserializer=api.PutCheckpointResponse.FromString,
        )
        assert "new_values[0].channel" in _invalid(put_raw, raw)
    assert (
        list(stub.ListCheckpoints(api.ListCheckpointsRequest(namespace=namespace)).checkpoints)
        == []
    )


# --- large states and limits ----------------------------------------------------------


def test_20_mib_state_round_trips(saver: GrpcSaver) -> None:
    big = bytes(range(256)) * (20 * MiB // 256)
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"blob": big}
    checkpoint["channel_versions"] = {"blob": "1"}
    stored = saver.put(config("big"), checkpoint, {"step": 0}, {"blob": "1"})
    loaded = saver.get_tuple(stored)
    assert loaded is not None
    assert loaded.checkpoint["channel_values"]["blob"] == big


def test_over_the_limit_is_resource_exhausted_and_writes_nothing(tmp_path: Path) -> None:
    server = ServerProcess.start(fresh_sqlite_url(tmp_path), "--max-message-bytes", str(MiB))
    try:
        with GrpcSaver.from_conn_string(
            f"grpc://{server.target}", max_message_bytes=8 * MiB
        ) as saver:
            checkpoint = empty_checkpoint()
            checkpoint["channel_values"] = {"blob": b"x" * (2 * MiB)}
            checkpoint["channel_versions"] = {"blob": "1"}
            with pytest.raises(GrpcSaverError) as refused:
                saver.put(config("big"), checkpoint, {"step": 0}, {"blob": "1"})
            assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert str(MiB) in refused.value.details
            assert saver.get_tuple(config("big")) is None
    finally:
        assert server.stop() == 0


# --- lifecycle ------------------------------------------------------------------------


def test_health_and_reflection(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.target) as channel:
        health: Any = health_pb2_grpc.HealthStub(channel)
        for service in ("", "lgcheckpoint.v1.CheckpointService"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        reflection: Any = reflection_pb2_grpc.ServerReflectionStub(channel)
        (answer,) = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = {s.name for s in answer.list_services_response.service}
        assert "lgcheckpoint.v1.CheckpointService" in names


async def test_acknowledged_writes_survive_sigterm_and_restart(own_database: str) -> None:
    servers = [
        ServerProcess.start(own_database) for _ in range(2)
    ]  # two start at once: both migrate
    assert servers[1].stop() == 0
    first = servers[0]
    payload = b"p" * MiB
    acknowledged: list[str] = []
    first_ack = asyncio.Event()

    async def put(saver: GrpcSaver, index: int) -> None:
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"blob": payload}
        checkpoint["channel_versions"] = {"blob": "1"}
        try:
            await saver.aput(config(f"t{index}"), checkpoint, {"step": index}, {"blob": "1"})
        except GrpcSaverError as error:
            # Refused while the server stops, or retried until the deadline while it stays
            # down: never acknowledged, so never promised.
            refused = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
            assert error.code in (*refused, grpc.StatusCode.DEADLINE_EXCEEDED)  # noqa: PT017
            return
        acknowledged.append(f"t{index}")
        first_ack.set()

    # The server does not come back on this port: a short deadline ends the retries.
    async with GrpcSaver.from_conn_string(f"grpc://{first.target}", timeout=5) as saver:
        calls = [asyncio.ensure_future(put(saver, i)) for i in range(20)]
        await asyncio.wait_for(first_ack.wait(), timeout=60)
        # SIGTERM lands while the other calls are in flight or queued.
        exit_code = await asyncio.to_thread(first.stop)
        await asyncio.gather(*calls)
    assert exit_code == 0, "".join(first.log)

    second = ServerProcess.start(own_database)
    try:
        async with GrpcSaver.from_conn_string(f"grpc://{second.target}") as saver:
            for thread_id in acknowledged:
                stored = await saver.aget_tuple(config(thread_id))
                assert stored is not None
                assert stored.checkpoint["channel_values"]["blob"] == payload
    finally:
        assert second.stop() == 0


def test_metadata_is_stored_as_json(saver: GrpcSaver, stub: CheckpointServiceStub) -> None:
    stored = put_chain(saver, "t", 1, note="é")
    response = stub.GetCheckpoint(
        api.GetCheckpointRequest(
            namespace=saver.namespace,
            thread_id="t",
            checkpoint_id=stored[0]["configurable"]["checkpoint_id"],
        )
    )
    assert json.loads(response.checkpoint.metadata_json)["note"] == "é"


def _stored_values(server: ServerProcess, namespace: str, thread_id: str) -> list[str]:
    """The versions of the channel values stored for a thread, read from the database itself."""
    query = (
        "SELECT b.version FROM checkpoint_blobs b JOIN threads t ON t.key = b.thread_key "
        "WHERE t.namespace = {0} AND t.thread_id = {0} ORDER BY b.version"
    )
    if server.database_url.startswith("sqlite"):
        with closing(sqlite3.connect(server.database_url.removeprefix("sqlite:///"))) as db:
            rows = db.execute(query.format("?"), (namespace, thread_id)).fetchall()
    else:
        with psycopg.connect(server.database_url) as db:
            rows = db.execute(query.format("%s"), (namespace, thread_id)).fetchall()
    return [version for (version,) in rows]


def test_deleting_runs_and_pruning_free_the_values_nothing_references(
    server: ServerProcess, saver: GrpcSaver
) -> None:
    kept = put_chain(saver, "runs", 2, run_id="keep")
    put_chain(saver, "runs", 1, run_id="drop")
    assert len(_stored_values(server, saver.namespace, "runs")) == 3
    saver.delete_for_runs(["drop"])
    versions = [
        stored.checkpoint["channel_versions"]["value"]
        for stored in map(saver.get_tuple, kept)
        if stored is not None
    ]
    assert _stored_values(server, saver.namespace, "runs") == sorted(versions)

    put_chain(saver, "pruned", 3)
    latest = saver.get_tuple(config("pruned"))
    assert latest is not None
    saver.prune(["pruned"], strategy="keep_latest")
    assert _stored_values(server, saver.namespace, "pruned") == [
        latest.checkpoint["channel_versions"]["value"]
    ]
