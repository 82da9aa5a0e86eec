"""Thread catalog clients, sync and async, reached from a GrpcSaver.

Requests are built and responses read by I/O-free functions shared by both clients.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from google.protobuf.duration_pb2 import Duration
from lgcheckpoint.v1 import checkpoint_pb2 as checkpoint_pb
from lgcheckpoint.v1 import checkpoint_service_pb2 as checkpoint_api
from lgcheckpoint.v1 import thread_pb2 as pb
from lgcheckpoint.v1 import thread_service_pb2 as api

import grpc

if TYPE_CHECKING:
    from langgraph.checkpoint.grpc._saver import GrpcSaver

from langgraph.checkpoint.base import CheckpointTuple

from langgraph.checkpoint.grpc._convert import page_size
from langgraph.checkpoint.grpc._errors import rpc_error, unavailable
from langgraph.checkpoint.grpc._lease import attach

Status = Literal["idle", "busy", "interrupted", "error"]
TtlStrategy = Literal["delete", "keep_latest"]
SortBy = Literal["thread_id", "created_at", "updated_at"]
PruneStrategy = Literal["keep_latest", "delete"]

_IF_EXISTS = {"raise": api.IF_EXISTS_RAISE, "do_nothing": api.IF_EXISTS_DO_NOTHING}
_ORDER = {"asc": api.SORT_ORDER_ASCENDING, "desc": api.SORT_ORDER_DESCENDING}
_STATUS: dict[pb.ThreadStatus.ValueType, Status] = {
    pb.THREAD_STATUS_IDLE: "idle",
    pb.THREAD_STATUS_BUSY: "busy",
    pb.THREAD_STATUS_INTERRUPTED: "interrupted",
    pb.THREAD_STATUS_ERROR: "error",
}
_STATUS_VALUES = {name: value for value, name in _STATUS.items()}
_STRATEGY: dict[pb.TtlStrategy.ValueType, TtlStrategy] = {
    pb.TTL_STRATEGY_DELETE: "delete",
    pb.TTL_STRATEGY_KEEP_LATEST: "keep_latest",
}
_STRATEGY_VALUES = {name: value for value, name in _STRATEGY.items()}
_SORT = {
    "thread_id": api.THREAD_SORT_BY_THREAD_ID,
    "created_at": api.THREAD_SORT_BY_CREATE_TIME,
    "updated_at": api.THREAD_SORT_BY_UPDATE_TIME,
}


@dataclass(frozen=True)
class Thread:
    """A thread of the catalog.

    Attributes:
        thread_id: The thread's ID.
        metadata: The thread's own metadata (not its checkpoints').
        created_at: When the thread was created.
        updated_at: When a checkpoint, write or the thread itself was last stored.
        status: ``idle``, ``interrupted`` (pending ``interrupt()``), ``error`` (a task failed
            and was not resumed), or ``busy`` (a worker holds its lease: ``GrpcSaver.lease``).
        latest_checkpoint_id: The latest checkpoint of the root graph, if any.
        checkpoint_count: Checkpoints held, in every checkpoint_ns (full view only).
        values_bytes: Bytes of channel values stored (full view only).
        writes_bytes: Bytes of pending writes stored (full view only).
        ttl: The thread's own time to live, if it has one.
        ttl_strategy: What its time to live does: ``delete`` or ``keep_latest``.
        expires_at: When the time to live in force runs out, if any.
    """

    thread_id: str
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    status: Status
    latest_checkpoint_id: str | None
    checkpoint_count: int | None
    values_bytes: int | None
    writes_bytes: int | None
    ttl: timedelta | None
    ttl_strategy: TtlStrategy | None
    expires_at: datetime | None


EventKind = Literal[
    "checkpoint_added",
    "writes_added",
    "thread_created",
    "thread_updated",
    "thread_deleted",
    "thread_pruned",
    "thread_copied",
]
_KINDS: dict[pb.EventKind.ValueType, EventKind] = {
    pb.EVENT_KIND_CHECKPOINT_ADDED: "checkpoint_added",
    pb.EVENT_KIND_WRITES_ADDED: "writes_added",
    pb.EVENT_KIND_THREAD_CREATED: "thread_created",
    pb.EVENT_KIND_THREAD_UPDATED: "thread_updated",
    pb.EVENT_KIND_THREAD_DELETED: "thread_deleted",
    pb.EVENT_KIND_THREAD_PRUNED: "thread_pruned",
    pb.EVENT_KIND_THREAD_COPIED: "thread_copied",
}


@dataclass(frozen=True)
class Event:
    """Something that happened to a thread, from ``watch``.

    Attributes:
        cursor: Pass as ``after`` to resume right after this event.
        kind: What happened.
        thread_id: The thread.
        checkpoint_ns: For checkpoint and write events, the sub-graph namespace.
        checkpoint_id: For checkpoint and write events, the checkpoint.
        source_thread_id: For ``thread_copied``, the thread copied from.
        time: When it was committed.
    """

    cursor: str
    kind: EventKind
    thread_id: str
    checkpoint_ns: str | None
    checkpoint_id: str | None
    source_thread_id: str | None
    time: datetime


def _event(message: pb.Event) -> Event:
    return Event(
        cursor=message.cursor,
        kind=_KINDS[message.kind],
        thread_id=message.thread_id,
        checkpoint_ns=message.checkpoint_ns if message.checkpoint_id else None,
        checkpoint_id=message.checkpoint_id or None,
        source_thread_id=message.source_thread_id or None,
        time=message.time.ToDatetime(tzinfo=UTC),
    )


@dataclass(frozen=True)
class CheckpointSummary:
    """A checkpoint as ``checkpoints`` lists it: what it is, with none of its values.

    Nothing in it passes through the serializer, so it reads the same whatever the writers'
    serializer was (an ``EncryptedSerializer`` without its key, say).

    Attributes:
        checkpoint_id: The checkpoint's ID.
        parent_checkpoint_id: The checkpoint it was created from, if any (and not pruned).
        checkpoint_ns: The sub-graph namespace; empty for the root graph.
        metadata: The checkpoint's metadata, such as ``step`` and ``source``.
        created_at: When the server stored it.
        pending_channels: The channels of its special pending writes (``__error__``,
            ``__interrupt__``, ``__resume__``), each once, in the order of the writes (task
            path, task ID, index): a checkpoint waiting on ``interrupt()`` lists
            ``__interrupt__``.
    """

    checkpoint_id: str
    parent_checkpoint_id: str | None
    checkpoint_ns: str
    metadata: dict[str, Any]
    created_at: datetime
    pending_channels: tuple[str, ...]


def _summary(message: checkpoint_pb.Checkpoint) -> CheckpointSummary:
    return CheckpointSummary(
        checkpoint_id=message.checkpoint_id,
        parent_checkpoint_id=message.parent_checkpoint_id or None,
        checkpoint_ns=message.checkpoint_ns,
        metadata=json.loads(message.metadata_json or b"{}"),
        created_at=message.create_time.ToDatetime(tzinfo=UTC),
        pending_channels=tuple(dict.fromkeys(w.channel for w in message.pending_writes)),
    )


# Reconnecting a watch after UNAVAILABLE (a server restarting, a replica going away).
_RECONNECT_FIRST, _RECONNECT_MAX = 0.1, 2.0


@dataclass(frozen=True)
class ThreadPage:
    """One page of a search: the threads, and the token of the next page (None at the end)."""

    threads: list[Thread]
    next_page_token: str | None


def _thread(message: pb.Thread, *, full: bool) -> Thread:
    has_ttl = message.HasField("ttl")
    return Thread(
        thread_id=message.thread_id,
        metadata=json.loads(message.metadata_json or b"{}"),
        created_at=message.create_time.ToDatetime(tzinfo=UTC),
        updated_at=message.update_time.ToDatetime(tzinfo=UTC),
        status=_STATUS.get(message.status, "idle"),
        latest_checkpoint_id=message.latest_checkpoint_id or None,
        checkpoint_count=message.checkpoint_count if full else None,
        values_bytes=message.values_bytes if full else None,
        writes_bytes=message.writes_bytes if full else None,
        ttl=message.ttl.ttl.ToTimedelta() if has_ttl else None,
        ttl_strategy=_STRATEGY.get(message.ttl.strategy) if has_ttl else None,
        expires_at=(
            message.expire_time.ToDatetime(tzinfo=UTC) if message.HasField("expire_time") else None
        ),
    )


def _ttl(ttl: timedelta | None, strategy: TtlStrategy) -> pb.ThreadTtl | None:
    if ttl is None:
        return None
    duration = Duration()
    duration.FromTimedelta(ttl)
    return pb.ThreadTtl(ttl=duration, strategy=_STRATEGY_VALUES[strategy])


def _metadata(metadata: dict[str, Any] | None) -> bytes:
    return json.dumps(metadata).encode() if metadata else b""


def _filter(
    metadata: dict[str, Any] | None,
    status: Status | None,
    created_after: datetime | None,
    created_before: datetime | None,
    updated_after: datetime | None,
    updated_before: datetime | None,
) -> api.ThreadFilter:
    which = api.ThreadFilter(metadata_filter_json=_metadata(metadata))
    if status is not None:
        which.status = _STATUS_VALUES[status]
    for name, moment in (
        ("created_after", created_after),
        ("created_before", created_before),
        ("updated_after", updated_after),
        ("updated_before", updated_before),
    ):
        if moment is not None:
            getattr(which, name).FromDatetime(moment)
    return which


class _Requests:
    """The requests of one namespace's catalog."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def create(
        self,
        thread_id: str | None,
        metadata: dict[str, Any] | None,
        ttl: timedelta | None,
        ttl_strategy: TtlStrategy,
        if_exists: Literal["raise", "do_nothing"],
    ) -> api.CreateThreadRequest:
        request = api.CreateThreadRequest(
            namespace=self.namespace,
            thread_id=thread_id or "",
            metadata_json=_metadata(metadata),
            if_exists=api.IF_EXISTS_DO_NOTHING
            if if_exists == "do_nothing"
            else api.IF_EXISTS_RAISE,
        )
        if (message := _ttl(ttl, ttl_strategy)) is not None:
            request.ttl.CopyFrom(message)
        return request

    def get(self, thread_id: str, full: bool) -> api.GetThreadRequest:
        view = api.THREAD_VIEW_FULL if full else api.THREAD_VIEW_BASIC
        return api.GetThreadRequest(namespace=self.namespace, thread_id=thread_id, view=view)

    def update(
        self,
        thread_id: str,
        metadata: dict[str, Any] | None,
        ttl: timedelta | None,
        ttl_strategy: TtlStrategy,
        clear_ttl: bool,
    ) -> api.UpdateThreadRequest:
        request = api.UpdateThreadRequest(
            namespace=self.namespace,
            thread_id=thread_id,
            metadata_json=_metadata(metadata),
            clear_ttl=clear_ttl,
        )
        if (message := _ttl(ttl, ttl_strategy)) is not None:
            request.ttl.CopyFrom(message)
        return request

    def search(
        self,
        which: api.ThreadFilter,
        sort_by: SortBy,
        sort_order: Literal["asc", "desc"],
        limit: int,
        page_token: str | None,
        full: bool,
    ) -> api.SearchThreadsRequest:
        return api.SearchThreadsRequest(
            namespace=self.namespace,
            filter=which,
            sort_by=_SORT[sort_by],
            sort_order=api.SORT_ORDER_ASCENDING
            if sort_order == "asc"
            else api.SORT_ORDER_DESCENDING,
            page_size=limit,
            page_token=page_token or "",
            view=api.THREAD_VIEW_FULL if full else api.THREAD_VIEW_BASIC,
        )

    def history(
        self,
        thread_id: str,
        checkpoint_ns: str,
        values: bool,
        channels: Sequence[str] | None,
        before: str | None,
        limit: int | None,
    ) -> checkpoint_api.ListCheckpointsRequest:
        return checkpoint_api.ListCheckpointsRequest(
            namespace=self.namespace,
            thread_id=thread_id,
            checkpoint_ns=checkpoint_ns,
            before_checkpoint_id=before or "",
            page_size=page_size(limit),
            view=checkpoint_api.CHECKPOINT_VIEW_FULL
            if values
            else checkpoint_api.CHECKPOINT_VIEW_METADATA,
            channels=list(channels or ()),
        )

    def watch(
        self, thread_id: str | None, after: str | None, from_beginning: bool
    ) -> api.WatchEventsRequest:
        return api.WatchEventsRequest(
            namespace=self.namespace,
            thread_id=thread_id or "",
            after_cursor=after or "",
            from_beginning=from_beginning,
        )

    def copy(
        self, thread_id: str, target_thread_id: str | None, metadata: dict[str, Any] | None
    ) -> checkpoint_api.CopyThreadRequest:
        return checkpoint_api.CopyThreadRequest(
            namespace=self.namespace,
            source_thread_id=thread_id,
            # Chosen here, not by the server: a retry after a lost reply names the same
            # target, which the server recognizes as done instead of copying again.
            target_thread_id=target_thread_id or str(uuid.uuid4()),
            metadata_json=_metadata(metadata),
        )


