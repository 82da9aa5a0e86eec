"""Proto messages to store records and back, validating every field on the way in.

Each function raises ``InvalidArgument`` naming the offending field, before anything is
written.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from lgcheckpoint.v1 import checkpoint_pb2 as pb
from lgcheckpoint.v1 import checkpoint_service_pb2 as api

from checkpoint_server.api import lease_converters, tokens
from checkpoint_server.api.tokens import Sealer
from checkpoint_server.errors import InvalidArgument
from checkpoint_server.storage import (
    CheckpointRecord,
    DeltaHistory,
    ListQuery,
    StoredCheckpoint,
    Value,
    Write,
    WritesRecord,
)

DEFAULT_NAMESPACE = "default"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_WRITES = 10_000
MAX_BATCH_ITEMS = 1000
MAX_LIST_ITEMS = 1000
MAX_FILTER_KEYS = 64
MAX_JSON_DEPTH = 64
# Parsing and checking a JSON document runs on the event loop and stalls every other call
# meanwhile: 57 MiB of metadata took 7.7 s to parse alone, 1 MiB takes under 0.1 s.
MAX_JSON_BYTES = 1024 * 1024
_SURROGATE = re.compile("[\ud800-\udfff]")
_MAX_NAME = 256
_MAX_ID = 1024


def text(field: str, value: str, *, required: bool = False, limit: int = _MAX_ID) -> str:
    """Checks a string field: presence, length in UTF-8 bytes, no NUL characters."""
    if required and not value:
        raise InvalidArgument(field, "is required")
    if len(value.encode()) > limit:
        raise InvalidArgument(field, f"is longer than {limit} bytes")
    if "\x00" in value:
        raise InvalidArgument(field, "must not contain NUL characters")
    return value


def namespace(value: str) -> str:
    """The tenant namespace of a request; empty means ``default``."""
    return text("namespace", value, limit=_MAX_NAME) or DEFAULT_NAMESPACE


def optional_text(field: str, value: str, *, limit: int = _MAX_ID) -> str | None:
    """A string field where empty means absent."""
    return text(field, value, limit=limit) or None


def text_list(field: str, values: Sequence[str], *, limit: int = MAX_LIST_ITEMS) -> list[str]:
    """A repeated string field with at most ``limit`` non-empty items."""
    if len(values) > limit:
        raise InvalidArgument(field, f"has more than {limit} items")
    return [text(f"{field}[{i}]", v, required=True) for i, v in enumerate(values)]


def json_object(field: str, data: bytes) -> dict[str, Any]:
    """Parses a UTF-8 JSON object; empty bytes mean ``{}``.

    Only what both databases store alike is accepted: finite numbers, integers of 64 bits,
    strings without NUL characters or lone surrogates, at most ``MAX_JSON_DEPTH`` levels,
    at most ``MAX_JSON_BYTES`` bytes.
    """
    if not data:
        return {}
    if len(data) > MAX_JSON_BYTES:
        raise InvalidArgument(field, f"is longer than {MAX_JSON_BYTES} bytes")
    try:
        parsed = json.loads(
            data.decode("utf-8"),
            parse_constant=_reject_constant,
            parse_float=_finite_float,
            parse_int=_int64,
        )
    except RecursionError:
        raise InvalidArgument(field, f"nests deeper than {MAX_JSON_DEPTH} levels") from None
    except (UnicodeDecodeError, ValueError) as error:
        raise InvalidArgument(field, f"is not a UTF-8 JSON object ({error})") from None
    if not isinstance(parsed, dict):
        raise InvalidArgument(field, "must be a JSON object")
    problem = _json_problem(parsed)
    if problem is not None:
        raise InvalidArgument(field, problem)
    return parsed


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError("a number overflows a 64-bit float")
    return value


def _int64(literal: str) -> int:
    # A longer literal is out of range anyway: refuse it before converting it.
    value = int(literal) if len(literal) <= 20 else 2**63
    if not -(2**63) <= value < 2**63:
        raise ValueError("an integer does not fit in 64 bits")
    return value


def _json_problem(document: dict[str, Any]) -> str | None:
    """What makes a parsed document unstorable, walking it without recursion."""
    pending: list[tuple[Any, int]] = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict):
            items: list[Any] = [*value.keys(), *value.values()]
        elif isinstance(value, list):
            items = value
        else:
            if isinstance(value, str):
                if "\x00" in value:
                    return "must not contain NUL characters"
                if _SURROGATE.search(value):
                    return "must not contain lone surrogates (\\ud800-\\udfff)"
            continue
        if depth > MAX_JSON_DEPTH:
            return f"nests deeper than {MAX_JSON_DEPTH} levels"
        pending.extend((item, depth + 1) for item in items)
    return None


def _payload(field: str, payload: pb.Payload, present: bool = True) -> tuple[str, bytes]:
    if not present:
        raise InvalidArgument(field, "is required")
    return text(f"{field}.type", payload.type, required=True, limit=_MAX_NAME), payload.data


def put_checkpoint(request: api.PutCheckpointRequest) -> CheckpointRecord:
    """Validates a PutCheckpoint request."""
    versions = {
        text("channel_versions (key)", channel, required=True): text(
            f"channel_versions[{channel!r}]", version, required=True, limit=_MAX_NAME
        )
        for channel, version in request.channel_versions.items()
    }
    new_values = []
    for i, value in enumerate(request.new_values):
        field = f"new_values[{i}]"
        type_, data = _payload(f"{field}.value", value.value, value.HasField("value"))
        new_values.append(
            Value(
                text(f"{field}.channel", value.channel, required=True),
                text(f"{field}.version", value.version, required=True, limit=_MAX_NAME),
                type_,
                data,
            )
        )
    checkpoint_type, checkpoint = _payload(
        "checkpoint", request.checkpoint, request.HasField("checkpoint")
    )
    if request.parent_checkpoint_id and request.parent_checkpoint_id == request.checkpoint_id:
        # A loop of one is cheap to refuse here; longer loops are caught by the walks.
        raise InvalidArgument("parent_checkpoint_id", "must differ from checkpoint_id")
    return CheckpointRecord(
        thread_id=text("thread_id", request.thread_id, required=True),
        checkpoint_ns=text("checkpoint_ns", request.checkpoint_ns),
        checkpoint_id=text("checkpoint_id", request.checkpoint_id, required=True, limit=_MAX_NAME),
        parent_checkpoint_id=optional_text(
            "parent_checkpoint_id", request.parent_checkpoint_id, limit=_MAX_NAME
        ),
        checkpoint_type=checkpoint_type,
        checkpoint=checkpoint,
        metadata=json_object("metadata_json", request.metadata_json),
        channel_versions=versions,
        new_values=new_values,
        run_id=optional_text("run_id", request.run_id, limit=_MAX_NAME),
        delta_channels=text_list("delta_channels", request.delta_channels),
        lease=lease_converters.lease("lease", request.lease, request.HasField("lease")),
    )


def put_writes(request: api.PutWritesRequest) -> WritesRecord:
    """Validates a PutWrites request."""
    return WritesRecord(
        thread_id=text("thread_id", request.thread_id, required=True),
        checkpoint_ns=text("checkpoint_ns", request.checkpoint_ns),
        checkpoint_id=text("checkpoint_id", request.checkpoint_id, required=True),
        writes=writes(request),
        lease=lease_converters.lease("lease", request.lease, request.HasField("lease")),
    )


def batch_items(
    request: api.BatchWriteRequest, namespace: str
) -> list[CheckpointRecord | WritesRecord | InvalidArgument]:
    """Validates each item of a BatchWrite request in ``namespace``: its record, or its error.

    Raises:
        InvalidArgument: The request holds no items or too many.

    """
    batch_size("items", len(request.items))
    return [_batch_item(namespace, i, item) for i, item in enumerate(request.items)]


def item_namespace(value: str, namespace: str) -> None:
    """Refuses a batch item that names a namespace other than its call's.

    The call's namespace is the one the caller was authorized for.
    """
    if value and value != namespace:
        raise InvalidArgument("namespace", "must be empty or equal to the request's")


def batch_size(field: str, count: int) -> None:
    """Refuses a batch of no items or more than MAX_BATCH_ITEMS."""
    if not 0 < count <= MAX_BATCH_ITEMS:
        raise InvalidArgument(field, f"must hold 1 to {MAX_BATCH_ITEMS} items")


def _batch_item(
    namespace: str, i: int, item: api.BatchWriteItem
) -> CheckpointRecord | WritesRecord | InvalidArgument:
    kind = item.WhichOneof("item")
    field = f"items[{i}]"
    if kind is None:
        return InvalidArgument(field, "must hold put_checkpoint or put_writes")
    inner: api.PutCheckpointRequest | api.PutWritesRequest = getattr(item, kind)
    try:
        item_namespace(inner.namespace, namespace)
        if isinstance(inner, api.PutCheckpointRequest):
            return put_checkpoint(inner)
        return put_writes(inner)
    except InvalidArgument as error:
        return error.within(f"{field}.{kind}")


def writes(request: api.PutWritesRequest) -> list[Write]:
    """Validates the writes of a PutWrites request."""
    if len(request.writes) > MAX_WRITES:
        raise InvalidArgument("writes", f"has more than {MAX_WRITES} items")
    result = []
    for i, write in enumerate(request.writes):
        field = f"writes[{i}]"
        type_, data = _payload(f"{field}.value", write.value, write.HasField("value"))
        result.append(
            Write(
                task_id=text(f"{field}.task_id", write.task_id, required=True),
                task_path=text(f"{field}.task_path", write.task_path),
                idx=write.idx,
                channel=text(f"{field}.channel", write.channel, required=True),
                type=type_,
                data=data,
            )
        )
    return result


def list_query(request: api.ListCheckpointsRequest, namespace: str, sealer: Sealer) -> ListQuery:
    """Validates a ListCheckpoints request of ``namespace``, opening its page token."""
    if not 0 <= request.page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument("page_size", f"must be between 0 and {MAX_PAGE_SIZE}")
    metadata_filter = json_object("metadata_filter_json", request.metadata_filter_json)
    if len(metadata_filter) > MAX_FILTER_KEYS:
        raise InvalidArgument("metadata_filter_json", f"has more than {MAX_FILTER_KEYS} keys")
    return ListQuery(
        thread_id=optional_text("thread_id", request.thread_id),
        checkpoint_ns=(
            text("checkpoint_ns", request.checkpoint_ns)
            if request.HasField("checkpoint_ns")
            else None
        ),
        checkpoint_id=optional_text("checkpoint_id", request.checkpoint_id, limit=_MAX_NAME),
        metadata_filter=metadata_filter,
        before_checkpoint_id=optional_text(
            "before_checkpoint_id", request.before_checkpoint_id, limit=_MAX_NAME
        ),
        limit=request.page_size or DEFAULT_PAGE_SIZE,
        after=_page_cursor(sealer, namespace, request.page_token),
        values=_values_wanted(request.view),
        channels=tuple(dict.fromkeys(text_list("channels", request.channels))),
    )


def _values_wanted(view: int) -> bool:
    if view not in (
        api.CHECKPOINT_VIEW_UNSPECIFIED,
        api.CHECKPOINT_VIEW_FULL,
        api.CHECKPOINT_VIEW_METADATA,
    ):
        raise InvalidArgument("view", "is not a CheckpointView")
    return view != api.CHECKPOINT_VIEW_METADATA


def page_token(sealer: Sealer, namespace: str, checkpoint: StoredCheckpoint) -> str:
    """The token that resumes a listing of ``namespace`` after ``checkpoint``."""
    key = [checkpoint.checkpoint_id, checkpoint.thread_key, checkpoint.checkpoint_ns]
    return sealer.seal(tokens.LIST_CHECKPOINTS, namespace, key)


def _page_cursor(sealer: Sealer, namespace: str, token: str) -> tuple[str, int, str] | None:
    if not token:
        return None
    key = sealer.open(tokens.LIST_CHECKPOINTS, namespace, token, "page_token")
    if not (
        len(key) == 3
        and isinstance(key[0], str)
        and tokens.int64(key[1])
        and isinstance(key[2], str)
    ):
        raise InvalidArgument("page_token", "is not a token this server issued for this namespace")
    return key[0], key[1], key[2]


def checkpoint_message(stored: StoredCheckpoint) -> pb.Checkpoint:
    """A stored checkpoint as a message."""
    create_time = Timestamp()
    create_time.FromDatetime(stored.create_time)
    return pb.Checkpoint(
        thread_id=stored.thread_id,
        checkpoint_ns=stored.checkpoint_ns,
        checkpoint_id=stored.checkpoint_id,
        parent_checkpoint_id=stored.parent_checkpoint_id or "",
        checkpoint=pb.Payload(type=stored.checkpoint_type, data=stored.checkpoint),
        metadata_json=stored.metadata_json.encode(),
        channel_versions=stored.channel_versions,
        channel_values=_values(stored.values),
        pending_writes=_writes(stored.writes),
        create_time=create_time,
    )


def _values(values: Iterable[Value]) -> list[pb.ChannelValue]:
    return [
        pb.ChannelValue(
            channel=v.channel, version=v.version, value=pb.Payload(type=v.type, data=v.data)
        )
        for v in values
    ]


def _writes(writes: Iterable[Write]) -> list[pb.PendingWrite]:
    return [
        pb.PendingWrite(
            task_id=w.task_id,
            task_path=w.task_path,
            idx=w.idx,
            channel=w.channel,
            value=pb.Payload(type=w.type, data=w.data),
        )
        for w in writes
    ]


def delta_history_message(history: DeltaHistory) -> pb.DeltaChannelHistory:
    """One channel's delta history as a message."""
    message = pb.DeltaChannelHistory(channel=history.channel, writes=_writes(history.writes))
    if history.seed is not None:
        message.seed.CopyFrom(pb.Payload(type=history.seed.type, data=history.seed.data))
    return message
