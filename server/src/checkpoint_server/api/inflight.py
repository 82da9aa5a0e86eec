"""A bound on the request bytes that concurrent calls hold; past it, RESOURCE_EXHAUSTED.

Each request's bytes are counted from the moment gRPC hands them to the parser until its call
ends: the parsed message and the statement parameters built from it live as long. A request
that would take the total over the limit is refused before it is parsed, and its bytes are
freed at once. A request larger than the limit still runs when nothing else is in flight, so a
limit below the message size never makes a large request impossible, only lonely.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import Message

from checkpoint_server.api.wire import MalformedRequest, parse

_Context = grpc.aio.ServicerContext[Any, Any]


class _Admitted:
    """A parsed request and its share of the budget, returned when the call ends."""

    def __init__(self, request: Message | MalformedRequest, release: Callable[[], None]) -> None:
        self.request = request
        # Also when the call ends without running its handler (cancelled early): then the
        # request is collected, and the finalizer returns its share.
        self.release = weakref.finalize(self, release)

    @property
    def namespace(self) -> str:
        """The request's namespace, for the access log, which wraps the budget."""
        return str(getattr(self.request, "namespace", ""))


class _Refused:
    """Stands in for a request refused for want of budget."""

    # Not parsed: the access log shows no namespace for a refused request.
    namespace = ""

    def __init__(self, size: int) -> None:
        self.size = size


class RequestBudget:
    """Counts the request bytes in flight against ``limit``."""

    def __init__(self, limit: int) -> None:
        """Admits requests while their bytes in flight stay within ``limit``."""
        self.limit = limit
        self.in_flight = 0
        # gRPC may parse on another thread than the event loop's.
        self._lock = threading.Lock()

    def _take(self, size: int) -> bool:
        with self._lock:
            if self.in_flight and self.in_flight + size > self.limit:
                return False
            self.in_flight += size
            return True

    def _give(self, size: int) -> None:
        with self._lock:
            self.in_flight -= size

    def deserializer(self, message_type: type[Message]) -> Callable[[bytes], Any]:
        """The request deserializer of a method: admits, then parses."""

        def deserialize(data: bytes) -> _Admitted | _Refused:
            size = len(data)
            if not self._take(size):
                return _Refused(size)
            return _Admitted(parse(message_type, data), functools.partial(self._give, size))

        return deserialize

    async def _refuse(self, refused: _Refused, context: _Context) -> None:
        await context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"the server holds its limit of {self.limit} request bytes in flight "
            f"(--max-request-bytes-in-flight); this request of {refused.size} bytes "
            "may be retried later",
        )

    def unary(
        self, behavior: Callable[[Any, _Context], Awaitable[Any]]
    ) -> Callable[[Any, _Context], Awaitable[Any]]:
        """Wraps a unary handler: refused requests end the call, admitted ones are released."""

        async def handle(admitted: _Admitted | _Refused, context: _Context) -> Any:
            if isinstance(admitted, _Refused):
                await self._refuse(admitted, context)
                return None
            try:
                return await behavior(admitted.request, context)
            finally:
                admitted.release()

        return handle

    def stream(
        self, behavior: Callable[[Any, _Context], AsyncIterator[Any]]
    ) -> Callable[[Any, _Context], AsyncIterator[Any]]:
        """``unary`` for a server-streaming handler."""

        async def handle(admitted: _Admitted | _Refused, context: _Context) -> AsyncIterator[Any]:
            if isinstance(admitted, _Refused):
                await self._refuse(admitted, context)
                return
            # A stream's request (a watch's namespace, thread and cursor) is small and read
            # as the stream starts, while the stream itself may stay open for hours: its share
            # goes back at once, or every open watch would keep the budget in use.
            request = admitted.request
            admitted.release()
            async for item in behavior(request, context):
                yield item

        return handle
