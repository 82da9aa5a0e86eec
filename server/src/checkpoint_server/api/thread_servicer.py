"""ThreadService: validate, convert, call the catalog, convert back."""

from collections.abc import AsyncIterator
from typing import Any

import grpc
from lgcheckpoint.v1 import thread_service_pb2 as api
from lgcheckpoint.v1 import thread_service_pb2_grpc as api_grpc

from checkpoint_server.api import converters, lease_converters
from checkpoint_server.api import thread_converters as threads
from checkpoint_server.api.errors import rpc, rpc_stream
from checkpoint_server.api.tokens import Sealer
from checkpoint_server.api.watch_slots import WatchSlots
from checkpoint_server.errors import InvalidArgument
from checkpoint_server.storage import EventLog, ThreadCatalog

_Context = grpc.aio.ServicerContext[Any, Any]


class ThreadServicer(api_grpc.ThreadServiceServicer):
    """Serves ThreadService from a catalog."""

    def __init__(
        self, catalog: ThreadCatalog, events: EventLog, sealer: Sealer, watchers: WatchSlots
    ) -> None:
        """Serves ``catalog`` and the event log ``events``; ``sealer`` seals their tokens.

        ``watchers`` bounds the WatchEvents streams open at once.
        """
        self._catalog = catalog
        self._events = events
        self._sealer = sealer
        self._watchers = watchers

    @rpc
    async def CreateThread(  # noqa: N802 - names come from the proto
        self, request: api.CreateThreadRequest, context: _Context
    ) -> api.CreateThreadResponse:
        """See the proto."""
        namespace = converters.namespace(request.namespace)
        if request.if_exists not in (
            api.IF_EXISTS_UNSPECIFIED,
            api.IF_EXISTS_RAISE,
            api.IF_EXISTS_DO_NOTHING,
        ):
            raise InvalidArgument("if_exists", "is not an IfExists")
        record = await self._catalog.create(
            namespace,
            threads.new_thread_id(request.thread_id),
            converters.json_object("metadata_json", request.metadata_json),
            threads.ttl("ttl", request.ttl, request.HasField("ttl")),
            if_exists_raise=request.if_exists != api.IF_EXISTS_DO_NOTHING,
        )
        return api.CreateThreadResponse(thread=threads.thread_message(record))

    @rpc
    async def GetThread(  # noqa: N802
        self, request: api.GetThreadRequest, context: _Context
    ) -> api.GetThreadResponse:
        """See the proto."""
        namespace = converters.namespace(request.namespace)
        thread_id = converters.text("thread_id", request.thread_id, required=True)
        full = threads.full_view(request.view, default=True)
        record = await self._catalog.get(namespace, thread_id, full=full)
        return api.GetThreadResponse(thread=threads.thread_message(record))

    @rpc
    async def UpdateThread(  # noqa: N802
        self, request: api.UpdateThreadRequest, context: _Context
    ) -> api.UpdateThreadResponse:
        """See the proto."""
        namespace = converters.namespace(request.namespace)
        thread_id = converters.text("thread_id", request.thread_id, required=True)
        ttl = threads.ttl("ttl", request.ttl, request.HasField("ttl"))
        if ttl is not None and request.clear_ttl:
            raise InvalidArgument("clear_ttl", "cannot be set together with ttl")
        record = await self._catalog.update(
            namespace,
            thread_id,
            converters.json_object("metadata_json", request.metadata_json),
            ttl,
            clear_ttl=request.clear_ttl,
            max_metadata_bytes=converters.MAX_JSON_BYTES,
            lease=lease_converters.lease("lease", request.lease, request.HasField("lease")),
        )
        return api.UpdateThreadResponse(thread=threads.thread_message(record))

    @rpc
    async def SearchThreads(  # noqa: N802
        self, request: api.SearchThreadsRequest, context: _Context
    ) -> api.SearchThreadsResponse:
        """See the proto."""
        namespace = converters.namespace(request.namespace)
        which = threads.thread_filter("filter", request.filter)
        page = threads.thread_page(request, namespace, self._sealer)
        found = await self._catalog.search(namespace, which, page)
        response = api.SearchThreadsResponse(
            threads=[threads.thread_message(record) for record in found]
        )
        if len(found) == page.limit:
            response.next_page_token = threads.search_token(
                self._sealer, namespace, page, found[-1]
            )
        return response

    @rpc
    async def CountThreads(  # noqa: N802
        self, request: api.CountThreadsRequest, context: _Context
    ) -> api.CountThreadsResponse:
        """See the proto."""
        namespace = converters.namespace(request.namespace)
        which = threads.thread_filter("filter", request.filter)
        return api.CountThreadsResponse(count=await self._catalog.count(namespace, which))

    @rpc_stream
    async def WatchEvents(  # noqa: N802
        self, request: api.WatchEventsRequest, context: _Context
    ) -> AsyncIterator[api.WatchEventsResponse]:
        """See the proto."""
        namespace = converters.namespace(request.namespace)
        thread_id = converters.optional_text("thread_id", request.thread_id)
        after = threads.watch_start(self._sealer, namespace, request.after_cursor)
        with self._watchers.hold(namespace):
            cursor = await self._events.start(after, from_beginning=request.from_beginning)
            held_back = _HELD_BACK_POLL
            while not self._events.closed:
                ticket = self._events.ticket(namespace)
                # One batch at a time: the stream's flow control paces the reads, so a slow
                # watcher holds at most one batch and writers never wait for it.
                batch, waiting = await self._events.next_batch(
                    namespace, thread_id, cursor, _WATCH_BATCH
                )
                for event in batch:
                    yield api.WatchEventsResponse(
                        event=threads.event_message(self._sealer, namespace, event)
                    )
                    cursor = event.cursor
                if waiting:
                    # Events behind a still-running older transaction of this database are held
                    # back until it ends. It may write no event or be in another namespace, so no
                    # notification need come: poll, backing off while it runs.
                    await self._events.wait(ticket, held_back)
                    held_back = min(held_back * 2, _HELD_BACK_POLL_MAX)
                    continue
                held_back = _HELD_BACK_POLL
                if len(batch) < _WATCH_BATCH:
                    await self._events.wait(ticket, _IDLE_POLL)


# Events per read; the wait when events are held back by an older running transaction; the
# longest wait for a wake-up. Commits wake their namespace's watchers (NOTIFY from every
# server on PostgreSQL, this process's own writes on SQLite), so an idle watcher reads the log
# only this often: a safety net for a notification lost while the LISTEN connection was down.
_WATCH_BATCH = 100
_HELD_BACK_POLL = 0.01
_HELD_BACK_POLL_MAX = 1.0
_IDLE_POLL = 30.0
