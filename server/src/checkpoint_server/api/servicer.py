"""CheckpointService: validate, convert, call the store, convert back."""

import asyncio
import uuid
from typing import Any

import grpc
from lgcheckpoint.v1 import checkpoint_pb2 as pb
from lgcheckpoint.v1 import checkpoint_service_pb2 as api
from lgcheckpoint.v1 import checkpoint_service_pb2_grpc as api_grpc
from sqlalchemy.exc import SQLAlchemyError

from checkpoint_server.api import converters, lease_converters
from checkpoint_server.api.errors import rpc, status_of
from checkpoint_server.api.tokens import Sealer
from checkpoint_server.errors import InvalidArgument, NotFound, ResourceExhausted, ServiceError
from checkpoint_server.storage import CheckpointStore, LeaseStore, ThreadLifecycle

_Context = grpc.aio.ServicerContext[Any, Any]
_BATCH_READS = 4  # the reads of one BatchGetCheckpoints that run at once
_RESULT_FRAMING = 6  # bytes a result takes in the response besides its own: tag and length
_RESPONSE_MARGIN = 64  # gRPC's framing of the response


class CheckpointServicer(api_grpc.CheckpointServiceServicer):
    """Serves CheckpointService from the storage of checkpoints, threads and leases."""

    def __init__(
        self,
        store: CheckpointStore,
        lifecycle: ThreadLifecycle,
        leases: LeaseStore,
        *,
        max_message_bytes: int,
        sealer: Sealer,
    ) -> None:
        """Serves the hot path from ``store``, deletes, copies and prunes through ``lifecycle``.

        Responses larger than ``max_message_bytes`` are refused; ``sealer`` seals the page
        tokens of ListCheckpoints.
        """
        self._store = store
        self._lifecycle = lifecycle
        self._leases = leases
        self._sealer = sealer
        self._max_message_bytes = max_message_bytes

    @rpc
    async def PutCheckpoint(  # noqa: N802 - names come from the proto
        self, request: api.PutCheckpointRequest, context: _Context
    ) -> api.PutCheckpointResponse:
        """See the proto."""
        namespace = converters.namespace(request.namespace)
        await self._store.put_checkpoint(namespace, converters.put_checkpoint(request))
        return api.PutCheckpointResponse()

    @rpc
    async def PutWrites(  # noqa: N802
        self, request: api.PutWritesRequest, context: _Context
    ) -> api.PutWritesResponse:
        """See the proto."""
        namespace = converters.namespace(request.namespace)
        await self._store.put_writes(namespace, converters.put_writes(request))
        return api.PutWritesResponse()

    @rpc
    async def BatchWrite(  # noqa: N802
        self, request: api.BatchWriteRequest, context: _Context
    ) -> api.BatchWriteResponse:
        """See the proto."""
        namespace = converters.namespace(request.namespace)
        items = converters.batch_items(request, namespace)
        records = [item for item in items if not isinstance(item, InvalidArgument)]
        batch = await self._store.put_batch(namespace, records)
        stored = iter(batch.errors)
        results = []
        # Items that failed alike (the database down) share one error: mapped, and logged, once.
        statuses: dict[int, api.BatchWriteResult] = {}
        for item in items:
            error = item if isinstance(item, InvalidArgument) else next(stored)
            if error is None:
                results.append(api.BatchWriteResult())
                continue
            if id(error) not in statuses:
                code, message = status_of("BatchWrite", error)
                statuses[id(error)] = api.BatchWriteResult(code=code.value[0], message=message)
            results.append(statuses[id(error)])
        return api.BatchWriteResponse(results=results)

    @rpc
    async def GetCheckpoint(  # noqa: N802
        self, request: api.GetCheckpointRequest, context: _Context
    ) -> api.GetCheckpointResponse:
        """See the proto."""
        namespace = converters.namespace(request.namespace)
        response = api.GetCheckpointResponse(checkpoint=await self._read(namespace, request))
        self._check_size(response.ByteSize())
        return response

    @rpc
    async def BatchGetCheckpoints(  # noqa: N802
        self, request: api.BatchGetCheckpointsRequest, context: _Context
    ) -> api.BatchGetCheckpointsResponse:
        """See the proto."""
        namespace = converters.namespace(request.namespace)
        converters.batch_size("items", len(request.items))

        async def read(i: int, item: api.GetCheckpointRequest) -> pb.Checkpoint | Exception:
            try:
                converters.item_namespace(item.namespace, namespace)
                return await self._read(namespace, item)
            except InvalidArgument as error:
                return error.within(f"items[{i}]")
            except (ServiceError, SQLAlchemyError) as error:
                return error

        # A few at a time, so that one batch does not hold the whole pool while other calls
        # wait; and no more once what was read cannot fit in one response, so that memory
        # stays bounded by the message size limit, whatever the items ask for.
        items = request.items
        read_items: list[pb.Checkpoint | Exception] = []
        read_bytes = 0
        for start in range(0, len(items), _BATCH_READS):
            if read_bytes > self._max_message_bytes:
                break
            chunk = items[start : start + _BATCH_READS]
            done = await asyncio.gather(*(read(start + n, x) for n, x in enumerate(chunk)))
            read_bytes += sum(r.ByteSize() for r in done if isinstance(r, pb.Checkpoint))
            read_items.extend(done)
        unread = ResourceExhausted(
            "the batch's response would exceed the server's message size limit "
            f"of {self._max_message_bytes} bytes: read this checkpoint alone"
        )
        read_items.extend(unread for _ in range(len(items) - len(read_items)))
        response = api.BatchGetCheckpointsResponse(
            results=[self._get_result(read_item) for read_item in read_items]
        )
        # The response must fit in the message size limit: room is kept for every result as
        # if each checkpoint were refused, and checkpoints take what remains, in order.
        refusal = self._get_result(unread)
        refused_size = refusal.ByteSize() + _RESULT_FRAMING
        room = self._max_message_bytes - _RESPONSE_MARGIN
        room -= sum(
            refused_size if r.HasField("checkpoint") else r.ByteSize() + _RESULT_FRAMING
            for r in response.results
        )
        for result in response.results:
            if result.HasField("checkpoint"):
                extra = result.ByteSize() + _RESULT_FRAMING - refused_size
                if extra <= room:
                    room -= extra
                else:
                    result.CopyFrom(refusal)
        self._check_size(response.ByteSize())
        return response

    @rpc
    async def ListCheckpoints(  # noqa: N802
        self, request: api.ListCheckpointsRequest, context: _Context
    ) -> api.ListCheckpointsResponse:
        """See the proto."""
        namespace = converters.namespace(request.namespace)
        query = converters.list_query(request, namespace, self._sealer)
        stored = await self._store.list_checkpoints(namespace, query)
        # A page stops early rather than outgrow what the client can receive.
        budget = self._max_message_bytes // 4
        response = api.ListCheckpointsResponse()
        for item in stored:
            message = converters.checkpoint_message(item)
            size = message.ByteSize()
            if response.checkpoints and budget < size:
                break
            self._check_size(size)
            budget -= size
            response.checkpoints.append(message)
        if response.checkpoints and (
            len(response.checkpoints) < len(stored) or len(stored) == query.limit
        ):
            last = stored[len(response.checkpoints) - 1]
            response.next_page_token = converters.page_token(self._sealer, namespace, last)
        return response

    @rpc
    async def DeleteThread(  # noqa: N802
        self, request: api.DeleteThreadRequest, context: _Context
    ) -> api.DeleteThreadResponse:
        """See the proto."""
        namespace = converters.namespace(request.namespace)
        thread_id = converters.text("thread_id", request.thread_id, required=True)
        lease = lease_converters.lease("lease", request.lease, request.HasField("lease"))
        await self._lifecycle.delete_thread(namespace, thread_id, lease)
        return api.DeleteThreadResponse()

    @rpc
    async def DeleteForRuns(  # noqa: N802
        self, request: api.DeleteForRunsRequest, context: _Context
    ) -> api.DeleteForRunsResponse:
        """See the proto."""
        namespace = converters.namespace(request.namespace)
        run_ids = converters.text_list("run_ids", request.run_ids)
        if run_ids:
            await self._lifecycle.delete_for_runs(namespace, run_ids)
        return api.DeleteForRunsResponse()

    @rpc
    async def CopyThread(  # noqa: N802
        self, request: api.CopyThreadRequest, context: _Context
    ) -> api.CopyThreadResponse:
        """See the proto."""
        namespace = converters.namespace(request.namespace)
        source = converters.text("source_thread_id", request.source_thread_id, required=True)
        target = converters.text("target_thread_id", request.target_thread_id) or str(uuid.uuid4())
        metadata = (
            converters.json_object("metadata_json", request.metadata_json)
            if request.metadata_json
            else None
        )
        await self._lifecycle.copy_thread(namespace, source, target, metadata)
        return api.CopyThreadResponse(target_thread_id=target)

    @rpc
    async def PruneThreads(  # noqa: N802
        self, request: api.PruneThreadsRequest, context: _Context
    ) -> api.PruneThreadsResponse:
        """See the proto."""
        namespace = converters.namespace(request.namespace)
        thread_ids = converters.text_list("thread_ids", request.thread_ids)
        if request.strategy not in (pb.PRUNE_STRATEGY_KEEP_LATEST, pb.PRUNE_STRATEGY_DELETE):
            raise InvalidArgument("strategy", "must be KEEP_LATEST or DELETE")
        keep_latest = request.strategy == pb.PRUNE_STRATEGY_KEEP_LATEST
        await self._lifecycle.prune(namespace, thread_ids, keep_latest=keep_latest)
        return api.PruneThreadsResponse()

    @rpc
    async def GetDeltaChannelHistory(  # noqa: N802
        self, request: api.GetDeltaChannelHistoryRequest, context: _Context
    ) -> api.GetDeltaChannelHistoryResponse:
        """See the proto."""
        namespace = converters.namespace(request.namespace)
        thread_id = converters.text("thread_id", request.thread_id, required=True)
        checkpoint_ns = converters.text("checkpoint_ns", request.checkpoint_ns)
        checkpoint_id = converters.optional_text("checkpoint_id", request.checkpoint_id)
        channels = converters.text_list("channels", request.channels)
        histories = await self._store.delta_channel_history(
            namespace, thread_id, checkpoint_ns, checkpoint_id, list(dict.fromkeys(channels))
        )
        by_channel = {h.channel: converters.delta_history_message(h) for h in histories}
        response = api.GetDeltaChannelHistoryResponse(
            histories=[by_channel[channel] for channel in channels]
        )
        self._check_size(response.ByteSize())
        return response

    @rpc
    async def AcquireLease(  # noqa: N802
        self, request: api.AcquireLeaseRequest, context: _Context
    ) -> api.AcquireLeaseResponse:
        """See the proto."""
        namespace = converters.namespace(request.namespace)
        thread_id = converters.text("thread_id", request.thread_id, required=True)
        ttl = lease_converters.ttl("ttl", request.ttl, request.HasField("ttl"))
        granted = await self._leases.acquire(namespace, thread_id, ttl)
        return api.AcquireLeaseResponse(
            lease=lease_converters.lease_message(granted),
            expire_time=lease_converters.expire_time(granted),
        )

    @rpc
    async def RenewLease(  # noqa: N802
        self, request: api.RenewLeaseRequest, context: _Context
    ) -> api.RenewLeaseResponse:
        """See the proto."""
        namespace = converters.namespace(request.namespace)
        thread_id = converters.text("thread_id", request.thread_id, required=True)
        lease = lease_converters.lease(
            "lease", request.lease, request.HasField("lease"), required=True
        )
        ttl = lease_converters.ttl("ttl", request.ttl, request.HasField("ttl"))
        assert lease is not None  # noqa: S101 - required above
        granted = await self._leases.renew(namespace, thread_id, lease, ttl)
        return api.RenewLeaseResponse(expire_time=lease_converters.expire_time(granted))

    @rpc
    async def ReleaseLease(  # noqa: N802
        self, request: api.ReleaseLeaseRequest, context: _Context
    ) -> api.ReleaseLeaseResponse:
        """See the proto."""
        namespace = converters.namespace(request.namespace)
        thread_id = converters.text("thread_id", request.thread_id, required=True)
        lease = lease_converters.lease(
            "lease", request.lease, request.HasField("lease"), required=True
        )
        assert lease is not None  # noqa: S101 - required above
        await self._leases.release(namespace, thread_id, lease)
        return api.ReleaseLeaseResponse()

    @staticmethod
    def _get_result(read: pb.Checkpoint | Exception) -> api.BatchGetCheckpointsResult:
        if isinstance(read, pb.Checkpoint):
            return api.BatchGetCheckpointsResult(checkpoint=read)
        code, message = status_of("BatchGetCheckpoints", read)
        return api.BatchGetCheckpointsResult(code=code.value[0], message=message)

    async def _read(self, namespace: str, request: api.GetCheckpointRequest) -> pb.Checkpoint:
        thread_id = converters.text("thread_id", request.thread_id, required=True)
        checkpoint_ns = converters.text("checkpoint_ns", request.checkpoint_ns)
        checkpoint_id = converters.optional_text("checkpoint_id", request.checkpoint_id)
        stored = await self._store.get_checkpoint(
            namespace, thread_id, checkpoint_ns, checkpoint_id
        )
        if stored is None:
            wanted = f"checkpoint {checkpoint_id!r}" if checkpoint_id else "a checkpoint"
            raise NotFound(
                f"thread {thread_id!r} has no {wanted} in checkpoint_ns {checkpoint_ns!r}"
            )
        return converters.checkpoint_message(stored)

    def _check_size(self, size: int) -> None:
        if size > self._max_message_bytes:
            raise ResourceExhausted(
                f"the response is {size} bytes, over the server's message size limit of "
                f"{self._max_message_bytes} bytes (raise --max-message-bytes on the server "
                "and max_message_bytes on the client)"
            )
