"""Property-based bad input: requests generated from the proto descriptors, sent to every RPC.

Whatever arrives — random bytes, invalid UTF-8, huge or deep JSON, filter keys that look like
SQL or JSON paths, unknown enum values, absurd limits, forged tokens, empty IDs — the server
answers with a status a client can act on (never INTERNAL or UNKNOWN), in time, stays up, and
leaves a control thread in a namespace no request names exactly as it was. Run with ``-s`` to
see how many requests each RPC got and the codes they got.
"""

from __future__ import annotations

import base64
import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lgcheckpoint.v1 import checkpoint_pb2 as pb
from lgcheckpoint.v1 import checkpoint_service_pb2 as api
from lgcheckpoint.v1 import thread_service_pb2 as thread_api
from lgcheckpoint.v1.checkpoint_service_pb2_grpc import CheckpointServiceStub
from lgcheckpoint.v1.thread_service_pb2_grpc import ThreadServiceStub

from tests.conftest import ServerProcess

SERVICES = [
    api.DESCRIPTOR.services_by_name["CheckpointService"],
    thread_api.DESCRIPTOR.services_by_name["ThreadService"],
]
METHODS: list[MethodDescriptor] = [m for service in SERVICES for m in service.methods]
# Per RPC and database: about 40 s for both databases; FUZZ_EXAMPLES=500 digs deeper.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
CONTROL = "fuzz-control"  # a namespace no generated request names
NAMESPACES = ["fuzz-a", "fuzz-b"]
# DEADLINE_EXCEEDED: a unary call that took longer than 10 s (a watch's ends by its deadline).
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED}

_tried: defaultdict[str, Counter[str]] = defaultdict(Counter)

# --- strategies ---------------------------------------------------------------------------

_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=24)
ADVERSARIAL_TEXT = [
    "",
    "t",
    "control",
    "1",
    "\x00",
    "a\x00b",
    "x" * 1025,
    "é" * 600,
    "'; DROP TABLE checkpoints; --",
    "' OR '1'='1",
    "$.metadata[0]",
    "%",
    "_",
    "*",
    "../../etc/passwd",
    "default",
    CONTROL,
]
strings = st.one_of(st.sampled_from(ADVERSARIAL_TEXT), _TEXT)


def _b64(data: str) -> str:
    return base64.urlsafe_b64encode(data.encode()).decode()


TOKENS = st.one_of(
    st.sampled_from(
        [
            _b64(json.dumps(["1", 10**30, ""])),
            _b64(json.dumps(["update_time", True, "2020-01-01T00:00:00", "x", "t"])),
            _b64("0:1:nan"),
            _b64(f"0:{2**63}:1.0"),
            "A" * 5000,
            "%%%",
        ]
    ),
    st.binary(max_size=80).map(lambda raw: base64.urlsafe_b64encode(raw).decode()),
    strings,
)

_JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    _TEXT,
)
_JSON = st.recursive(
    _JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(strings, inner, max_size=3)
    ),
    max_leaves=8,
)
ADVERSARIAL_JSON = [
    b"",
    b"{}",
    b"[]",
    b"null",
    b'{"step": 1}',
    b'{"x": 1e999}',
    b'{"x": 123456789012345678901234567890}',
    b'{"x": "\\ud800"}',
    b'{"x": NaN}',
    b'{"a":' * 900 + b"1" + b"}" * 900,
    b"[" * 100_000 + b"]" * 100_000,
    b"\xff\xfe{}",
    b'{"k": "' + b"v" * (1 << 20) + b'"}',
    b'{"a\') OR 1=1 --": 1}',
    b'{"$.x[0]": 1, "a.b": {"$ne": 1}}',
    b'{"source": "loop", "step": {"$gt": 0}}',
]
json_bytes = st.one_of(
    st.sampled_from(ADVERSARIAL_JSON),
    st.dictionaries(strings, _JSON, max_size=4).map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=64),
)
INT32 = st.one_of(
    st.sampled_from([0, -1, 1, 1000, 1001, 2**31 - 1, -(2**31)]),
    st.integers(min_value=-(2**31), max_value=2**31 - 1),
)
INT64 = st.one_of(
    st.sampled_from([0, -1, 2**63 - 1, -(2**63)]),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
TIMES = st.builds(
    Timestamp,
    seconds=st.one_of(INT64, st.integers(min_value=0, max_value=2_000_000_000)),
    nanos=INT32,
)
DURATIONS = st.builds(Duration, seconds=INT64, nanos=INT32)
_TOKEN_FIELDS = {"page_token", "after_cursor"}
_INT32_TYPES = {FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32}


BENIGN_TEXT = st.sampled_from(["t", "control", "1", "2", "3", "items", "task", "json", "run-1"])
BENIGN_JSON = st.sampled_from([b"", b"{}", b'{"step": 1}', b'{"source": "loop"}'])


def _benign(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    """Values a well-behaved client sends, so that requests reach past validation."""
    if field.name == "namespace":
        return st.sampled_from(NAMESPACES)
    if field.name in _TOKEN_FIELDS:
        return st.just("")
    if field.type == FieldDescriptor.TYPE_STRING:
        return BENIGN_TEXT
    if field.type == FieldDescriptor.TYPE_BYTES:
        return BENIGN_JSON
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from(_enum_numbers(field))
    return st.integers(min_value=0, max_value=20)


def _enum_numbers(field: FieldDescriptor) -> list[int]:
    assert field.enum_type is not None
    return [value.number for value in field.enum_type.values]


def _scalar(field: FieldDescriptor, *, benign: bool = False) -> st.SearchStrategy[Any]:
    if benign:
        return _benign(field)
    if field.name in _TOKEN_FIELDS:
        return TOKENS
    if field.name == "namespace":
        return st.sampled_from([*NAMESPACES, "x" * 300, "a\x00"])
    if field.type == FieldDescriptor.TYPE_STRING:
        return strings
    if field.type == FieldDescriptor.TYPE_BYTES:
        return json_bytes
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type == FieldDescriptor.TYPE_ENUM:
        return st.one_of(st.sampled_from(_enum_numbers(field)), INT32)
    if field.type in _INT32_TYPES:
        return INT32
    return INT64


@st.composite
def messages(
    draw: st.DrawFn, descriptor: Descriptor, depth: int = 0, *, benign: bool = False
) -> Message:
    """A message of ``descriptor`` with any of its fields set to adversarial (or benign) values."""
    message = message_factory.GetMessageClass(descriptor)()
    for field in descriptor.fields:
        # A benign message has every field, so that it passes the required-field checks, and
        # every message names a namespace: none falls into "default", shared by other tests.
        if not (benign or field.name == "namespace" or draw(st.booleans())):
            continue
        target = getattr(message, field.name)
        nested = field.message_type
        if nested is not None and nested.GetOptions().map_entry:
            texts = BENIGN_TEXT if benign else strings
            target.update(draw(st.dictionaries(texts, texts, max_size=3)))
        elif nested is not None:
            if depth >= 3:
                continue
            values: st.SearchStrategy[Any]
            if nested.full_name == "google.protobuf.Timestamp":
                values = st.builds(Timestamp, seconds=st.integers(0, 2**31)) if benign else TIMES
            elif nested.full_name == "google.protobuf.Duration":
                values = st.builds(Duration, seconds=st.integers(1, 3600)) if benign else DURATIONS
            else:
                values = messages(nested, depth + 1, benign=benign)
            if field.is_repeated:
                for item in draw(st.lists(values, max_size=3)):
                    target.add().CopyFrom(item)
            else:
                target.CopyFrom(draw(values))
        elif field.is_repeated:
            many = st.lists(_scalar(field, benign=benign), max_size=3)
            if field.type == FieldDescriptor.TYPE_STRING and not benign:
                many = st.one_of(many, strings.map(lambda value: [value] * 1001))
            target.extend(draw(many))
        else:
            setattr(message, field.name, draw(_scalar(field, benign=benign)))
    return message


@st.composite
def bodies(draw: st.DrawFn, descriptor: Descriptor) -> bytes:
    """Request bytes: a generated message, one with bytes overwritten, or random bytes.

    Half the messages are a well-formed request with one field made adversarial, so that
    the bad value reaches the code behind the checks that a wholly bad request fails first.
    """
    kind = draw(st.sampled_from(["one bad field", "one bad field", "message", "mutated", "random"]))
    if kind == "random":
        return draw(st.binary(max_size=256))
    message = draw(messages(descriptor, benign=kind == "one bad field"))
    if kind == "one bad field":
        bad = draw(messages(descriptor))
        chosen = [field.name for field, _ in bad.ListFields()]
        if chosen:
            name = draw(st.sampled_from(chosen))
            for field, _ in bad.ListFields():
                if field.name != name:
                    bad.ClearField(field.name)
            message.ClearField(name)
            message.MergeFrom(bad)
    data = bytearray(message.SerializeToString())
    if kind == "mutated" and data:
        # 0xFF and 0x80 make invalid UTF-8 in strings and broken tags or lengths elsewhere.
        for position in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=4)):
            data[position] = draw(st.sampled_from([0xFF, 0x80, 0x00, 0xC3]))
    return bytes(data)


# --- the control thread -------------------------------------------------------------------


