"""Opening channels to the service: target parsing, message limits, retries."""

from __future__ import annotations

import json
from typing import Any

import grpc
from langgraph.checkpoint.grpc._security import (
    BearerInterceptor,
    Security,
    async_bearer_interceptors,
)

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# Every RPC but CreateThread and AcquireLease is idempotent: a retried create could answer
# ALREADY_EXISTS for the thread its first attempt made, and a retried acquire whose first reply
# was lost finds the thread leased, by a lease the client never learned.
RETRIED_THREAD_METHODS = ("GetThread", "UpdateThread", "SearchThreads", "CountThreads")
NOT_RETRIED_CHECKPOINT_METHODS = ("AcquireLease",)
_RETRIED_CHECKPOINT_METHODS = (
    "PutCheckpoint",
    "PutWrites",
    "BatchWrite",
    "GetCheckpoint",
    "BatchGetCheckpoints",
    "ListCheckpoints",
    "DeleteThread",
    "DeleteForRuns",
    "CopyThread",
    "PruneThreads",
    "GetDeltaChannelHistory",
    "RenewLease",
    "ReleaseLease",
)

# Only idempotent RPCs are retried, so retrying UNAVAILABLE cannot duplicate anything.
_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [
                    *(
                        {"service": "lgcheckpoint.v1.CheckpointService", "method": method}
                        for method in _RETRIED_CHECKPOINT_METHODS
                    ),
                    *(
                        {"service": "lgcheckpoint.v1.ThreadService", "method": method}
                        for method in RETRIED_THREAD_METHODS
                    ),
                ],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


def parse_target(target: str) -> tuple[str, bool]:
    """Splits ``grpc://host:port`` or ``grpcs://host:port`` into (host:port, use TLS).

    A bare ``host:port`` means plaintext.
    """
    for scheme, secure in (("grpcs://", True), ("grpc://", False)):
        if target.startswith(scheme):
            return target[len(scheme) :], secure
    if "://" in target:
        raise ValueError(
            f"unsupported target {target!r}: use grpc://host:port or grpcs://host:port"
        )
    return target, False


def channel_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    """Options for both the sync and the async channel."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", _SERVICE_CONFIG),
        # After a restart the channel reconnects within a second, not gRPC's default of up to
        # two minutes, so calls waiting for it (wait_for_ready) resume soon after the server.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]


def sync_channel(target: str, options: list[tuple[str, Any]], security: Security) -> grpc.Channel:
    """A blocking channel, with TLS for ``grpcs://`` and the token on every call."""
    address, secure = parse_target(target)
    if secure:
        channel = grpc.secure_channel(
            address, security.channel_credentials(), [*options, *security.options()]
        )
    else:
        channel = grpc.insecure_channel(address, options)
    header = security.metadata()
    return grpc.intercept_channel(channel, BearerInterceptor(header)) if header else channel


def async_channel(
    target: str, options: list[tuple[str, Any]], security: Security
) -> grpc.aio.Channel:
    """An asyncio channel, bound to the running event loop; TLS and token as ``sync_channel``."""
    address, secure = parse_target(target)
    header = security.metadata()
    interceptors = async_bearer_interceptors(header) if header else None
    if secure:
        return grpc.aio.secure_channel(
            address,
            security.channel_credentials(),
            [*options, *security.options()],
            interceptors=interceptors,
        )
    return grpc.aio.insecure_channel(address, options, interceptors=interceptors)
