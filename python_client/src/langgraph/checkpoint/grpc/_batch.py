"""Concurrent calls of one saver, sent together (BatchWrite, BatchGetCheckpoints).

LangGraph stores a checkpoint while its tasks' writes are still being stored, and a saver that
many threads share stores and reads theirs at the same time; each unary call costs the server
far more than the rows it touches. So a call goes out at once, on its own, while fewer than
``MAX_IN_FLIGHT`` calls of its kind are on the wire; one made meanwhile waits, and when a call
comes back everything that waits goes as one batch call. An idle saver adds no latency, and a
busy one sends fewer, larger calls (the server commits a batch of writes in one transaction).

Each item succeeds or fails as its own call would: an item the server could not serve now
(``UNAVAILABLE``, or a read that did not fit in the batch's response) is sent again on its own,
with the saver's retries; a server without the batch RPC gets unary calls from then on.

``Batcher`` does this for one event loop (the async API), and ``SyncBatcher`` (_sync_batch.py)
for many threads (the sync API); both follow ``BatchRules``: what may wait, what a batch holds,
and what each item of a batch call comes to.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

from google.protobuf.message import Message
from lgcheckpoint.v1 import checkpoint_service_pb2 as api

import grpc
from langgraph.checkpoint.grpc._errors import GrpcSaverError

# One call on the wire at a time: what LangGraph issues meanwhile (a step's writes beside its
# checkpoint, other threads' steps) goes in the next call. With two, one thread at a time made
# 2.2 calls per super-step instead of 1.8, at the same steps/s within the noise (bench.run).
MAX_IN_FLIGHT = 1
MAX_ITEMS = 200  # the server takes up to 1000

_CODES = {code.value[0]: code for code in grpc.StatusCode}
# An item that failed with these is sent again on its own, where the saver's retries apply.
_RESENT = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
)
# A call that failed with these failed for every item: sending them again alone cannot help.
_FAILS_ALL = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

Call = Callable[[str, Any], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Kind:
    """How one kind of call travels in batches.

    Attributes:
        method: The batch RPC.
        request: The batch request of a namespace's items (the unary requests).
        results: Each item's (code, message, value) in a batch response.
        value: What a unary response gives its caller.

    """

    method: str
    request: Callable[[str, list[Message]], Message]
    results: Callable[[Any], Sequence[tuple[int, str, Any]]]
    value: Callable[[Any], Any]


def _write_item(request: Message) -> api.BatchWriteItem:
    if isinstance(request, api.PutCheckpointRequest):
        return api.BatchWriteItem(put_checkpoint=request)
    assert isinstance(request, api.PutWritesRequest)  # noqa: S101 - only these are sent
    return api.BatchWriteItem(put_writes=request)


WRITES = Kind(
    method="BatchWrite",
    request=lambda namespace, items: api.BatchWriteRequest(
        namespace=namespace, items=map(_write_item, items)
    ),
    results=lambda response: [(r.code, r.message, None) for r in response.results],
    value=lambda response: None,
)
READS = Kind(
    method="BatchGetCheckpoints",
    request=lambda namespace, items: api.BatchGetCheckpointsRequest(
        namespace=namespace, items=cast(list[api.GetCheckpointRequest], items)
    ),
    results=lambda response: [(r.code, r.message, r.checkpoint) for r in response.results],
    value=lambda response: response.checkpoint,
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one item of a batch came to: its value, its error, or ``alone``: send it alone."""

    value: Any = None
    error: BaseException | None = None
    alone: bool = False


ALONE = Outcome(alone=True)


class _Queued(Protocol):
    @property
    def size(self) -> int: ...


_Q = TypeVar("_Q", bound=_Queued)


