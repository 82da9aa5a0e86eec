"""GrpcSaver: one LangGraph checkpointer for both ``invoke`` and ``ainvoke``."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from types import TracebackType
from typing import Any, NamedTuple, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from lgcheckpoint.v1 import checkpoint_pb2 as pb
from lgcheckpoint.v1 import checkpoint_service_pb2 as api
from lgcheckpoint.v1 import thread_service_pb2 as thread_api
from lgcheckpoint.v1.checkpoint_service_pb2_grpc import CheckpointServiceStub
from lgcheckpoint.v1.thread_service_pb2_grpc import ThreadServiceStub

import grpc
from langgraph.checkpoint.grpc import _retry
from langgraph.checkpoint.grpc._batch import READS, WRITES, Batcher
from langgraph.checkpoint.grpc._channel import (
    DEFAULT_MAX_MESSAGE_BYTES,
    NOT_RETRIED_CHECKPOINT_METHODS,
    RETRIED_THREAD_METHODS,
    async_channel,
    channel_options,
    parse_target,
    sync_channel,
)
from langgraph.checkpoint.grpc._convert import Mapper, page_size
from langgraph.checkpoint.grpc._errors import GrpcSaverError, rpc_error
from langgraph.checkpoint.grpc._lease import DEFAULT_LEASE_TTL, ThreadLease, attach
from langgraph.checkpoint.grpc._security import Security, TlsConfig
from langgraph.checkpoint.grpc._sync_batch import SyncBatcher
from langgraph.checkpoint.grpc._threads import SyncThreadsClient, ThreadsClient

DEFAULT_TIMEOUT = 30.0

_T = TypeVar("_T")


class GrpcSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer that stores checkpoints in the checkpoint service.

    One instance serves both the sync API (``graph.invoke``) and the async API
    (``graph.ainvoke``). Values are serialized on the client with ``serde``, so an
    ``EncryptedSerializer`` means the server only ever stores ciphertext.

    Example:
        ```python
        with GrpcSaver.from_conn_string("grpc://localhost:50051", namespace="team-a") as saver:
            graph = builder.compile(checkpointer=saver)
            graph.invoke(inputs, {"configurable": {"thread_id": "1"}})
        ```

    Args:
        target: ``host:port``, ``grpc://host:port`` or ``grpcs://host:port`` (TLS).
        namespace: The tenant scope of every call; empty means ``"default"``.
        serde: The serializer of values; LangGraph's default when omitted.
        timeout: The deadline of each call in seconds (default 30).
        max_message_bytes: The largest message sent or received (default 64 MiB); match the
            server's ``--max-message-bytes``.
        token: The bearer token sent with every call; default ``LGCHECKPOINT_TOKEN``.
        tls: TLS settings of a ``grpcs://`` target (CA, client certificate and key); default
            ``TlsConfig.from_env()``, which reads ``LGCHECKPOINT_CA_FILE``,
            ``LGCHECKPOINT_CERT_FILE`` and ``LGCHECKPOINT_KEY_FILE``.
        fail_fast: A call that cannot reach the server fails within a second or two (gRPC's
            own few retries) with ``UNAVAILABLE`` and the reason (connection refused, a TLS
            handshake refused), rather than waiting and retrying until its deadline, which
            rides out a server restart (the default). For command-line tools.

    Raises:
        ValueError: ``tls`` is given with a plaintext target.

    """

    def __init__(
        self,
        target: str,
        *,
        namespace: str = "",
        serde: SerializerProtocol | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        token: str | None = None,
        tls: TlsConfig | None = None,
        fail_fast: bool = False,
    ) -> None:
        """See the class docstring."""
        super().__init__(serde=serde)
        self.target = target
        self.namespace = namespace
        self.timeout = timeout
        self._fail_fast = fail_fast
        self._options = channel_options(max_message_bytes)
        self._security = Security.resolve(parse_target(target)[1], token, tls)
        self._channel = sync_channel(target, self._options, self._security)
        self._closed = False  # the sync channel, for good
        self._stubs = _Stubs.of(self._channel)
        self._stub = self._stubs.checkpoints
        self._aio: _AsyncTransport | None = None
        self._max_message_bytes = max_message_bytes
        # The sync API's puts, writes and gets, batched across the threads that share the saver.
        self._writes = SyncBatcher(namespace, self._call, max_bytes=self._batch_bytes, kind=WRITES)
        self._reads = SyncBatcher(namespace, self._call, max_bytes=self._batch_bytes, kind=READS)
        # The leases this saver holds, by thread ID: attached to the thread's writes.
        self._leases: dict[str, pb.Lease] = {}

    @property
    def threads(self) -> SyncThreadsClient:
        """The thread catalog of this saver's namespace, for sync code."""
        return SyncThreadsClient(self)

    @property
    def athreads(self) -> ThreadsClient:
        """The thread catalog of this saver's namespace, for async code."""
        return ThreadsClient(self)

    def lease(self, thread_id: str, *, ttl: float = DEFAULT_LEASE_TTL) -> ThreadLease:
        """A lease on ``thread_id`` for ``with`` or ``async with``: this saver as its one writer.

        Inside the block every put, write and delete of the thread carries the lease, which is
        renewed in the background every ``ttl / 3`` seconds and released at the end. Another
        writer's write to the thread is refused meanwhile, and so is this saver's after the
        lease was lost (``GrpcSaverError`` with ``FAILED_PRECONDITION``, naming the holder).

        Args:
            thread_id: The thread to lease.
            ttl: Seconds (1 to 3600) the lease outlives its last renewal: how long a crashed
                holder blocks the thread.

        """
        return ThreadLease(self.namespace, thread_id, ttl, (self._call, self._acall), self._leases)

    @property
    def _mapper(self) -> Mapper:
        # Built on use: with_allowlist() clones the saver with another serde.
        return Mapper(self.serde, self.namespace)

    @classmethod
    def from_conn_string(cls, conn_string: str, **kwargs: Any) -> _SaverContext:
        """A saver as a context manager (``with`` or ``async with``) that closes its channels.

        Args:
            conn_string: ``grpc://host:port`` or ``grpcs://host:port``.
            **kwargs: The keyword arguments of ``GrpcSaver``.

        """
        return _SaverContext(cls(conn_string, **kwargs))

    @property
    def _batch_bytes(self) -> int:
        # What one batch's requests may add up to, in the sync and the async API alike.
        return self._max_message_bytes // 2

    def close(self) -> None:
        """Closes the sync channel, and the async one when its event loop is not running."""
        self._close_sync()
        if self._aio is not None and not self._aio.loop.is_running():
            self._aio = None

    async def aclose(self) -> None:
        """Closes both channels."""
        self._close_sync()
        if self._aio is not None:
            transport = self._aio
            self._aio = None
            transport.writes.close()
            transport.reads.close()
            await transport.channel.close()

    def _close_sync(self) -> None:
        self._closed = True
        self._writes.close()
        self._reads.close()
        self._channel.close()

    def _astubs(self) -> _Stubs:
        return self._async().stubs

    def _async(self) -> _AsyncTransport:
        # An asyncio channel belongs to one event loop; a saver may outlive several.
        loop = asyncio.get_running_loop()
        if self._aio is None or self._aio.loop is not loop:
            channel = async_channel(self.target, self._options, self._security)
            limit = self._batch_bytes
            self._aio = _AsyncTransport(
                loop,
                channel,
                _Stubs.of(channel),
                Batcher(self.namespace, self._acall, max_bytes=limit, kind=WRITES),
                Batcher(self.namespace, self._acall, max_bytes=limit, kind=READS),
            )
        return self._aio

    # --- sync API ---------------------------------------------------------------------

    def _call(self, method: str, request: Any, *, seconds: float | None = None) -> Any:
        """Calls ``method`` within ``seconds`` (the saver's ``timeout`` when None)."""
        stub = self._stubs.method(method)
        try:
            return _retry.call(
                lambda timeout: stub(request, timeout=timeout, wait_for_ready=not self._fail_fast),
                seconds=self.timeout if seconds is None else seconds,
                idempotent=self._retried(method),
            )
        except grpc.RpcError as error:
            raise rpc_error(error) from None
        except ValueError:  # gRPC's "Cannot invoke RPC on closed channel!"
            if self._closed:
                raise GrpcSaverError(grpc.StatusCode.CANCELLED, "the saver was closed") from None
            raise

    async def _acall(self, method: str, request: Any, *, seconds: float | None = None) -> Any:
        """The asyncio ``_call``."""
        stub = self._astubs().method(method)
        try:
            return await _retry.acall(
                lambda timeout: stub(request, timeout=timeout, wait_for_ready=not self._fail_fast),
                seconds=self.timeout if seconds is None else seconds,
                idempotent=self._retried(method),
            )
        except grpc.RpcError as error:
            raise rpc_error(error) from None

    def _retried(self, method: str) -> bool:
        """Whether a failed call of ``method`` is made again: idempotent, and not fail_fast."""
        return _idempotent(method) and not self._fail_fast

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` points at, or the thread's latest; None if there is none."""
        mapper = self._mapper
        try:
            checkpoint = self._reads.send("GetCheckpoint", mapper.get_checkpoint(config))
        except GrpcSaverError as error:
            if error.code == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return mapper.checkpoint_tuple(checkpoint)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first, fetched a page ahead of the caller."""
        mapper = self._mapper
        request = mapper.list_checkpoints(config, filter, before, page_size(limit))
        return self._pages(request, limit, mapper.checkpoint_tuple)

    def _pages(
        self,
        request: api.ListCheckpointsRequest,
        limit: int | None,
        read: Callable[[pb.Checkpoint], _T],
    ) -> Iterator[_T]:
        """Up to ``limit`` checkpoints of a listing, each through ``read``."""
        remaining = limit
        future: Any = self._list_future(request)
        try:
            while future is not None:
                try:
                    response = future.result()
                except grpc.RpcError as error:
                    if not (self._retried("ListCheckpoints") and _retry.retryable(error)):
                        raise rpc_error(error) from None
                    # The prefetched page was cut off: fetch it again, retried.
                    response = self._call("ListCheckpoints", request)
                future = None
                if _wants_more(response, remaining):
                    request.page_token = response.next_page_token
                    future = self._list_future(request)
                for message in response.checkpoints[:remaining]:
                    yield read(message)
                if remaining is not None:
                    remaining -= min(remaining, len(response.checkpoints))
        finally:
            if future is not None:
                future.cancel()

    def _list_future(self, request: api.ListCheckpointsRequest) -> Any:
        return self._stub.ListCheckpoints.future(
            request, timeout=self.timeout, wait_for_ready=not self._fail_fast
        )

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Stores a checkpoint with the values of the channels in ``new_versions``."""
        request, next_config = self._mapper.put_checkpoint(
            config, checkpoint, metadata, new_versions
        )
        self._writes.send("PutCheckpoint", attach(self._leases, request))
        return next_config

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Stores a task's pending writes against the checkpoint ``config`` points at."""
        request = self._mapper.put_writes(config, writes, task_id, task_path)
        self._writes.send("PutWrites", attach(self._leases, request))

    def delete_thread(self, thread_id: str) -> None:
        """Deletes a thread's checkpoints, writes and values in every checkpoint_ns."""
        request = api.DeleteThreadRequest(namespace=self.namespace, thread_id=str(thread_id))
        self._call("DeleteThread", attach(self._leases, request))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Deletes the checkpoints created by the given runs, with their writes.

        Over 1,000 runs take several calls; if one fails, the calls before it took effect
        (calling again is safe).
        """
        for request in self._mapper.delete_for_runs(run_ids):
            self._call("DeleteForRuns", request)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copies a thread, its whole parent chain and its writes, to a new thread ID."""
        self._call("CopyThread", _copy_request(self.namespace, source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Prunes threads: ``"keep_latest"`` (safe with DeltaChannel) or ``"delete"``.

        Over 1,000 threads take several calls; if one fails, the calls before it took effect
        (calling again is safe).
        """
        for request in self._mapper.prune(thread_ids, strategy):
            self._call("PruneThreads", request)

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """Per channel, the writes along the parent chain and the nearest stored value."""
        if not channels:
            return {}
        mapper = self._mapper
        response = self._call(
            "GetDeltaChannelHistory", mapper.delta_channel_history(config, channels)
        )
        return mapper.delta_histories(response)

    def get_next_version(self, current: str | None, channel: None) -> str:
        """A version string that sorts after ``current``, unique across concurrent writers."""
        if current is None:
            current_v = 0
        elif isinstance(current, int):
            current_v = current
        else:
            current_v = int(current.split(".")[0])
        # Zero-padded so that versions compare as strings; the random part keeps two branches
        # forked from one checkpoint from minting the same version of a channel (their values
        # are stored per version). Shorter than PostgresSaver's 49 characters: versions are
        # stored in every checkpoint many times over. Not security: random is fine.
        return f"{current_v + 1:016}.{random.getrandbits(48):012x}"

    # --- async API --------------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Async ``get_tuple``."""
        mapper = self._mapper
        try:
            checkpoint = await self._async().reads.send(
                "GetCheckpoint", mapper.get_checkpoint(config)
            )
        except GrpcSaverError as error:
            if error.code == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return mapper.checkpoint_tuple(checkpoint)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Async ``list``, fetching the next page while the caller reads this one."""
        mapper = self._mapper
        request = mapper.list_checkpoints(config, filter, before, page_size(limit))
        async for item in self._apages(request, limit, mapper.checkpoint_tuple):
            yield item

    async def _apages(
        self,
        request: api.ListCheckpointsRequest,
        limit: int | None,
        read: Callable[[pb.Checkpoint], _T],
    ) -> AsyncIterator[_T]:
        """Async ``_pages``, fetching the next page while the caller reads this one."""
        remaining = limit
        pending: asyncio.Future[Any] | None = asyncio.ensure_future(
            self._acall("ListCheckpoints", request)
        )
        try:
            while pending is not None:
                response = await pending
                pending = None
                if _wants_more(response, remaining):
                    request.page_token = response.next_page_token
                    pending = asyncio.ensure_future(self._acall("ListCheckpoints", request))
                for message in response.checkpoints[:remaining]:
                    yield read(message)
                if remaining is not None:
                    remaining -= min(remaining, len(response.checkpoints))
        finally:
            if pending is not None:
                pending.cancel()

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Async ``put``."""
        request, next_config = self._mapper.put_checkpoint(
            config, checkpoint, metadata, new_versions
        )
        await self._async().writes.send("PutCheckpoint", attach(self._leases, request))
        return next_config

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Async ``put_writes``."""
        request = self._mapper.put_writes(config, writes, task_id, task_path)
        await self._async().writes.send("PutWrites", attach(self._leases, request))

    async def adelete_thread(self, thread_id: str) -> None:
        """Async ``delete_thread``."""
        request = api.DeleteThreadRequest(namespace=self.namespace, thread_id=str(thread_id))
        await self._acall("DeleteThread", attach(self._leases, request))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Async ``delete_for_runs``."""
        for request in self._mapper.delete_for_runs(run_ids):
            await self._acall("DeleteForRuns", request)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Async ``copy_thread``."""
        await self._acall(
            "CopyThread", _copy_request(self.namespace, source_thread_id, target_thread_id)
        )

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Async ``prune``."""
        for request in self._mapper.prune(thread_ids, strategy):
            await self._acall("PruneThreads", request)

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """Async ``get_delta_channel_history``."""
        if not channels:
            return {}
        mapper = self._mapper
        response = await self._acall(
            "GetDeltaChannelHistory", mapper.delta_channel_history(config, channels)
        )
        return mapper.delta_histories(response)


def _wants_more(response: api.ListCheckpointsResponse, remaining: int | None) -> bool:
    return bool(response.next_page_token) and (
        remaining is None or remaining > len(response.checkpoints)
    )


class _Stubs(NamedTuple):
    """The stubs of both services on one channel."""

    checkpoints: CheckpointServiceStub
    threads: ThreadServiceStub

    @classmethod
    def of(cls, channel: Any) -> _Stubs:
        return cls(CheckpointServiceStub(channel), ThreadServiceStub(channel))

    def method(self, name: str) -> Any:
        stub = self.threads if name in _THREAD_METHODS else self.checkpoints
        return getattr(stub, name)


class _AsyncTransport(NamedTuple):
    """What the saver's async API uses in one event loop."""

    loop: asyncio.AbstractEventLoop
    channel: grpc.aio.Channel
    stubs: _Stubs
    writes: Batcher
    reads: Batcher


_THREAD_METHODS = frozenset(
    method.name for method in thread_api.DESCRIPTOR.services_by_name["ThreadService"].methods
)


def _idempotent(method: str) -> bool:
    """Whether a call of ``method`` cut off mid-way may be made again."""
    if method in NOT_RETRIED_CHECKPOINT_METHODS:
        return False
    return method not in _THREAD_METHODS or method in RETRIED_THREAD_METHODS


def _copy_request(namespace: str, source: str, target: str) -> api.CopyThreadRequest:
    return api.CopyThreadRequest(
        namespace=namespace, source_thread_id=str(source), target_thread_id=str(target)
    )


class _SaverContext(AbstractContextManager[GrpcSaver], AbstractAsyncContextManager[GrpcSaver]):
    """What ``from_conn_string`` returns: enter with ``with`` or ``async with``."""

    def __init__(self, saver: GrpcSaver) -> None:
        self._saver = saver

    def __enter__(self) -> GrpcSaver:
        return self._saver

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._saver.close()

    async def __aenter__(self) -> GrpcSaver:
        return self._saver

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._saver.aclose()