def _seed(channel: grpc.Channel, namespace: str) -> None:
    """A thread "control" (and "t") with a parent chain, writes and metadata."""
    stub = CheckpointServiceStub(channel)
    for thread_id in ("control", "t"):
        for step, parent in (("1", ""), ("2", "1"), ("3", "2")):
            stub.PutCheckpoint(
                api.PutCheckpointRequest(
                    namespace=namespace,
                    thread_id=thread_id,
                    checkpoint_id=step,
                    parent_checkpoint_id=parent,
                    checkpoint=pb.Payload(type="json", data=b"{}"),
                    metadata_json=json.dumps({"step": int(step), "source": "loop"}).encode(),
                    channel_versions={"items": step},
                    new_values=[
                        pb.ChannelValue(
                            channel="items", version=step, value=pb.Payload(type="json", data=b"1")
                        )
                    ],
                    run_id="run-1",
                    delta_channels=["items"],
                )
            )
        stub.PutWrites(
            api.PutWritesRequest(
                namespace=namespace,
                thread_id=thread_id,
                checkpoint_id="3",
                writes=[
                    pb.PendingWrite(
                        task_id="task", idx=0, channel="items", value=pb.Payload(type="json")
                    )
                ],
            )
        )


def _snapshot(channel: grpc.Channel) -> tuple[bytes, bytes, int]:
    checkpoints, threads = CheckpointServiceStub(channel), ThreadServiceStub(channel)
    listed = checkpoints.ListCheckpoints(api.ListCheckpointsRequest(namespace=CONTROL))
    thread = threads.GetThread(thread_api.GetThreadRequest(namespace=CONTROL, thread_id="control"))
    counted = threads.CountThreads(thread_api.CountThreadsRequest(namespace=CONTROL))
    return listed.SerializeToString(), thread.SerializeToString(), counted.count


@pytest.fixture(scope="module")
def fuzzed(server: ServerProcess) -> Iterator[grpc.Channel]:
    """A channel to a server whose control thread is checked before and after the fuzzing."""
    with grpc.insecure_channel(server.target) as channel:
        for namespace in (CONTROL, *NAMESPACES):
            _seed(channel, namespace)
        before = _snapshot(channel)
        yield channel
        assert _snapshot(channel) == before
        health: Any = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    assert server.process.poll() is None
    assert "Traceback" not in "".join(server.log)


@pytest.fixture(scope="module", autouse=True)
def summary() -> Iterator[None]:
    """Prints the requests tried per RPC and the codes they got."""
    yield
    print("\nfuzzed requests per RPC (database: codes):")
    for key in sorted(_tried):
        codes = ", ".join(f"{code} {n}" for code, n in _tried[key].most_common())
        print(f"  {key}: {sum(_tried[key].values())} requests: {codes}")


_CODES = {code.value[0]: code for code in grpc.StatusCode}
_BATCH_RESPONSES: dict[str, Any] = {
    "BatchWrite": api.BatchWriteResponse,
    "BatchGetCheckpoints": api.BatchGetCheckpointsResponse,
}


def _send(channel: grpc.Channel, method: MethodDescriptor, body: bytes) -> grpc.StatusCode:
    path = f"/{method.containing_service.full_name}/{method.name}"
    try:
        if method.server_streaming:
            stream: Any = channel.unary_stream(path)
            call = stream(body, timeout=0.5)
            for count, _ in enumerate(call):
                if count >= 3:
                    call.cancel()
                    break
        else:
            unary: Any = channel.unary_unary(path)
            reply = unary(body, timeout=10)
            batch = _BATCH_RESPONSES.get(method.name)
            if batch is not None:
                # Each item ends with a status of its own, held to the same rule.
                for result in batch.FromString(reply).results:
                    if _CODES[result.code] in FORBIDDEN:
                        return _CODES[result.code]
    except grpc.RpcError as error:
        failed: Any = error
        code: grpc.StatusCode = failed.code()
        # An open watch ends by its deadline; any other call must answer within it.
        if code == grpc.StatusCode.DEADLINE_EXCEEDED and method.server_streaming:
            return grpc.StatusCode.OK
        return code
    return grpc.StatusCode.OK


@pytest.mark.parametrize("method", METHODS, ids=[m.name for m in METHODS])
def test_no_request_breaks_the_server(
    fuzzed: grpc.Channel, server: ServerProcess, method: MethodDescriptor
) -> None:
    database = "postgresql" if server.database_url.startswith("postgresql") else "sqlite"
    tried = _tried[f"{method.name} ({database})"]

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(body=bodies(method.input_type))
    def check(body: bytes) -> None:
        code = _send(fuzzed, method, body)
        tried[code.name] += 1
        assert code not in FORBIDDEN

    check()
