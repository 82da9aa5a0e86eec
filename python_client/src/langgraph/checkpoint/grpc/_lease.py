"""ThreadLease: a saver's lease on one thread, renewed in the background while it is held."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, MutableMapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Protocol

from google.protobuf.duration_pb2 import Duration
from lgcheckpoint.v1 import checkpoint_pb2 as pb
from lgcheckpoint.v1 import checkpoint_service_pb2 as api

import grpc
from langgraph.checkpoint.grpc._errors import GrpcSaverError

DEFAULT_LEASE_TTL = 30.0


class SyncCall(Protocol):
    """The saver's ``_call``: one call within ``seconds`` (the saver's timeout when None)."""

    def __call__(self, method: str, request: Any, *, seconds: float | None = None) -> Any:
        """Makes the call."""


class AsyncCall(Protocol):
    """The saver's ``_acall``."""

    def __call__(
        self, method: str, request: Any, *, seconds: float | None = None
    ) -> Awaitable[Any]:
        """Makes the call."""


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
        lost: The error of the renewal that lost the lease: the service refused it (the
            lease was taken over or expired), or it could not finish before the lease expired
            (``DEADLINE_EXCEEDED``: the service was out of reach). Every later write of this
            saver to the thread is refused, at the latest one time to live after the cut-off
            renewal (which may still have reached the service). None while held.

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
        # When the lease expires by this process's monotonic clock, at the latest: a grant's
        # time to live counted from when its request was sent, so never after the service's.
        self._expires = 0.0
        self._namespace = namespace
        self._call, self._acall = calls
        self._held = held
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._arenewer: asyncio.Task[None] | None = None

    # --- sync -------------------------------------------------------------------------

    def __enter__(self) -> ThreadLease:
        """Acquires the lease; raises ``GrpcSaverError`` (FAILED_PRECONDITION) when held."""
        request, sent = self._acquire_request(), time.monotonic()
        self._granted(self._call("AcquireLease", request), sent)
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
            request, sent = self._renew_request(), time.monotonic()
            if request is None:
                return
            try:
                response = self._call("RenewLease", request, seconds=self._left(sent))
            except GrpcSaverError as error:
                if self._lost(error):
                    return
                continue
            self._renewed(response, sent)

    # --- async ------------------------------------------------------------------------

    async def __aenter__(self) -> ThreadLease:
        """Async ``__enter__``."""
        request, sent = self._acquire_request(), time.monotonic()
        self._granted(await self._acall("AcquireLease", request), sent)
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
            request, sent = self._renew_request(), time.monotonic()
            if request is None:
                return
            try:
                response = await self._acall("RenewLease", request, seconds=self._left(sent))
            except GrpcSaverError as error:
                if self._lost(error):
                    return
                continue
            self._renewed(response, sent)

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

    def _left(self, now: float) -> float:
        """The renewal's deadline: the time left on the lease (a later renewal is no use)."""
        return max(self._expires - now, 0.0)

    def _lost(self, error: GrpcSaverError) -> bool:
        """Whether a failed renewal lost the lease (otherwise the next one may succeed)."""
        if error.code == grpc.StatusCode.FAILED_PRECONDITION:
            self.lost = error
            return True
        if time.monotonic() >= self._expires:
            self.lost = GrpcSaverError(
                error.code,
                f"lease {self.lease_id!r} on thread {self.thread_id!r} expired before a "
                f"renewal could finish: {error.details}",
            )
            return True
        return False

    def _granted(self, response: api.AcquireLeaseResponse, sent: float) -> None:
        self.lease_id = response.lease.lease_id
        self.fencing = response.lease.fencing
        self._renewed(response, sent)
        self._held[self.thread_id] = response.lease

    def _renewed(
        self, response: api.AcquireLeaseResponse | api.RenewLeaseResponse, sent: float
    ) -> None:
        self.expire_time = response.expire_time.ToDatetime(tzinfo=UTC)
        self._expires = sent + self.ttl

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
