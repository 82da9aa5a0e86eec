"""ThreadLease: a saver's lease on one thread, renewed in the background while it is held."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from google.protobuf.duration_pb2 import Duration
from lgcheckpoint.v1 import checkpoint_pb2 as pb
from lgcheckpoint.v1 import checkpoint_service_pb2 as api

import grpc
from langgraph.checkpoint.grpc._errors import GrpcSaverError

DEFAULT_LEASE_TTL = 30.0

SyncCall = Callable[[str, Any], Any]
AsyncCall = Callable[[str, Any], Awaitable[Any]]


class ThreadLease:
    """A lease on one thread, held by one saver: ``with`` for sync code, ``async with`` for async.

    Entering acquires the lease (the service's AcquireLease) and makes the saver attach it to
    every put, write and delete of the thread, so that a graph run inside the block writes as
    the thread's one writer. The lease is renewed every third of its time to live until the
    block ends, which releases it. Another saver's write to the thread meanwhile is refused.

    Attributes:
        thread_id: The leased thread.
        ttl: The lease's time to live in seconds; a dead holder blocks the thread this long.
        lease_id: The lease's ID, once acquired.
        fencing: The lease's fencing number, once acquired: greater than every earlier
            holder's.
        expire_time: When the lease expires unless renewed again.
        lost: The error of a renewal the service refused: the lease was taken over or expired
            and every later write of this saver to the thread is refused. None while held.

    """

    def __init__(
        self,
        namespace: str,
        thread_id: str,
        ttl: float,
        calls: tuple[SyncCall, AsyncCall],
        held: MutableMapping[str, pb.Lease],
    ) -> None:
        """Made by ``GrpcSaver.lease``; ``held`` is the saver's table of held leases."""
        if not 1 <= ttl <= 3600:
            raise ValueError("ttl must be between 1 and 3600 seconds")
        self.thread_id = str(thread_id)
        self.ttl = ttl
        self.lease_id: str | None = None
        self.fencing: int | None = None
        self.expire_time: datetime | None = None
        self.lost: GrpcSaverError | None = None
        self._namespace = namespace
        self._call, self._acall = calls
        self._held = held
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._arenewer: asyncio.Task[None] | None = None

    # --- sync -------------------------------------------------------------------------

    def __enter__(self) -> ThreadLease:
        """Acquires the lease; raises ``GrpcSaverError`` (FAILED_PRECONDITION) when held."""
        self._granted(self._call("AcquireLease", self._acquire_request()))
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew_until_stopped, daemon=True)
        self._renewer.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stops renewing and releases the lease."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        lease = self._held.pop(self.thread_id, None)
        if lease is not None:
            # Leaving on an error, the lease expires by itself: keep the error, not the release's.
            with contextlib.suppress(*(() if exc is None else (GrpcSaverError,))):
                self._call("ReleaseLease", self._lease_request(api.ReleaseLeaseRequest, lease))

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            request = self._renew_request()
            if request is None:
                return
            try:
                response = self._call("RenewLease", request)
            except GrpcSaverError as error:
                if self._refused(error):
                    return
                continue
            self.expire_time = response.expire_time.ToDatetime(tzinfo=UTC)

    # --- async ------------------------------------------------------------------------

    async def __aenter__(self) -> ThreadLease:
        """Async ``__enter__``."""
        self._granted(await self._acall("AcquireLease", self._acquire_request()))
        self._arenewer = asyncio.get_running_loop().create_task(self._arenew_until_stopped())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Async ``__exit__``."""
        if self._arenewer is not None:
            self._arenewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._arenewer
        lease = self._held.pop(self.thread_id, None)
        if lease is not None:
            with contextlib.suppress(*(() if exc is None else (GrpcSaverError,))):
                request = self._lease_request(api.ReleaseLeaseRequest, lease)
                await self._acall("ReleaseLease", request)

    async def _arenew_until_stopped(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            request = self._renew_request()
            if request is None:
                return
            try:
                response = await self._acall("RenewLease", request)
            except GrpcSaverError as error:
                if self._refused(error):
                    return
                continue
            self.expire_time = response.expire_time.ToDatetime(tzinfo=UTC)

    # --- shared -----------------------------------------------------------------------

    def _acquire_request(self) -> api.AcquireLeaseRequest:
        if self.thread_id in self._held:
            raise RuntimeError(f"this saver already holds a lease on thread {self.thread_id!r}")
        request = api.AcquireLeaseRequest(namespace=self._namespace, thread_id=self.thread_id)
        request.ttl.CopyFrom(_duration(self.ttl))
        return request

    def _renew_request(self) -> api.RenewLeaseRequest | None:
        lease = self._held.get(self.thread_id)
        if lease is None:
            return None
        request: api.RenewLeaseRequest = self._lease_request(api.RenewLeaseRequest, lease)
        request.ttl.CopyFrom(_duration(self.ttl))
        return request

    def _refused(self, error: GrpcSaverError) -> bool:
        """Whether a failed renewal lost the lease (otherwise the next one may succeed)."""
        if error.code != grpc.StatusCode.FAILED_PRECONDITION:
            return False
        self.lost = error
        return True

    def _granted(self, response: api.AcquireLeaseResponse) -> None:
        self.lease_id = response.lease.lease_id
        self.fencing = response.lease.fencing
        self.expire_time = response.expire_time.ToDatetime(tzinfo=UTC)
        self._held[self.thread_id] = response.lease

    def _lease_request(self, kind: type[Any], lease: pb.Lease) -> Any:
        return kind(namespace=self._namespace, thread_id=self.thread_id, lease=lease)


def _duration(seconds: float) -> Duration:
    duration = Duration()
    duration.FromMilliseconds(round(seconds * 1000))
    return duration


def attach(held: MutableMapping[str, pb.Lease], request: Any) -> Any:
    """``request`` carrying the saver's lease on its thread, if the saver holds one."""
    lease = held.get(request.thread_id)
    if lease is not None:
        request.lease.CopyFrom(lease)
    return request
