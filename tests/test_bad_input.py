"""Input that once poisoned a namespace or leaked another tenant's activity is refused cleanly."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from lgcheckpoint.v1 import checkpoint_pb2 as pb
from lgcheckpoint.v1 import checkpoint_service_pb2 as api
from lgcheckpoint.v1 import thread_pb2 as thread_pb
from lgcheckpoint.v1 import thread_service_pb2 as thread_api
from lgcheckpoint.v1.checkpoint_service_pb2_grpc import CheckpointServiceStub
from lgcheckpoint.v1.thread_service_pb2_grpc import ThreadServiceStub

from tests.conftest import ServerProcess

DEEP = b'{"a":' * 900 + b"1" + b"}" * 900
POISON = [
    b'{"x": 1e999}',
    b'{"x": -1e999}',
    b'{"x": 123456789012345678901234567890}',
    b'{"x": 9223372036854775808}',
    b'{"x": "\\ud800"}',
    b'{"\\udfff": 1}',
    b'{"x": NaN}',
    DEEP,
    b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
]


@pytest.fixture
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target) as channel:
        yield channel


def _call(call: Any, request: Any) -> None:
    result = call(request, timeout=10)
    if not hasattr(result, "ByteSize"):  # a stream: read it to get the status
        next(iter(result))


def _refused(call: Any, request: Any) -> str:
    with pytest.raises(grpc.RpcError) as raised:
        _call(call, request)
    error: Any = raised.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    details: str = error.details()
    return details


def _put(namespace: str, checkpoint_id: str, metadata: bytes = b'{"step": 1}') -> Any:
    return api.PutCheckpointRequest(
        namespace=namespace,
        thread_id="t",
        checkpoint_id=checkpoint_id,
        checkpoint=pb.Payload(type="json", data=b"{}"),
        metadata_json=metadata,
    )


@pytest.mark.parametrize("metadata", POISON, ids=range(len(POISON)))
def test_unstorable_json_is_refused_and_the_namespace_stays_usable(
    server: ServerProcess, channel: grpc.Channel, namespace: str, metadata: bytes
) -> None:
    checkpoints, threads = CheckpointServiceStub(channel), ThreadServiceStub(channel)
    assert "metadata_json" in _refused(checkpoints.PutCheckpoint, _put(namespace, "1", metadata))
    create = thread_api.CreateThreadRequest(namespace=namespace, metadata_json=metadata)
    assert "metadata_json" in _refused(threads.CreateThread, create)
    search = thread_api.SearchThreadsRequest(
        namespace=namespace, filter=thread_api.ThreadFilter(metadata_filter_json=metadata)
    )
    assert "filter.metadata_filter_json" in _refused(threads.SearchThreads, search)
    listing = api.ListCheckpointsRequest(namespace=namespace, metadata_filter_json=metadata)
    assert "metadata_filter_json" in _refused(checkpoints.ListCheckpoints, listing)
    # Metadata-filtered reads of the namespace still work.
    checkpoints.PutCheckpoint(_put(namespace, "2"), timeout=10)
    found = checkpoints.ListCheckpoints(
        api.ListCheckpointsRequest(namespace=namespace, metadata_filter_json=b'{"step": 1}')
    )
    assert [c.checkpoint_id for c in found.checkpoints] == ["2"]
    counted = threads.CountThreads(
        thread_api.CountThreadsRequest(
            namespace=namespace, filter=thread_api.ThreadFilter(metadata_filter_json=b'{"a": 1}')
        )
    )
    assert counted.count == 0
    assert "Traceback" not in "".join(server.log)


@pytest.mark.parametrize(
    ("field", "stamp"),
    [
        ("created_after", Timestamp(seconds=10**15)),
        ("created_before", Timestamp(seconds=-(10**15))),
        ("updated_after", Timestamp(seconds=1, nanos=-1)),
        ("updated_before", Timestamp(seconds=1, nanos=10**9)),
    ],
)
def test_out_of_range_times_in_thread_filters_are_refused(
    channel: grpc.Channel, namespace: str, field: str, stamp: Timestamp
) -> None:
    threads = ThreadServiceStub(channel)
    which = thread_api.ThreadFilter()
    getattr(which, field).CopyFrom(stamp)
    count = thread_api.CountThreadsRequest(namespace=namespace, filter=which)
    assert f"filter.{field}" in _refused(threads.CountThreads, count)
    search = thread_api.SearchThreadsRequest(namespace=namespace, filter=which)
    assert f"filter.{field}" in _refused(threads.SearchThreads, search)


def test_a_negative_ttl_nanos_is_refused(channel: grpc.Channel, namespace: str) -> None:
    ttl = thread_pb.ThreadTtl(
        ttl=Duration(seconds=5, nanos=-5), strategy=thread_pb.TTL_STRATEGY_DELETE
    )
    create = thread_api.CreateThreadRequest(namespace=namespace, ttl=ttl)
    assert "ttl.ttl" in _refused(ThreadServiceStub(channel).CreateThread, create)


def _b64(data: str) -> str:
    return base64.urlsafe_b64encode(data.encode()).decode()


# Tokens as the server used to issue them, forged to values the database cannot compare with.
FORGED_PAGE_TOKENS = [
    _b64(json.dumps(["1", 10**30, ""])),
    _b64(json.dumps(["update_time", True, "2020-01-01T00:00:00", "x", "t"])),
    "not a token",
    "A" * 10_000,
]
FORGED_CURSORS = [
    _b64("0:1:nan"),
    _b64(f"0:{2**63}:1.0"),
    _b64(f"{10**30}:1:1.0"),
    "%%%",
]


@pytest.mark.parametrize("token", FORGED_PAGE_TOKENS)
def test_forged_page_tokens_are_refused(channel: grpc.Channel, namespace: str, token: str) -> None:
    listing = api.ListCheckpointsRequest(namespace=namespace, page_token=token)
    assert "page_token" in _refused(CheckpointServiceStub(channel).ListCheckpoints, listing)
    search = thread_api.SearchThreadsRequest(namespace=namespace, page_token=token)
    assert "page_token" in _refused(ThreadServiceStub(channel).SearchThreads, search)


@pytest.mark.parametrize("cursor", FORGED_CURSORS)
def test_forged_watch_cursors_are_refused(
    channel: grpc.Channel, namespace: str, cursor: str
) -> None:
    watch = thread_api.WatchEventsRequest(namespace=namespace, after_cursor=cursor)
    assert "after_cursor" in _refused(ThreadServiceStub(channel).WatchEvents, watch)


def _tokens(channel: grpc.Channel, namespace: str) -> tuple[str, str, str]:
    """A ListCheckpoints page token, a SearchThreads page token and a watch cursor."""
    checkpoints, threads = CheckpointServiceStub(channel), ThreadServiceStub(channel)
    for checkpoint_id in ("1", "2"):
        checkpoints.PutCheckpoint(_put(namespace, checkpoint_id), timeout=10)
    threads.CreateThread(thread_api.CreateThreadRequest(namespace=namespace, thread_id="u"))
    listed = checkpoints.ListCheckpoints(
        api.ListCheckpointsRequest(namespace=namespace, page_size=1)
    )
    searched = threads.SearchThreads(
        thread_api.SearchThreadsRequest(namespace=namespace, page_size=1)
    )
    watch = threads.WatchEvents(
        thread_api.WatchEventsRequest(namespace=namespace, from_beginning=True), timeout=10
    )
    event = next(iter(watch)).event
    watch.cancel()
    return listed.next_page_token, searched.next_page_token, event.cursor


def test_tokens_are_opaque_and_bound_to_their_namespace_and_kind(
    channel: grpc.Channel, namespace: str
) -> None:
    page, search, cursor = _tokens(channel, namespace)
    for token in (page, search, cursor):
        decoded = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        for visible in (b"update_time", b'["', b'"2"', namespace.encode()):
            assert visible not in decoded
        assert re.search(rb"\d+:\d+:", decoded) is None  # the cursors' old xid:seq:epoch
    checkpoints, threads = CheckpointServiceStub(channel), ThreadServiceStub(channel)
    # Each works where it was issued...
    again = checkpoints.ListCheckpoints(
        api.ListCheckpointsRequest(namespace=namespace, page_size=1, page_token=page)
    )
    assert [c.checkpoint_id for c in again.checkpoints] == ["1"]
    # ...and nowhere else: another namespace, or another kind of token.
    other = f"{namespace}-other"
    for token in (page, search, cursor):
        listing = api.ListCheckpointsRequest(namespace=other, page_token=token)
        assert "page_token" in _refused(checkpoints.ListCheckpoints, listing)
        searching = thread_api.SearchThreadsRequest(namespace=other, page_token=token)
        assert "page_token" in _refused(threads.SearchThreads, searching)
        watch = thread_api.WatchEventsRequest(namespace=other, after_cursor=token)
        assert "after_cursor" in _refused(threads.WatchEvents, watch)
    for token in (page, search):
        watch = thread_api.WatchEventsRequest(namespace=namespace, after_cursor=token)
        assert "after_cursor" in _refused(threads.WatchEvents, watch)
    listing = api.ListCheckpointsRequest(namespace=namespace, page_token=cursor)
    assert "page_token" in _refused(checkpoints.ListCheckpoints, listing)


def test_tokens_outlive_a_restart_and_work_on_every_server_of_the_database(
    own_database: str,
) -> None:
    first = ServerProcess.start(own_database)
    try:
        with grpc.insecure_channel(first.target) as channel:
            page, _, cursor = _tokens(channel, "restart")
    finally:
        assert first.stop() == 0
    second = ServerProcess.start(own_database)
    try:
        with grpc.insecure_channel(second.target) as channel:
            listed = CheckpointServiceStub(channel).ListCheckpoints(
                api.ListCheckpointsRequest(namespace="restart", page_size=1, page_token=page)
            )
            assert [c.checkpoint_id for c in listed.checkpoints] == ["1"]
            watch = ThreadServiceStub(channel).WatchEvents(
                thread_api.WatchEventsRequest(namespace="restart", after_cursor=cursor),
                timeout=10,
            )
            assert next(iter(watch)).event.kind == thread_pb.EVENT_KIND_CHECKPOINT_ADDED
            watch.cancel()
    finally:
        assert second.stop() == 0
