"""One place that turns failures into gRPC statuses, without leaking SQL or payloads."""

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from checkpoint_server.api.wire import MalformedRequest
from checkpoint_server.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    ResourceExhausted,
    ServiceError,
)
from checkpoint_server.storage import describe_error, unavailable

logger = logging.getLogger(__name__)

_STATUS: dict[type[ServiceError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    Aborted: grpc.StatusCode.ABORTED,
}

_Servicer = TypeVar("_Servicer")
_Response = TypeVar("_Response")
Handler = Callable[[_Servicer, Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[_Response]]


async def _reject_malformed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    if isinstance(request, MalformedRequest):
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{request.field}: is not valid UTF-8 or not well-formed Protobuf",
        )


def status_of(name: str, error: Exception) -> tuple[grpc.StatusCode, str]:
    """The status ``error`` of operation ``name`` maps to; re-raises what is not ours to map."""
    if isinstance(error, ServiceError):
        return _STATUS[type(error)], str(error)
    if not isinstance(error, SQLAlchemyError):
        raise error
    # The statement and its parameters may hold payloads: log the error's class only.
    logger.error("%s failed in the database: %s", name, describe_error(error))
    if isinstance(error, PoolTimeout):
        # Every connection stayed busy for the pool's timeout: overload, which passes.
        return grpc.StatusCode.UNAVAILABLE, "every database connection is busy; retry later"
    if unavailable(error):
        return grpc.StatusCode.UNAVAILABLE, "the database is unavailable"
    return grpc.StatusCode.INTERNAL, "the database failed"


async def _abort(name: str, error: Exception, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    """Ends the call with the status ``error`` maps to; re-raises what is not ours to map."""
    code, message = status_of(name, error)
    await context.abort(code, message)


def rpc(handler: Handler[_Servicer, _Response]) -> Handler[_Servicer, _Response]:
    """Wraps a servicer method: malformed requests and domain errors become statuses."""

    @functools.wraps(handler)
    async def wrapper(
        self: _Servicer, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        await _reject_malformed(request, context)
        try:
            return await handler(self, request, context)
        except (ServiceError, SQLAlchemyError) as error:
            await _abort(handler.__name__, error, context)

    return wrapper


def rpc_stream(
    handler: Callable[[_Servicer, Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]],
) -> Callable[[_Servicer, Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]:
    """``rpc`` for a server-streaming method (an async generator)."""

    @functools.wraps(handler)
    async def wrapper(
        self: _Servicer, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        await _reject_malformed(request, context)
        try:
            async for item in handler(self, request, context):
                yield item
        except (ServiceError, SQLAlchemyError) as error:
            await _abort(handler.__name__, error, context)

    return wrapper
