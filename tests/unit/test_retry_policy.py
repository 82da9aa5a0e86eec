"""Which calls the client makes again: every RPC is decided, and none that could duplicate."""

from __future__ import annotations

import json

from lgcheckpoint.v1 import checkpoint_service_pb2, thread_service_pb2

from langgraph.checkpoint.grpc import _channel
from langgraph.checkpoint.grpc._saver import _idempotent


def _retried_by_grpc() -> set[tuple[str, str]]:
    config = json.loads(_channel._SERVICE_CONFIG)
    return {
        (name["service"].rsplit(".", 1)[1], name["method"])
        for method in config["methodConfig"]
        for name in method["name"]
    }


def test_calls_that_are_not_idempotent_are_never_made_again() -> None:
    for service in ("CreateThread",), ("AcquireLease",):
        assert not _idempotent(service[0])
    retried = _retried_by_grpc()
    assert ("ThreadService", "CreateThread") not in retried
    assert ("CheckpointService", "AcquireLease") not in retried


def test_every_rpc_has_a_retry_decision() -> None:
    # A new RPC must be placed on one side on purpose: retried by gRPC, or not at all.
    retried = _retried_by_grpc()
    unretried = {("ThreadService", "CreateThread"), ("CheckpointService", "AcquireLease")}
    for module, name in (
        (checkpoint_service_pb2, "CheckpointService"),
        (thread_service_pb2, "ThreadService"),
    ):
        for method in module.DESCRIPTOR.services_by_name[name].methods:
            key = (name, method.name)
            if method.server_streaming:
                continue  # WatchEvents resumes from its cursor instead (watch())
            assert (key in retried) != (key in unretried), key
            assert _idempotent(method.name) == (key in retried), key
