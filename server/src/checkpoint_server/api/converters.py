"""Proto messages to store records and back, validating every field on the way in.

Each function raises ``InvalidArgument`` naming the offending field, before anything is
written.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from lgcheckpoint.v1 import checkpoint_pb2 as pb
from lgcheckpoint.v1 import checkpoint_service_pb2 as api

from checkpoint_server.errors import InvalidArgument
from checkpoint_server.storage import (
    CheckpointRecord,
    DeltaHistory,
    ListQuery,
    StoredCheckpoint,
    Value,
    Write,
)

DEFAULT_NAMESPACE = "default"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_WRITES = 10_000
MAX_LIST_ITEMS = 1000
MAX_FILTER_KEYS = 64
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
    """Parses a UTF-8 JSON object; empty bytes mean ``{}``."""
    if not data:
        return {}
    try:
        parsed = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as error:
        raise InvalidArgument(field, f"is not a UTF-8 JSON object ({error})") from None
    if not isinstance(parsed, dict):
        raise InvalidArgument(field, "must be a JSON object")
    if _has_nul(parsed):
        raise InvalidArgument(field, "must not contain NUL characters")
    return parsed


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in k or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


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
    )


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


def list_query(request: api.ListCheckpointsRequest) -> ListQuery:
    """Validates a ListCheckpoints request."""
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
        after=_page_cursor(request.page_token),
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


def page_token(checkpoint: StoredCheckpoint) -> str:
    """The token that resumes a listing after ``checkpoint``."""
    key = [checkpoint.checkpoint_id, checkpoint.thread_key, checkpoint.checkpoint_ns]
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


def _page_cursor(token: str) -> tuple[str, int, str] | None:
    if not token:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, binascii.Error):
        key = None
    if not (
        isinstance(key, list)
        and len(key) == 3
        and isinstance(key[0], str)
        and type(key[1]) is int
        and isinstance(key[2], str)
    ):
        raise InvalidArgument("page_token", "is not a token this server issued")
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
