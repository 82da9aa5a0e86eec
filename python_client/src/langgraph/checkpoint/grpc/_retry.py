"""Retrying calls that found the server unreachable, within each call's deadline.

gRPC's own retry policy makes at most five attempts (a hard cap of gRPC), which a server
restart easily outlasts. So each call here has one deadline (the saver's ``timeout``) and is
retried with exponential backoff until it is spent: attempts wait for the channel to be ready
(``wait_for_ready``) instead of failing at once while the server is down, and an attempt cut
off by a dying or draining server is made again when the method is idempotent. That is
``UNAVAILABLE``, and ``CANCELLED`` too: this client never cancels a call it then reports, so a
``CANCELLED`` status comes from the server's side, as when a call lands on a server in the
moment it stops.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

_T = TypeVar("_T")

_RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)

FIRST_BACKOFF = 0.05
MAX_BACKOFF = 1.0


def retryable(error: grpc.RpcError) -> bool:
    """Whether a failed attempt of an idempotent call may be made again."""
    code = error.code() if isinstance(error, grpc.Call | grpc.aio.AioRpcError) else None
    return code in _RETRIED


def _pause(attempt: int, remaining: float) -> float | None:
    """How long to wait before attempt ``attempt + 1``, or None when the deadline is near."""
    # Full jitter: clients that lost the same server do not come back in lockstep.
    pause = random.uniform(0, min(MAX_BACKOFF, FIRST_BACKOFF * 2**attempt))  # noqa: S311
    return pause if remaining > pause else None


def call(attempt: Callable[[float], _T], *, seconds: float, idempotent: bool) -> _T:
    """Runs ``attempt(seconds_left)`` until it succeeds, fails otherwise, or time runs out.

    Args:
        attempt: Makes one call with the given timeout (and ``wait_for_ready=True``).
        seconds: The deadline of the whole call, across attempts, in seconds.
        idempotent: Whether a call cut off mid-way may be made again.

    """
    deadline = time.monotonic() + seconds
    tries = 0
    while True:
        try:
            return attempt(max(deadline - time.monotonic(), 0.0))
        except grpc.RpcError as error:
            pause = _pause(tries, deadline - time.monotonic())
            if not (idempotent and retryable(error)) or pause is None:
                raise
        time.sleep(pause)
        tries += 1


async def acall(
    attempt: Callable[[float], Awaitable[_T]], *, seconds: float, idempotent: bool
) -> _T:
    """The asyncio ``call``."""
    deadline = time.monotonic() + seconds
    tries = 0
    while True:
        try:
            return await attempt(max(deadline - time.monotonic(), 0.0))
        except grpc.RpcError as error:
            pause = _pause(tries, deadline - time.monotonic())
            if not (idempotent and retryable(error)) or pause is None:
                raise
        await asyncio.sleep(pause)
        tries += 1
