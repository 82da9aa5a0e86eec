"""ThreadService messages to catalog records and back, validating every field on the way in."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from lgcheckpoint.v1 import thread_pb2 as pb
from lgcheckpoint.v1 import thread_service_pb2 as api

from checkpoint_server.api import tokens
from checkpoint_server.api.converters import MAX_FILTER_KEYS, MAX_PAGE_SIZE, json_object, text
from checkpoint_server.api.tokens import Sealer
from checkpoint_server.errors import InvalidArgument
from checkpoint_server.storage import Cursor, Event, ThreadFilter, ThreadPage, ThreadRecord

DEFAULT_PAGE_SIZE = 10
_MAX_TTL_SECONDS = 100 * 365 * 24 * 3600
# What google.protobuf.Timestamp allows: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799
STRATEGIES = {pb.TTL_STRATEGY_DELETE: "delete", pb.TTL_STRATEGY_KEEP_LATEST: "keep_latest"}
_STRATEGY_VALUES = {name: value for value, name in STRATEGIES.items()}
STATUSES = {
    pb.THREAD_STATUS_IDLE: "idle",
    pb.THREAD_STATUS_BUSY: "busy",
    pb.THREAD_STATUS_INTERRUPTED: "interrupted",
    pb.THREAD_STATUS_ERROR: "error",
}
_STATUS_VALUES = {name: value for value, name in STATUSES.items()}
_SORTS = {
    api.THREAD_SORT_BY_UNSPECIFIED: "update_time",
    api.THREAD_SORT_BY_UPDATE_TIME: "update_time",
    api.THREAD_SORT_BY_CREATE_TIME: "create_time",
    api.THREAD_SORT_BY_THREAD_ID: "thread_id",
}


def new_thread_id(value: str, field: str = "thread_id") -> str:
    """A thread ID from a request, or a new random UUID when it is empty."""
    return text(field, value) or str(uuid.uuid4())


def ttl(field: str, message: pb.ThreadTtl, present: bool) -> tuple[int, str] | None:
    """A time to live as (seconds, strategy), or None when absent."""
    if not present:
        return None
    seconds = message.ttl.seconds + (1 if message.ttl.nanos else 0)
    if not (1 <= seconds <= _MAX_TTL_SECONDS and 0 <= message.ttl.nanos < 10**9):
        raise InvalidArgument(f"{field}.ttl", "must be between 1 second and 100 years")
    if message.strategy not in STRATEGIES:
        raise InvalidArgument(f"{field}.strategy", "must be DELETE or KEEP_LATEST")
    return seconds, STRATEGIES[message.strategy]


def thread_filter(field: str, message: api.ThreadFilter) -> ThreadFilter:
    """Validates the filter of SearchThreads or CountThreads."""
    metadata = json_object(f"{field}.metadata_filter_json", message.metadata_filter_json)
    if len(metadata) > MAX_FILTER_KEYS:
        raise InvalidArgument(
            f"{field}.metadata_filter_json", f"has more than {MAX_FILTER_KEYS} keys"
        )
    status = None
    if message.status != pb.THREAD_STATUS_UNSPECIFIED:
        if message.status not in STATUSES:
            raise InvalidArgument(f"{field}.status", "is not a ThreadStatus")
        status = STATUSES[message.status]

    def moment(name: str) -> datetime | None:
        if not message.HasField(name):  # type: ignore[arg-type]
            return None
        stamp: Timestamp = getattr(message, name)
        if not (_MIN_SECONDS <= stamp.seconds <= _MAX_SECONDS and 0 <= stamp.nanos < 10**9):
            raise InvalidArgument(
                f"{field}.{name}", "must be a valid time between the years 1 and 9999"
            )
        return stamp.ToDatetime(tzinfo=UTC)

    return ThreadFilter(
        metadata=metadata,
        status=status,
        created_after=moment("created_after"),
        created_before=moment("created_before"),
        updated_after=moment("updated_after"),
        updated_before=moment("updated_before"),
    )


def thread_page(request: api.SearchThreadsRequest, namespace: str, sealer: Sealer) -> ThreadPage:
    """Validates the ordering and paging of SearchThreads in ``namespace``."""
    if not 0 <= request.page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument("page_size", f"must be between 0 and {MAX_PAGE_SIZE}")
    if request.sort_by not in _SORTS:
        raise InvalidArgument("sort_by", "is not a ThreadSortBy")
    if request.sort_order not in (
        api.SORT_ORDER_UNSPECIFIED,
        api.SORT_ORDER_ASCENDING,
        api.SORT_ORDER_DESCENDING,
    ):
        raise InvalidArgument("sort_order", "is not a SortOrder")
    if request.view not in (
        api.THREAD_VIEW_UNSPECIFIED,
        api.THREAD_VIEW_BASIC,
        api.THREAD_VIEW_FULL,
    ):
        raise InvalidArgument("view", "is not a ThreadView")
    sort_by = _SORTS[request.sort_by]
    descending = request.sort_order != api.SORT_ORDER_ASCENDING
    as_of, after = datetime.now(UTC), None
    if request.page_token:
        as_of, after = _search_cursor(sealer, namespace, request.page_token, sort_by, descending)
    return ThreadPage(
        sort_by=sort_by,
        descending=descending,
        limit=request.page_size or DEFAULT_PAGE_SIZE,
        as_of=as_of,
        after=after,
        full=full_view(request.view, default=False),
    )


def full_view(view: int, *, default: bool) -> bool:
    """Whether a ThreadView asks for the full view; unspecified means ``default``."""
    if view == api.THREAD_VIEW_UNSPECIFIED:
        return default
    if view not in (api.THREAD_VIEW_BASIC, api.THREAD_VIEW_FULL):
        raise InvalidArgument("view", "is not a ThreadView")
    return view == api.THREAD_VIEW_FULL


def search_token(sealer: Sealer, namespace: str, page: ThreadPage, last: ThreadRecord) -> str:
    """The token of the page of ``namespace`` after ``last``."""
    value: Any = getattr(last, page.sort_by)
    if isinstance(value, datetime):
        value = value.isoformat()
    token = [page.sort_by, page.descending, page.as_of.isoformat(), value, last.thread_id]
    return sealer.seal(tokens.SEARCH_THREADS, namespace, token)


def _search_cursor(
    sealer: Sealer, namespace: str, token: str, sort_by: str, descending: bool
) -> tuple[datetime, tuple[Any, str]]:
    content = sealer.open(tokens.SEARCH_THREADS, namespace, token, "page_token")
    try:
        sort, down, as_of, value, thread_id = content
        moment = datetime.fromisoformat(as_of)
        if sort != "thread_id":
            value = datetime.fromisoformat(value)
        if not isinstance(thread_id, str):
            raise TypeError
    except (ValueError, TypeError):
        raise InvalidArgument(
            "page_token", "is not a token this server issued for this namespace"
        ) from None
    if (sort, down) != (sort_by, descending):
        raise InvalidArgument("page_token", "was issued for another sort_by or sort_order")
    return moment, (value, thread_id)


def watch_start(sealer: Sealer, namespace: str, token: str) -> Cursor | None:
    """The cursor a WatchEvents request resumes after, or None when it names none."""
    if not token:
        return None
    return Cursor.from_parts(sealer.open(tokens.WATCH_CURSOR, namespace, token, "after_cursor"))


def thread_message(record: ThreadRecord) -> pb.Thread:
    """A catalog record as a message."""
    message = pb.Thread(
        thread_id=record.thread_id,
        metadata_json=record.metadata_json.encode(),
        status=_STATUS_VALUES.get(record.status, pb.THREAD_STATUS_UNSPECIFIED),
        latest_checkpoint_id=record.latest_checkpoint_id or "",
        checkpoint_count=record.checkpoint_count or 0,
        values_bytes=record.values_bytes or 0,
        writes_bytes=record.writes_bytes or 0,
    )
    message.create_time.FromDatetime(record.create_time)
    message.update_time.FromDatetime(record.update_time)
    if record.ttl_seconds is not None and record.ttl_strategy is not None:
        message.ttl.CopyFrom(
            pb.ThreadTtl(
                ttl=Duration(seconds=record.ttl_seconds),
                strategy=_STRATEGY_VALUES[record.ttl_strategy],
            )
        )
    if record.expire_epoch is not None:
        message.expire_time.FromDatetime(datetime.fromtimestamp(record.expire_epoch, UTC))
    return message


_KINDS = {
    "checkpoint_added": pb.EVENT_KIND_CHECKPOINT_ADDED,
    "writes_added": pb.EVENT_KIND_WRITES_ADDED,
    "thread_created": pb.EVENT_KIND_THREAD_CREATED,
    "thread_updated": pb.EVENT_KIND_THREAD_UPDATED,
    "thread_deleted": pb.EVENT_KIND_THREAD_DELETED,
    "thread_pruned": pb.EVENT_KIND_THREAD_PRUNED,
    "thread_copied": pb.EVENT_KIND_THREAD_COPIED,
}


def event_message(sealer: Sealer, namespace: str, event: Event) -> pb.Event:
    """A logged event of ``namespace`` as a message, with its sealed cursor."""
    message = pb.Event(
        cursor=sealer.seal(tokens.WATCH_CURSOR, namespace, event.cursor.parts()),
        kind=_KINDS.get(event.kind, pb.EVENT_KIND_UNSPECIFIED),
        thread_id=event.thread_id,
        checkpoint_ns=event.checkpoint_ns or "",
        checkpoint_id=event.checkpoint_id or "",
        source_thread_id=event.source_thread_id or "",
    )
    message.time.FromDatetime(event.time)
    return message