class SyncThreadsClient:
    """The thread catalog of a GrpcSaver's namespace, for sync code (``saver.threads``)."""

    def __init__(self, saver: GrpcSaver) -> None:
        """Uses ``saver``'s channel, namespace, deadline and retries."""
        self._saver = saver
        self._requests = _Requests(saver.namespace)

    def create(
        self,
        thread_id: str | None = None,
        *,
        metadata: dict[str, Any] | None = None,
        ttl: timedelta | None = None,
        ttl_strategy: TtlStrategy = "delete",
        if_exists: Literal["raise", "do_nothing"] = "raise",
    ) -> Thread:
        """Creates a thread (a random UUID when ``thread_id`` is None) and returns it.

        Raises:
            GrpcSaverError: ALREADY_EXISTS when it exists and ``if_exists`` is ``raise``.
        """
        request = self._requests.create(thread_id, metadata, ttl, ttl_strategy, if_exists)
        return _thread(self._saver._call("CreateThread", request).thread, full=False)

    def get(self, thread_id: str, *, full: bool = True) -> Thread:
        """A thread, with its counts unless ``full`` is False.

        Raises:
            GrpcSaverError: NOT_FOUND when it does not exist (or expired under ``delete``).
        """
        response = self._saver._call("GetThread", self._requests.get(thread_id, full))
        return _thread(response.thread, full=full)

    def update(
        self,
        thread_id: str,
        *,
        metadata: dict[str, Any] | None = None,
        ttl: timedelta | None = None,
        ttl_strategy: TtlStrategy = "delete",
        clear_ttl: bool = False,
    ) -> Thread:
        """Merges ``metadata`` into the thread's and sets (or clears) its time to live."""
        request = self._requests.update(thread_id, metadata, ttl, ttl_strategy, clear_ttl)
        request = attach(self._saver._leases, request)
        return _thread(self._saver._call("UpdateThread", request).thread, full=False)

    def delete(self, thread_id: str) -> None:
        """Deletes the thread with everything stored for it."""
        self._saver.delete_thread(thread_id)

    def search(
        self,
        *,
        metadata: dict[str, Any] | None = None,
        status: Status | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        updated_after: datetime | None = None,
        updated_before: datetime | None = None,
        sort_by: SortBy = "updated_at",
        sort_order: Literal["asc", "desc"] = "desc",
        limit: int = 10,
        page_token: str | None = None,
        full: bool = False,
    ) -> ThreadPage:
        """One page of the threads matching every filter given.

        Pass the returned ``next_page_token`` to get the next page; a listing shows the
        threads as of its first page.
        """
        which = _filter(
            metadata, status, created_after, created_before, updated_after, updated_before
        )
        request = self._requests.search(which, sort_by, sort_order, limit, page_token, full)
        response = self._saver._call("SearchThreads", request)
        return ThreadPage(
            [_thread(t, full=full) for t in response.threads], response.next_page_token or None
        )

    def count(
        self,
        *,
        metadata: dict[str, Any] | None = None,
        status: Status | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        updated_after: datetime | None = None,
        updated_before: datetime | None = None,
    ) -> int:
        """How many threads match every filter given."""
        which = _filter(
            metadata, status, created_after, created_before, updated_after, updated_before
        )
        request = api.CountThreadsRequest(namespace=self._requests.namespace, filter=which)
        count: int = self._saver._call("CountThreads", request).count
        return count

    def history(
        self,
        thread_id: str,
        *,
        checkpoint_ns: str = "",
        values: bool = True,
        channels: Sequence[str] | None = None,
        before: str | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """A thread's checkpoints, newest first, as LangGraph's tuples.

        Args:
            thread_id: The thread.
            checkpoint_ns: The sub-graph namespace; the root graph by default.
            values: False leaves channel values out (and keeps only the special pending
                writes: errors, interrupts, resumes), so a long history reads fast.
            channels: Only these channels' values.
            before: Only checkpoints older than this checkpoint ID.
            limit: At most this many.
        """
        request = self._requests.history(thread_id, checkpoint_ns, values, channels, before, limit)
        return self._saver._pages(request, limit, self._saver._mapper.checkpoint_tuple)

    def checkpoints(
        self,
        thread_id: str,
        *,
        checkpoint_ns: str = "",
        before: str | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointSummary]:
        """A thread's checkpoints, newest first, as summaries: IDs, parent, metadata, interrupts.

        Unlike ``history``, nothing is deserialized: this is the listing for tools that do not
        hold the application's serializer, such as the ``checkpoint-threads`` command.

        Args:
            thread_id: The thread.
            checkpoint_ns: The sub-graph namespace; the root graph by default.
            before: Only checkpoints older than this checkpoint ID.
            limit: At most this many.
        """
        request = self._requests.history(thread_id, checkpoint_ns, False, None, before, limit)
        return self._saver._pages(request, limit, _summary)

    def watch(
        self,
        thread_id: str | None = None,
        *,
        after: str | None = None,
        from_beginning: bool = False,
        reconnect: bool = True,
    ) -> Iterator[Event]:
        """Events of a thread (or of the whole namespace) as they are committed, forever.

        Args:
            thread_id: Only this thread's events; None for every thread of the namespace.
            after: Resume after the event with this cursor: nothing missed, nothing twice.
            from_beginning: Without ``after``, start at the oldest retained event rather than
                now.
            reconnect: When the connection drops (UNAVAILABLE), reconnect and resume after
                the last event received.
        """
        delay = _RECONNECT_FIRST
        while True:
            request = self._requests.watch(thread_id, after, from_beginning)
            call = self._saver._stubs.threads.WatchEvents(request)
            try:
                for response in call:
                    event = _event(response.event)
                    after, delay = event.cursor, _RECONNECT_FIRST
                    yield event
            except grpc.RpcError as error:
                if not (reconnect and unavailable(error)):
                    raise rpc_error(error) from None
            finally:
                call.cancel()
            time.sleep(delay)
            delay = min(delay * 2, _RECONNECT_MAX)

    def copy(
        self,
        thread_id: str,
        *,
        target_thread_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """Copies a thread with its whole history; returns the new thread's ID."""
        request = self._requests.copy(thread_id, target_thread_id, metadata)
        target: str = self._saver._call("CopyThread", request).target_thread_id
        return target

    def prune(
        self,
        thread_ids: Sequence[str],
        *,
        strategy: PruneStrategy = "keep_latest",
    ) -> None:
        """Prunes threads: ``keep_latest`` (DeltaChannel-safe) or ``delete``."""
        self._saver.prune(thread_ids, strategy=strategy)


class ThreadsClient:
    """The thread catalog of a GrpcSaver's namespace, for async code (``saver.athreads``)."""

    def __init__(self, saver: GrpcSaver) -> None:
        """Uses ``saver``'s channel, namespace, deadline and retries."""
        self._saver = saver
        self._requests = _Requests(saver.namespace)

    async def create(
        self,
        thread_id: str | None = None,
        *,
        metadata: dict[str, Any] | None = None,
        ttl: timedelta | None = None,
        ttl_strategy: TtlStrategy = "delete",
        if_exists: Literal["raise", "do_nothing"] = "raise",
    ) -> Thread:
        """Async ``SyncThreadsClient.create``."""
        request = self._requests.create(thread_id, metadata, ttl, ttl_strategy, if_exists)
        return _thread((await self._saver._acall("CreateThread", request)).thread, full=False)

    async def get(self, thread_id: str, *, full: bool = True) -> Thread:
        """Async ``SyncThreadsClient.get``."""
        response = await self._saver._acall("GetThread", self._requests.get(thread_id, full))
        return _thread(response.thread, full=full)

    async def update(
        self,
        thread_id: str,
        *,
        metadata: dict[str, Any] | None = None,
        ttl: timedelta | None = None,
        ttl_strategy: TtlStrategy = "delete",
        clear_ttl: bool = False,
    ) -> Thread:
        """Async ``SyncThreadsClient.update``."""
        request = self._requests.update(thread_id, metadata, ttl, ttl_strategy, clear_ttl)
        request = attach(self._saver._leases, request)
        return _thread((await self._saver._acall("UpdateThread", request)).thread, full=False)

    async def delete(self, thread_id: str) -> None:
        """Async ``SyncThreadsClient.delete``."""
        await self._saver.adelete_thread(thread_id)

    async def search(
        self,
        *,
        metadata: dict[str, Any] | None = None,
        status: Status | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        updated_after: datetime | None = None,
        updated_before: datetime | None = None,
        sort_by: SortBy = "updated_at",
        sort_order: Literal["asc", "desc"] = "desc",
        limit: int = 10,
        page_token: str | None = None,
        full: bool = False,
    ) -> ThreadPage:
        """Async ``SyncThreadsClient.search``."""
        which = _filter(
            metadata, status, created_after, created_before, updated_after, updated_before
        )
        request = self._requests.search(which, sort_by, sort_order, limit, page_token, full)
        response = await self._saver._acall("SearchThreads", request)
        return ThreadPage(
            [_thread(t, full=full) for t in response.threads], response.next_page_token or None
        )

    async def count(
        self,
        *,
        metadata: dict[str, Any] | None = None,
        status: Status | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        updated_after: datetime | None = None,
        updated_before: datetime | None = None,
    ) -> int:
        """Async ``SyncThreadsClient.count``."""
        which = _filter(
            metadata, status, created_after, created_before, updated_after, updated_before
        )
        request = api.CountThreadsRequest(namespace=self._requests.namespace, filter=which)
        count: int = (await self._saver._acall("CountThreads", request)).count
        return count

    async def history(
        self,
        thread_id: str,
        *,
        checkpoint_ns: str = "",
        values: bool = True,
        channels: Sequence[str] | None = None,
        before: str | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Async ``SyncThreadsClient.history``."""
        request = self._requests.history(thread_id, checkpoint_ns, values, channels, before, limit)
        async for item in self._saver._apages(request, limit, self._saver._mapper.checkpoint_tuple):
            yield item

    async def checkpoints(
        self,
        thread_id: str,
        *,
        checkpoint_ns: str = "",
        before: str | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointSummary]:
        """Async ``SyncThreadsClient.checkpoints``."""
        request = self._requests.history(thread_id, checkpoint_ns, False, None, before, limit)
        async for item in self._saver._apages(request, limit, _summary):
            yield item

    async def watch(
        self,
        thread_id: str | None = None,
        *,
        after: str | None = None,
        from_beginning: bool = False,
        reconnect: bool = True,
    ) -> AsyncIterator[Event]:
        """Async ``SyncThreadsClient.watch``."""
        delay = _RECONNECT_FIRST
        while True:
            request = self._requests.watch(thread_id, after, from_beginning)
            call: Any = self._saver._astubs().threads.WatchEvents(request)
            try:
                async for response in call:
                    event = _event(response.event)
                    after, delay = event.cursor, _RECONNECT_FIRST
                    yield event
            except grpc.RpcError as error:
                if not (reconnect and unavailable(error)):
                    raise rpc_error(error) from None
            finally:
                call.cancel()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RECONNECT_MAX)

    async def copy(
        self,
        thread_id: str,
        *,
        target_thread_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """Async ``SyncThreadsClient.copy``."""
        request = self._requests.copy(thread_id, target_thread_id, metadata)
        target: str = (await self._saver._acall("CopyThread", request)).target_thread_id
        return target

    async def prune(
        self,
        thread_ids: Sequence[str],
        *,
        strategy: PruneStrategy = "keep_latest",
    ) -> None:
        """Async ``SyncThreadsClient.prune``."""
        await self._saver.aprune(thread_ids, strategy=strategy)
