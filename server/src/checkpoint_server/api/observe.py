"""One access-log line and the RPC metrics for every call, with a request ID.

The request ID is the client's ``x-request-id`` metadata when it is a plain token (so one ID
follows a request through the client's logs and ours), or a new one; the server returns it in
the trailing metadata either way. The access line carries the method, namespace, status code,
duration and request ID, and nothing the client sent besides: no payload, no other metadata.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from checkpoint_server import metrics

access = logging.getLogger("checkpoint_server.access")

REQUEST_ID = "x-request-id"
_TOKEN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_NAMESPACE_SHOWN = 128  # a namespace is a client's string: keep the line bounded
_WATCH = "WatchEvents"

_Context = grpc.aio.ServicerContext[Any, Any]
Unary = Callable[[Any, _Context], Awaitable[Any]]
Streaming = Callable[[Any, _Context], AsyncIterator[Any]]


def _request_id(context: _Context) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID and isinstance(value, str) and _TOKEN.match(value):
            return value
    return uuid.uuid4().hex


def _code(context: _Context, error: BaseException | None) -> str:
    # A stream closed while it waited to send (its client went away) ends with GeneratorExit.
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        remaining = context.time_remaining()
        expired = remaining is not None and remaining <= 0
        return "DEADLINE_EXCEEDED" if expired else "CANCELLED"
    code = context.code()
    if code is not None:
        # context.code() is a StatusCode, or the raw integer after abort() on some versions.
        return code.name if isinstance(code, grpc.StatusCode) else _NAMES.get(code, str(code))
    return "UNKNOWN" if error is not None else "OK"


_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


class _Call:
    """What is known of one call, logged and counted when it ends."""

    def __init__(self, method: str, request: Any, context: _Context) -> None:
        self.method = method
        self.context = context
        self.namespace = str(getattr(request, "namespace", ""))[:_NAMESPACE_SHOWN]
        self.request_id = _request_id(context)
        self.started = time.perf_counter()
        context.set_trailing_metadata(((REQUEST_ID, self.request_id),))

    def end(self, error: BaseException | None) -> None:
        seconds = time.perf_counter() - self.started
        code = _code(self.context, error)
        metrics.RPCS.labels(self.method, code).inc()
        metrics.RPC_SECONDS.labels(self.method, code).observe(seconds)
        access.info(
            "%s %s %.1f ms",
            self.method,
            code,
            seconds * 1000,
            extra={
                "method": self.method,
                "namespace": self.namespace,
                "code": code,
                "duration_ms": round(seconds * 1000, 3),
                "request_id": self.request_id,
            },
        )


def unary(method: str, behavior: Unary) -> Unary:
    """``behavior`` (a unary method of a servicer), logged and measured."""

    async def observed(request: Any, context: _Context) -> Any:
        call = _Call(method, request, context)
        error: BaseException | None = None
        try:
            return await behavior(request, context)
        except BaseException as raised:  # logged, then re-raised untouched
            error = raised
            raise
        finally:
            call.end(error)

    return observed


def streaming(method: str, behavior: Streaming) -> Streaming:
    """``behavior`` (a server-streaming method), logged and measured; watchers are counted."""

    async def observed(request: Any, context: _Context) -> AsyncIterator[Any]:
        call = _Call(method, request, context)
        watching = method == _WATCH
        if watching:
            metrics.WATCHERS.inc()
        error: BaseException | None = None
        try:
            async for response in behavior(request, context):
                if watching:
                    # Counted as it is handed to gRPC: the client may read it before the
                    # generator is resumed.
                    metrics.EVENTS_DELIVERED.inc()
                yield response
        except BaseException as raised:
            error = raised
            raise
        finally:
            if watching:
                metrics.WATCHERS.dec()
            call.end(error)

    return observed


def observe(method: str, behavior: Any, *, server_streaming: bool) -> Any:
    """``behavior`` wrapped by ``unary`` or ``streaming``, as the method is."""
    return streaming(method, behavior) if server_streaming else unary(method, behavior)