class BatchRules:
    """What both batchers share: which calls wait, what a batch holds, what each item gets."""

    def __init__(self, namespace: str, *, max_bytes: int, kind: Kind) -> None:
        self._namespace = namespace
        self._max_bytes = max_bytes
        self._kind = kind
        # False once the server turned out not to have the batch RPC (a bool: no lock needed).
        self._batches = True

    def _size_if_waiting(self, free: bool, request: Message) -> int | None:
        """The request's size if it is to wait for a batch; None if it goes at once, alone."""
        if free or not self._batches:
            return None  # measured only when it may wait: not encoded twice
        size = request.ByteSize()
        return None if size > self._max_bytes else size

    def _fill(
        self, batch: list[_Q], waiting: deque[_Q], gone: Callable[[_Q], bool] | None = None
    ) -> list[_Q]:
        """Moves what waits into ``batch``, oldest first, up to MAX_ITEMS and ``max_bytes``.

        Items that ``gone`` says nobody waits for any more are dropped.
        """
        size = sum(item.size for item in batch)
        while waiting and len(batch) < MAX_ITEMS:
            item = waiting[0]
            if gone is not None and gone(item):
                waiting.popleft()
                continue
            if batch and size + item.size > self._max_bytes:
                break
            batch.append(waiting.popleft())
            size += item.size
        return batch

    def _request(self, requests: list[Message]) -> Message:
        return self._kind.request(self._namespace, requests)

    def _outcomes(self, count: int, response: Any) -> list[Outcome]:
        """Each item's outcome from the response of a batch call of ``count`` items."""
        results = self._kind.results(response)
        if len(results) != count:
            details = f"the server answered {len(results)} results for {count} items"
            return [
                Outcome(error=GrpcSaverError(grpc.StatusCode.INTERNAL, details))
                for _ in range(count)
            ]
        outcomes = []
        for number, message, value in results:
            code = _CODES.get(number, grpc.StatusCode.UNKNOWN)
            if code in _RESENT:
                outcomes.append(ALONE)
            elif code != grpc.StatusCode.OK:
                outcomes.append(Outcome(error=GrpcSaverError(code, message)))
            else:
                outcomes.append(Outcome(value))
        return outcomes

    def _failed(self, error: GrpcSaverError, count: int) -> list[Outcome]:
        """Each item's outcome when the batch call of ``count`` items failed as a whole."""
        if error.code in _FAILS_ALL:
            return [Outcome(error=GrpcSaverError(error.code, error.details)) for _ in range(count)]
        # Too large together, or an older server: each goes on its own.
        if error.code == grpc.StatusCode.UNIMPLEMENTED:
            self._batches = False
        return [ALONE] * count


@dataclass(frozen=True, slots=True)
class _Waiting:
    method: str
    request: Message
    size: int
    done: asyncio.Future[Any]


class Batcher(BatchRules):
    """Sends one event loop's calls of one kind, batching what piles up."""

    def __init__(self, namespace: str, call: Call, *, max_bytes: int, kind: Kind) -> None:
        """Sends through ``call(method, request)``, which raises ``GrpcSaverError``.

        A batch holds at most ``max_bytes`` of requests; a larger one goes on its own.
        """
        super().__init__(namespace, max_bytes=max_bytes, kind=kind)
        self._call = call
        self._waiting: deque[_Waiting] = deque()
        self._in_flight = 0
        self._sending: set[asyncio.Task[None]] = set()

    async def send(self, method: str, request: Message) -> Any:
        """Makes the call ``method`` (request), or has it made in a batch; returns its value.

        Raises:
            GrpcSaverError: The item failed, with the code its own call would have ended with.

        """
        free = self._in_flight < MAX_IN_FLIGHT and not self._waiting
        size = self._size_if_waiting(free, request)
        if size is None:
            self._in_flight += 1
            try:
                return self._kind.value(await self._call(method, request))
            finally:
                self._in_flight -= 1
                self._next()
        done = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(method, request, size, done))
        return await done

    def close(self) -> None:
        """Fails the calls that wait, with CANCELLED: the saver is closing their channel."""
        while self._waiting:
            closed = GrpcSaverError(grpc.StatusCode.CANCELLED, "the saver was closed")
            _fail(self._waiting.popleft(), closed)

    def _next(self) -> None:
        """Sends what waits, as one call, when there is room on the wire."""
        if self._in_flight >= MAX_IN_FLIGHT:
            return
        batch = self._fill([], self._waiting, lambda item: item.done.done())  # cancelled
        if not batch:
            return
        self._in_flight += 1
        task = asyncio.ensure_future(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Waiting]) -> None:
        try:
            resent = []
            for item, outcome in zip(batch, await self._outcomes_of(batch), strict=True):
                if outcome.alone:
                    resent.append(self._alone(item))
                elif outcome.error is not None:
                    _fail(item, outcome.error)
                elif not item.done.done():
                    item.done.set_result(outcome.value)
            await asyncio.gather(*resent)
        except Exception as error:  # unforeseen: every caller learns it
            for item in batch:
                _fail(item, error)
        finally:
            for item in batch:
                if not item.done.done():  # cancelled: so are its callers
                    item.done.cancel()
            self._in_flight -= 1
            self._next()

    async def _outcomes_of(self, batch: list[_Waiting]) -> list[Outcome]:
        if len(batch) == 1 or not self._batches:
            return [ALONE] * len(batch)
        request = self._request([item.request for item in batch])
        try:
            response = await self._call(self._kind.method, request)
        except GrpcSaverError as error:
            return self._failed(error, len(batch))
        return self._outcomes(len(batch), response)

    async def _alone(self, item: _Waiting) -> None:
        try:
            response = await self._call(item.method, item.request)
        except Exception as error:  # its own caller learns it, as from its own call
            _fail(item, error)
        else:
            if not item.done.done():
                item.done.set_result(self._kind.value(response))


def _fail(item: _Waiting, error: BaseException) -> None:
    if not item.done.done():
        item.done.set_exception(error)
